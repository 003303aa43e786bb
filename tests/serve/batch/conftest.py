"""Fixtures for batch inference tests: a tiny linear classifier (64 features -> 10 logits) published into a
repository, and data files in every input format with an `id` key column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FEATURES = 64
CLASSES = 10


def linear_model(path: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """logits = input @ W + b, with a dynamic batch axis; returns (path, W, b)."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    b = rng.standard_normal(CLASSES).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])],
        "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path, w, b


def expected_logits(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ w + b


@pytest.fixture(scope="module")
def batch_repo(tmp_path_factory):
    """(repo, W, b): model `lin` version 1 in a fresh repository."""
    from optiserve.repository import publish

    root = tmp_path_factory.mktemp("batch-repo")
    path, w, b = linear_model(root / "lin.onnx")
    publish(path, root / "repo", "lin")
    return root / "repo", w, b


def rows(n: int, start: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids start..start+n-1, features (n, 64) float32)."""
    rng = np.random.default_rng(seed + start)
    return np.arange(start, start + n, dtype=np.int64), rng.random((n, FEATURES), dtype=np.float32)


def write(path: Path, ids: np.ndarray, x: np.ndarray) -> Path:
    """One data file; the format follows the suffix. Tables: `id`, f0..f63; .npz: id + x; .npy: x only."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    name = path.name
    if name.endswith(".npy"):
        np.save(path, x)
    elif name.endswith(".npz"):
        np.savez(path, id=ids, x=x)
    else:
        table = pa.table({"id": ids, **{f"f{i}": x[:, i] for i in range(x.shape[1])}})
        if name.endswith(".parquet"):
            pq.write_table(table, path, row_group_size=max(1, len(ids) // 3))
        else:
            pcsv.write_csv(table, path)
    return path
