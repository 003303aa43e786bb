"""Replica start timelines read from Ray Serve's own log files (pure: lines in, timelines out).

Ray Serve writes, with millisecond timestamps: in the controller's log, every autoscaling decision
("Upscaling Deployment(name='model', app='A') from 1 to 2 replicas") and every replica it starts
("Starting Replica(id='x', deployment='model', app='A')"); in each replica's own log, when its constructor
finished ("Finished initializing replica.") and one access-log line per request it served. So a start is
timed from the decision to the first request the new replica served, without changing the served code.
"""

from __future__ import annotations

import re
from datetime import datetime

from autoscale.startcost import ReplicaTimeline

_TS = r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_DECISION = re.compile(_TS + r".* -- (Up|Down)scaling Deployment\(name='([^']+)', app='([^']*)'\) from (\d+) to (\d+)")
_START = re.compile(_TS + r".* -- Starting Replica\(id='([^']+)', deployment='([^']+)', app='([^']*)'\)")
_INIT = re.compile(_TS + r".* -- Finished initializing replica")
_ACCESS = re.compile(_TS + r".* -- (?:\S+ )?[A-Z]+ \S+ (\d{3}|OK) [\d.]+ms\s*$")


def _t(stamp: str) -> float:
    """Epoch seconds of a Ray log timestamp (local time, as Ray writes it)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def upscale_decisions(lines, app: str, deployment: str = "model") -> list[tuple[float, int, int]]:
    """(time, from, to) of every upscaling decision of `app`'s deployment in a controller log."""
    out = []
    for line in lines:
        m = _DECISION.match(line)
        if m and m.group(2) == "Up" and m.group(3) == deployment and m.group(4) == app:
            out.append((_t(m.group(1)), int(m.group(5)), int(m.group(6))))
    return out


def replica_starts(lines, app: str, deployment: str = "model") -> dict[str, float]:
    """Replica id -> time the controller started it (the first time, if logged twice)."""
    out: dict[str, float] = {}
    for line in lines:
        m = _START.match(line)
        if m and m.group(3) == deployment and m.group(4) == app:
            out.setdefault(m.group(2), _t(m.group(1)))
    return out


def replica_log_times(lines) -> tuple[float | None, float | None]:
    """(constructor finished, first successful request served) from one replica's log; None where absent."""
    init = served = None
    for line in lines:
        if init is None and (m := _INIT.match(line)):
            init = _t(m.group(1))
        elif served is None and (m := _ACCESS.match(line)) and (m.group(2) == "OK" or m.group(2).startswith("2")):
            served = _t(m.group(1))
        if init is not None and served is not None:
            break
    return init, served


def first_served_s(lines) -> float | None:
    return replica_log_times(lines)[1]


def timelines(decisions: list[tuple[float, int, int]], starts: dict[str, float],
              replica_times: dict[str, tuple[float | None, float | None]], model: str = "",
              max_gap_s: float = 5.0) -> list[ReplicaTimeline]:
    """One timeline per replica started because of an upscaling decision: the last decision at most `max_gap_s`
    before its start (the controller adds replicas on the tick it decides). Replicas started with no decision
    just before them (the first deployment, a rolling update, a replacement) are left out.
    `running_s` is when its constructor finished (Ray marks it RUNNING on the controller's next tick)."""
    out = []
    for rid, started in sorted(starts.items(), key=lambda kv: kv[1]):
        before = [d for d in decisions if d[0] <= started + 1e-6]
        if not before or started - before[-1][0] > max_gap_s:
            continue  # not started by an autoscaling decision
        t, frm, _ = before[-1]
        init, served = replica_times.get(rid, (None, None))
        out.append(ReplicaTimeline(t, started, init if init is not None and init >= started else None,
                                   served if served is not None and init is not None and served >= init else None,
                                   model=model, kind="cold" if frm == 0 else "scale-up"))
    return out
