"""Hugging Face transformers models through optimum: export, O1-O3 graph optimization, ORTQuantizer presets.

`optimize quantize DIR` routes here when DIR is a `save_pretrained` folder (it has config.json). Pipeline:
optimum's ONNX exporter (`main_export`, validated against PyTorch by optimum) -> ORTOptimizer at O1, O2 and O3
-> ORTQuantizer dynamic int8 with the preset for this CPU (avx512_vnni / avx512 / avx2 / arm64) -> the same
side-by-side measurement, budget and choice as every other model, in the same QuantizeReport.
Nothing is downloaded: the model is loaded with local_files_only and HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optimize.choice import ANCHOR, choose, kind_order
from optimize.cpu import CpuInfo, choose_format, detect_cpu
from optimize.loading import SourceModel
from optimize.pipeline import Inputs, Progress, VariantSet, finish, report_fields
from optimize.report import QuantizeReport, VariantResult, to_markdown
from optimize.variants import build_anchor
from optiserve.data import DataOptions, Dataset, InputSpec, load_dataset
from optiserve.errors import UserError
from optiserve.hashing import sha256_of

if TYPE_CHECKING:  # quantize() dispatches here; importing it at run time would be a loop
    from optimize.quantize import QuantizeConfig

LEVELS = ("O1", "O2", "O3")
DEFAULT_SEQUENCE = 16


def is_hf_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def preset(cpu: CpuInfo) -> str:
    """The ORTQuantizer preset (AutoQuantizationConfig.<name>) for this CPU."""
    if cpu.arch in ("aarch64", "arm64"):
        return "arm64"
    if cpu.vnni:
        return "avx512_vnni"
    return "avx512" if "avx512f" in cpu.features else "avx2"


_TASKS = (("ForSequenceClassification", "text-classification"), ("ForTokenClassification", "token-classification"),
          ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"),
          ("ForMultipleChoice", "multiple-choice"), ("ForCausalLM", "text-generation"),
          ("ForImageClassification", "image-classification"), ("Model", "feature-extraction"))


def task_of(model_dir: Path) -> str:
    """optimum's task name from the architecture saved in config.json (optimum cannot infer it for folders)."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    for arch in config.get("architectures") or []:
        for suffix, task in _TASKS:
            if arch.endswith(suffix):
                return task
    raise UserError(f"cannot tell the task of {model_dir}: config.json names architectures "
                    f"{config.get('architectures')}, none of which ends in {', '.join(s for s, _ in _TASKS)}")


class _Logits:
    """Calls the transformers model with positional numpy-named inputs and returns its first output (logits)."""

    def __init__(self, model, names: list[str]) -> None:
        self.model, self.names = model, names

    def __call__(self, *tensors):
        out = self.model(**dict(zip(self.names, tensors, strict=True)))
        return out[0] if isinstance(out, tuple) else next(iter(out.values()))


def _data(path: Path | None, names: list[str], what: str, options: DataOptions) -> Dataset | None:
    if path is None:
        return None
    data = load_dataset(path, what, options)
    missing = [n for n in names if n not in data.inputs]
    if missing:
        raise UserError(f"{what} {path} lacks arrays {missing}; the model takes {names} (token ids, int64)")
    inputs = {n: np.ascontiguousarray(data.inputs[n], dtype=np.int64) for n in names}
    return Dataset(inputs, data.labels)


