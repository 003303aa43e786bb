"""The model repository: `REPO/<name>/<version>/model.onnx` + `manifest.json`, written atomically.

optimize/ publishes into it; serve/ reads it. A version folder appears only once complete: files are
written into a hidden staging folder beside it and renamed into place, so a crash never leaves a
half-written version. Names and versions are checked so they cannot escape the repository folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiserve.errors import UserError
from optiserve.hashing import sha256_file

if TYPE_CHECKING:  # onnx is imported where a model is read: 0.3 s that verify() and serving replicas skip
    import onnx

MANIFEST_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")

# ONNX element type (onnx.TensorProto's name) -> Open Inference Protocol (KServe v2) datatype.
_KSERVE_DTYPES = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "DOUBLE": "FP64", "INT8": "INT8", "INT16": "INT16", "INT32": "INT32",
    "INT64": "INT64", "UINT8": "UINT8", "BOOL": "BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: shape uses -1 for a dynamic axis (as KServe v2 metadata does)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str  # of model.onnx
    source_sha256: str | None = None  # of the model the user gave optimize
    created_unix_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        for key in ("inputs", "outputs"):
            data[key] = [TensorSpec(**t) for t in data[key]]
        return cls(**data)


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserError(f"model name {name!r} is invalid: use letters, digits, '.', '_' or '-' (no slashes)")
    return name


def check_version(version: str) -> str:
    if not _VERSION.match(str(version)):
        raise UserError(f"model version {version!r} is invalid: versions are positive integers")
    return str(version)


def tensor_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of an ONNX graph; symbolic or missing dims become -1."""
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    kserve = {getattr(onnx.TensorProto, k): v for k, v in _KSERVE_DTYPES.items()}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        ttype = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        return TensorSpec(value.name, kserve.get(ttype.elem_type, "BYTES"), dims)

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def list_versions(repo: Path, name: str) -> list[str]:
    folder = Path(repo) / check_name(name)
    if not folder.is_dir():
        return []
    versions = [p.name for p in folder.iterdir() if p.is_dir() and _VERSION.match(p.name)]
    return sorted(versions, key=int)


def list_models(repo: Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and _NAME.match(p.name) and list_versions(repo, p.name))


def version_dir(repo: Path, name: str, version: str) -> Path:
    return Path(repo) / check_name(name) / check_version(version)


def read_manifest(repo: Path, name: str, version: str) -> Manifest:
    path = version_dir(repo, name, version) / MANIFEST_FILE
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: publish the model with `optimize quantize --publish`") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path} is not a valid manifest ({exc}); republish the model") from None


def verify(repo: Path, name: str, version: str) -> Manifest:
    """Read a version's manifest and check the model file's checksum against it."""
    manifest = read_manifest(repo, name, version)
    model_path = version_dir(repo, name, version) / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"{model_path} is missing; republish the model")
    if sha256_file(model_path) != manifest.sha256:
        raise UserError(f"{model_path} does not match the sha256 in its manifest: the file is corrupt or was changed")
    return manifest


def publish(
    model_path: Path, repo: Path, name: str, *, source_sha256: str | None = None,
    report: dict[str, Any] | None = None, version: str | None = None,
) -> Manifest:
    """Copy an ONNX model into REPO/NAME/<next version>/ with its manifest; returns the manifest."""
    import onnx

    check_name(name)
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for a bad file
        raise UserError(f"cannot publish {model_path}: it is not a readable ONNX model ({exc})") from None
    inputs, outputs = tensor_specs(model)
    folder = Path(repo) / name
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        shutil.copyfile(model_path, staging / MODEL_FILE)
        while True:  # claim the next free version; rename fails if another publisher took it first
            existing = list_versions(repo, name)
            ver = check_version(version) if version else str(int(existing[-1]) + 1 if existing else 1)
            manifest = Manifest(
                name=name, version=ver, inputs=inputs, outputs=outputs, sha256=sha256_file(staging / MODEL_FILE),
                source_sha256=source_sha256, created_unix_s=time.time(), report=report or {},
            )
            (staging / MANIFEST_FILE).write_text(manifest.to_json())
            for f in staging.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(staging, folder / ver)
                return manifest
            except OSError:
                if version:
                    raise UserError(f"{folder / ver} already exists: choose another version") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
