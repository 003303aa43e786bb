"""Builders for the quantized variants of a pre-processed fp32 ONNX model, all through onnxruntime's tools."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx

from optimize._workspace import build_privately, private_dir
from optimize.cpu import QuantFormat
from optiserve.data import Dataset

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
COMPUTE_OPS = ("MatMul", "Gemm", "Conv")
# Ops that compute in integers once onnxruntime has quantized a MatMul/Gemm/Conv.
_INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul", "QGemm",
                "MatMulIntegerToFloat"}


@dataclass(frozen=True)
class VariantSpec:
    name: str
    kind: str  # "dynamic" | "static" | "fp16"
    calibration_method: str | None = None
    per_channel: bool = False


def preprocess(fp32: Path, out: Path) -> Path:
    """onnxruntime's quantization pre-processing: symbolic shape inference, graph optimization, ONNX shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
    return out


class _Reader:
    """CalibrationDataReader over a data set, in batches (the model has a dynamic batch axis)."""

    def __init__(self, data: Dataset, batch: int = 32) -> None:
        self._batches = list(data.batches(batch))
        self._i = 0

    def get_next(self):
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return self._batches[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def build(spec: VariantSpec, pre: Path, out: Path, fmt: QuantFormat, calibration: Dataset | None,
          nodes_to_exclude: list[str] | None = None, calibration_cache: Path | None = None) -> Path:
    """Write the variant to `out`. `nodes_to_exclude` keeps those nodes in float (accuracy-aware fallback).
    `calibration_cache`: a JSON file of this calibration method's tensor ranges, computed and written when it does
    not exist yet and read back when it does, so per-channel and per-tensor builds calibrate once between them
    (the ranges are activations', which the weight granularity does not change). Never share one between
    concurrent builds."""
    from onnxruntime.quantization import CalibrationMethod, quantize_dynamic, quantize_static
    from onnxruntime.quantization import QuantFormat as OrtFormat

    exclude = list(nodes_to_exclude or [])
    if spec.kind not in ("dynamic", "static", "fp16"):
        raise ValueError(f"unknown variant kind {spec.kind!r}")
    if spec.kind == "static" and calibration is None:
        raise ValueError("static quantization needs calibration data")

    def run(src: Path, dst: Path) -> None:
        if spec.kind == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=_qtype(fmt.weight_type), per_channel=spec.per_channel,
                             reduce_range=fmt.reduce_range, nodes_to_exclude=exclude)
        elif spec.kind == "static":
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[spec.calibration_method or "minmax"]
            cache = _calibrate(src, method, calibration, calibration_cache or dst.parent / "calibration.json")
            extra = {"ActivationSymmetric": fmt.activation_type == "int8"}
            if method == CalibrationMethod.Percentile:
                extra["CalibPercentile"] = PERCENTILE
            quantize_static(
                str(src), str(dst), _Reader(calibration), quant_format=OrtFormat.QDQ, per_channel=spec.per_channel,
                reduce_range=fmt.reduce_range, activation_type=_qtype(fmt.activation_type),
                weight_type=_qtype(fmt.weight_type), calibrate_method=method, nodes_to_exclude=exclude,
                calibration_cache_path=cache, extra_options=extra,
            )
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))

    return build_privately(pre, out, run)


# Calibration settings that make each method what its name says. quantize_static cannot pass histogram bins
# to its calibrator, and onnxruntime's entropy default (128 bins, 128 quantized bins) leaves the KL search a
# single candidate threshold, the full range: a file byte-identical to min-max. 2048 bins searched down to 128
# (TensorRT's KL calibration) gives real entropy thresholds; percentile clips the top 0.01 % instead of 0.001 %.
HISTOGRAM_BINS = {"Entropy": {"num_bins": 2048, "num_quantized_bins": 128}}
PERCENTILE = 99.99


def _calibrate(model: Path, method, calibration: Dataset, cache: Path) -> Path:
    """The calibration cache quantize_static reads back (or, for a method it calibrates itself, writes on its
    first use): tensor ranges computed here with HISTOGRAM_BINS where onnxruntime's defaults fall short."""
    if method.name not in HISTOGRAM_BINS or cache.exists():
        return cache
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    with private_dir(cache.parent, ".calibrate-") as work:  # the augmented model is scratch
        calibrator = create_calibrator(model, None, augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=method, extra_options=HISTOGRAM_BINS[method.name])
        calibrator.collect_data(_Reader(calibration))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def build_anchor(fp32: Path, out: Path, pre: Path | None = None, notes: list[str] | None = None) -> Path:
    """What a user gets from one line of onnxruntime: `quantize_dynamic(model, out)` with every default, on the
    plain fp32 export. Measured beside our variants so the choice is never slower than it. Where the one-liner
    fails on the raw export (ONNX shape inference disagrees with some exporters' shapes), it runs on onnxruntime's
    pre-processed model (`pre`), as onnxruntime's own quantization guide does, and `notes` says so."""
    from onnxruntime.quantization import quantize_dynamic

    def one_liner(src: Path, dst: Path) -> None:
        quantize_dynamic(str(src), str(dst))

    try:
        return build_privately(fp32, out, one_liner)
    except Exception as exc:
        if pre is None:
            raise
        if notes is not None:
            notes.append(f"onnxruntime's one-liner fails on the raw fp32 export ({str(exc).splitlines()[0]}); "
                         "it is measured on onnxruntime's pre-processed model instead (quant_pre_process first)")
        return build_privately(pre, out, one_liner)


def quantized_share(path: Path) -> float:
    """Share of the MatMul/Gemm/Conv work that runs in int8: integer ops, or float ops fed by DequantizeLinear
    on both operands (QDQ, which onnxruntime fuses into integer kernels at load time)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    counts: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in _INTEGER_OPS:
            counts["int"] += 1
        elif node.op_type in COMPUTE_OPS:
            fed = [producers.get(i) == "DequantizeLinear" for i in node.input[:2]]
            counts["int" if len(fed) == 2 and all(fed) else "float"] += 1
    total = counts["int"] + counts["float"]
    return counts["int"] / total if total else 0.0


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
