"""One live load test end to end: request bodies, Locust run, replica samples -> LoadTestResult + report."""

from __future__ import annotations

import time
from pathlib import Path

from autoscale.cost import CostModel
from autoscale.traces import Trace
from optiserve.errors import UserError

from .bodies import load_samples, make_bodies
from .report import write_run_report
from .result import LoadTestResult, Objectives, RunConfig, build_result
from .runner import Sampler, check_loopback, run_locust


def bodies_for(url: str, model: str, *, repository: str | Path | None = None, version: str | None = None,
               samples_path: str | Path | None = None, n: int = 64, seed: int = 0) -> list[dict]:
    """Request bodies shaped by the manifest (from `repository`) or else by the server's model metadata."""
    samples = load_samples(samples_path) if samples_path else None
    if repository is not None:
        from .bodies import bodies_from_repository

        return bodies_from_repository(repository, model, version, n, samples_path, seed)
    import httpx

    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    try:
        r = httpx.get(check_loopback(url) + path, timeout=10)
    except httpx.HTTPError as exc:
        raise UserError(f"cannot reach {url} ({type(exc).__name__}); is the model being served?") from None
    if r.status_code != 200:
        raise UserError(f"{url}{path} answered HTTP {r.status_code}; is model {model!r} served there?")
    return make_bodies(r.json()["inputs"], n, samples, seed)


def run_live(url: str, model: str, trace: Trace, out_dir: str | Path, *, objectives: Objectives,
             bodies: list[dict], sampler: Sampler | None = None, replica_kind: str = "cpu-1",
             cost_model: CostModel | None = None, policy: str | None = None, seed: int = 0,
             users_per_rps: float = 1.0, show_progress: bool = True) -> LoadTestResult:
    """Play `trace` against the model, write results.json, CSVs and report.html into `out_dir`."""
    out = Path(out_dir)
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("load test {task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/"
                      "{task.total:.0f} s"), TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(f"{model} ({trace.kind})", total=trace.duration_s)
            run = run_locust(url, model, trace, bodies, out / "locust", sampler=sampler, seed=seed,
                             users_per_rps=users_per_rps,
                             progress=lambda done, total: bar.update(task, completed=min(done, trace.duration_s)))
    else:
        run = run_locust(url, model, trace, bodies, out / "locust", sampler=sampler, seed=seed,
                         users_per_rps=users_per_rps)
    config = RunConfig(url=url, model=model, shape=trace.kind, duration_s=trace.duration_s,
                       trace_params={k: v for k, v in trace.params.items() if isinstance(v, str | int | float)},
                       replica_kind=replica_kind, users=run.users, policy=policy, seed=seed)
    result = build_result(config, objectives, run.records, run.samples, run.started_unix_s, run.duration_s,
                          cost_model, target_rps=trace.rate_at)
    write_run_report(result, out)
    return result


def calibrate_profile(profile, url: str, model: str, bodies: list[dict], n: int = 30):
    """The profile with the served path's per-request overhead (HTTP, proxy, routing) added to every batch.

    The simulator otherwise sees only onnxruntime's time. Overhead = median unloaded latency over HTTP minus
    the profile's batch-1 latency (never negative). Returns (calibrated profile, overhead_ms).
    """
    import json
    import statistics

    import httpx

    from autoscale.profile import ModelProfile

    samples = []
    with httpx.Client(timeout=30) as client:
        for i in range(n + 3):
            body = json.dumps(bodies[i % len(bodies)])
            t = time.perf_counter()
            r = client.post(f"{url}/v2/models/{model}/infer", content=body,
                            headers={"Content-Type": "application/json"})
            if r.status_code == 200 and i >= 3:  # the first few warm connections and caches
                samples.append((time.perf_counter() - t) * 1000.0)
    if not samples:
        raise UserError(f"model {model} at {url} answered no inference request; cannot calibrate the simulator.")
    overhead = max(0.0, statistics.median(samples) - float(profile.latency_ms(1)))
    curve = {b: v + overhead for b, v in profile.batch_latency_ms.items()}
    notes = {**profile.notes, "http_overhead_ms": round(overhead, 3)}
    return ModelProfile(curve, profile.replica_start_s, profile.max_batch_size, profile.batch_wait_ms,
                        profile.source + " + measured HTTP overhead", notes), overhead
