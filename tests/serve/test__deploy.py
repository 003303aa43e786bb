"""Planning and the generated Ray Serve config file (no Ray started)."""

import pytest
import yaml

from serve._deploy import grpc_missing, plan, serve_config
from serve.config import ServeConfig


def test_plan_picks_newest_loadable_version_and_skips_broken_models(tmp_path, helpers):
    repo = tmp_path / "models"
    helpers.publish(repo, "mlp", seed=1, tmp=tmp_path)
    helpers.publish(repo, "mlp", seed=2, tmp=tmp_path)
    helpers.corrupt(repo, "mlp", "2")
    helpers.publish(repo, "broken", seed=3, tmp=tmp_path)
    helpers.corrupt(repo, "broken", "1", keep_checksum=True)
    served, skipped = plan(repo, ServeConfig())
    assert served == {"mlp": "1"}
    assert "broken" in skipped and "onnxruntime cannot load" in skipped["broken"]
    pinned, _ = plan(repo, ServeConfig(models={"mlp": {"version": "2"}}))
    assert pinned == {}


def test_serve_config_is_a_valid_ray_serve_deploy_file(repo):
    from ray.serve.schema import ServeDeploySchema

    from serve.app import model_app, server_app

    cfg = ServeConfig(models={"cnn": {"max_batch_size": 8}})
    doc = yaml.safe_load(yaml.safe_dump(serve_config(repo, cfg, port=8123)))
    schema = ServeDeploySchema(**doc)
    by_name = {a.name: a for a in schema.applications}
    assert set(by_name) == {"optiserve", "optiserve.mlp", "optiserve.cnn"}
    assert by_name["optiserve.cnn"].route_prefix == "/v2/models/cnn"
    assert by_name["optiserve.cnn"].args["model_config"]["max_batch_size"] == 8
    assert doc["http_options"] == {"host": "127.0.0.1", "port": 8123}
    # the builders named by import_path build applications from exactly these args
    model_app(by_name["optiserve.mlp"].args)
    server_app(by_name["optiserve"].args)


def test_grpc_is_turned_off_with_the_reason_when_tritonclient_is_missing(monkeypatch):
    import sys

    assert grpc_missing() is None  # make installs tritonclient
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as after a plain `pip install optiserve`
    monkeypatch.delitem(sys.modules, "serve._grpc", raising=False)
    assert "pip install 'tritonclient[grpc]'" in grpc_missing()


def test_a_head_started_for_a_server_keeps_clear_of_its_ports(monkeypatch):
    """The head `start_app` starts picks its side ports (HAProxy's, Ray's own) around the HTTP and gRPC ports the
    server binds next (a clash made `make demo` fail once: the head's node manager took the chosen gRPC port)."""
    import ray

    from optiserve import ray_cluster
    from serve import _deploy

    excluded, started = [], {}

    def free_ports(count, exclude=frozenset()):
        excluded.append(set(exclude))
        return [21000 + len(excluded)] * count

    def ensure_cluster(address=None, env=None, exclude=()):
        started.update(env=env, exclude=set(exclude))
        raise RuntimeError("stop before starting Ray")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_cluster, "free_ports", free_ports)
    monkeypatch.setattr(ray_cluster, "ensure_cluster", ensure_cluster)
    with pytest.raises(RuntimeError, match="stop before"):
        _deploy._connect(None, "haproxy", frozenset({25001, 25002}))
    assert started["exclude"] == {25001, 25002} and excluded and all(e == {25001, 25002} for e in excluded)
