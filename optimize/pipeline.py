"""The optimization pipeline every command shares: settings, inputs, the set of built variants, their side-by-side
measurement, the one budget test, and `finish()`.

quantize, the Hugging Face path, prune and sweep only build variants: each adds them to a `VariantSet`, which
records every build (a failed one with its error, never raised), measures them all in one process with
interleaved rounds, applies the accuracy budget, and hands a report to `optimize.choice.choose` and `finish`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from optimize.export import session
from optimize.loading import SourceModel
from optimize.measure import CURVE_BATCHES, accuracy, agreement, predict, ratio, tile_batch, time_interleaved
from optimize.report import VariantResult, VariantsReport
from optimize.variants import quantized_share
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
from optiserve.hashing import sha256_file

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    """What every optimization command takes: the budget, how to measure, how to read the model and its data.
    QuantizeConfig, PruneConfig and SweepConfig extend it."""

    max_accuracy_drop: float = 1.0  # percentage points of accuracy; % relative output error without labels
    threads: int = 1  # onnxruntime intra-op and torch threads while measuring: one replica's share
    repeats: int = 100  # timed runs per variant and batch size
    input_shape: str | None = None  # "1,64" or "name=1x1x8x8" when neither model nor data tells
    allow_pickle: bool = False
    generated_samples: int = 256  # inputs generated for output agreement when no data is given
    data: DataOptions = DataOptions()  # how to read data files: --inputs, --labels, --feature-columns
    batch_size: int = 32  # the batch size the choice optimises for; the others timed only guard against slowdowns

    def __post_init__(self) -> None:
        if self.max_accuracy_drop < 0:
            raise UserError("--max-accuracy-drop must be >= 0")
        if self.threads < 1 or self.repeats < 5:
            raise UserError("--threads must be >= 1 and --repeats >= 5")
        if self.batch_size < 1:
            raise UserError("--batch-size must be >= 1")

    def settings(self) -> RunSettings:
        """Just the shared part (plain fields, so it ships to Ray tasks as a dict)."""
        return RunSettings(**{f: getattr(self, f) for f in RunSettings.__dataclass_fields__})


@dataclass
class Inputs:
    specs: list[InputSpec]
    calibration: Dataset | None
    evaluation: Dataset  # labelled eval data, else calibration data, else generated inputs
    labelled: bool
    notes: list[str] = field(default_factory=list)


def resolve_inputs(source: SourceModel, settings: RunSettings, calibration_path: Path | None,
                   eval_path: Path | None) -> Inputs:
    calib = load_dataset(calibration_path, "calibration data", settings.data) if calibration_path else None
    evald = load_dataset(eval_path, "evaluation data", settings.data) if eval_path else None
    if settings.input_shape:
        default = source.input_names[0] if source.input_names else "input"
        specs = [parse_input_shape(settings.input_shape, default)]
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
    if evald is not None and evald.labels is not None:
        inputs = Inputs(specs, calib, evald, True)
    else:
        notes = ["accuracy was not measured (no --eval-data with labels): the budget applies to the relative "
                 "output error against fp32 ONNX instead"]
        if evald is None and calib is None:
            notes.append(f"no data given: output agreement measured on {settings.generated_samples} generated inputs")
        inputs = Inputs(specs, calib, evald or calib or generated(specs, settings.generated_samples), False, notes)
    check_runs(source, inputs)
    return inputs


def check_runs(source: SourceModel, inputs: Inputs) -> None:
    """Refuse data the PyTorch model cannot take, before any export, with what the file holds."""
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


def within_budget(labelled: bool, max_drop: float, accuracy_change_pts: float | None,
                  relative_error: float | None) -> bool:
    """The accuracy budget: at most `max_drop` accuracy points lost with labels, else at most `max_drop` %
    relative output error against fp32 ONNX."""
    if labelled and accuracy_change_pts is not None:
        return accuracy_change_pts >= -max_drop
    return 100 * (relative_error or 0.0) <= max_drop


def budget(inputs: Inputs, settings: RunSettings) -> dict:
    """How the report states the budget."""
    metric = "accuracy_pts" if inputs.labelled else "relative_error_pct"
    return {"metric": metric, "max_drop": settings.max_accuracy_drop}


def report_fields(source: SourceModel, inputs: Inputs, settings: RunSettings, cpu, variants: VariantSet,
                  **source_facts) -> dict:
    """The fields every optimization report has (quantize, Hugging Face, prune, sweep), JSON-shaped so a report
    equals itself after a save/load round trip."""
    import json
    import time
    from dataclasses import asdict

    def plain(value):
        return json.loads(json.dumps(value))

    return {"source": {"path": str(source.path), "kind": source.kind, "sha256": source.sha256, **source_facts},
            "inputs": plain([asdict(s) for s in inputs.specs]), "cpu": plain(asdict(cpu)),
            "threads": settings.threads, "accuracy_measured": inputs.labelled, "budget": budget(inputs, settings),
            "variants": variants.ordered(), "notes": variants.notes, "eval_samples": len(inputs.evaluation),
            "created_unix_s": time.time()}


def _error(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class VariantSet:
    """The variants of one run: what was built (paths relative to `root`), their measurements, and notes."""

    def __init__(self, root: Path, notes: list[str] | None = None) -> None:
        self.root = Path(root)
        self.results: dict[str, VariantResult] = {}
        self.paths: dict[str, Path] = {}
        self.notes: list[str] = list(notes or [])
        self._digests: dict[str, str] = {}

    def add(self, result: VariantResult, make: Callable[[], Path] | Path | None = None) -> VariantResult:
        """Record a variant; `make` is its file, or a builder called now (its stdout, e.g. onnxruntime's
        calibration progress, is swallowed). A failed build is recorded as the variant's error, never raised."""
        self.results[result.name] = result
        try:
            if callable(make):
                with contextlib.redirect_stdout(io.StringIO()):
                    make = make()
            if make is not None:
                self.paths[result.name] = Path(make)
                result.path = str(Path(make).relative_to(self.root))
                self._note_if_identical(result)
        except Exception as exc:  # one failed variant must not sink the others; the report says why
            result.error = _error(exc)
        return result

    def _note_if_identical(self, result: VariantResult) -> None:
        """Two recipes can give the same bytes (calibrations that agree, per-channel weights on a graph with none
        to split): say so rather than offer a choice, and time that model once (`measure` copies the figures)."""
        digest = self._digests[result.name] = sha256_file(self.paths[result.name])
        twin = next((n for n, d in self._digests.items() if n != result.name and d == digest), None)
        if twin is not None:
            result.extra["identical_to"] = twin
            self.notes.append(f"{result.name} is byte-identical to {twin}: the two recipes gave the same model, "
                              "measured once")

    def ordered(self) -> list[VariantResult]:
        """PyTorch eager first (the reference), then the variants in the order they were added."""
        return [self.results[n] for n in sorted(self.results, key=lambda n: n != "pytorch")]

    def measure(self, source: SourceModel, inputs: Inputs, settings: RunSettings) -> None:
        """Sizes, latencies (interleaved rounds at batch 1, 32 and `settings.batch_size`, a batch curve), accuracy
        and agreement of every built variant and of PyTorch eager, side by side in this process. A variant
        byte-identical to an earlier one is not timed again: it gets that one's figures."""
        import torch

        from optimize.choice import beats

        torch.set_num_threads(settings.threads)
        runners = {}
        if source.module is not None:
            runners["pytorch"] = source.run_torch
            self.results.setdefault("pytorch", VariantResult("pytorch", "pytorch"))
        twins = {n: r.extra["identical_to"] for n, r in self.results.items() if "identical_to" in r.extra}
        for name, path in self.paths.items():
            if name not in twins:
                sess = session(path, settings.threads)
                runners[name] = lambda feed, s=sess: s.run(None, feed)[0]
        data = inputs.evaluation
        b1 = time_interleaved(runners, tile_batch(data, 1), settings.repeats * 2)
        b32 = time_interleaved(runners, tile_batch(data, 32), settings.repeats)
        asked = settings.batch_size
        bn = time_interleaved(runners, tile_batch(data, asked), settings.repeats) if asked not in (1, 32) else {}
        onnx_runners = {k: v for k, v in runners.items() if k != "pytorch"}
        curve = {bs: time_interleaved(onnx_runners, tile_batch(data, bs), max(10, settings.repeats // 4), warmup=2)
                 for bs in CURVE_BATCHES}
        outputs = {name: predict(run, data) for name, run in runners.items()}
        ref_acc = accuracy(outputs["pytorch" if "pytorch" in outputs else "fp32"], data.labels)
        fp32_size = self.paths["fp32"].stat().st_size
        for name, run_out in outputs.items():
            r = self.results[name]
            r.latency_b1_p50_ms, r.latency_b1_p95_ms = b1[name].p50_ms, b1[name].p95_ms
            r.latency_b32_p50_ms, r.latency_b32_p95_ms = b32[name].p50_ms, b32[name].p95_ms
            r.latency_b1_rounds_ms, r.latency_b32_rounds_ms = list(b1[name].round_p50_ms), \
                list(b32[name].round_p50_ms)
            r.latency_b1_spread_pct, r.latency_b32_spread_pct = b1[name].spread_pct, b32[name].spread_pct
            r.batch_rounds_ms = {str(asked): list(bn[name].round_p50_ms)} if bn else {}
            r.throughput_sps = 32e3 / b32[name].p50_ms
            vs_fp32 = ratio(b32["fp32"].round_p50_ms, b32[name].round_p50_ms)
            r.speedup_vs_fp32, r.speedup_vs_fp32_interval = vs_fp32.value, [vs_fp32.low, vs_fp32.high]
            if "pytorch" in b32:
                r.speedup_vs_pytorch = ratio(b32["pytorch"].round_p50_ms, b32[name].round_p50_ms).value
            if name in self.paths:
                r.size_bytes = self.paths[name].stat().st_size
                r.size_ratio = r.size_bytes / fp32_size
                r.quantized_share = quantized_share(self.paths[name])
                r.latency_curve_ms = {str(bs): curve[bs][name].p50_ms for bs in CURVE_BATCHES}
            agree = agreement(run_out, outputs["fp32"])
            r.max_abs_diff, r.relative_error, r.top1_agreement = agree.max_abs_diff, agree.relative_error, \
                agree.top1_agreement
            r.accuracy = accuracy(run_out, data.labels) if inputs.labelled else None
            if r.accuracy is not None and ref_acc is not None:
                r.accuracy_change_pts = 100 * (r.accuracy - ref_acc)
            r.within_budget = within_budget(inputs.labelled, settings.max_accuracy_drop, r.accuracy_change_pts,
                                            r.relative_error)
        for name, twin in twins.items():
            _copy_measurements(self.results[twin], self.results[name])
        for name in [*outputs, *twins]:
            self.results[name].faster_than_fp32 = None if name == "fp32" else \
                beats(self.results[name], self.results["fp32"], asked)


_NOT_MEASURED = {"name", "kind", "path", "calibration_method", "per_channel", "error", "extra"}


def _copy_measurements(source: VariantResult, target: VariantResult) -> None:
    """Give a byte-identical variant the figures of the one it equals (the same model, timed once)."""
    for f in fields(VariantResult):
        if f.name not in _NOT_MEASURED:
            setattr(target, f.name, copy.deepcopy(getattr(source, f.name)))


def finish(report: VariantsReport, out: Path, markdown: Callable[[VariantsReport], str] | None = None,
           model: str | None = None) -> None:
    """Write OUT/model.onnx (the `model` variant, else the chosen one, else fp32), report.json and report.md."""
    out = Path(out)
    name = model or getattr(report, "chosen", None) or "fp32"
    shutil.copyfile(out / report.variant(name).path, out / "model.onnx")
    report.save(out / "report.json")
    if markdown is not None:
        (out / "report.md").write_text(markdown(report))
