"""SQLite records of jobs, runs and events (WAL; every state change is one transaction).

Crash safety comes from three rules: a run is written (state accepted) before it is submitted to Ray; a state
change reads the current state and writes the new one plus its event in one `BEGIN IMMEDIATE` transaction, so
two observers (a CLI waiting on a run, the background watcher) cannot both record it; and events are unique
per (run, state), so a run is never reported twice, whoever reconciles and however often.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from optimize.jobs.models import Event, Job, JobRun, RunState, can_transition
from optiserve.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL,
    reason TEXT NOT NULL, hooks_status TEXT NOT NULL DEFAULT 'pending', hooks_detail TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, state));
"""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # jobs
    def add_job(self, job: Job) -> None:
        try:
            with self._tx() as db:
                db.execute("INSERT INTO jobs VALUES (?, ?, ?)", (job.name, json.dumps(job.to_dict()), job.created_at))
        except sqlite3.IntegrityError:
            raise UserError(f"a job named {job.name!r} already exists; pick another name or delete it first") from None

    def get_job(self, name: str) -> Job:
        row = self._db.execute("SELECT spec FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UserError(f"no job named {name!r}; see `optimize jobs list`")
        return Job.from_dict(json.loads(row["spec"]))

    def list_jobs(self) -> list[Job]:
        rows = self._db.execute("SELECT spec FROM jobs ORDER BY created_at").fetchall()
        return [Job.from_dict(json.loads(r["spec"])) for r in rows]

    def delete_job(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is None:
                raise UserError(f"no job named {name!r}; see `optimize jobs list`")
            active = [r["id"] for r in db.execute(
                "SELECT id FROM runs WHERE job = ? AND state IN ('accepted', 'in_progress', 'canceling')", (name,))]
            if active:
                raise UserError(f"job {name!r} has runs still going ({', '.join(active)}); cancel them first")
            db.execute("DELETE FROM jobs WHERE name = ?", (name,))

    # runs
    def add_run(self, run: JobRun, reason: str) -> None:
        """Insert a new run and its `accepted` event together."""
        with self._tx() as db:
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                       (run.id, run.job, run.state.value, run.created_at, json.dumps(run.to_dict())))
            db.execute("INSERT INTO events (run_id, state, at, reason) VALUES (?, ?, ?, ?)",
                       (run.id, run.state.value, run.created_at, reason))

    def get_run(self, run_id: str) -> JobRun:
        row = self._db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no run with id {run_id!r}; see `optimize runs list`")
        return JobRun.from_dict(json.loads(row["record"]))

    def list_runs(self, job: str | None = None, states: set[RunState] | None = None) -> list[JobRun]:
        query, params = "SELECT record, state FROM runs", []
        if job:
            query, params = query + " WHERE job = ?", [job]
        rows = self._db.execute(query + " ORDER BY created_at, id", params).fetchall()
        runs = [JobRun.from_dict(json.loads(r["record"])) for r in rows]
        return [r for r in runs if states is None or r.state in states]

    def update_run(self, run_id: str, **changes) -> JobRun:
        """Change fields other than the state (e.g. submitted_at)."""
        assert "state" not in changes, "use transition() to change a run's state"
        with self._tx() as db:
            run = self._read(db, run_id).with_(**changes)
            db.execute("UPDATE runs SET record = ? WHERE id = ?", (json.dumps(run.to_dict()), run_id))
        return run

    def transition(self, run_id: str, new: RunState, reason: str, at: float | None = None,
                   **changes) -> JobRun | None:
        """Move a run to `new` with its event, atomically. None when not allowed from its current state
        (already there, already ended, or another observer got there first)."""
        at = time.time() if at is None else at
        with self._tx() as db:
            run = self._read(db, run_id)
            if not can_transition(run.state, new):
                return None
            run = run.with_(state=new, **changes)
            db.execute("UPDATE runs SET state = ?, record = ? WHERE id = ?",
                       (new.value, json.dumps(run.to_dict()), run_id))
            db.execute("INSERT OR IGNORE INTO events (run_id, state, at, reason) VALUES (?, ?, ?, ?)",
                       (run_id, new.value, at, reason))
        return run

    @staticmethod
    def _read(db: sqlite3.Connection, run_id: str) -> JobRun:
        row = db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no run with id {run_id!r}; see `optimize runs list`")
        return JobRun.from_dict(json.loads(row["record"]))

    # events
    def events(self, run_id: str | None = None) -> list[Event]:
        query, params = "SELECT * FROM events", []
        if run_id:
            query, params = query + " WHERE run_id = ?", [run_id]
        return [_event(r) for r in self._db.execute(query + " ORDER BY id", params).fetchall()]

    def pending_events(self) -> list[Event]:
        rows = self._db.execute("SELECT * FROM events WHERE hooks_status = 'pending' ORDER BY id").fetchall()
        return [_event(r) for r in rows]

    def claim_event(self, event_id: int) -> bool:
        """Take the right to fire this event's hooks; only one process ever gets it."""
        with self._tx() as db:
            cur = db.execute("UPDATE events SET hooks_status = 'firing' WHERE id = ? AND hooks_status = 'pending'",
                             (event_id,))
            return cur.rowcount == 1

    def finish_event(self, event_id: int, status: str, detail: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE events SET hooks_status = ?, hooks_detail = ? WHERE id = ?", (status, detail, event_id))


def _event(row: sqlite3.Row) -> Event:
    return Event(id=row["id"], run_id=row["run_id"], state=RunState(row["state"]), at=row["at"],
                 reason=row["reason"], hooks_status=row["hooks_status"], hooks_detail=row["hooks_detail"])
