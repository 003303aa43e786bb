"""`prune(model, PruneConfig)`: structured pruning that physically removes channels, or unstructured sparsity.

Structured pruning uses Torch-Pruning's DependencyGraph: removing output channels of one layer also removes
the matching BatchNorm entries, the next layer's input channels and, across residual adds, every coupled
layer, so the exported ONNX model is genuinely smaller. Importance is weight magnitude (L2 of each channel
group) or first-order Taylor (|weight x gradient|) on calibration data. The amount is a `ratio` (share of
channels removed from each prunable layer) or is searched for to meet `max_latency_ms` / `target_size_bytes`.

Output mirrors `optimize quantize`: OUT/model.onnx (pruned, fp32), OUT/model.pt2 (pruned torch.export program
for further work, e.g. `optimize quantize OUT/model.pt2`), variants/, report.json and report.md.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from optimize._prune_report import PruneReport, to_markdown
from optimize._workspace import staged
from optimize.cpu import detect_cpu
from optimize.export import export_onnx, session
from optimize.loading import load_model
from optimize.measure import tile_batch, time_interleaved
from optimize.pipeline import Inputs, RunSettings, VariantSet, finish, report_fields, resolve_inputs
from optimize.report import VariantResult
from optiserve.data import Dataset, bind, load_dataset
from optiserve.errors import UserError

MODES = ("structured", "unstructured")
CRITERIA = ("magnitude", "taylor")
SEARCH_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
UNSTRUCTURED_NOTE = (
    "unstructured pruning zeroes individual weights: the ONNX model keeps every dense tensor, so it is the same "
    "size and onnxruntime on CPU runs it at the same speed (dense kernels multiply the zeros too). It gives "
    "sparsity (compressible files, sparse-kernel runtimes), not speed here; use --mode structured for speed"
)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class PruneConfig(RunSettings):
    ratio: float | None = None  # share of channels removed per prunable layer; 0.5 when no target is given
    max_latency_ms: float | None = None  # target: batch-32 p50 of the pruned fp32 ONNX model
    target_size_bytes: int | None = None  # target: size of the pruned ONNX file
    target_size_share: float | None = None  # target: pruned ONNX size / unpruned fp32 ONNX size
    mode: str = "structured"
    criterion: str = "magnitude"
    round_to: int | None = None  # keep channel counts multiples of this (SIMD/tensor-core friendly)
    ignore: tuple[str, ...] = ()  # module names (fnmatch patterns) never pruned; output layers always are kept
    global_pruning: bool = False  # rank channels across layers instead of the same ratio in each
    epochs: int = 0  # recovery fine-tuning epochs on the fine-tuning data (0: off)
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        targets = [t for t in (self.ratio, self.max_latency_ms, self.target_size_bytes, self.target_size_share)
                   if t is not None]
        if len(targets) > 1:
            raise UserError("give one of --ratio, --max-latency-ms or --target-size, not several")
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.criterion not in CRITERIA:
            raise UserError(f"--criterion {self.criterion!r} is not one of {', '.join(CRITERIA)}")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise UserError("--ratio must be between 0 and 1 (the share of channels to remove), e.g. 0.5")
        if (self.max_latency_ms is not None and self.max_latency_ms <= 0) or \
                (self.target_size_bytes is not None and self.target_size_bytes <= 0):
            raise UserError("--max-latency-ms and --target-size must be positive")
        if self.target_size_share is not None and not 0 < self.target_size_share < 1:
            raise UserError("--target-size as a share of the unpruned size must be between 0 and 1, e.g. 0.5x")
        if self.mode == "unstructured" and targets and self.ratio is None:
            raise UserError("unstructured pruning changes neither size nor CPU latency: give --ratio, not a target")
        if self.round_to is not None and self.round_to < 1:
            raise UserError("--round-to must be a positive channel multiple, e.g. 8")
        if self.epochs < 0 or self.learning_rate <= 0:
            raise UserError("--epochs must be >= 0 and the learning rate positive")

    @property
    def applied_ratio(self) -> float | None:
        """The fixed ratio to apply, or None when a target has to be searched for."""
        if self.max_latency_ms is None and self.target_size_bytes is None and self.target_size_share is None:
            return 0.5 if self.ratio is None else self.ratio
        return None

def _ignored(model, names: tuple[str, ...], example) -> list:
    from optimize._prune_graph import PRUNABLE, fixed_width_layers, output_layers

    keep = set(output_layers(model, example)) | set(fixed_width_layers(model))
    for pattern in names:
        hits = [n for n, m in model.named_modules() if n and fnmatch(n, pattern)]
        if not hits:
            known = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
            raise UserError(f"--ignore {pattern!r} matches no module; prunable layers are {', '.join(known)}")
        keep.update(hits)
    return [model.get_submodule(n) for n in sorted(keep)]


def _taylor_loss(model, data: Dataset, names: list[str]):
    """Cross-entropy on the labels, or on the model's own predictions when there are none (keeps what it does)."""
    import torch

    batch = data.take(256)
    out = model(*(torch.from_numpy(batch[n]) for n in names))
    out = out[0] if isinstance(out, tuple | list) else out
    if data.labels is not None:
        target = torch.from_numpy(np.asarray(data.labels[:256], dtype=np.int64))
    else:
        target = out.detach().argmax(-1)
    return torch.nn.functional.cross_entropy(out, target)


