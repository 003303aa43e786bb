"""Argparse helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with worked examples, kept as written."""
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
