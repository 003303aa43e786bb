"""Argparse helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with worked examples, kept as written."""
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


DATA_FORMATS = ".npz, .csv or .parquet"


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--inputs / --labels / --feature-columns: how to read data files when array and column names do not tell."""
    g = p.add_argument_group(
        "data files",
        "  .npz: labels are the array named y, label(s), target(s) or class (any case); a single other array\n"
        "  feeds a single-input model whatever its name. CSV/Parquet: the label column is named likewise (or\n"
        "  --label-column); the other columns, in file order (or --feature-columns), are the features.")
    g.add_argument("--inputs", action="append", metavar="INPUT=ARRAY",
                   help="feed model input INPUT from this array (.npz) or these comma-separated columns (CSV, "
                   "Parquet); repeatable")
    g.add_argument("--labels", "--label-column", dest="labels", metavar="NAME",
                   help="the array or column holding the labels (class indices)")
    g.add_argument("--feature-columns", metavar="A,B,C", help="CSV/Parquet: the feature columns, in this order")


def data_options(args):
    from optiserve.data import DataOptions

    return DataOptions.from_flags(args.inputs, args.labels, args.feature_columns)