def structured(model, example: tuple, ratio: float, config: PruneConfig, calibration: Dataset | None = None,
               names: list[str] | None = None):
    """Prune `model` in place with Torch-Pruning's DependencyGraph; returns it. Taylor needs `calibration`."""
    import torch
    import torch_pruning as tp

    if config.criterion == "taylor":
        if calibration is None:
            raise UserError("--criterion taylor ranks channels by |weight x gradient| and needs --calibration-data")
        importance = tp.importance.GroupTaylorImportance()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about every parameter it leaves alone
        pruner = tp.pruner.MetaPruner(
            model, example, importance=importance, pruning_ratio=ratio, global_pruning=config.global_pruning,
            ignored_layers=_ignored(model, config.ignore, example), round_to=config.round_to,
        )
        if config.criterion == "taylor":
            model.zero_grad()
            _taylor_loss(model, calibration, names or []).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)
    try:
        with torch.no_grad():
            model(*example)
    except Exception as exc:
        raise UserError(f"the pruned model no longer runs ({str(exc).splitlines()[0]}): a layer's width is fixed "
                        "elsewhere in the graph; keep it with --ignore") from None
    return model


def unstructured(model, ratio: float, config: PruneConfig, example: tuple):
    """Zero the `ratio` smallest-magnitude weights across all Linear/Conv layers (global L1), permanently."""
    from torch.nn.utils import prune as tprune

    from optimize._prune_graph import PRUNABLE

    skip = {id(m) for m in _ignored(model, config.ignore, example)}
    params = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE) and id(m) not in skip]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=ratio)
    for module, name in params:
        tprune.remove(module, name)
    return model


def counts(model, example: tuple) -> tuple[int, int, int]:
    """(FLOPs per sample, parameters, non-zero parameters)."""
    import torch
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, params = tp.utils.count_ops_and_params(model, tuple(t[:1] for t in example))
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return int(2 * macs), int(params), nonzero


