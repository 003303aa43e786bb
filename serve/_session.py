"""One onnxruntime session per model version and replica: checked, created, warmed up.

Loading goes through the repository's `verify` (manifest + sha256) before onnxruntime sees the file,
so a corrupt or changed model is refused with a clear reason instead of crashing a replica.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from optiserve.errors import UserError
from optiserve.repository import MODEL_FILE, Manifest, verify, version_dir
from serve._codec import DTYPES

CUDA = "CUDAExecutionProvider"


def providers(device: str) -> list[str]:
    """Execution providers for a device; a GPU asked for where onnxruntime has no CUDA provider is an error."""
    if device == "cuda":
        available = ort.get_available_providers()
        if CUDA not in available:
            raise UserError(
                f"device cuda needs onnxruntime's {CUDA}, but this onnxruntime has only {available}: "
                "install onnxruntime-gpu on the GPU nodes or serve the model with device: cpu"
            )
        return [CUDA, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load(repo: Path, name: str, version: str, *, device: str = "cpu", threads: int = 1) -> tuple[Manifest, object]:
    """(manifest, warmed-up InferenceSession) for one version; UserError if it cannot be served."""
    manifest = verify(repo, name, version)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = version_dir(repo, name, version) / MODEL_FILE
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers(device))
    except UserError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise UserError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:300]}") from None
    declared = sorted(t.name for t in manifest.inputs)
    actual = sorted(i.name for i in session.get_inputs())
    if declared != actual:
        raise UserError(f"{path}: the manifest lists inputs {declared} but the model has {actual}; republish it")
    try:
        warm_up(session, manifest)
    except Exception as exc:  # a model that cannot run on a dummy row will not run on real ones
        raise UserError(f"{path} fails on a warm-up row: {str(exc).splitlines()[0][:300]}") from None
    return manifest, session


def warm_up(session, manifest: Manifest) -> None:
    """Run one all-zeros request (dynamic axes = 1) so the first real request pays no lazy initialisation."""
    feeds = {}
    for spec in manifest.inputs:
        dtype = DTYPES.get(spec.datatype)
        if dtype is None:
            return  # e.g. BYTES inputs: nothing sensible to synthesise
        feeds[spec.name] = np.zeros([1 if d == -1 else d for d in spec.shape], dtype)
    session.run(None, feeds)
