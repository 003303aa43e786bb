"""The sweep's units of work, as plain functions of plain arguments so they run the same serially or as Ray tasks.

`prepare` makes the fp32 ONNX model for one prune ratio (the unpruned export for ratio 0) and its onnxruntime
pre-processed copy; `build_variant` quantizes one pre-processed model. Both reload what they need from paths,
so a task ships only file names and small dicts.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optimize.pipeline import RunSettings


def _inputs(model_path: str, settings: RunSettings, calibration: str | None, evaluation: str | None):
    from optimize.loading import load_model
    from optimize.pipeline import resolve_inputs

    source = load_model(Path(model_path), settings.allow_pickle)
    return source, resolve_inputs(source, settings, Path(calibration) if calibration else None,
                                  Path(evaluation) if evaluation else None)


def prepare(model_path: str, ratio: float, prune: dict[str, Any], settings: RunSettings, calibration: str | None,
            evaluation: str | None, finetune: str | None, folder: str) -> dict[str, Any]:
    """fp32 (pruned at `ratio`) ONNX + pre-processed copy under `folder`; returns paths and parameter counts."""
    import torch

    from optimize.export import export_onnx
    from optimize.prune import PruneConfig, _apply, _example, _to_onnx, counts
    from optimize.variants import preprocess
    from optiserve.data import bind, load_dataset

    torch.set_num_threads(1)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    source, inputs = _inputs(model_path, settings, calibration, evaluation)
    stem = f"fp32-p{ratio:g}"
    facts: dict[str, Any] = {"ratio": ratio}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if ratio == 0:
            exported = export_onnx(source, inputs.specs, inputs.evaluation, out / f"{stem}.onnx")
        else:
            from optimize._prune_graph import prunable_module
            from optimize.prune import finetune as tune

            config = PruneConfig(ratio=ratio, **prune)
            example = _example(inputs)
            base = prunable_module(source, example)
            model = _apply(base, ratio, config, inputs, example)
            if finetune and config.epochs:
                data = bind(load_dataset(Path(finetune), "fine-tuning data", settings.data), inputs.specs,
                            "fine-tuning data")
                tune(model, data, [s.name for s in inputs.specs], config.epochs, config.learning_rate)
            facts["flops"], facts["params"], _ = counts(model, example)
            pt2, exported = _to_onnx(model, example, inputs, out, stem)
            pt2.unlink()
        pre = preprocess(exported.path, out / f".{stem}-pre.onnx")
    facts.update(fp32=str(exported.path), pre=str(pre))
    return facts


def build_variant(pre: str, kind: str, calibration_method: str | None, per_channel: bool, out: str,
                  model_path: str, settings: RunSettings, calibration: str | None) -> str:
    """Quantize one pre-processed model; returns the written path."""
    from optimize.cpu import choose_format, detect_cpu
    from optimize.variants import VariantSpec, build

    calib = None
    if kind == "static":
        _, inputs = _inputs(model_path, settings, calibration, None)
        calib = inputs.calibration
    spec = VariantSpec(Path(out).stem, kind, calibration_method, per_channel)
    with contextlib.redirect_stdout(io.StringIO()):
        build(spec, Path(pre), Path(out), choose_format(detect_cpu()), calib)
    return out


def run_all(calls: list[tuple], executor: str, num_cpus: int) -> list[Any]:
    """Run `(function, *args)` calls serially or as Ray tasks; an exception becomes the returned value."""
    if executor == "serial":
        results = []
        for fn, *args in calls:
            try:
                results.append(fn(*args))
            except Exception as exc:  # reported per variant, never sinks the sweep
                results.append(exc)
        return results
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh instance of our own, never someone else's cluster on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    remote = {}
    refs = []
    for fn, *args in calls:
        task = remote.setdefault(fn, ray.remote(num_cpus=1)(fn))
        refs.append(task.remote(*args))
    results = []
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except Exception as exc:
            results.append(getattr(exc, "cause", None) or exc)
    return results