def layer_shapes(model) -> dict[str, tuple[int, ...]]:
    from optimize._prune_graph import PRUNABLE

    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def save_program(model, example: tuple, path: Path) -> Path:
    """torch.export the (pruned) module with a dynamic batch axis and save it as .pt2."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model.eval(), example, dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as exc:
        raise UserError(f"torch.export of the pruned model failed: {str(exc).splitlines()[0]}") from None
    torch.export.save(program, str(path))
    return path


def finetune(model, data: Dataset, names: list[str], epochs: int, learning_rate: float):
    """Short recovery training (Adam, cross-entropy) on labelled data; single input models."""
    import torch

    if data.labels is None:
        raise UserError("--finetune-data needs a 'labels' array (fine-tuning trains on labelled samples)")
    if len(names) != 1:
        raise UserError("fine-tuning supports single-input models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # repeatable
    try:
        model.train()
        _train(model, data.inputs[names[0]], np.asarray(data.labels, dtype=np.int64), epochs, learning_rate)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _train(model, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float) -> None:
    import torch

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()


def _example(inputs: Inputs) -> tuple:
    import torch

    batch = inputs.evaluation.take(4)
    return tuple(torch.from_numpy(batch[s.name]) for s in inputs.specs)


def _apply(base, ratio: float, config: PruneConfig, inputs: Inputs, example: tuple):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deep-copying an exported graph's pytree specs warns about deprecations
        model = copy.deepcopy(base)
    names = [s.name for s in inputs.specs]
    if config.mode == "unstructured":
        return unstructured(model, ratio, config, example)
    return structured(model, example, ratio, config, inputs.calibration, names)


def _to_onnx(model, example: tuple, inputs: Inputs, folder: Path, stem: str):
    """Save the pruned module as .pt2, export that to ONNX and verify it against the pruned PyTorch model."""
    pt2 = save_program(model, example, folder / f"{stem}.pt2")
    pruned_source = load_model(pt2)
    pruned_source.input_names = [s.name for s in inputs.specs]  # an ONNX input named `input.1` is `input_1` there
    return pt2, export_onnx(pruned_source, inputs.specs, inputs.evaluation, folder / f"{stem}.onnx")


def _search(base, config: PruneConfig, inputs: Inputs, example: tuple, folder: Path, fp32_bytes: int,
            progress: Progress):
    """Smallest ratio (least pruning, so least accuracy lost) whose ONNX model meets the latency/size target."""
    trials = []
    max_size = config.target_size_bytes
    if config.target_size_share is not None:
        max_size = int(config.target_size_share * fp32_bytes)
    batch = tile_batch(inputs.evaluation, 32)
    for ratio in SEARCH_RATIOS:
        progress(f"searching: trying ratio {ratio:.1f}")
        model = _apply(base, ratio, config, inputs, example)
        _, exported = _to_onnx(model, example, inputs, folder, "search")
        sess = session(exported.path, config.threads)
        timing = time_interleaved({"m": lambda f, s=sess: s.run(None, f)}, batch, config.repeats)["m"]
        size = exported.path.stat().st_size
        meets = (config.max_latency_ms is None or timing.p50_ms <= config.max_latency_ms) and \
            (max_size is None or size <= max_size)
        trials.append({"ratio": ratio, "size_bytes": size, "latency_b32_p50_ms": timing.p50_ms, "meets_target": meets})
        if meets:
            break
    for f in folder.glob("search.*"):
        f.unlink()
    return trials


def _rename_outputs(path: Path, names: list[str]) -> None:
    """Give the pruned ONNX model the original model's output names, so it replaces it where it is served."""
    import onnx

    model = onnx.load(str(path))
    renames = {o.name: n for o, n in zip(model.graph.output, names, strict=False) if o.name != n}
    if not renames:
        return
    taken = {t for node in model.graph.node for t in [*node.input, *node.output]} - set(renames)
    if taken & set(renames.values()):
        return  # an inner tensor already has that name: keep the exporter's names rather than break the graph
    for value in model.graph.output:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.output[:] = [renames.get(t, t) for t in node.output]
        node.input[:] = [renames.get(t, t) for t in node.input]
    onnx.save(model, str(path))


def _check_conversion(module, source, inputs: Inputs) -> str:
    """The ONNX graph's torch conversion must compute what onnxruntime computes, before anything is pruned."""
    from optimize._onnx_to_torch import verify

    batch = inputs.evaluation.take(256)
    worst = verify(module, source.path, batch, [s.name for s in inputs.specs])
    return (f"{source.path.name} was converted to a torch module for pruning; it matches onnxruntime within "
            f"{worst:.2g} (max abs difference) on {len(next(iter(batch.values())))} samples")


def prune(model_path: Path, out: Path, config: PruneConfig = PruneConfig(), *, calibration_path: Path | None = None,
          eval_path: Path | None = None, finetune_path: Path | None = None,
          progress: Progress = lambda _msg: None) -> PruneReport:
    with staged(Path(out)) as stage:  # private until it succeeded: concurrent runs and failures leave OUT intact
        return _prune(Path(model_path), stage, config, calibration_path, eval_path, finetune_path, progress)


