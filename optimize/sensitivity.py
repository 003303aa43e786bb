"""Accuracy-aware quantization: keep the most quantization-sensitive nodes in fp32 until the budget holds.

Sensitivity of a MatMul/Gemm/Conv node = the relative output error (against the fp32 model, on the calibration
data) of a model in which only that node is quantized. Nodes are ranked by it, and configs that keep the top
1, 2, 3, ... nodes in fp32 are built and checked against the accuracy budget until one passes. Every config
tried is returned, not just the one that passed, and each node is named by its ONNX name and, where the
exporter recorded it, the PyTorch module it came from.
"""

from __future__ import annotations

import ast
import contextlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from optimize.cpu import QuantFormat
from optimize.export import session
from optimize.measure import agreement, predict
from optimize.variants import COMPUTE_OPS, VariantSpec, build
from optiserve.data import Dataset

# (within budget, the budget metric's value) for a built model file.
Evaluate = Callable[[Path], tuple[bool, float]]


@dataclass(frozen=True)
class NodeSensitivity:
    node: str  # ONNX node name in the pre-processed fp32 model
    op_type: str
    module: str | None  # PyTorch module path (e.g. "net.2") where the export recorded it
    relative_error: float  # ||out - fp32|| / ||fp32|| with only this node quantized


@dataclass
class FallbackConfig:
    name: str  # e.g. "static-int8-minmax+fp32x2"
    fp32_nodes: list[str]
    fp32_modules: list[str | None]
    metric: float  # the budget metric (accuracy change in points, or relative error in %)
    within_budget: bool
    path: Path | None = None
    error: str | None = None


@dataclass
class FallbackResult:
    base: str  # the variant whose nodes are ranked and kept in fp32
    ranking: list[NodeSensitivity]
    configs: list[FallbackConfig] = field(default_factory=list)

    @property
    def passed(self) -> FallbackConfig | None:
        return next((c for c in self.configs if c.within_budget), None)


