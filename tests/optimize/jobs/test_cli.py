"""The jobs/runs CLI without Ray: parsing, job templates from flags and YAML, listings, user errors -> exit 2."""

import json

import pytest

from optimize.cli import main
from optimize.jobs.cli import parse_memory_mb


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTISERVE_STATE_DIR", str(tmp_path / "state"))
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    return tmp_path, model


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_create_from_flags_then_list_show_delete(state, capsys):
    tmp, model = state
    assert main(["jobs", "create", "quant", str(model), "--command", "quantize", "--param", "input_shape=1,64",
                 "--param", "no_per_channel=true", "--env", "OMP_NUM_THREADS=1", "--arg=--repeats 5", "--cpus", "2",
                 "--memory", "1g", "--max-runtime", "30m", "--hook-url", "http://127.0.0.1:9/x", "--hook-on",
                 "succeeded,failed", "--on-success-trigger", "quant:model.onnx"]) == 0
    job = _json(capsys, ["jobs", "show", "quant", "--json"])
    assert job["recipe"] == {"command": "quantize", "params": {"input_shape": "1,64", "no_per_channel": True},
                             "kind": "optimize", "artifact_flag": ""}
    assert job["env"] == {"OMP_NUM_THREADS": "1"} and job["args"] == ["--repeats", "5"]
    assert job["compute"] == {"cpus": 2.0, "gpus": 0.0, "memory_mb": 1024, "resources": {}}
    assert job["max_runtime_s"] == 1800
    assert [(h["kind"], h["on"]) for h in job["hooks"]] == [("http", ["succeeded", "failed"]),
                                                            ("trigger", ["succeeded"])]
    assert job["hooks"][1]["artifact_from"] == "model.onnx"
    assert [j["name"] for j in _json(capsys, ["jobs", "list", "--json"])] == ["quant"]
    assert main(["jobs", "list"]) == 0 and "quant" in capsys.readouterr().out
    assert main(["jobs", "delete", "quant"]) == 0
    assert _json(capsys, ["jobs", "list", "--json"]) == []


def test_create_from_yaml_spec_flags_win(state, capsys):
    tmp, model = state
    spec = tmp / "job.yaml"
    spec.write_text(
        "recipe:\n  command: quantize\n  params: {method: dynamic, repeats: 5}\n"
        "env: {A: '1'}\nargs: [--input-shape, '1,64']\ncompute: {cpus: 1, resources: {big: 1}}\n"
        "max_runtime: 10m\nlogs: {max_kept_mb: 2}\n"
        "hooks:\n  - {kind: shell, on: ['*'], command: 'echo $OPTISERVE_RUN_STATE'}\n")
    assert main(["jobs", "create", "q2", str(model), "--from-file", str(spec), "--cpus", "3"]) == 0
    job = _json(capsys, ["jobs", "show", "q2", "--json"])
    assert job["recipe"]["params"] == {"method": "dynamic", "repeats": 5}
    assert job["compute"]["cpus"] == 3 and job["compute"]["resources"] == {"big": 1}
    assert job["max_runtime_s"] == 600 and job["logs"]["max_kept_mb"] == 2 and job["hooks"][0]["kind"] == "shell"


@pytest.mark.parametrize("argv,message", [
    (["--command", "quantize", "--max-runtime", "soon"], "cannot read the duration"),
    (["--command", "quantize", "--max-runtime", "48h"], "max run time must be between"),
    (["--command", "quantize", "--env", "NOEQUALS"], "KEY=VALUE"),
    (["--command", "quantize", "--memory", "lots"], "memory size"),
    (["--kind", "python", "--command", "absent.py"], "does not exist"),
    (["--command", "quantize", "--on-success-trigger", "nosuchjob"], "no job named 'nosuchjob'"),
    ([], "needs a command"),
])
def test_bad_job_specs_are_one_line_errors(state, capsys, argv, message):
    _, model = state
    assert main(["jobs", "create", "bad", str(model), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_things_are_user_errors(state, capsys):
    tmp, _ = state
    assert main(["jobs", "create", "x", str(tmp / "absent.pt"), "--command", "quantize"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["jobs", "run", "nope"]) == 2
    assert "no job named 'nope'" in capsys.readouterr().err
    assert main(["runs", "show", "nope-1"]) == 2
    assert "no run with id" in capsys.readouterr().err
    assert _json(capsys, ["runs", "list", "--json"]) == []
    assert _json(capsys, ["runs", "events", "--json"]) == []


def test_parse_memory():
    assert parse_memory_mb("512m") == 512 and parse_memory_mb("2g") == 2048 and parse_memory_mb("2GiB") == 2048
    assert parse_memory_mb("100") == 100 and parse_memory_mb(None) is None
