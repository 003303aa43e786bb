"""Compare policies on traces: one shared arrival draw per trace, the lower bound, and `queue` tuned.

`queue` (Ray Serve's default) is also run over a sweep of `target_ongoing_requests`; every policy is then
compared with the sweep's cheapest run that reaches that policy's SLO attainment, since a fair claim of
"fewer replicas" is against the baseline tuned to the same attainment, not against its defaults.
`Comparison.worst_case()` gives each policy's worst figure across the traces, so a policy is picked for
all the traffic and not for one shape; `bound.references` says what is reachable at all on each trace.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._results import SimulationResult
from .bound import lower_bound, references
from .cost import CostModel
from .fair_bound import fair_bound
from .policies import PolicyConfig, load_policy_config
from .profile import ModelProfile
from .simulator import SimConfig, simulate
from .traces import Trace

TUNE_TARGETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass
class TraceComparison:
    trace: str
    lower_bound: dict
    results: list[SimulationResult]
    tuned_queue: SimulationResult | None = None
    tuned_target_ongoing_requests: float | None = None
    best_policy: str | None = None
    attainment_goal: float = 0.99
    references: dict = field(default_factory=dict)
    queue_sweep: list[dict] = field(default_factory=list)  # target_ongoing_requests, attainment, replica-s
    fair_bound: dict = field(default_factory=dict)  # fair_bound.FairBound: same replicas and start, foresight

    def tuned_queue_for(self, attainment: float) -> dict | None:
        """The sweep's cheapest `queue` run reaching `attainment` (reached=True), else its best attainment."""
        if not self.queue_sweep:
            return None
        ok = [q for q in self.queue_sweep if q["slo_attainment_requests"] >= attainment - 1e-12]
        if ok:
            return {**min(ok, key=lambda q: q["replica_seconds"]), "reached": True}
        return {**max(self.queue_sweep, key=lambda q: (q["slo_attainment_requests"], -q["replica_seconds"])),
                "reached": False}

    def policy_rows(self) -> list[dict]:
        """Per policy: attainment, replica-seconds, x bound, x fair bound, x `queue` tuned to the same attainment."""
        rows = []
        fair = self.fair_bound.get("replica_seconds")
        for r in self.results:
            tq = self.tuned_queue_for(r.slo_attainment_requests)
            rows.append({
                "policy": r.policy, "slo_attainment_requests": r.slo_attainment_requests,
                "replica_seconds": r.replica_seconds, "vs_bound": r.ratio_to_bound,
                "vs_fair_bound": r.replica_seconds / fair if fair else None,
                "vs_tuned_queue": r.replica_seconds / tq["replica_seconds"] if tq else None,
                "tuned_queue_target": tq["target_ongoing_requests"] if tq else None,
                "tuned_queue_reached": tq["reached"] if tq else None,
                "meets_goal": r.slo_attainment_requests >= self.attainment_goal,
                "scaling_actions": r.scaling_actions,
            })
        return rows

    def best(self) -> SimulationResult | None:
        return next((r for r in self.results if r.policy == self.best_policy), None)

    def summary(self) -> dict:
        best = self.best()
        out = {"trace": self.trace, "best_policy": self.best_policy,
               "best_meets_goal": bool(best and best.slo_attainment_requests >= self.attainment_goal)}
        if best:
            out["best_vs_bound"] = best.ratio_to_bound
            if self.fair_bound:
                out["best_vs_fair_bound"] = best.replica_seconds / self.fair_bound["replica_seconds"]
        react = self.references.get("reactive_goal_replica_seconds")
        if react is not None and self.fair_bound:  # no foresight (fluid, so optimistic) against foresight
            out["reactive_goal_vs_fair_bound"] = float(react) / self.fair_bound["replica_seconds"]
            if self.tuned_queue:
                out["best_vs_tuned_queue"] = best.replica_seconds / self.tuned_queue.replica_seconds
        return out

    def to_dict(self) -> dict:
        return {
            "trace": self.trace, "lower_bound": self.lower_bound, "fair_bound": self.fair_bound,
            "best_policy": self.best_policy,
            "attainment_goal": self.attainment_goal, "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
            "tuned_queue": self.tuned_queue.to_dict() if self.tuned_queue else None,
            "tuned_target_ongoing_requests": self.tuned_target_ongoing_requests,
            "references": self.references, "queue_sweep": self.queue_sweep, "policies": self.policy_rows(),
        }