def _generated(names: list[str], vocab: int, samples: int, seq: int) -> Dataset:
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        if name == "input_ids":
            arrays[name] = rng.integers(0, vocab, (samples, seq), dtype=np.int64)
        elif name == "attention_mask":
            arrays[name] = np.ones((samples, seq), np.int64)
        else:
            arrays[name] = np.zeros((samples, seq), np.int64)
    return Dataset(arrays)


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    for name in ("optimum", "transformers", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return stack


def quantize_hf(model_dir: Path, out: Path, config: QuantizeConfig, *,
                calibration_path: Path | None = None, eval_path: Path | None = None,
                progress: Progress = lambda _msg: None) -> QuantizeReport:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from here
    import onnx
    from optimum.exporters.onnx import main_export
    from optimum.exporters.tasks import TasksManager
    from optimum.onnxruntime import AutoOptimizationConfig, AutoQuantizationConfig, ORTOptimizer, ORTQuantizer

    model_dir, out = Path(model_dir), Path(out)  # `out` is quantize's private staging folder
    variants_dir = out / "variants"
    variants_dir.mkdir(parents=True, exist_ok=True)
    work = out / ".optimum"
    notes: list[str] = []
    if config.method in ("static", "fp16"):
        raise UserError(f"--method {config.method} is not offered for Hugging Face models here: optimum's static "
                        "calibration needs the `datasets` package; use --method auto or dynamic")
    progress("exporting with optimum")
    task = task_of(model_dir)
    try:
        with _quiet():
            main_export(str(model_dir), work / "export", task=task, local_files_only=True, do_validation=True)
            model = TasksManager.get_model_from_task(task, str(model_dir), local_files_only=True).eval()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"optimum could not export {model_dir}: {str(exc).splitlines()[0]}") from None
    exported = work / "export" / "model.onnx"
    graph = onnx.load(str(exported), load_external_data=False).graph
    names = [i.name for i in graph.input]
    vocab = int(getattr(model.config, "vocab_size", 100))
    seq = int(config.input_shape.split(",")[-1]) if config.input_shape else DEFAULT_SEQUENCE
    calib = _data(calibration_path, names, "calibration data", config.data)
    evald = _data(eval_path, names, "evaluation data", config.data)
    labelled = evald is not None and evald.labels is not None
    if not labelled:
        notes.append("accuracy was not measured (no --eval-data with labels): the budget applies to the relative "
                     "output error against fp32 ONNX instead")
    evaluation = evald or calib or _generated(names, vocab, config.generated_samples, seq)
    if calib is not None:
        notes.append("calibration data is not used: optimum's ORTQuantizer presets quantize dynamically here")
    specs = [InputSpec(n, tuple(evaluation.inputs[n].shape[1:]), "int64") for n in names]
    sha = sha256_of(model_dir, (".json", ".safetensors", ".bin"))  # weights and configs, not caches
    source = SourceModel(model_dir, "huggingface", sha, module=_Logits(model, names),
                         input_names=names)
    inputs = Inputs(specs, calib, evaluation, labelled, notes)

    variants = VariantSet(out, notes)
    fp32 = variants.add(VariantResult("fp32", "fp32", extra={"task": task}),
                        lambda: shutil.copyfile(exported, variants_dir / "fp32.onnx"))
    for level in LEVELS:
        progress(f"graph optimization {level} (ORTOptimizer)")

        def optimized(level=level) -> Path:
            opt = ORTOptimizer.from_pretrained(work / "export", file_names=["model.onnx"])
            opt.optimize(getattr(AutoOptimizationConfig, level)(), save_dir=work / level)
            return shutil.copyfile(work / level / "model_optimized.onnx", variants_dir / f"optimized-{level}.onnx")

        with _quiet():
            variants.add(VariantResult(f"optimized-{level}", "graph-optimized", extra={"level": level}), optimized)
    cpu = detect_cpu()
    chosen_preset = preset(cpu)
    progress(f"dynamic int8 with the {chosen_preset} preset (ORTQuantizer)")

    def int8() -> Path:
        qconfig = getattr(AutoQuantizationConfig, chosen_preset)(is_static=False, per_channel=config.per_channel)
        ORTQuantizer.from_pretrained(work / "export", file_name="model.onnx").quantize(qconfig, work / "int8")
        return shutil.copyfile(work / "int8" / "model_quantized.onnx", variants_dir / "dynamic-int8.onnx")

    with _quiet():
        variants.add(VariantResult("dynamic-int8", "dynamic", per_channel=config.per_channel,
                                   extra={"preset": chosen_preset}), int8)
        if config.method == "auto" and not fp32.error:
            progress("onnxruntime's one-line quantize_dynamic (the anchor)")
            variants.add(VariantResult(ANCHOR, "dynamic", extra={"recipe": "onnxruntime.quantization."
                                                                  "quantize_dynamic(fp32.onnx, out.onnx), defaults"}),
                         lambda: build_anchor(variants.paths["fp32"], variants_dir / f"{ANCHOR}.onnx"))

    progress("measuring every variant side by side")
    variants.measure(source, inputs, config)
    fmt = choose_format(cpu)
    torch_diff = variants.results["pytorch"].max_abs_diff if "pytorch" in variants.results else None
    report = QuantizeReport(
        **report_fields(source, inputs, config, cpu, variants, task=task), chosen=None,
        quant_format={**asdict(fmt),
                      "reason": f"optimum AutoQuantizationConfig.{chosen_preset} (dynamic); {fmt.reason}"},
        export={"max_abs_diff": torch_diff or 0.0, "tolerance": 1e-4, "verified_samples": len(evaluation),
                "exporter": "optimum main_export (validated)"})
    choose(report, kind_order(cpu, has_conv=False), config.batch_size)
    for extra in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (work / "export" / extra).is_file():  # what a serving process needs besides the graph
            shutil.copyfile(work / "export" / extra, out / extra)
    shutil.rmtree(work, ignore_errors=True)
    finish(report, out, to_markdown)
    return report
