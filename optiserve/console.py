"""One rich Console factory: full width in a terminal, 160 columns in logs and CI so tables stay readable."""

from __future__ import annotations

from rich.console import Console


def console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=160)
