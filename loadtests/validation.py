"""Live versus simulated, side by side: does the simulator predict what the policy does for real?

Pure: takes a LoadTestResult (live) and an autoscale SimulationResult (same trace, policy and profile)
and reports both, plus the simulator's fidelity (predicted / measured for each figure).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ._json import clean
from .result import LoadTestResult

# (label, live getter, simulated key) for the side-by-side table
_FIGURES = (
    ("requests", lambda r: r.summary.requests, "requests"),
    ("p50 latency (ms)", lambda r: r.summary.p50_ms, "latency_p50_ms"),
    ("p95 latency (ms)", lambda r: r.summary.p95_ms, "latency_p95_ms"),
    ("p99 latency (ms)", lambda r: r.summary.p99_ms, "latency_p99_ms"),
    ("SLO attainment, requests", lambda r: r.slo.requests_within_slo if r.slo else math.nan,
     "slo_attainment_requests"),
    ("SLO attainment, 10 s windows", lambda r: r.slo.windows_met if r.slo else math.nan, "slo_attainment_windows"),
    ("replica-seconds", lambda r: r.replica_summary.replica_seconds, "replica_seconds"),
    ("mean replicas", lambda r: r.replica_summary.mean_replicas, "mean_replicas"),
    ("max replicas", lambda r: r.replica_summary.max_replicas, "max_replicas"),
    ("cost (USD)", lambda r: r.cost.total, "cost_total"),
)


@dataclass(frozen=True)
class Row:
    figure: str
    live: float
    simulated: float
    ratio: float  # simulated / live (1 = perfect); NaN when live is 0 or unknown
    abs_error: float


@dataclass(frozen=True)
class Validation:
    policy: str
    trace: str
    duration_s: float
    rows: list[Row]
    live_scale_ups: int
    live_scale_downs: int
    simulated_scaling_actions: int
    simulated_timeseries: dict  # t_s, replicas, latency_p95_ms
    live_verdict_passed: bool
    profile_overhead_ms: float = 0.0  # per-request serving overhead added to the simulator's profile

    def row(self, figure: str) -> Row:
        return next(r for r in self.rows if r.figure == figure)

    @property
    def fidelity(self) -> dict[str, float]:
        """The headline figures: replica-seconds ratio, p95 ratio and attainment difference."""
        return {"replica_seconds_ratio": self.row("replica-seconds").ratio,
                "p95_ratio": self.row("p95 latency (ms)").ratio,
                "attainment_abs_error": self.row("SLO attainment, requests").abs_error}

    def to_dict(self) -> dict:
        return clean({**asdict(self), "fidelity": self.fidelity})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def compare(live: LoadTestResult, sim, policy: str, profile_overhead_ms: float = 0.0) -> Validation:
    """`sim` is an autoscale.SimulationResult (or its dict) for the same trace."""
    s = sim if isinstance(sim, dict) else sim.to_dict()
    rows = []
    for label, get_live, key in _FIGURES:
        lv, sv = float(get_live(live)), float(s.get(key, math.nan) if s.get(key) is not None else math.nan)
        ratio = sv / lv if lv and math.isfinite(lv) and math.isfinite(sv) else math.nan
        rows.append(Row(label, lv, sv, ratio, abs(sv - lv)))
    ts = s.get("timeseries") or {}
    return Validation(policy, live.config.shape, live.duration_s, rows, live.replica_summary.scale_ups,
                      live.replica_summary.scale_downs, int(s.get("scaling_actions", 0)),
                      {k: list(ts.get(k, [])) for k in ("t_s", "replicas", "latency_p95_ms")},
                      live.verdict.passed, profile_overhead_ms)


def validation_html(v: Validation, live: LoadTestResult) -> str:
    from . import _plots
    from .report import _table, img, page

    rows = [(r.figure, r.live, r.simulated, r.ratio) for r in v.rows]
    sim_series = {"t_s": v.simulated_timeseries.get("t_s", []), "replicas": v.simulated_timeseries.get("replicas", []),
                  "p95_ms": v.simulated_timeseries.get("latency_p95_ms", [])}
    f = v.fidelity
    body = (f"<p>Policy <b>{html.escape(v.policy)}</b> on the <b>{html.escape(v.trace)}</b> trace "
            f"({v.duration_s:g} s): the live run and the simulator saw the same demand curve.</p>"
            + _table(rows, ("figure", "live", "simulated", "simulated / live"))
            + "<h2>Simulator fidelity</h2>"
            + _table([("replica-seconds, simulated / live", f["replica_seconds_ratio"]),
                      ("p95 latency, simulated / live", f["p95_ratio"]),
                      ("SLO attainment (requests), |simulated - live|", f["attainment_abs_error"]),
                      ("scale-ups / scale-downs live", f"{v.live_scale_ups} / {v.live_scale_downs}"),
                      ("scaling actions simulated", v.simulated_scaling_actions),
                      ("serving overhead added to the profile (ms per batch)", v.profile_overhead_ms)])
            + img(_plots.validation_overlay(live, sim_series), "live versus simulated")
            + '<p>Live run details: <code>live/report.html</code></p>')
    return page(f"Validation: {v.policy} policy, {v.trace} trace", body)
