"""The live side of `loadtest validate`: serve the model with a policy, replay a trace against it with Locust,
simulate the same trace, policy and (measured) profile, and compare the two (`validation.compare`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optiserve.errors import UserError

from .result import LoadTestResult, Objectives
from .validation import Validation, compare, validation_html


@dataclass(frozen=True)
class ValidateSetup:
    repository: Path
    model: str
    policy: str
    policy_config: Path | None = None
    min_replicas: int = 1
    max_replicas: int = 4
    max_batch_size: int = 8
    batch_wait_ms: float = 2.0
    replica_kind: str = "cpu-1"
    seed: int = 0
    samples: Path | None = None
    address: str | None = None
    profile: Path | None = None  # a measured ModelProfile; measured from the published model when None
    replica_start_s: float | None = None  # overrides the profile's (default: the policy's profile, else measured)
    calibrate: bool = True  # add the measured serving overhead per batch to the simulator's profile


def validate_live(setup: ValidateSetup, trace, objectives: Objectives, cost, out: Path,
                  log: Callable[[str], None] = print) -> tuple[Validation, LoadTestResult]:
    """Run the live test and the simulation; write simulated.json, validation.json and validation.html."""
    from autoscale.policies import load_policy_config
    from autoscale.simulator import SimConfig, simulate

    from ._serve_probe import connect_ray, replica_sampler, start_model, stop_model, write_serve_config
    from .live import bodies_for, calibrate_profile, run_live

    policy_cfg = load_policy_config(setup.policy, setup.policy_config)  # bad policy/config: fail before serving
    profile = _profile(setup, policy_cfg, log)
    serve_cfg = write_serve_config(out / "serve.yaml", setup.model, max_batch_size=setup.max_batch_size,
                                   batch_wait_timeout_ms=setup.batch_wait_ms)
    started = connect_ray(setup.address)
    try:
        log(f"serving {setup.model} with the {setup.policy} policy ({setup.min_replicas}..{setup.max_replicas} "
            "replicas) ...")
        url = start_model(setup.repository, setup.model, config_path=serve_cfg, policy=setup.policy,
                          policy_config=setup.policy_config, min_replicas=setup.min_replicas,
                          max_replicas=setup.max_replicas)
        bodies = bodies_for(url, setup.model, repository=setup.repository, samples_path=setup.samples,
                            seed=setup.seed)
        overhead = 0.0
        if setup.calibrate:
            profile, overhead = calibrate_profile(profile, url, setup.model, bodies)
            log(f"simulator profile: +{overhead:.1f} ms measured serving overhead per batch")
        live = run_live(url, setup.model, trace, out / "live", objectives=objectives, bodies=bodies,
                        sampler=replica_sampler(setup.model), replica_kind=setup.replica_kind, cost_model=cost,
                        policy=setup.policy, seed=setup.seed)
    finally:
        stop_model(setup.model, started)
    sim = simulate(trace, setup.policy, policy_cfg, profile,
                   SimConfig(min_replicas=setup.min_replicas, max_replicas=setup.max_replicas,
                             slo_p95_ms=objectives.slo_p95_ms, replica_kind=setup.replica_kind, seed=setup.seed,
                             timeseries_step_s=1.0), cost)
    sim.save(out / "simulated.json")
    v = compare(live, sim, setup.policy, overhead)
    v.save(out / "validation.json")
    (out / "validation.html").write_text(validation_html(v, live))
    return v, live


def _profile(setup: ValidateSetup, policy_cfg, log):
    from autoscale.profile import ModelProfile, measure_profile, replica_start_s_of
    from optiserve.repository import list_versions, version_dir

    versions = list_versions(setup.repository, setup.model)
    if not versions:
        raise UserError(f"model {setup.model!r} has no published version in {setup.repository}.")
    if setup.profile:
        profile = ModelProfile.load(setup.profile)
        if setup.replica_start_s is not None:
            profile = ModelProfile.from_dict({**profile.to_dict(), "replica_start_s": setup.replica_start_s})
        return profile
    log("measuring the model's latency profile for the simulator ...")
    start_s = setup.replica_start_s if setup.replica_start_s is not None else \
        replica_start_s_of(getattr(policy_cfg, "profile_path", None))
    return measure_profile(version_dir(setup.repository, setup.model, versions[-1]) / "model.onnx",
                           replica_start_s=start_s, max_batch_size=setup.max_batch_size,
                           batch_wait_ms=setup.batch_wait_ms, repeats=10)
