"""Live load tests against a real Ray Serve application (marks: ray, locust, slow).

One embedded Ray per module. The model is a small digits MLP published into a temporary repository;
the `slo` policy gets a deliberately small capacity per replica and short delays, so a step trace of
tens of seconds makes it scale up and back down. Then a live capacity search on one replica, checked for
what it must hold whatever the machine's speed (how its figure compares with a direct benchmark is measured in
benchmarks/bench_loadtest.py).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.locust, pytest.mark.slow]

MODEL = "digits-lt"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import torch

    from optimize.examples import DigitsMLP
    from optiserve.repository import publish

    tmp = tmp_path_factory.mktemp("lt-repo")
    torch.manual_seed(0)
    onnx_path = tmp / "m.onnx"
    torch.onnx.export(DigitsMLP(hidden=64).eval(), (torch.zeros(2, 64),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, dynamo=False)
    publish(onnx_path, tmp / "repo", MODEL)
    return tmp / "repo"


@pytest.fixture(scope="module")
def ray_local():
    from loadtests._serve_probe import connect_ray, stop_model

    started = connect_ray()
    yield
    stop_model(MODEL, started)


def test_step_load_scales_up_and_down_with_verdict_and_report(repo, ray_local, tmp_path):
    import yaml

    from loadtests._serve_probe import replica_sampler, start_model
    from loadtests.live import bodies_for, run_live
    from loadtests.result import LoadTestResult, Objectives
    from loadtests.shapes import build_trace

    policy = tmp_path / "slo.yaml"
    policy.write_text(yaml.safe_dump({"slo": {"slo_p95_ms": 200, "capacity_rps_per_replica": 12, "headroom": 0.0,
                                              "downscale_delay_s": 4, "look_back_period_s": 12}}))
    url = start_model(repo, MODEL, policy="slo", policy_config=policy, min_replicas=1, max_replicas=3)
    bodies = bodies_for(url, MODEL, repository=repo)
    trace = build_trace("step", 70, {"base_rps": 4, "peak_rps": 30, "step_up_at_s": 5, "step_down_at_s": 20})
    out = tmp_path / "run"
    result = run_live(url, MODEL, trace, out, objectives=Objectives(slo_p95_ms=200, max_error_rate=0.05),
                      bodies=bodies, sampler=replica_sampler(MODEL), policy="slo", show_progress=False)

    rs = result.replica_summary
    assert rs.scale_ups >= 1 and rs.scale_downs >= 1, [(s.t_s, s.running, s.starting) for s in result.replicas]
    assert rs.max_replicas >= 2
    # it came down after its peak; not necessarily by the trace's end: the policy reads latency too, and on a busy
    # machine (a fresh clone's suite beside another) the lull's latency once asked for the replica back at 70 s
    peak_at = next(i for i, s in enumerate(result.replicas) if s.committed == rs.max_replicas)
    assert any(s.committed < rs.max_replicas for s in result.replicas[peak_at:]), \
        [(s.t_s, s.running, s.starting) for s in result.replicas]
    assert result.summary.requests > 0.5 * result.target_requests
    assert [c.name for c in result.verdict.checks] == ["p95 latency (ms)", "error rate"]
    assert result.verdict.passed == all(c.passed for c in result.verdict.checks)
    assert result.cost.replica_seconds == pytest.approx(rs.replica_seconds)
    # the report: JSON (reloadable), CSVs, self-contained HTML
    assert LoadTestResult.load(out / "results.json").summary.requests == result.summary.requests
    assert (out / "timeseries.csv").read_text().count("\n") == len(result.timeseries) + 1
    assert "data:image/png;base64," in (out / "report.html").read_text()
    _open_in_chromium(out / "report.html", tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _open_in_chromium(page, tmp_path) -> None:
    """Load the report in real headless Chromium; fail on any console error or failed resource."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (`make test` installs the Debian `chromium` package; the "
                    "install failed or was not run), so the report was not opened in a browser")
    profile = tmp_path / "chromium-profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Verdict:" in proc.stdout and "<img" in proc.stdout  # the DOM was rendered from the file
    # The report has no script, so any console message at all (Chromium logs them as ...:CONSOLE...) is a fault.
    console_errors = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    failed_loads = [ln for ln in proc.stderr.splitlines() if "net::ERR_" in ln]
    assert not console_errors and not failed_loads, "\n".join(console_errors + failed_loads)


def test_capacity_search_runs_live_and_plans(repo, ray_local, tmp_path):
    """The live search end to end: Locust steps against a served replica, judged, bracketed and planned. How the
    capacity it finds compares with a direct saturation benchmark is a measurement, not a rule, so it lives in
    benchmarks/bench_loadtest.py; the search's logic is tested with injected measurements in test_capacity.py."""
    from loadtests._serve_probe import start_model, write_serve_config
    from loadtests.bodies import bodies_from_repository
    from loadtests.capacity import SearchConfig, build_report, find_capacity
    from loadtests.capacity_live import locust_measure
    from loadtests.report import write_capacity_report

    cfg = write_serve_config(tmp_path / "serve.yaml", MODEL, num_replicas=1, max_batch_size=8,
                             batch_wait_timeout_ms=2)
    url = start_model(repo, MODEL, config_path=cfg)
    bodies = bodies_from_repository(repo, MODEL, n=16)
    search = SearchConfig(slo_p95_ms=1000, start_rps=5, growth=2, step_s=4, refine_steps=2, max_rps=2000)
    curve = find_capacity(locust_measure(url, MODEL, bodies, tmp_path, search.slo_p95_ms), search)
    offered = [s.offered_rps for s in curve.steps]
    assert offered == sorted(offered) and offered[0] == pytest.approx(5)
    assert all(s.achieved_rps > 0 for s in curve.steps if s.passed)  # every passing step really served load
    assert curve.capacity_rps == max((s.achieved_rps for s in curve.steps if s.passed), default=0.0)
    assert curve.limited_by in ("max_rps", "unreachable") or any(not s.passed for s in curve.steps)
    if curve.capacity_rps == 0:
        pytest.skip(f"no step passed on this loaded machine: {[(s.offered_rps, s.p95_ms) for s in curve.steps]}")
    report = build_report(MODEL, search, [curve], peak_rps=curve.capacity_rps * 4)
    paths = write_capacity_report(report, tmp_path / "capacity")
    assert report.plans[0].replicas_needed >= 4
    assert "capacity_rps_per_replica" in paths["html"].read_text()
