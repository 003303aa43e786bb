"""The live side of `loadtest capacity`: step loads with Locust against one replica per configuration.

`locust_measure` is the `MeasureFn` capacity.find_capacity calls: one Locust run per staircase (stopped
early once a stair is far over the objective or saturated); each stair's first second is a warm-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optiserve.errors import UserError

from .capacity import CapacityCurve, SearchConfig, StepMeasurement, find_capacity
from .runner import run_locust
from .shapes import staircase
from .stats import summarize

WARMUP_S = 1.0  # dropped at the start of every stair (the queue adjusts to the new rate)
LEAD_IN_S = 3.0  # a first stair at the lowest rate, not measured: Locust spawning users, connections opening


@dataclass(frozen=True)
class ServingSetup:
    """One configuration to measure: replica kind (price table) and batching."""

    replica_kind: str = "cpu-1"
    max_batch_size: int = 1
    batch_wait_ms: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.replica_kind} batch {self.max_batch_size}/{self.batch_wait_ms:g} ms"


def parse_batching(text: str) -> list[tuple[int, float]]:
    """'1:0,8:2' -> [(1, 0.0), (8, 2.0)] (max batch size : batch wait in ms)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        size, _, wait = item.partition(":")
        try:
            b, w = int(size), float(wait or 0)
        except ValueError:
            raise UserError(f"--batching item {item!r} must look like MAX_BATCH:WAIT_MS, e.g. 8:2.") from None
        if b < 1 or w < 0:
            raise UserError(f"--batching item {item!r}: batch size must be >= 1 and wait >= 0.")
        out.append((b, w))
    if not out:
        raise UserError("--batching needs at least one MAX_BATCH:WAIT_MS item.")
    return out


def locust_measure(url: str, model: str, bodies: list[dict], work_dir: Path, slo_p95_ms: float,
                   abort_factor: float = 3.0, users_per_rps: float = 1.0, log=None):
    runs = iter(range(1_000_000))

    def measure(rates: Sequence[float], step_s: float) -> list[StepMeasurement]:
        trace = staircase(list(rates), step_s, LEAD_IN_S)
        k = next(runs)
        if log:
            log(f"  step load {k}: {', '.join(f'{r:g}' for r in rates)} req/s, {step_s:g} s each")
        run = run_locust(url, model, trace, bodies, work_dir / f"steps-{k}", users_per_rps=users_per_rps,
                         abort_p95_ms=slo_p95_ms * abort_factor, abort_window_s=step_s)
        out = []
        for j, rate in enumerate(rates):
            t0, t1 = LEAD_IN_S + j * step_s + WARMUP_S, LEAD_IN_S + (j + 1) * step_s
            if t1 > run.duration_s + 0.5:
                break  # stopped early: the rest was not measured
            s = summarize(run.records.window(t0, t1), t1 - t0)
            out.append(StepMeasurement(float(rate), s.achieved_rps, s.p50_ms, s.p95_ms, s.p99_ms, s.error_rate,
                                       s.requests, duration_s=t1 - t0))
            if log:
                log(f"    {rate:7.1f} req/s offered -> {s.achieved_rps:7.1f} ok/s, p95 {s.p95_ms:7.1f} ms, "
                    f"errors {s.error_rate:.1%}")
        return out

    return measure


def measure_setup(repository: str | Path, model: str, setup: ServingSetup, search: SearchConfig, work_dir: Path,
                  bodies: list[dict], log=None) -> CapacityCurve:
    """Deploy `model` with exactly one replica of `setup`, step-load it, and return its capacity curve."""
    from ._serve_probe import replica_resources, start_model, write_serve_config

    cfg = write_serve_config(work_dir / "serve.yaml", model, num_replicas=1, max_batch_size=setup.max_batch_size,
                             batch_wait_timeout_ms=setup.batch_wait_ms, **replica_resources(setup.replica_kind))
    url = start_model(repository, model, config_path=cfg)
    measure = locust_measure(url, model, bodies, work_dir, search.slo_p95_ms, log=log)
    return find_capacity(measure, search, label=setup.label, replica_kind=setup.replica_kind,
                         max_batch_size=setup.max_batch_size, batch_wait_ms=setup.batch_wait_ms)


def measure_and_plan(model: str, search: SearchConfig, cost, out: Path, *, repository: str | None, url: str | None,
                  replica_kinds: Sequence[str], batching: str, peak_rps: float | None, utilization: float,
                  min_rps: float, downscale_delay_s: float, samples: Path | None = None, seed: int = 0,
                  address: str | None = None, log=print):
    """`loadtest capacity`: the capacity curve of each replica kind x batching setup (deploying one replica of
    each from `repository`), or of the deployment already at `url`, and the capacity plan built from them."""
    import time

    from ._serve_probe import connect_ray, stop_model
    from .capacity import build_report
    from .live import bodies_for
    from .runner import check_loopback

    for kind in replica_kinds:
        cost.prices.price(kind)  # an unknown kind is a clear error before any load
    curves = []
    if url:
        url = check_loopback(url)
        bodies = bodies_for(url, model, repository=repository, samples_path=samples, seed=seed)
        measure = locust_measure(url, model, bodies, out / "as-deployed", search.slo_p95_ms, log=log)
        curves.append(find_capacity(measure, search, label="as deployed", replica_kind=replica_kinds[0]))
    else:
        from .bodies import bodies_from_repository

        setups = [ServingSetup(k, b, w) for k in replica_kinds for b, w in parse_batching(batching)]
        bodies = bodies_from_repository(repository, model, None, 64, samples, seed)
        started = connect_ray(address)
        try:
            for i, setup in enumerate(setups):
                log(f"[{i + 1}/{len(setups)}] {setup.label}: one replica, step load ...")
                t0 = time.monotonic()
                curve = measure_setup(repository, model, setup, search, out / f"config-{i}", bodies, log=log)
                log(f"  capacity {curve.capacity_rps:.1f} req/s (limited by {curve.limited_by}), "
                    f"{time.monotonic() - t0:.0f} s")
                curves.append(curve)
        finally:
            stop_model(model, started)
    return build_report(model, search, curves, peak_rps, cost, utilization, min_rps, downscale_delay_s)
