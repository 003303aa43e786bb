"""The front-end settings (HAProxy direct ingress vs Serve's Python proxy) and how they reach Ray (no Ray started)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optiserve.errors import UserError
from serve import _ingress
from serve._deploy import AppInfo, cluster_env_comment, model_app_args, serve_config
from serve.app import deployment_options
from serve.config import ModelConfig, ServeConfig, load_config

NODE_ID = "f" * 56  # Ray puts each node's HAProxy files under <folder>/<node id>/


def ports():
    counter = itertools.count(20000)
    return lambda: next(counter)


def test_chosen_ingress_config_then_env_then_haproxy():
    assert _ingress.chosen_ingress(None, {}) == "haproxy"
    assert _ingress.chosen_ingress(None, {"OPTISERVE_INGRESS": "proxy"}) == "proxy"
    assert _ingress.chosen_ingress("haproxy", {"OPTISERVE_INGRESS": "proxy"}) == "haproxy"
    with pytest.raises(ValueError, match="haproxy, proxy"):
        _ingress.chosen_ingress(None, {"OPTISERVE_INGRESS": "nginx"})


def test_cluster_env_enables_haproxy_with_private_files_and_ports(tmp_path):
    env = _ingress.cluster_env("haproxy", "cluster-a", ports(), base=tmp_path)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert _ingress.fast_path_active(env)
    folder = Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"):
        assert Path(env[key]).parent == folder
    # HAProxy refuses admin sockets over 97 bytes, after Ray adds the node id
    sock = Path(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    assert len(str(sock.parent / NODE_ID / sock.name)) <= 97
    side_ports = [env[k] for k in env if k.endswith("_PORT")]
    assert len(side_ports) == 4 and len(set(side_ports)) == 4
    other = _ingress.cluster_env("haproxy", "cluster-b", ports(), base=tmp_path)
    assert other["RAY_SERVE_HAPROXY_SOCKET_PATH"] != env["RAY_SERVE_HAPROXY_SOCKET_PATH"]


def _ray_reads(constant: str, environ: dict) -> str:
    code = f"from ray.serve._private import constants as c; print(c.{constant})"
    run = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True,
                         timeout=120)
    return run.stdout.split()[-1]


@pytest.mark.parametrize(("settings", "constant", "ours", "rays"), [
    (_ingress.LOCAL_DRAIN, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "5.0", "30.0"),
    (_ingress.NO_HAPROXY_METRICS, "RAY_SERVE_HAPROXY_METRICS_ENABLED", "False", "True"),
])
def test_local_head_settings_reach_ray_under_the_names_it_reads(tmp_path, settings, constant, ours, rays):
    """The local head's drain window and HAProxy's per-request metrics log are Ray env vars; a Ray upgrade that
    renamed one would silently bring Ray's default back."""
    env = _ingress.cluster_env("haproxy", "k", ports(), base=tmp_path)
    (name, value), = settings.items()
    assert env[name] == value
    assert _ray_reads(constant, {**os.environ, name: value}) == ours
    assert _ray_reads(constant, {k: v for k, v in os.environ.items() if k != name}) == rays


