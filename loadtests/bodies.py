"""Open Inference Protocol (KServe v2) request bodies with realistic inputs.

Inputs come from the model's manifest (names, datatypes, shapes with -1 for dynamic axes); values from
sample data when given (an .npz such as the example model's eval.npz, or a CSV/Parquet file, one row per
request), else random values of the right type. Pure numpy: used by the CLI and by the locustfile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from optiserve.errors import UserError

_NUMPY = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT8": np.int8, "INT16": np.int16,
          "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "BOOL": np.bool_}


def _spec(t) -> tuple[str, str, list[int]]:
    if isinstance(t, dict):
        return t["name"], t["datatype"], list(t["shape"])
    return t.name, t.datatype, list(t.shape)


def make_bodies(inputs, n: int = 32, samples: dict[str, np.ndarray] | np.ndarray | None = None,
                seed: int = 0, batch_size: int = 1) -> list[dict]:
    """`n` request bodies of `batch_size` rows each; `inputs` are TensorSpecs or metadata dicts."""
    specs = [_spec(t) for t in inputs]
    if not specs:
        raise UserError("the model declares no inputs, so no request body can be built.")
    if isinstance(samples, np.ndarray):
        if len(specs) != 1:
            raise UserError("sample data as one array fits only a single-input model; give an .npz keyed by "
                            "input name.")
        samples = {specs[0][0]: samples}
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        tensors = []
        for name, dtype, shape in specs:
            if dtype not in _NUMPY:
                raise UserError(f"input {name!r} has datatype {dtype}, which load tests cannot generate.")
            concrete = [batch_size if i == 0 else (d if d > 0 else 1) for i, d in enumerate(shape)]
            src = samples.get(name) if samples else None
            if src is not None and len(src):
                rows = src[rng.integers(0, len(src), batch_size)]
                if list(rows.shape[1:]) != concrete[1:] and int(np.prod(rows.shape[1:])) == int(np.prod(concrete[1:])):
                    rows = rows.reshape(concrete)
                data = rows.astype(_NUMPY[dtype])
            elif dtype.startswith("FP"):
                data = rng.standard_normal(concrete).astype(_NUMPY[dtype])
            elif dtype == "BOOL":
                data = rng.integers(0, 2, concrete).astype(bool)
            else:
                data = rng.integers(0, 10, concrete).astype(_NUMPY[dtype])
            tensors.append({"name": name, "shape": list(data.shape), "datatype": dtype,
                            "data": data.reshape(-1).tolist()})
        bodies.append({"inputs": tensors})
    return bodies


def load_samples(path: str | Path) -> dict[str, np.ndarray] | np.ndarray:
    """Sample inputs read as `optimize` reads data (.npz, CSV, Parquet; labels left out): one array for a file
    with a single input array or feature matrix, else one array per input name."""
    from optiserve.data import load_dataset

    data = load_dataset(Path(path), "sample data")
    return next(iter(data.inputs.values())) if len(data.inputs) == 1 else data.inputs


def bodies_from_repository(repository: str | Path, model: str, version: str | None = None, n: int = 32,
                           samples_path: str | Path | None = None, seed: int = 0) -> list[dict]:
    """Bodies for a published model, shaped by its manifest (latest version unless given)."""
    from optiserve.repository import list_versions, read_manifest

    versions = list_versions(Path(repository), model)
    if not versions:
        raise UserError(f"model {model!r} has no published version in {repository}.")
    manifest = read_manifest(Path(repository), model, version or versions[-1])
    samples = load_samples(samples_path) if samples_path else None
    return make_bodies(manifest.inputs, n, samples, seed)


def write_bodies(bodies: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(bodies))
    return path