@dataclass
class Comparison:
    traces: list[TraceComparison] = field(default_factory=list)
    sim_config: dict = field(default_factory=dict)
    replica_start_s: float | None = None  # the profile's replica start time every simulation assumed
    profile_source: str = ""

    def worst_case(self) -> list[dict]:
        """Per policy, its worst figure across the traces and which trace it came from."""
        by_policy: dict[str, list[tuple[str, dict]]] = {}
        for tc in self.traces:
            for row in tc.policy_rows():
                by_policy.setdefault(row["policy"], []).append((tc.trace, row))
        out = []
        for policy, rows in by_policy.items():
            att = min(rows, key=lambda x: x[1]["slo_attainment_requests"])
            tuned = [x for x in rows if x[1]["vs_tuned_queue"] is not None]
            vs_q = max(tuned, key=lambda x: x[1]["vs_tuned_queue"]) if tuned else None
            bound = [x for x in rows if x[1]["vs_bound"] is not None]
            vs_b = max(bound, key=lambda x: x[1]["vs_bound"]) if bound else None
            fair = [x for x in rows if x[1].get("vs_fair_bound") is not None]
            vs_f = max(fair, key=lambda x: x[1]["vs_fair_bound"]) if fair else None
            out.append({
                "policy": policy, "traces": len(rows),
                "worst_attainment": att[1]["slo_attainment_requests"], "worst_attainment_trace": att[0],
                "worst_vs_tuned_queue": vs_q[1]["vs_tuned_queue"] if vs_q else None,
                "worst_vs_tuned_queue_trace": vs_q[0] if vs_q else None,
                "worst_vs_bound": vs_b[1]["vs_bound"] if vs_b else None,
                "worst_vs_bound_trace": vs_b[0] if vs_b else None,
                "worst_vs_fair_bound": vs_f[1]["vs_fair_bound"] if vs_f else None,
                "worst_vs_fair_bound_trace": vs_f[0] if vs_f else None,
                "meets_goal_everywhere": all(r["meets_goal"] for _, r in rows),
                "total_replica_seconds": sum(r["replica_seconds"] for _, r in rows),
            })
        return out

    def to_dict(self) -> dict:
        return {"sim_config": self.sim_config, "replica_start_s": self.replica_start_s,
                "profile_source": self.profile_source, "worst_case": self.worst_case(),
                "traces": [t.to_dict() for t in self.traces]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def pick_best(results: list[SimulationResult], goal: float) -> SimulationResult:
    """Fewest replica-seconds among those meeting the goal; else the highest attainment."""
    meeting = [r for r in results if r.slo_attainment_requests >= goal]
    if meeting:
        return min(meeting, key=lambda r: r.replica_seconds)
    return max(results, key=lambda r: (r.slo_attainment_requests, -r.replica_seconds))


def compare_trace(trace: Trace, policies: list[str], profile: ModelProfile, sim: SimConfig,
                  configs: dict[str, PolicyConfig], cost_model: CostModel | None = None, tune_queue: bool = True,
                  goal: float = 0.99, progress: Callable[[str], None] | None = None) -> TraceComparison:
    arrivals = trace.arrivals(sim.seed)
    lb = lower_bound(arrivals, trace.duration_s, profile, sim.slo_p95_ms, sim.min_replicas)

    def run(name: str, cfg: PolicyConfig, label: str = "") -> SimulationResult:
        if progress:
            progress(f"{trace.kind}: {label or name}")
        r = simulate(trace, name, cfg, profile, sim, cost_model, arrivals=arrivals)
        r.lower_bound_replica_seconds = lb.replica_seconds
        return r

    results = [run(p, configs[p]) for p in policies]
    best = pick_best(results, goal)
    # The controller's newest data is on average half a push period old (plus the look-back a policy picks).
    refs = references(arrivals, trace.duration_s, profile, sim.slo_p95_ms, sim.min_replicas, goal,
                      metrics_lag_s=sim.metrics_interval_s / 2)
    fair = fair_bound(arrivals, trace.duration_s, profile, sim.slo_p95_ms, sim.min_replicas, goal)
    comp = TraceComparison(trace.kind, lb.to_dict(), results, best_policy=best.policy, attainment_goal=goal,
                           references=refs.to_dict(), fair_bound=fair.to_dict())
    if tune_queue:
        base = configs.get("queue") or load_policy_config("queue")
        sweep: list[SimulationResult] = []
        for target in sorted(TUNE_TARGETS, reverse=True):  # fewest replicas first
            r = run("queue", base.replace(target_ongoing_requests=target), f"queue target_ongoing_requests={target}")
            sweep.append(r)
            comp.queue_sweep.append({"target_ongoing_requests": target, "replica_seconds": r.replica_seconds,
                                     "slo_attainment_requests": r.slo_attainment_requests})
        tq = comp.tuned_queue_for(min(best.slo_attainment_requests, 1.0))
        comp.tuned_target_ongoing_requests = tq["target_ongoing_requests"]
        tuned = next(r for r in sweep if r.policy_config["target_ongoing_requests"] == tq["target_ongoing_requests"])
        tuned.policy = "queue (tuned)"
        comp.tuned_queue = tuned
    return comp


def default_configs(policies: list[str], profile: ModelProfile, slo_p95_ms: float,
                    config_paths: dict[str, str] | None = None) -> dict[str, PolicyConfig]:
    """Each policy's config; `slo`/`predictive` get the objective and the profile's capacity at it."""
    out = {}
    for name in policies:
        path = (config_paths or {}).get(name)
        cfg = load_policy_config(name, path)
        if hasattr(cfg, "slo_p95_ms"):
            cfg = cfg.replace(slo_p95_ms=slo_p95_ms)
            if cfg.capacity_rps_per_replica is None:
                cfg = cfg.replace(capacity_rps_per_replica=round(profile.capacity_rps(slo_p95_ms, 2.0), 3))
        out[name] = cfg
    return out