def _prune(model_path: Path, out: Path, config: PruneConfig, calibration_path: Path | None, eval_path: Path | None,
           finetune_path: Path | None, progress: Progress) -> PruneReport:
    import torch

    variants_dir = out / "variants"
    variants_dir.mkdir(parents=True)
    torch.set_num_threads(max(1, config.threads))
    progress("loading model")
    source = load_model(Path(model_path), config.allow_pickle)
    from optimize._prune_graph import prunable_module

    checked = prunable_module(source)  # refuse what cannot be pruned before reading any data
    inputs = resolve_inputs(source, config, calibration_path, eval_path)
    base = checked if source.kind == "onnx" else prunable_module(source, _example(inputs))  # (ONNX needs no trace)
    notes = list(inputs.notes)
    if source.kind == "onnx":
        notes.append(_check_conversion(base, source, inputs))
    tune = bind(load_dataset(finetune_path, "fine-tuning data", config.data), inputs.specs, "fine-tuning data") \
        if finetune_path else None
    if config.epochs and tune is None:
        raise UserError("--epochs needs --finetune-data (an .npz of inputs and labels to train on)")
    example = _example(inputs)

    progress("exporting the unpruned fp32 ONNX model")
    fp32 = export_onnx(source, inputs.specs, inputs.evaluation, variants_dir / "fp32.onnx")
    flops_before, params_before, _ = counts(base, example)
    shapes_before = layer_shapes(base)

    search: list[dict] = []
    ratio = config.applied_ratio
    if ratio is None:
        search = _search(base, config, inputs, example, variants_dir, fp32.path.stat().st_size, progress)
        ratio = search[-1]["ratio"]
        if not search[-1]["meets_target"]:
            notes.append(f"no ratio up to {SEARCH_RATIOS[-1]} met the target; the most pruned model is reported")
    progress(f"pruning ({config.mode}, {config.criterion}, ratio {ratio:.2f})")
    model = _apply(base, ratio, config, inputs, example)
    tuned = None
    if tune is not None and config.epochs:
        progress(f"fine-tuning for {config.epochs} epoch(s)")
        finetune(model, tune, [s.name for s in inputs.specs], config.epochs, config.learning_rate)
        tuned = {"epochs": config.epochs, "samples": len(tune), "learning_rate": config.learning_rate}
        if config.mode == "unstructured":
            model = unstructured(model, ratio, config, example)  # training refilled the zeros: re-apply the mask
    flops_after, params_after, nonzero = counts(model, example)
    shapes_after = layer_shapes(model)
    if config.mode == "structured" and shapes_after == shapes_before:
        notes.append("no channel could be removed (every layer is ignored, coupled to an output layer or has a width "
                     "fixed by the graph)")
    if config.mode == "unstructured":
        params_after = nonzero
        flops_after = flops_before  # dense kernels still multiply the zeros
        notes.append(UNSTRUCTURED_NOTE)

    progress("exporting and verifying the pruned model")
    pt2, exported = _to_onnx(model, example, inputs, variants_dir, "pruned")
    if source.kind == "onnx":
        _rename_outputs(exported.path, fp32.output_names)
    shutil.copyfile(pt2, out / "model.pt2")
    pt2.unlink()
    variants = VariantSet(out, notes)
    variants.add(VariantResult("fp32", "fp32"), fp32.path)
    result = variants.add(VariantResult("pruned", f"prune-{config.mode}", extra={
        "ratio": ratio, "criterion": config.criterion, "params": params_after, "flops": flops_after}), exported.path)
    progress("measuring side by side")
    variants.measure(source, inputs, config)
    if tuned is not None and inputs.labelled:
        tuned["accuracy_after"] = result.accuracy
    if not result.within_budget:
        variants.notes.append("the pruned model is outside the accuracy budget: try a smaller --ratio or "
                              "--finetune-data with --epochs")
    report = PruneReport(
        **report_fields(source, inputs, config, detect_cpu(), variants),
        export={"max_abs_diff": exported.max_abs_diff, "tolerance": exported.tolerance,
                "verified_samples": exported.verified_samples},
        config=asdict(config), ratio=ratio, params_before=params_before, params_after=params_after,
        flops_before=flops_before, flops_after=flops_after,
        layers=[{"name": n, "shape_before": list(s), "shape_after": list(shapes_after.get(n, ()))}
                for n, s in shapes_before.items()],
        chosen="pruned" if result.within_budget else None, search=search, finetune=tuned,
    )
    finish(report, out, to_markdown, model="pruned")  # the pruned model either way; the verdict is `chosen`
    return report
