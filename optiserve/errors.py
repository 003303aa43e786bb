"""User-facing errors and the one place CLIs turn them into exit codes.

Library code raises `UserError` with one sentence saying what was wrong and what to do; `run_cli` prints
it as `error: ...` and exits 2, so users never see a traceback for a mistake of theirs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_VERDICT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


def run_cli(main: Callable[[], int | None]) -> int:
    """Run a CLI body, mapping `UserError` and Ctrl-C to exit codes instead of tracebacks."""
    try:
        return int(main() or EXIT_OK)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
