"""`quantize(model, QuantizeConfig)`: PyTorch/ONNX model -> verified, measured int8 and fp16 ONNX variants.

Pipeline: load safely -> export fp32 ONNX with a dynamic batch axis and verify it against PyTorch ->
onnxruntime pre-processing -> build variants (dynamic int8, static QDQ int8 per calibration method, fp16, and
onnxruntime's one-line quantize_dynamic as the anchor) -> measure all of them side by side, in interleaved
rounds -> choose by the noise-aware rule of `optimize.choice` -> write model.onnx, every variant, report.json
and report.md. Everything is built in a private staging folder that replaces OUT's contents only on success.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optimize._workspace import staged
from optimize.choice import ANCHOR, beats, choose, kind_order
from optimize.cpu import choose_format, detect_cpu
from optimize.export import export_onnx, session
from optimize.loading import SourceModel, load_model
from optimize.measure import CURVE_BATCHES, accuracy, agreement, predict, ratio, tile_batch, time_interleaved
from optimize.report import QuantizeReport, VariantResult
from optimize.variants import (
    CALIBRATION_METHODS,
    VariantSpec,
    build,
    build_anchor,
    op_types,
    preprocess,
    quantized_share,
)
from optiserve.data import (
    DataOptions,
    Dataset,
    InputSpec,
    bind,
    generated,
    load_dataset,
    parse_input_shape,
    specs_from_data,
)
from optiserve.errors import UserError

METHODS = ("auto", "dynamic", "static", "fp16")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class QuantizeConfig:
    method: str = "auto"  # auto builds every applicable variant and picks one
    calibration_methods: tuple[str, ...] = CALIBRATION_METHODS
    per_channel: bool = True
    max_accuracy_drop: float = 1.0  # percentage points of accuracy; % relative output error without labels
    threads: int = 1  # onnxruntime intra-op and torch threads while measuring: one replica's share
    repeats: int = 100  # timed runs per variant and batch size
    input_shape: str | None = None  # "1,64" or "name=1x1x8x8" when neither model nor data tells
    allow_pickle: bool = False
    generated_samples: int = 256
    data: DataOptions = DataOptions()  # how to read data files: --inputs, --labels, --feature-columns

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        bad = [m for m in self.calibration_methods if m not in CALIBRATION_METHODS]
        if bad or not self.calibration_methods:
            raise UserError(f"calibration method(s) {bad} unknown; choose from {', '.join(CALIBRATION_METHODS)}")
        if self.max_accuracy_drop < 0:
            raise UserError("--max-accuracy-drop must be >= 0")
        if self.threads < 1 or self.repeats < 5:
            raise UserError("--threads must be >= 1 and --repeats >= 5")


@dataclass
class Inputs:
    specs: list[InputSpec]
    calibration: Dataset | None
    evaluation: Dataset  # labelled eval data, else calibration data, else generated inputs
    labelled: bool
    notes: list[str] = field(default_factory=list)


def resolve_inputs(source: SourceModel, config: QuantizeConfig, calibration_path: Path | None,
                   eval_path: Path | None) -> Inputs:
    calib = load_dataset(calibration_path, "calibration data", config.data) if calibration_path else None
    evald = load_dataset(eval_path, "evaluation data", config.data) if eval_path else None
    if config.input_shape:
        default = source.input_names[0] if source.input_names else "input"
        specs = [parse_input_shape(config.input_shape, default)]
    elif source.input_specs:
        specs = source.input_specs
    elif calib or evald:
        specs = specs_from_data(calib or evald, source.input_names or None)
    else:
        raise UserError(
            f"cannot tell the input shape of {source.path.name}: pass --calibration-data, --eval-data "
            "or --input-shape (e.g. --input-shape 1,64)"
        )
    calib = bind(calib, specs, "calibration data") if calib else None
    evald = bind(evald, specs, "evaluation data") if evald else None
    notes = []
    if evald is not None and evald.labels is not None:
        return Inputs(specs, calib, evald, True, notes)
    notes.append("accuracy was not measured (no --eval-data with labels): the budget applies to the relative "
                 "output error against fp32 ONNX instead")
    if evald is None and calib is None:
        notes.append(f"no data given: output agreement measured on {config.generated_samples} generated inputs")
    return Inputs(specs, calib, evald or calib or generated(specs, config.generated_samples), False, notes)


def _check_runs(source: SourceModel, inputs: Inputs) -> None:
    if source.module is None:
        return
    try:
        source.run_torch(inputs.evaluation.take(2))
    except Exception as exc:
        shapes = {s.name: s.shape for s in inputs.specs}
        data = inputs.evaluation
        found = f" ({data.origin} holds {data.found})" if data.origin and data.found else ""
        raise UserError(f"the model does not accept inputs of shape {shapes}{found}: {str(exc).splitlines()[0]}; "
                        "check --input-shape, or say which array feeds which input with --inputs NAME=ARRAY") from None


def variant_specs(config: QuantizeConfig, has_calibration: bool) -> tuple[list[VariantSpec], list[str]]:
    specs, notes = [], []
    if config.method in ("auto", "dynamic"):
        specs.append(VariantSpec("dynamic-int8", "dynamic", per_channel=config.per_channel))
    if config.method in ("auto", "static"):
        if has_calibration:
            specs += [VariantSpec(f"static-int8-{m}", "static", m, config.per_channel)
                      for m in config.calibration_methods]
        elif config.method == "static":
            raise UserError("--method static needs --calibration-data (an .npz of representative inputs)")
        else:
            notes.append("static int8 skipped: it needs --calibration-data")
    if config.method in ("auto", "fp16"):
        specs.append(VariantSpec("fp16", "fp16"))
    return specs, notes


def quantize(model_path: Path, out: Path, config: QuantizeConfig = QuantizeConfig(), *,
             calibration_path: Path | None = None, eval_path: Path | None = None,
             progress: Progress = lambda _msg: None) -> QuantizeReport:
    from optimize.hf import is_hf_dir

    with staged(Path(out)) as stage:  # private until it succeeded: concurrent runs and failures leave OUT intact
        if is_hf_dir(Path(model_path)):  # a save_pretrained folder: optimum's exporter, optimizer and quantizer
            from optimize.hf import quantize_hf

            return quantize_hf(Path(model_path), stage, config, calibration_path=calibration_path,
                               eval_path=eval_path, progress=progress)
        return _quantize(Path(model_path), stage, config, calibration_path, eval_path, progress)


def _quantize(model_path: Path, out: Path, config: QuantizeConfig, calibration_path: Path | None,
              eval_path: Path | None, progress: Progress) -> QuantizeReport:
    """The pipeline, writing into `out` (a private staging folder that replaces the real one on success)."""
    variants_dir = out / "variants"
    variants_dir.mkdir(parents=True)
    progress("loading model")
    source = load_model(model_path, config.allow_pickle)
    inputs = resolve_inputs(source, config, calibration_path, eval_path)
    _check_runs(source, inputs)

    progress("exporting fp32 ONNX and verifying it against PyTorch")
    exported = export_onnx(source, inputs.specs, inputs.evaluation, variants_dir / "fp32.onnx")
    progress("onnxruntime pre-processing (shape inference, graph optimization)")
    pre = preprocess(exported.path, out / ".fp32-preprocessed.onnx")
    cpu = detect_cpu()
    fmt = choose_format(cpu)
    specs, notes = variant_specs(config, inputs.calibration is not None)
    notes = inputs.notes + notes

    built: dict[str, Path] = {"fp32": exported.path}
    results = {"fp32": VariantResult("fp32", "fp32", path="variants/fp32.onnx")}
    builders = [(spec, lambda s=spec: build(s, pre, variants_dir / f"{s.name}.onnx", fmt, inputs.calibration))
                for spec in specs]
    if config.method == "auto":  # the anchor: onnxruntime's one-liner, so the choice is never slower than it
        builders.append((VariantSpec(ANCHOR, "dynamic"),
                         lambda: build_anchor(exported.path, variants_dir / f"{ANCHOR}.onnx", pre, notes)))
    for spec, make in builders:
        progress(f"building {spec.name}")
        result = VariantResult(spec.name, spec.kind, calibration_method=spec.calibration_method,
                               per_channel=spec.per_channel)
        if spec.name == ANCHOR:
            result.extra["recipe"] = "onnxruntime.quantization.quantize_dynamic(fp32.onnx, out.onnx), defaults"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime's calibrators print progress
                built[spec.name] = make()
            result.path = f"variants/{spec.name}.onnx"
        except Exception as exc:  # one failed variant must not sink the others; the report says why
            result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        results[spec.name] = result

    progress("measuring every variant side by side")
    measure_variants(source, built, results, inputs, config)
    from optimize.sensitivity import apply_fallback, needs_fallback

    if needs_fallback(results):  # accuracy-aware: keep the most sensitive nodes in fp32 until the budget holds
        progress("no int8 variant met the budget: ranking node sensitivity for an fp32 fallback")
        if apply_fallback(pre, fmt, inputs, config, built, results, variants_dir, notes):
            progress("measuring every variant side by side, fallback configs included")
            measure_variants(source, built, results, inputs, config)
    kinds = kind_order(cpu, "Conv" in op_types(pre))
    pre.unlink(missing_ok=True)
    report = QuantizeReport(
        source={"path": str(source.path), "kind": source.kind, "sha256": source.sha256},
        inputs=_plain([asdict(s) for s in inputs.specs]), cpu=_plain(asdict(cpu)), quant_format=asdict(fmt),
        threads=config.threads,
        export={"max_abs_diff": exported.max_abs_diff, "tolerance": exported.tolerance,
                "verified_samples": exported.verified_samples},
        accuracy_measured=inputs.labelled,
        budget={"metric": "accuracy_pts" if inputs.labelled else "relative_error_pct",
                "max_drop": config.max_accuracy_drop},
        variants=([results.pop("pytorch")] if "pytorch" in results else []) + list(results.values()),
        chosen=None, notes=notes, eval_samples=len(inputs.evaluation), created_unix_s=time.time(),
    )
    choose(report, kinds)
    shutil.copyfile(out / report.variant(report.chosen or "fp32").path, out / "model.onnx")
    report.save(out / "report.json")
    from optimize.report import to_markdown

    (out / "report.md").write_text(to_markdown(report))
    return report


def _plain(value):
    """JSON-shaped copy (tuples become lists), so a report equals itself after a save/load round trip."""
    return json.loads(json.dumps(value))


def measure_variants(source: SourceModel, built: dict[str, Path], results: dict[str, VariantResult],
                     inputs: Inputs, config: QuantizeConfig) -> None:
    """Fill sizes, latencies, accuracy and agreement of every built variant (and PyTorch eager) in place."""
    import torch

    torch.set_num_threads(config.threads)
    runners = {}
    if source.module is not None:
        runners["pytorch"] = source.run_torch
        results["pytorch"] = VariantResult("pytorch", "pytorch")
    for name, path in built.items():
        sess = session(path, config.threads)
        runners[name] = lambda feed, s=sess: s.run(None, feed)[0]
    data = inputs.evaluation
    b1, b32 = time_interleaved(runners, tile_batch(data, 1), config.repeats * 2), \
        time_interleaved(runners, tile_batch(data, 32), config.repeats)
    onnx_runners = {k: v for k, v in runners.items() if k != "pytorch"}
    curve = {bs: time_interleaved(onnx_runners, tile_batch(data, bs), max(10, config.repeats // 4), warmup=2)
             for bs in CURVE_BATCHES}
    outputs = {name: predict(run, data) for name, run in runners.items()}
    ref_acc_name = "pytorch" if "pytorch" in outputs else "fp32"
    ref_acc = accuracy(outputs[ref_acc_name], data.labels)
    fp32_size = built["fp32"].stat().st_size
    for name, run_out in outputs.items():
        r = results[name]
        r.latency_b1_p50_ms, r.latency_b1_p95_ms = b1[name].p50_ms, b1[name].p95_ms
        r.latency_b32_p50_ms, r.latency_b32_p95_ms = b32[name].p50_ms, b32[name].p95_ms
        r.latency_b1_rounds_ms, r.latency_b32_rounds_ms = list(b1[name].round_p50_ms), list(b32[name].round_p50_ms)
        r.latency_b1_spread_pct, r.latency_b32_spread_pct = b1[name].spread_pct, b32[name].spread_pct
        r.throughput_sps = 32e3 / b32[name].p50_ms
        vs_fp32 = ratio(b32["fp32"].round_p50_ms, b32[name].round_p50_ms)
        r.speedup_vs_fp32, r.speedup_vs_fp32_interval = vs_fp32.value, [vs_fp32.low, vs_fp32.high]
        if "pytorch" in b32:
            r.speedup_vs_pytorch = ratio(b32["pytorch"].round_p50_ms, b32[name].round_p50_ms).value
        if name in built:
            r.size_bytes = built[name].stat().st_size
            r.size_ratio = r.size_bytes / fp32_size
            r.quantized_share = quantized_share(built[name])
            r.latency_curve_ms = {str(bs): curve[bs][name].p50_ms for bs in CURVE_BATCHES}
        agree = agreement(run_out, outputs["fp32"])
        r.max_abs_diff, r.relative_error, r.top1_agreement = agree.max_abs_diff, agree.relative_error, \
            agree.top1_agreement
        r.accuracy = accuracy(run_out, data.labels) if inputs.labelled else None
        if r.accuracy is not None and ref_acc is not None:
            r.accuracy_change_pts = 100 * (r.accuracy - ref_acc)
        if inputs.labelled and r.accuracy_change_pts is not None:
            r.within_budget = r.accuracy_change_pts >= -config.max_accuracy_drop
        else:
            r.within_budget = 100 * r.relative_error <= config.max_accuracy_drop
    for name in outputs:
        results[name].faster_than_fp32 = beats(results[name], results["fp32"]) if name != "fp32" else None
