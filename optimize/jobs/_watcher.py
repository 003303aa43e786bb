"""The detached watcher: one background process per state directory that reconciles active runs every
second (recording state changes, stopping overrunning runs, firing hooks, starting triggered runs) while no
CLI is running, and exits once no run is active. Started by `JobService.run`; a file lock keeps it single.

Why a process and not a Ray actor: it must also see a cluster die (and record the runs that died with it),
and it needs nothing from Ray beyond the Jobs API the CLI already uses.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

LOCK = "jobs-watcher.lock"
POLL_S = 1.0
IDLE_POLLS = 3  # exit after this many looks in a row with no active run


def _try_lock(root: Path):
    handle = open(root / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    except BlockingIOError:
        handle.close()
        return None


def ensure_running(root: Path) -> None:
    """Start the watcher for `root` unless one holds the lock. Call after recording a run (see main)."""
    handle = _try_lock(root)
    if handle is None:
        return
    handle.close()  # releasing the lock before the child takes it: two may start; the second exits at once
    log = open(root / "jobs-watcher.log", "ab")
    subprocess.Popen([sys.executable, "-m", "optimize.jobs._watcher", str(root)], stdin=subprocess.DEVNULL,
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                     env={**os.environ, "OPTISERVE_STATE_DIR": str(root)})


def main(root: Path) -> int:
    from optimize.jobs.service import JobService

    handle = _try_lock(root)
    if handle is None:
        return 0
    service = JobService(root=root, watcher=False)
    idle = 0
    while True:
        try:
            active = service.reconcile()
        except Exception as exc:  # keep watching; a broken look now is not a reason to stop for good
            print(f"{time.strftime('%F %T')} reconcile failed: {exc!r}", flush=True)
            active = 1
        idle = 0 if active else idle + 1
        if idle >= IDLE_POLLS:
            # Release, then look once more: a run recorded while we held the lock (its submitter saw the lock
            # and started no watcher) is visible now, and we take the lock back for it.
            handle.close()
            if not service.store.list_runs(states={"accepted", "in_progress", "canceling"}):
                return 0
            handle = _try_lock(root)
            if handle is None:
                return 0  # a new watcher took over
            idle = 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