def node_modules(model_path: Path) -> dict[str, str | None]:
    """ONNX node name -> PyTorch module path, from the dynamo exporter's name scopes or TorchScript node names."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    out: dict[str, str | None] = {}
    for node in graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        module = None
        if "pkg.torch.onnx.name_scopes" in props:
            with contextlib.suppress(ValueError, SyntaxError):
                scopes = [s for s in ast.literal_eval(props["pkg.torch.onnx.name_scopes"]) if s]
                module = scopes[-2] if len(scopes) >= 2 else None
        elif node.name.startswith("/") and node.name.count("/") >= 2:  # TorchScript export: /net/0/Gemm
            module = ".".join(node.name.strip("/").split("/")[:-1])
        out[node.name] = module
    return out


def compute_nodes(model_path: Path) -> list[tuple[str, str]]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in COMPUTE_OPS and n.name]


def _exclude(names: list[str]) -> list[str]:
    """Node names to keep in float. quantize_dynamic first rewrites Gemm into MatMul (+ Add) named
    `<gemm>_MatMul`, so the excluded Gemm must be named both ways."""
    return names + [n + "_MatMul" for n in names]


def _outputs(path: Path, data: Dataset) -> np.ndarray:
    sess = session(path)
    return predict(lambda feed: sess.run(None, feed)[0], data)


def rank_nodes(pre: Path, spec: VariantSpec, fmt: QuantFormat, calibration: Dataset | None, data: Dataset,
               folder: Path) -> list[NodeSensitivity]:
    """Sensitivity of every MatMul/Gemm/Conv node, most sensitive first (see the module docstring)."""
    nodes = compute_nodes(pre)
    modules = node_modules(pre)
    reference = _outputs(pre, data)
    ranking = []
    for name, op in nodes:
        path = folder / ".sensitivity.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            build(spec, pre, path, fmt, calibration, nodes_to_exclude=_exclude([n for n, _ in nodes if n != name]))
        ranking.append(NodeSensitivity(name, op, modules.get(name), agreement(_outputs(path, data), reference)
                                       .relative_error))
        path.unlink(missing_ok=True)
    return sorted(ranking, key=lambda s: -s.relative_error)


def fallback(pre: Path, spec: VariantSpec, fmt: QuantFormat, calibration: Dataset | None, data: Dataset,
             evaluate: Evaluate, folder: Path, max_fp32_nodes: int | None = None) -> FallbackResult:
    """Keep the top-k most sensitive nodes in fp32 for k = 1, 2, ... until `evaluate` says the budget holds.

    `data` drives the sensitivity ranking (calibration inputs); `evaluate` applies the real budget (accuracy on
    the evaluation data, or relative error). Every built config is kept under `folder`.
    """
    ranking = rank_nodes(pre, spec, fmt, calibration, data, folder)
    result = FallbackResult(spec.name, ranking)
    limit = len(ranking) if max_fp32_nodes is None else min(max_fp32_nodes, len(ranking))
    for k in range(1, limit + 1):
        kept = ranking[:k]
        name = f"{spec.name}+fp32x{k}"
        config = FallbackConfig(name, [s.node for s in kept], [s.module for s in kept], float("nan"), False)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                config.path = build(spec, pre, folder / f"{name}.onnx", fmt, calibration,
                                    nodes_to_exclude=_exclude(config.fp32_nodes))
            config.within_budget, config.metric = evaluate(config.path)
        except Exception as exc:  # a config that cannot be built is reported, and the next one is tried
            config.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result.configs.append(config)
        if config.within_budget:
            break
    return result


def needs_fallback(results: Iterable) -> bool:
    """True when int8 variants were built and none of them met the budget."""
    int8 = [r for r in results if r.kind in ("dynamic", "static") and not r.error]
    return bool(int8) and not any(r.within_budget for r in int8)


@dataclass
class Fallback:
    variants: list[tuple]  # (VariantResult, model path or None when it could not be built), every config tried
    notes: list[str]


def fallback_variants(pre: Path, fmt: QuantFormat, inputs, settings, results: dict, fp32: Path,
                      folder: Path) -> Fallback:
    """Run the fp32 fallback on the int8 variant closest to the budget and return every config tried as a new
    variant (to add and measure) with notes explaining the ranking and the outcome."""
    from optimize.pipeline import within_budget
    from optimize.report import VariantResult

    labelled = inputs.labelled
    int8 = [r for r in results.values() if r.kind in ("dynamic", "static") and not r.error]
    base = max(int8, key=lambda r: (r.accuracy_change_pts if labelled else -r.relative_error) or 0.0)
    spec = VariantSpec(base.name, base.kind, base.calibration_method, base.per_channel)
    data = inputs.evaluation
    fp32_out = _outputs(fp32, data)
    ref = results.get("pytorch") or results["fp32"]

    def evaluate(path: Path) -> tuple[bool, float]:
        out = _outputs(path, data)
        change = 100 * (float(np.mean(out.argmax(1) == data.labels)) - ref.accuracy) \
            if labelled and ref.accuracy is not None else None
        error = agreement(out, fp32_out).relative_error
        return within_budget(labelled, settings.max_accuracy_drop, change, error), \
            change if change is not None else 100 * error

    outcome = fallback(pre, spec, fmt, inputs.calibration,
                       inputs.calibration if inputs.calibration is not None else data, evaluate, folder)
    ranking = [{"node": s.node, "op_type": s.op_type, "module": s.module, "relative_error": s.relative_error}
               for s in outcome.ranking]
    variants = [(VariantResult(c.name, base.kind, calibration_method=base.calibration_method,
                               per_channel=base.per_channel, error=c.error, extra={
                                   "fallback_of": base.name, "fp32_nodes": c.fp32_nodes,
                                   "fp32_modules": c.fp32_modules, "sensitivity_ranking": ranking}),
                 c.path if c.error is None else None) for c in outcome.configs]
    metric = "accuracy change (pts)" if labelled else "relative error (%)"
    tried = "; ".join(f"{c.name}: {metric} {c.metric:+.3g}, {'within' if c.within_budget else 'outside'} budget"
                      for c in outcome.configs)
    ranked = ", ".join(f"{s.node}" + (f" ({s.module})" if s.module else "") + f" {100 * s.relative_error:.2g}%"
                       for s in outcome.ranking)
    notes = [f"no int8 variant met the budget: ranked the nodes of {base.name} by the relative output error "
             f"each adds when quantized alone: {ranked}"]
    if outcome.passed:
        pairs = zip(outcome.passed.fp32_nodes, outcome.passed.fp32_modules, strict=True)
        kept = ", ".join(f"{n}" + (f" ({m})" if m else "") for n, m in pairs)
        notes.append(f"accuracy-aware fallback: {outcome.passed.name} meets the budget with these nodes kept in "
                     f"fp32: {kept}. Configs tried: {tried}")
    else:
        notes.append(f"accuracy-aware fallback found no config within budget. Configs tried: {tried}")
    return Fallback(variants, notes)
