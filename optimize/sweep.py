"""`sweep(model, SweepConfig)`: every combination of prune ratio x quantization x calibration, measured side by side.

Building variants (pruning, fine-tuning, export, calibration) is independent work and runs as Ray tasks when
Ray is available (serially otherwise). Timing is never parallel: all variants are then measured in this one
process, interleaved, with the same threads, so they do not compete for cores and their latencies compare.
Pareto-optimal variants (no other variant is both at least as fast at batch 32 and at least as accurate) are
marked. Output: report.json (typed), report.html (self-contained: inline PNG plot) and every variant's ONNX.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optimize._sweep_report import SweepReport, pareto_front, render
from optimize._sweep_tasks import build_variant, prepare, run_all
from optimize._workspace import staged
from optimize.choice import choose
from optimize.cpu import choose_format, detect_cpu
from optimize.loading import load_model
from optimize.pipeline import RunSettings, VariantSet, finish, report_fields, resolve_inputs
from optimize.report import VariantResult
from optimize.variants import CALIBRATION_METHODS
from optiserve.config import from_mapping, read_mapping
from optiserve.data import DataOptions
from optiserve.errors import UserError

QUANTIZATION = ("none", "dynamic", "static", "fp16")
EXECUTORS = ("auto", "ray", "serial")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepConfig(RunSettings):
    quantization: tuple[str, ...] = ("none", "dynamic", "static")  # "none": the fp32 model of that prune ratio
    calibration_methods: tuple[str, ...] = ("minmax", "entropy")  # for static
    prune_ratios: tuple[float, ...] = (0.0, 0.5)
    criterion: str = "magnitude"
    epochs: int = 0  # recovery fine-tuning of each pruned model (needs fine-tuning data)
    per_channel: bool = True
    repeats: int = 50
    executor: str = "auto"  # auto: Ray when installed, else serial
    num_cpus: int = 4  # logical CPUs of the local Ray instance

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [q for q in self.quantization if q not in QUANTIZATION]
        if bad or not self.quantization:
            raise UserError(f"quantization {bad} unknown; choose from {', '.join(QUANTIZATION)}")
        bad = [m for m in self.calibration_methods if m not in CALIBRATION_METHODS]
        if bad:
            raise UserError(f"calibration method(s) {bad} unknown; choose from {', '.join(CALIBRATION_METHODS)}")
        if not self.prune_ratios or any(not 0 <= r < 1 for r in self.prune_ratios):
            raise UserError("prune ratios must be in [0, 1), e.g. 0,0.25,0.5")
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.num_cpus < 1:
            raise UserError("--num-cpus must be >= 1")

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> SweepConfig:
        """A grid file: keys are this dataclass's fields (lists for the tuple ones); CLI overrides win."""
        data = read_mapping(path, "grid file", "prune_ratios: [0, 0.5]")
        if isinstance(data.get("data"), dict):  # data: {inputs: {input: X}, labels: y, feature_columns: [a, b]}
            data["data"] = DataOptions.from_dict(data["data"])
        return from_mapping(cls, data, f"grid file {path}", **overrides)


@dataclass(frozen=True)
class GridPoint:
    name: str
    prune_ratio: float
    quantization: str
    calibration_method: str | None = None


def grid(config: SweepConfig) -> list[GridPoint]:
    points = []
    for ratio in sorted(set(config.prune_ratios) | {0.0}):  # the unpruned fp32 model is always the baseline
        prefix = "" if ratio == 0 else f"pruned{ratio:g}-"
        for q in ("none", *[q for q in config.quantization if q != "none"]):
            if q == "none":
                if ratio == 0 or "none" in config.quantization:
                    points.append(GridPoint("fp32" if ratio == 0 else f"{prefix}fp32", ratio, "none"))
            elif q == "static":
                points += [GridPoint(f"{prefix}static-int8-{m}", ratio, q, m) for m in config.calibration_methods]
            else:
                points.append(GridPoint(f"{prefix}{'fp16' if q == 'fp16' else 'dynamic-int8'}", ratio, q))
    return points


def _executor(config: SweepConfig) -> str:
    if config.executor == "auto":
        return "ray" if importlib.util.find_spec("ray") else "serial"
    return config.executor


