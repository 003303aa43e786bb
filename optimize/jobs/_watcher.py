"""The detached watcher: one background process per state directory that reconciles active runs every
second (recording state changes, stopping overrunning runs, firing hooks, starting triggered runs) while no
CLI is running, and exits once no run is active. Started by `JobService.run`; a file lock keeps it single.
This module starts it; `optimize.jobs.watch` is the process itself (it needs the service, which needs this).

Why a process and not a Ray actor: it must also see a cluster die (and record the runs that died with it),
and it needs nothing from Ray beyond the Jobs API the CLI already uses.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

LOCK = "jobs-watcher.lock"
POLL_S = 1.0
IDLE_POLLS = 3  # exit after this many looks in a row with no active run


def try_lock(root: Path):
    handle = open(root / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    except BlockingIOError:
        handle.close()
        return None


def ensure_running(root: Path) -> None:
    """Start the watcher for `root` unless one holds the lock. Call after recording a run (see main)."""
    handle = try_lock(root)
    if handle is None:
        return
    handle.close()  # releasing the lock before the child takes it: two may start; the second exits at once
    log = open(root / "jobs-watcher.log", "ab")
    subprocess.Popen([sys.executable, "-m", "optimize.jobs.watch", str(root)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                     env={**os.environ, "OPTISERVE_STATE_DIR": str(root)})
