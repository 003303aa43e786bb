"""Replica start cost on Ray Serve: the access-log parser (pure) and one short live run (marks: ray, slow)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from loadtests import serve_logs

APP = "optiserve.m"
CONTROLLER = """INFO 2026-12-01 15:46:05,753 controller 1 -- Deploying new version of Deployment(name='model', app='optiserve.m') (initial target replicas: 0).
INFO 2026-12-01 15:46:05,800 controller 1 -- Starting Replica(id='first', deployment='model', app='optiserve.m').
INFO 2026-12-01 15:46:10,317 controller 1 -- Upscaling Deployment(name='model', app='optiserve.m') from 0 to 1 replicas. Current ongoing requests: 0.27, current running replicas: 0.
INFO 2026-12-01 15:46:10,438 controller 1 -- Starting Replica(id='r1', deployment='model', app='optiserve.m').
INFO 2026-12-01 15:46:11,000 controller 1 -- Starting Replica(id='other', deployment='model', app='optiserve.x').
INFO 2026-12-01 15:46:20,000 controller 1 -- Downscaling Deployment(name='model', app='optiserve.m') from 1 to 0 replicas. Current ongoing requests: 0.00, current running replicas: 1.
INFO 2026-12-01 15:46:30,000 controller 1 -- Upscaling Deployment(name='model', app='optiserve.m') from 1 to 2 replicas. Current ongoing requests: 3.00, current running replicas: 1.
INFO 2026-12-01 15:46:30,100 controller 1 -- Starting Replica(id='r2', deployment='model', app='optiserve.m').
""".splitlines()  # noqa: E501
REPLICA = """INFO 2026-12-01 15:46:12,688 optiserve.m_model r1 -- Started initializing replica.
INFO 2026-12-01 15:46:12,741 optiserve.m_model r1 -- Finished initializing replica.
INFO 2026-12-01 15:46:12,900 optiserve.m_model r1 a1 -- GET /v2/models/m 503 1.0ms
INFO 2026-12-01 15:46:13,250 optiserve.m_model r1 a2 -- POST /v2/models/m 200 3.5ms
INFO 2026-12-01 15:46:15,000 optiserve.m_model r1 a3 -- POST /v2/models/m 200 2.5ms
""".splitlines()


def _ts(h, m, s, ms):
    return datetime(2026, 12, 1, h, m, s, ms * 1000).timestamp()


def test_replica_log_gives_initialized_and_first_successful_request():
    assert serve_logs.replica_log_times(REPLICA) == (pytest.approx(_ts(15, 46, 12, 741)),
                                                     pytest.approx(_ts(15, 46, 13, 250)))
    assert serve_logs.replica_log_times(REPLICA[:3])[1] is None  # start-up lines and a 503 are not served
    assert serve_logs.replica_log_times([]) == (None, None)


def test_controller_log_decisions_and_starts_of_one_app():
    assert serve_logs.upscale_decisions(CONTROLLER, APP) == [(pytest.approx(_ts(15, 46, 10, 317)), 0, 1),
                                                              (pytest.approx(_ts(15, 46, 30, 0)), 1, 2)]
    assert set(serve_logs.replica_starts(CONTROLLER, APP)) == {"first", "r1", "r2"}


def test_timelines_join_decision_start_and_replica_log():
    starts = serve_logs.replica_starts(CONTROLLER, APP)
    times = {"r1": serve_logs.replica_log_times(REPLICA), "r2": (None, None)}
    tls = serve_logs.timelines(serve_logs.upscale_decisions(CONTROLLER, APP), starts, times, model="m")
    assert [t.kind for t in tls] == ["cold", "scale-up"]  # "first" was the deployment, not a decision
    r1 = tls[0]
    assert r1.first_served_s - r1.decision_s == pytest.approx(2.933, abs=1e-3)
    assert r1.running_s - r1.decision_s == pytest.approx(2.424, abs=1e-3)
    assert tls[1].running_s is None  # r2 never initialized: start_samples leaves it out
    from autoscale.startcost import start_samples

    assert len(start_samples(tls)) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_live_replica_start_and_scale_from_zero_are_recorded(tmp_path):
    import ray
    import torch

    from loadtests.cli import main
    from optimize.examples import DigitsMLP
    from optiserve.repository import publish

    torch.manual_seed(0)
    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(DigitsMLP(hidden=32).eval(), (torch.zeros(2, 64),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, dynamo=False)
    publish(onnx_path, tmp_path / "repo", "startm")
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        rc = main(["replica-start", "--repository", str(tmp_path / "repo"), "--model", "startm", "--starts", "1",
                   "--cold", "1", "--profile-out", str(tmp_path / "p.json"),
                   "--out", str(tmp_path / "out")])
    finally:
        from ray import serve as rs

        rs.shutdown()
        ray.shutdown()
    assert rc == 0
    res = json.loads((tmp_path / "out" / "replica_start.json").read_text())
    assert res["replica_start"]["n"] >= 2 and res["replica_start"]["median_s"] > 0
    assert {t["kind"] for t in res["timelines"]} >= {"scale-up", "cold"}
    assert all(t["running_s"] is None or t["running_s"] >= t["decision_s"] for t in res["timelines"])
    prof = json.loads((tmp_path / "p.json").read_text())
    assert prof["replica_start_s"] == pytest.approx(round(res["replica_start"]["median_s"], 3))
    assert prof["notes"]["replica_start"]["n"] == res["replica_start"]["n"]
    assert res["cold_start"]["n"] == 1 and res["cold_start"]["first_request_ms"][0] > 0
