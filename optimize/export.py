"""PyTorch -> fp32 ONNX with a dynamic batch axis, verified against PyTorch on real inputs."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimize.loading import SourceModel
from optiserve.data import Dataset, InputSpec
from optiserve.errors import UserError

OPSET = 18
# The export is accepted when |onnx - torch| <= ATOL + RTOL * max|torch| on every verification sample.
ATOL, RTOL = 1e-4, 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    input_names: list[str]
    output_names: list[str]
    max_abs_diff: float  # against PyTorch, on the verification inputs (0 for ONNX input)
    tolerance: float
    verified_samples: int


def session(path: Path, threads: int = 1, providers: list[str] | None = None):
    """An onnxruntime session with full graph optimization and a fixed thread count (comparable timings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def copy_onnx(src: Path, out: Path) -> None:
    """A self-contained copy of an ONNX file: weights kept in external data files (as exporters write them for
    large models, and as some quantizers write every model) are brought inline, because every later step
    (pre-processing, quantizers, the model repository) handles one file. Protobuf caps one file at 2 GB."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(src), load_external_data=False)
    if not any(uses_external_data(t) for t in model.graph.initializer):
        shutil.copyfile(src, out)
        return
    onnx.load_external_data_for_model(model, str(Path(src).parent))
    try:
        onnx.save(model, str(out))
    except ValueError as exc:  # onnx refuses to serialize a proto over 2 GB
        raise UserError(f"{src} keeps over 2 GB of weights in external data files; optiserve handles ONNX models up "
                        f"to 2 GB in one file ({exc})") from None


def export_onnx(source: SourceModel, specs: list[InputSpec], verify_on: Dataset, out: Path) -> ExportResult:
    """Export (or copy, for ONNX input) to `out`, then check onnxruntime against PyTorch on `verify_on`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.kind == "onnx":
        copy_onnx(source.path, out)
        s = session(out)
        return ExportResult(out, [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()], 0.0, 0.0, 0)

    import torch

    names = [s.name for s in specs]
    sample = tuple(torch.from_numpy(verify_on.inputs[n][:2]) for n in names)
    output_names = ["output"]
    try:
        # The exporters chat on stdout/logging (missing torchvision ops, progress); a CLI's output stays clean.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if source.kind == "exported":
                # torch.export programs carry their own dynamic batch dimension.
                torch.onnx.export(source.program, sample, str(out), input_names=names, output_names=output_names,
                                  opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
            else:
                axes = {n: {0: "batch"} for n in names + output_names}
                torch.onnx.export(source.module, sample, str(out), input_names=names, output_names=output_names,
                                  dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as exc:
        raise UserError(f"exporting {source.path} to ONNX failed: {str(exc).splitlines()[0]}") from None

    sess = session(out)
    worst, tolerance = 0.0, 0.0
    for batch in verify_on.batches(64):
        expected = source.run_torch(batch)
        got = sess.run(None, batch)[0]
        if got.shape != expected.shape:
            raise UserError(f"the ONNX export returns shape {got.shape} where PyTorch returns {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
        tolerance = max(tolerance, ATOL + RTOL * float(np.max(np.abs(expected))))
    if not worst <= tolerance:
        raise UserError(
            f"the ONNX export disagrees with PyTorch: max abs difference {worst:.3g} exceeds {tolerance:.3g}; "
            "the model may use an operation the exporter translates incorrectly"
        )
    return ExportResult(out, names, [o.name for o in sess.get_outputs()], worst, tolerance, len(verify_on))
