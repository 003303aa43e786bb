"""Fixtures for serve/ tests: small ONNX digits models published into a temporary model repository."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optimize.examples import DigitsCNN, DigitsMLP
from optimize.repository import MANIFEST_FILE, MODEL_FILE, publish, version_dir


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
