"""Fixtures for serve/ tests: small ONNX digits models published into a temporary model repository."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from optimize.examples import DigitsCNN, DigitsMLP
from optiserve.ray_cluster import free_port
from optiserve.repository import MANIFEST_FILE, MODEL_FILE, publish, version_dir


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(
        model.eval(), (example,), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )
    return path


def small_model(kind: str, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """Untrained but seeded: serving tests compare against onnxruntime, not against labels."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return DigitsMLP(hidden=64), torch.zeros(2, 64)
    return DigitsCNN(channels=4), torch.zeros(2, 1, 8, 8)


def publish_model(repo: Path, name: str, kind: str = "mlp", seed: int = 0, tmp: Path | None = None) -> str:
    model, example = small_model(kind, seed)
    tmp = tmp or repo.parent
    onnx_path = export_onnx(model, example, tmp / f"{name}-{kind}-{seed}.onnx")
    return publish(onnx_path, repo, name).version


def corrupt_model(repo: Path, name: str, version: str, *, keep_checksum: bool = False) -> None:
    """Overwrite model.onnx with garbage; keep_checksum rewrites the manifest so only loading can tell."""
    folder = version_dir(repo, name, version)
    (folder / MODEL_FILE).write_bytes(b"not an onnx model" * 10)
    if keep_checksum:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        manifest["sha256"] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def publish_mixed(repo: Path, tmp: Path) -> str:
    """Model `mixed`: BYTES and FP16 tensors (text -> echo, half -> half + half), for the binary extension."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"]), helper.make_node("Add", ["half", "half"], ["double"])],
        "mixed",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
         helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["batch", 2])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"]),
         helper.make_tensor_value_info("double", TensorProto.FLOAT16, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp / "mixed.onnx"
    save(model, str(path))
    return publish(path, repo, "mixed").version


def digits_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """mlp (versions 1, 2) and cnn (version 1)."""
    root = tmp_path_factory.mktemp("repo")
    repo = root / "models"
    publish_model(repo, "mlp", "mlp", seed=1, tmp=root)
    publish_model(repo, "mlp", "mlp", seed=2, tmp=root)
    publish_model(repo, "cnn", "cnn", seed=3, tmp=root)
    return repo


def _resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


_WEIRD = [None, True, -1, 0, 2**63, -(2**70), 1e308, -1.5, "", "x" * 300, "..", "../../etc/passwd", "é\u0000",
          [], [[]], {}, {"a": 1}, [1, "a", None], [[1, 2], [3]]]


def _value(schema: dict, doc: dict, rng: np.random.Generator, depth: int = 0):
    """A random value for a JSON schema; sometimes deliberately wrong (the server must still never 5xx)."""
    schema = _resolve(schema, doc)
    if rng.random() < 0.1 or depth > 4:
        return _WEIRD[rng.integers(len(_WEIRD))]
    if "anyOf" in schema:
        return _value(schema["anyOf"][rng.integers(len(schema["anyOf"]))], doc, rng, depth)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        out = {k: _value(v, doc, rng, depth + 1) for k, v in props.items()
               if k in schema.get("required", []) and rng.random() < 0.95 or rng.random() < 0.5}
        if rng.random() < 0.1:
            out["extra"] = 1
        return out
    if kind == "array":
        return [_value(schema.get("items", {}), doc, rng, depth + 1) for _ in range(rng.integers(0, 4))]
    if kind == "integer":
        return int(rng.choice([0, 1, 2, 64, -1, 10**6, 2**40]))
    if kind == "number":
        return float(rng.normal())
    if kind == "string":
        return str(rng.choice(["FP32", "INT64", "input", "logits", "BYTES", "1", "", "ü"]))
    if kind == "boolean":
        return bool(rng.random() < 0.5)
    return _WEIRD[rng.integers(len(_WEIRD))]


def valid_body(rng: np.random.Generator, rows: int, shape: tuple[int, ...]) -> dict:
    x = rng.random((rows, *shape), dtype=np.float32)
    return {"inputs": [{"name": "input", "shape": [rows, *shape], "datatype": "FP32", "data": x.ravel().tolist()}]}


def fuzz_cases(doc: dict, n: int, seed: int, models: dict[str, tuple[int, ...]]):
    """(method, path, json body or None) drawn from the OpenAPI document: every operation, random path
    parameters (served names, unknown names, odd strings), bodies valid, near-valid or garbage."""
    rng = np.random.default_rng(seed)
    ops = [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items()]
    names = [*models, "nope", "..", "%2e%2e", "a" * 200, "mlp;drop", "UNKNOWN"]
    for i in range(n):
        method, path, op = ops[i % len(ops)]
        model = str(rng.choice(names))
        version = str(rng.choice(["1", "2", "0", "-1", "999999999", "abc", "1.0"]))
        url = path.replace("{model_name}", model).replace("{version}", version)
        body = None
        if "requestBody" in op:
            if model in models and rng.random() < 0.4:
                body = valid_body(rng, int(rng.integers(1, 4)), models[model])
                tensor = body["inputs"][0]
                key = str(rng.choice(["name", "shape", "datatype", "data", "none"]))
                if key != "none":
                    tensor[key] = _value({}, doc, rng)
            else:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = _value(schema, doc, rng)
        yield method, url, body


@contextlib.contextmanager
def running_app(repo: Path, config_path: Path, env: dict[str, str], *, num_cpus: int = 8, ray_init: dict | None = None,
                **start) -> Iterator:
    """optiserve's app on a local Ray head started from this process's environment plus `env` (Ray Serve reads its
    front end from the head's environment); the app, Ray and the environment are put back afterwards."""
    import ray

    import serve

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", **(ray_init or {}))
    try:
        yield serve.start_app(repo, port=free_port(), config_path=config_path, **start)
    finally:
        try:
            serve.stop_app()
        finally:
            ray.shutdown()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def wait_for(predicate, timeout_s: float = 60, what: str = "condition"):
    """predicate()'s first truthy value, asked every 0.3 s; an AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class Helpers:
    """Test helpers as a fixture (pytest's importlib mode makes conftest itself unimportable)."""

    publish = staticmethod(publish_model)
    publish_mixed = staticmethod(publish_mixed)
    corrupt = staticmethod(corrupt_model)
    rows = staticmethod(digits_rows)
    export = staticmethod(export_onnx)
    small_model = staticmethod(small_model)
    fuzz_cases = staticmethod(fuzz_cases)
    valid_body = staticmethod(valid_body)
    free_port = staticmethod(free_port)
    wait_for = staticmethod(wait_for)
    running_app = staticmethod(running_app)


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers
