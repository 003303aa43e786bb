"""What a replica start costs, from replica timelines; and the first request's latency after scale to zero.

Pure: the timelines come from Ray Serve (`loadtests/_start_probe.py`) or a test's fake list. A start's cost is
the time from the scaling decision (the moment the target replica count went up) to the first request the new
replica served; when that request is not known, to the moment the replica was seen RUNNING (a lower bound,
flagged as such). The summary's median becomes the profile's `replica_start_s` (what the simulator and the
policies read), the spread goes into the profile's notes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from optiserve.errors import UserError

from .profile import ModelProfile


@dataclass(frozen=True)
class ReplicaTimeline:
    """One replica start, in seconds on one clock: decision, first seen STARTING, RUNNING, first request served."""

    decision_s: float
    starting_s: float | None = None
    running_s: float | None = None
    first_served_s: float | None = None
    model: str = ""
    kind: str = "scale-up"  # or "cold" (scale from zero)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StartSample:
    model: str
    kind: str
    start_s: float  # decision -> first request served (or -> RUNNING when served_known is False)
    to_running_s: float
    served_known: bool


@dataclass(frozen=True)
class StartCostSummary:
    n: int
    median_s: float
    mean_s: float
    min_s: float
    max_s: float
    p90_s: float
    median_to_running_s: float
    samples_s: list[float] = field(default_factory=list)
    lower_bound: bool = False  # some samples stop at RUNNING (no first request observed)

    def to_dict(self) -> dict:
        return asdict(self)


def start_samples(timelines: list[ReplicaTimeline]) -> list[StartSample]:
    """A sample per timeline that reached RUNNING; timelines that never did (still starting, failed) are left out.

    Times must be ordered: starting and RUNNING not before the decision, the first request not before RUNNING.
    """
    out = []
    for tl in timelines:
        if tl.running_s is None:
            continue
        points = [p for p in (tl.decision_s, tl.starting_s, tl.running_s, tl.first_served_s) if p is not None]
        if any(b < a for a, b in zip(points, points[1:], strict=False)):
            raise UserError(f"replica timeline out of order (decision, starting, running, first served): {points}.")
        end = tl.first_served_s if tl.first_served_s is not None else tl.running_s
        out.append(StartSample(tl.model, tl.kind, end - tl.decision_s, tl.running_s - tl.decision_s,
                               tl.first_served_s is not None))
    return out


def summarize_starts(samples: list[StartSample]) -> StartCostSummary:
    if not samples:
        raise UserError("no replica start was observed; nothing to summarize (did the target replica count rise?).")
    xs = np.array([s.start_s for s in samples], float)
    return StartCostSummary(
        n=len(xs), median_s=float(np.median(xs)), mean_s=float(xs.mean()), min_s=float(xs.min()),
        max_s=float(xs.max()), p90_s=float(np.percentile(xs, 90)),
        median_to_running_s=float(np.median([s.to_running_s for s in samples])),
        samples_s=[round(float(x), 4) for x in xs], lower_bound=not all(s.served_known for s in samples))


def record_start_cost(profile: ModelProfile, summary: StartCostSummary, source: str = "") -> ModelProfile:
    """The profile with `replica_start_s` = the measured median and the spread in notes['replica_start']."""
    notes = {**profile.notes, "replica_start": {**summary.to_dict(), "source": source}}
    return ModelProfile.from_dict({**profile.to_dict(), "replica_start_s": round(summary.median_s, 3),
                                   "notes": notes})


@dataclass(frozen=True)
class ColdStartReport:
    """First request after scale to zero: its latency next to a warm request's, per try."""

    n: int
    first_request_ms: list[float]
    warm_ms: float
    median_first_ms: float
    max_first_ms: float
    penalty_ms: float  # median first request - warm request

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        return (f"first request after scale to zero: median {self.median_first_ms / 1000:.2f} s (max "
                f"{self.max_first_ms / 1000:.2f} s over {self.n}), a warm request {self.warm_ms:.1f} ms")


def cold_start_report(first_request_ms: list[float], warm_ms: list[float]) -> ColdStartReport:
    if not first_request_ms or not warm_ms:
        raise UserError("a cold-start report needs at least one first request and one warm request.")
    if min(first_request_ms) < 0 or min(warm_ms) < 0:
        raise UserError("latencies must be non-negative.")
    med = float(np.median(first_request_ms))
    warm = float(np.median(warm_ms))
    return ColdStartReport(len(first_request_ms), [round(float(x), 3) for x in first_request_ms], round(warm, 3),
                           med, float(max(first_request_ms)), med - warm)
