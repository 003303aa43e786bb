"""The gRPC front end's place in the deployed application and the CLI (no Ray started; test_grpc.py runs it live)."""

import pytest
import yaml

pytest.importorskip("tritonclient.grpc")

from optiserve.errors import UserError  # noqa: E402
from serve._deploy import serve_config, start_app  # noqa: E402
from serve._grpc_router import GRPC_APP, Abort, _answer, grpc_app  # noqa: E402
from serve.cli import main  # noqa: E402
from serve.config import ServeConfig  # noqa: E402


def test_serve_config_carries_the_grpc_app_without_an_http_route(repo):
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(yaml.safe_dump(serve_config(repo, ServeConfig(), port=8123, grpc_port=9123)))
    by_name = {a.name: a for a in ServeDeploySchema(**doc).applications}
    app = by_name[GRPC_APP]
    assert app.route_prefix is None and app.import_path == "serve._grpc_router:grpc_app"
    assert app.args["port"] == 9123 and app.args["host"] == "127.0.0.1" and app.args["models"] == ["cnn", "mlp"]
    grpc_app(app.args)  # the builder named by import_path builds from exactly these args
    assert GRPC_APP not in {a["name"] for a in serve_config(repo, ServeConfig())["applications"]}


def test_config_command_grpc_port_flag(repo, tmp_path):
    out = tmp_path / "serve.yaml"
    assert main(["config", "--repository", str(repo), "-o", str(out)]) == 0
    assert "serve._grpc_router:grpc_app" in out.read_text() and "port: 9000" in out.read_text()
    assert main(["config", "--repository", str(repo), "--grpc-port", "0", "-o", str(out)]) == 0
    assert "grpc" not in out.read_text()
    assert main(["config", "--repository", str(repo), "--grpc-port", "70000"]) == 2


def test_grpc_port_must_differ_from_the_http_port(repo):
    with pytest.raises(UserError, match="gRPC port"):
        start_app(repo, port=8123, grpc_port=8123)


def test_replica_answers_become_payloads_or_grpc_statuses():
    assert _answer((200, b"x", None)) == b"x"
    with pytest.raises(Abort) as info:
        _answer((400, "bad shape", None))
    assert info.value.code.name == "INVALID_ARGUMENT" and info.value.message == "bad shape"
    with pytest.raises(Abort) as info:
        _answer((503, "queue is full", 1.0))
    assert info.value.code.name == "UNAVAILABLE" and info.value.retry_after_s == 1.0
