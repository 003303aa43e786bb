"""The jobs watcher process (`python -m optimize.jobs.watch STATE_DIR`), started by `optimize.jobs._watcher`:
reconcile active runs every second while no CLI is running, and exit once none is active."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from optimize.jobs._watcher import IDLE_POLLS, POLL_S, try_lock
from optimize.jobs.service import JobService


def main(root: Path) -> int:
    handle = try_lock(root)
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
            handle = try_lock(root)
            if handle is None:
                return 0  # a new watcher took over
            idle = 0
        time.sleep(POLL_S)


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
