"""The entrypoint wrapper Ray runs: `python -m optimize.jobs._runner --max-runtime-s N --cwd DIR -- CMD ...`.

It runs CMD in its own process group and, past N seconds, stops the whole group (SIGTERM, then SIGKILL) and
exits 124. The limit is enforced where the run executes, so it holds with no optiserve process watching
(the watcher in service.py is the second line, for runs stuck before this starts). Stdlib only: it starts
in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

TIMED_OUT_EXIT = 124  # keep equal to executor.TIMED_OUT_EXIT (not imported: this must start fast)
KILL_AFTER_S = 5.0


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, KILL_AFTER_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimize.jobs._runner")
    parser.add_argument("--max-runtime-s", type=float, required=True)
    parser.add_argument("--cwd", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.cwd:
        os.makedirs(args.cwd, exist_ok=True)
    print(f"optiserve: running {' '.join(command)} (max run time {args.max_runtime_s:g} s)", flush=True)
    proc = subprocess.Popen(command, cwd=args.cwd, start_new_session=True)
    # Ray stops a run with SIGTERM to this process and its children; pass it on to the command's group.
    signal.signal(signal.SIGTERM, lambda *_: (_stop(proc), sys.exit(143)))
    started = time.monotonic()
    try:
        return proc.wait(timeout=args.max_runtime_s)
    except subprocess.TimeoutExpired:
        _stop(proc)
        print(f"optiserve: stopped after {time.monotonic() - started:.1f} s: the run exceeded its max run time "
              f"of {args.max_runtime_s:g} s", flush=True)
        return TIMED_OUT_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
