"""`quantize(model, QuantizeConfig)`: PyTorch/ONNX model -> verified, measured int8 and fp16 ONNX variants.

Pipeline: load safely -> export fp32 ONNX with a dynamic batch axis and verify it against PyTorch ->
onnxruntime pre-processing -> build variants (dynamic int8, static QDQ int8 per calibration method, each with
per-channel and per-tensor weights, fp16, and onnxruntime's one-line quantize_dynamic as the anchor; a build
byte-identical to an earlier one is measured once) -> measure all of them side by side, in interleaved
rounds -> choose by the noise-aware rule of `optimize.choice` -> write model.onnx, every variant, report.json
and report.md. Everything is built in a private staging folder that replaces OUT's contents only on success.
The shared steps (inputs, the variant set, measurement, the budget, finish) are `optimize.pipeline`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from optimize._workspace import private_dir, staged
from optimize.choice import ANCHOR, choose, kind_order
from optimize.cpu import choose_format, detect_cpu
from optimize.export import export_onnx
from optimize.loading import load_model
from optimize.pipeline import Progress, RunSettings, VariantSet, finish, report_fields, resolve_inputs
from optimize.report import QuantizeReport, VariantResult, to_markdown
from optimize.variants import CALIBRATION_METHODS, VariantSpec, build, build_anchor, op_types, preprocess
from optiserve.errors import UserError

METHODS = ("auto", "dynamic", "static", "fp16")


@dataclass(frozen=True)
class QuantizeConfig(RunSettings):
    method: str = "auto"  # auto builds every applicable variant and picks one
    calibration_methods: tuple[str, ...] = CALIBRATION_METHODS
    per_channel: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        bad = [m for m in self.calibration_methods if m not in CALIBRATION_METHODS]
        if bad or not self.calibration_methods:
            raise UserError(f"calibration method(s) {bad} unknown; choose from {', '.join(CALIBRATION_METHODS)}")


PER_TENSOR = "-per-tensor"  # the name suffix of the per-tensor twin of a per-channel int8 variant


def variant_specs(config: QuantizeConfig, has_calibration: bool) -> tuple[list[VariantSpec], list[str]]:
    """What to build. `--method auto` also builds each per-channel int8 variant's per-tensor twin: per-channel
    weight scales cost a fixed few µs per call (mostly visible at batch 1) and buy accuracy only on some models,
    so both are measured and the choice decides. A named method builds just what `per_channel` says."""
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
    if config.method == "auto" and config.per_channel:
        specs += [replace(s, name=s.name + PER_TENSOR, per_channel=False) for s in list(specs)]
    if config.method in ("auto", "fp16"):
        specs.append(VariantSpec("fp16", "fp16"))
    return specs, notes


def quantize(model_path: Path, out: Path, config: QuantizeConfig = QuantizeConfig(), *,
             calibration_path: Path | None = None, eval_path: Path | None = None,
             progress: Progress = lambda _msg: None) -> QuantizeReport:
    from optimize.hf import is_hf_dir, quantize_hf

    with staged(Path(out)) as stage:  # private until it succeeded: concurrent runs and failures leave OUT intact
        if is_hf_dir(Path(model_path)):  # a save_pretrained folder: optimum's exporter, optimizer and quantizer
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

    progress("exporting fp32 ONNX and verifying it against PyTorch")
    exported = export_onnx(source, inputs.specs, inputs.evaluation, variants_dir / "fp32.onnx")
    progress("onnxruntime pre-processing (shape inference, graph optimization)")
    pre = preprocess(exported.path, out / ".fp32-preprocessed.onnx")
    cpu = detect_cpu()
    fmt = choose_format(cpu)
    specs, notes = variant_specs(config, inputs.calibration is not None)
    variants = VariantSet(out, inputs.notes + notes)
    variants.add(VariantResult("fp32", "fp32"), exported.path)
    with private_dir(out, ".calibration-") as caches:  # one calibration per method, shared by both granularities
        for spec in specs:
            progress(f"building {spec.name}")
            cache = caches / f"{spec.calibration_method}.json" if spec.kind == "static" else None
            variants.add(VariantResult(spec.name, spec.kind, calibration_method=spec.calibration_method,
                                       per_channel=spec.per_channel),
                         lambda s=spec, c=cache: build(s, pre, variants_dir / f"{s.name}.onnx", fmt,
                                                       inputs.calibration, calibration_cache=c))
    if config.method == "auto":  # the anchor: onnxruntime's one-liner, so the choice is never slower than it
        progress("building onnxruntime's one-liner (the anchor)")
        variants.add(VariantResult(ANCHOR, "dynamic", extra={"recipe": "onnxruntime.quantization.quantize_dynamic("
                                                              "fp32.onnx, out.onnx), defaults"}),
                     lambda: build_anchor(exported.path, variants_dir / f"{ANCHOR}.onnx", pre, variants.notes))

    progress("measuring every variant side by side")
    variants.measure(source, inputs, config)
    from optimize.sensitivity import fallback_variants, needs_fallback

    if needs_fallback(variants.results.values()):  # accuracy-aware: keep sensitive nodes in fp32 until in budget
        progress("no int8 variant met the budget: ranking node sensitivity for an fp32 fallback")
        found = fallback_variants(pre, fmt, inputs, config, variants.results, variants.paths["fp32"], variants_dir)
        variants.notes += found.notes
        for result, path in found.variants:
            variants.add(result, path)
        if found.variants:
            progress("measuring every variant side by side, fallback configs included")
            variants.measure(source, inputs, config)
    kinds = kind_order(cpu, "Conv" in op_types(pre))
    pre.unlink(missing_ok=True)
    report = QuantizeReport(**report_fields(source, inputs, config, cpu, variants), quant_format=asdict(fmt),
                            export={"max_abs_diff": exported.max_abs_diff, "tolerance": exported.tolerance,
                                    "verified_samples": exported.verified_samples}, chosen=None)
    choose(report, kinds, config.batch_size)
    finish(report, out, to_markdown)
    return report