def test_long_temp_dirs_fall_back_to_a_short_folder(tmp_path):
    deep = tmp_path / ("x" * 80)
    sock = Path(_ingress.cluster_env("haproxy", "k", ports(), base=deep)["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    assert len(str(sock.parent / NODE_ID / sock.name)) <= 97


def test_proxy_needs_no_environment():
    assert _ingress.cluster_env("proxy", "k", ports()) == {}
    assert _ingress.replica_env("proxy") == {}
    assert not _ingress.fast_path_active({})


def test_serve_config_field_is_validated(tmp_path):
    assert ServeConfig(ingress="proxy").ingress == "proxy"
    path = tmp_path / "serve.yaml"
    path.write_text("ingress: nginx\n")
    with pytest.raises(UserError, match="ingress"):
        load_config(path)


def test_deployment_carries_the_replica_side_flags_in_its_runtime_env():
    fast = deployment_options(ModelConfig(), ingress="haproxy")
    env = fast["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env == _ingress.LEAN_REPLICA_FLAGS
    # never the controller-level flags: a replica with direct ingress under a proxy controller would be wrong
    assert not set(env) & set(_ingress.FAST_PATH_FLAGS)
    assert "runtime_env" not in deployment_options(ModelConfig(), ingress="proxy")["ray_actor_options"]


def test_replicas_resolve_the_middleware_hook_as_ray_does():
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    path = _ingress.LEAN_REPLICA_FLAGS["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    middlewares = validate_http_proxy_callback_return(call_function_from_import_path(path))
    assert [m.cls for m in middlewares] == [_ingress.ReplicaFrontDoor]


def _run_middleware(scope, shortcut_prefix=None, shortcut_loop="same"):
    """Run one request through the front door; returns (what Ray's app saw, what the model app saw)."""
    import asyncio

    seen, direct = {}, {}

    async def ray_app(scope, receive, send):
        seen.update(scope)

    async def model_app(scope, receive, send):
        direct.update(scope)

    async def main():
        if shortcut_prefix is not None:
            _ingress.serve_infer_directly(shortcut_prefix, model_app)
            if shortcut_loop != "same":
                _ingress._shortcut = _ingress._shortcut._replace(loop=asyncio.new_event_loop())
        await _ingress.ReplicaFrontDoor(ray_app)(scope, None, None)

    try:
        asyncio.run(main())
    finally:
        _ingress._shortcut = None
    return seen, direct


def test_http_requests_are_marked_as_not_needing_the_disconnect_watch():
    from ray.serve._private.http_util import parse_disconnect_disabled_header

    headers = [(b"content-type", b"application/json")]
    seen, _ = _run_middleware({"type": "http", "method": "GET", "headers": headers})
    assert parse_disconnect_disabled_header(dict(seen["headers"]))
    assert headers == [(b"content-type", b"application/json")]  # the server's own list is not changed
    # a client's own value cannot turn the watch back on: the header added last wins in Ray's dict(headers)
    seen, _ = _run_middleware({"type": "http", "method": "GET", "headers": [(b"x-request-disconnect-disabled", b"?0")]})
    assert parse_disconnect_disabled_header(dict(seen["headers"]))
    assert "headers" not in _run_middleware({"type": "lifespan"})[0]


def _post(path, root_path=""):
    return {"type": "http", "method": "POST", "path": path, "root_path": root_path, "headers": []}


@pytest.mark.parametrize("path", ["/v2/models/m/infer", "/v2/models/m/versions/3/infer"])
def test_infer_requests_go_straight_to_the_model_app_mounted_at_its_prefix(path):
    seen, direct = _run_middleware(_post(path), "/v2/models/m/")
    assert not seen and direct["path"] == path and direct["root_path"] == "/v2/models/m"
    assert direct["headers"] == []  # Ray's disconnect header is Ray's business only
    # uvicorn's own root path is in both path and root_path; the prefix is matched after it, mounted after it
    seen, direct = _run_middleware(_post("/api" + path, "/api"), "/v2/models/m")
    assert not seen and direct["root_path"] == "/api/v2/models/m"


@pytest.mark.parametrize("scope", [
    _post("/v2/models/m/ready"), _post("/v2/models/m"), _post("/v2/models/m/versions//infer"),
    _post("/v2/models/m/versions/1/2/infer"), _post("/v2/models/other/infer"), _post("/v2/models/mx/infer"),
    {**_post("/v2/models/m/infer"), "method": "GET"},
])
def test_every_other_request_takes_rays_path(scope):
    seen, direct = _run_middleware(scope, "/v2/models/m")
    assert seen["path"] == scope["path"] and not direct


def test_no_shortcut_without_a_model_replica_or_from_another_event_loop():
    assert _run_middleware(_post("/v2/models/m/infer"))[0]  # the server app's replica registers none
    seen, direct = _run_middleware(_post("/v2/models/m/infer"), "/v2/models/m", shortcut_loop="other")
    assert seen and not direct  # user code on its own thread's loop: the batcher lives there, so Ray's path


def test_replicas_raise_only_the_youngest_gc_generation_threshold():
    import gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        _ingress.tune_gc()
        assert gc.get_threshold() == (_ingress.GC_GEN0_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_serve_deploy_file_carries_the_same_settings(repo):
    from ray.serve.schema import ServeDeploySchema

    from serve.app import model_app

    cfg = ServeConfig(ingress="haproxy")
    doc = serve_config(repo, cfg, port=8123)
    ServeDeploySchema(**yaml.safe_load(yaml.safe_dump(doc)))
    apps = {a["name"]: a for a in doc["applications"]}
    assert apps["optiserve.mlp"]["args"]["ingress"] == "haproxy"
    built = model_app(apps["optiserve.mlp"]["args"])
    options = built._bound_deployment.ray_actor_options
    assert options["runtime_env"]["env_vars"] == _ingress.LEAN_REPLICA_FLAGS
    comment = cluster_env_comment(cfg)
    assert all(line.startswith("#") for line in comment.splitlines())
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in comment and "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in comment
    assert "RAY_SERVE_HAPROXY_METRICS_ENABLED=0" in comment and "RAY_worker_niceness=0" in comment  # recommended
    assert "no cluster environment" in cluster_env_comment(ServeConfig(ingress="proxy"))


def test_model_app_args_default_to_the_configured_ingress(repo, monkeypatch):
    monkeypatch.setenv("OPTISERVE_INGRESS", "proxy")
    assert model_app_args(repo, "mlp", ServeConfig(), None)["ingress"] == "proxy"
    assert model_app_args(repo, "mlp", ServeConfig(ingress="haproxy"), None)["ingress"] == "haproxy"


def test_app_info_reads_records_written_before_the_ingress_field():
    old = '{"urls": {}, "models": {"mlp": "1"}, "host": "127.0.0.1", "port": 8000}'
    info = AppInfo.from_json(old)
    assert info.ingress == "proxy" and info.notes == []


def test_local_head_is_started_with_the_ingress_environment(tmp_path, monkeypatch):
    """The env reaches `ray start --head` (whose controller, proxies and replicas inherit it) and is recorded."""
    import urllib.request

    from optiserve import ray_cluster

    seen = {}

    class FakeProc:
        pid = 424242

        def poll(self):
            return None

    def fake_popen(cmd, **kwargs):
        seen["cmd"], seen["env"] = cmd, kwargs.get("env")
        return FakeProc()

    monkeypatch.setenv("OPTISERVE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: None)
    monkeypatch.setattr(ray_cluster, "use_token_auth_if_available", lambda: None)
    env = _ingress.cluster_env("haproxy", "test", ports(), base=tmp_path)
    cluster = ray_cluster.ensure_cluster(env=env)
    assert "--head" in seen["cmd"]
    assert {k: seen["env"][k] for k in env} == env
    assert seen["env"]["PATH"]  # the rest of the caller's environment is kept
    recorded = ray_cluster._recorded(tmp_path)
    assert recorded.env == env and recorded == cluster
