"""Run Locust headless in its own subprocess (gevent never patches this process), bounded in time,
against loopback only, while this process samples replica counts every second.

The locustfile appends every request (exact start time and latency) to a CSV; this module reads it back
into `Records` aligned with the replica samples on one clock (the trace's t=0).
"""

from __future__ import annotations

import csv
import ipaddress
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from autoscale.traces import Trace
from optiserve.errors import UserError

from .bodies import write_bodies
from .replicas import ReplicaSample
from .shapes import write_trace
from .stats import Records

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
START_MARK = "#start"

# Called about once a second; returns {"running": n, "starting": n, "stopping": n} or None when unknown.
Sampler = Callable[[], "dict | None"]


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, or a UserError when it does not point at this machine."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"--url {url!r} must look like http://127.0.0.1:PORT.")
    host = parsed.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UserError(f"load tests only target this machine (127.0.0.1 / localhost), not {host}: "
                        "generating load against other hosts is not allowed.")
    return url.rstrip("/")


@dataclass(frozen=True)
class LocustRun:
    records: Records
    samples: list[ReplicaSample]
    started_unix_s: float  # the trace's t=0
    duration_s: float  # the trace's duration, or less when the run stopped early
    users: int
    returncode: int
    log_path: Path


def run_locust(url: str, model: str, trace: Trace, bodies: list[dict], work_dir: str | Path, *,
               sampler: Sampler | None = None, users_per_rps: float = 1.0, max_users: int = 400,
               abort_p95_ms: float = 0.0, abort_window_s: float = 10.0, startup_timeout_s: float = 60.0,
               grace_s: float = 15.0, seed: int = 0, progress: Callable[[float, float], None] | None = None,
               ) -> LocustRun:
    """Play `trace` against `url` with Locust; returns every request and the replica samples."""
    url = check_loopback(url)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    trace_file, bodies_file = write_trace(trace, work / "trace.json"), write_bodies(bodies, work / "bodies.json")
    record = work / "requests.csv"
    record.unlink(missing_ok=True)
    log_path = work / "locust.log"
    users = int(min(max(math.ceil(trace.peak_rps * users_per_rps), 2), max_users))
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "--model", model, "--trace-file", str(trace_file), "--bodies", str(bodies_file), "--record", str(record),
           "--users-per-rps", str(users_per_rps), "--max-users", str(max_users), "--seed", str(seed),
           "--abort-p95-ms", str(abort_p95_ms), "--abort-window-s", str(abort_window_s),
           "--run-time", f"{int(trace.duration_s + grace_s)}s", "--stop-timeout", "2", "--only-summary",
           "--loglevel", "WARNING"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}  # no stray Locust config
    launched = time.time()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        raw_samples: list[tuple[float, dict]] = []
        try:
            started = _wait(proc, record, launched, startup_timeout_s, trace.duration_s + grace_s, sampler,
                            raw_samples, progress)
        finally:
            _end(proc)
    if started is None:
        raise UserError(f"Locust did not start its test within {startup_timeout_s:.0f} s; see {log_path}:\n"
                        + _tail(log_path))
    if proc.returncode not in (0, 1):  # 1 = some requests failed, which the result reports
        raise UserError(f"Locust exited with code {proc.returncode}; see {log_path}:\n" + _tail(log_path))
    rows = _read_records(record)
    ended = max(time.time() - started, 0.0)
    duration = min(trace.duration_s, ended)
    records = Records.from_rows([r for r in rows if started <= r[0] < started + duration], t0_s=started)
    return LocustRun(records, _align(raw_samples, started, duration), started, duration, users, proc.returncode,
                     log_path)


def _wait(proc, record: Path, launched: float, startup_timeout_s: float, run_s: float, sampler, samples,
          progress) -> float | None:
    """Sample replicas each second until Locust exits or overruns; returns the test's start (unix s)."""
    started = None
    while True:
        now = time.time()
        if started is None:
            started = _start_mark(record)
            if started is None and now - launched > startup_timeout_s:
                return None
        if sampler is not None:
            counts = sampler()
            if counts is not None:
                samples.append((now, counts))
        if proc.poll() is not None:
            return started if started is not None else _start_mark(record)
        if started is not None:
            if progress is not None:
                progress(min(now - started, run_s), run_s)
            if now - started > run_s:
                return started  # overran the trace plus grace: _end() stops it
        time.sleep(max(0.0, 1.0 - (time.time() - now)))


def _end(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop Locust's process group (ours alone): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _start_mark(record: Path) -> float | None:
    try:
        with record.open() as fh:
            first = fh.readline()
    except FileNotFoundError:
        return None
    if first.startswith(START_MARK + ","):
        return float(first.split(",")[1])
    return None


def _read_records(record: Path) -> list[tuple[float, float, bool, str]]:
    rows = []
    try:
        with record.open(newline="") as fh:
            for row in csv.reader(fh):
                if not row or row[0].startswith("#") or len(row) < 4:
                    continue
                try:
                    rows.append((float(row[0]), float(row[1]), row[2] == "1", row[3]))
                except ValueError:
                    continue  # a line cut short by a kill
    except FileNotFoundError:
        pass
    return rows


def _align(raw: list[tuple[float, dict]], started: float, duration_s: float) -> list[ReplicaSample]:
    """Samples on the trace's clock; the last one taken before t=0 stands for t=0."""
    out, before = [], None
    for t, c in raw:
        rel = t - started
        sample = ReplicaSample(max(rel, 0.0), int(c.get("running", 0)), int(c.get("starting", 0)),
                               int(c.get("stopping", 0)))
        if rel < 0:
            before = sample
        elif rel <= duration_s + 1.0:
            out.append(sample)
    if before is not None and (not out or out[0].t_s > 0):
        out.insert(0, before)
    return out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