def sweep(model_path: Path, out: Path, config: SweepConfig = SweepConfig(), *, calibration_path: Path | None = None,
          eval_path: Path | None = None, finetune_path: Path | None = None,
          progress: Progress = lambda _msg: None) -> SweepReport:
    source = load_model(Path(model_path), config.allow_pickle)
    if any(r > 0 for r in config.prune_ratios):
        from optimize._prune_graph import prunable_module

        prunable_module(source)  # refuse a graph that cannot be pruned (it names the operator) before any work
    inputs = resolve_inputs(source, config, calibration_path, eval_path)
    points = grid(config)
    notes = list(inputs.notes)
    if any(p.quantization == "static" for p in points) and inputs.calibration is None:
        points = [p for p in points if p.quantization != "static"]
        notes.append("static int8 skipped: it needs --calibration-data")
    if config.epochs and not finetune_path:
        raise UserError("--epochs needs --finetune-data (an .npz of inputs and labels to train on)")

    executor = _executor(config)
    owns_ray = executor == "ray" and not _ray_running()
    try:
        with staged(Path(out)) as stage:  # private until it succeeded: concurrent sweeps never share a file
            variants_dir = stage / "variants"
            variants_dir.mkdir()
            return _sweep(source, inputs, points, notes, executor, model_path, stage, variants_dir, config,
                          (calibration_path, eval_path, finetune_path), progress)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


def _sweep(source, inputs, points, notes, executor, model_path, out, variants_dir, config, data_paths,
           progress) -> SweepReport:
    settings = config.settings()  # the shared part: what each Ray task needs to reload the model and its inputs
    prune_args = {"criterion": config.criterion, "epochs": config.epochs, "allow_pickle": config.allow_pickle}
    paths = [str(p) if p else None for p in data_paths]
    ratios = sorted({p.prune_ratio for p in points})
    started = time.perf_counter()
    progress(f"building {len(ratios)} fp32 model(s) ({executor})")
    prepared = dict(zip(ratios, run_all(
        [(prepare, str(model_path), r, prune_args, settings, *paths, str(variants_dir)) for r in ratios],
        executor, config.num_cpus), strict=True))
    variants = VariantSet(out, notes)
    calls, pending = [], []
    for p in points:
        facts = prepared[p.prune_ratio]
        result = VariantResult(p.name, "fp32" if p.name == "fp32" else p.quantization,
                               calibration_method=p.calibration_method,
                               per_channel=config.per_channel and p.quantization in ("dynamic", "static"),
                               extra={"prune_ratio": p.prune_ratio, "quantization": p.quantization})
        if isinstance(facts, Exception):
            result.error = f"pruning/export failed: {str(facts).splitlines()[0] if str(facts) else facts}"
            variants.add(result)
            continue
        result.extra.update({k: v for k, v in facts.items() if k in ("params", "flops")})
        if p.quantization == "none":
            variants.add(result, Path(facts["fp32"]))
            continue
        variants.add(result)
        calls.append((build_variant, facts["pre"], p.quantization, p.calibration_method,
                      config.per_channel, str(variants_dir / f"{p.name}.onnx"), str(model_path), settings, paths[0]))
        pending.append(result)
    progress(f"building {len(calls)} quantized variant(s) ({executor})")
    for result, made in zip(pending, run_all(calls, executor, config.num_cpus), strict=True):
        if isinstance(made, Exception):
            result.error = str(made).splitlines()[0] if str(made) else type(made).__name__
        else:
            variants.add(result, Path(made))
    build_wall_s = time.perf_counter() - started
    if "fp32" not in variants.paths:
        raise UserError(f"the fp32 export failed: {variants.results['fp32'].error}")

    progress(f"measuring {len(variants.paths)} variants side by side")
    started = time.perf_counter()
    variants.measure(source, inputs, config)
    measure_wall_s = time.perf_counter() - started
    for f in variants_dir.glob(".*-pre.onnx"):
        f.unlink()
    fields = report_fields(source, inputs, config, detect_cpu(), variants)
    report = SweepReport(
        **fields, quant_format=asdict(choose_format(detect_cpu())), config=asdict(config), executor=executor,
        build_wall_s=build_wall_s, measure_wall_s=measure_wall_s,
        pareto=pareto_front(fields["variants"], inputs.labelled),
    )
    for v in report.variants:
        v.extra["pareto"] = v.name in report.pareto
    choose(report, batch_size=config.batch_size)  # quantize's noise-aware rule (optimize.choice)
    finish(report, out)
    (out / "report.html").write_text(render(report))
    return report
