"""The typed prune report (report.json) and its Markdown renderer; the variant table is quantize's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optimize.report import COLUMNS, VariantResult, VariantsReport, rows

PRUNE_SCHEMA_VERSION = 1


@dataclass
class PruneReport(VariantsReport):
    KIND: ClassVar[str | None] = "prune"
    SCHEMA: ClassVar[int] = PRUNE_SCHEMA_VERSION

    source: dict[str, Any]  # path, kind, sha256
    inputs: list[dict[str, Any]]
    cpu: dict[str, Any]
    threads: int
    export: dict[str, Any]  # the pruned model's ONNX export check: max_abs_diff, tolerance, verified_samples
    accuracy_measured: bool
    budget: dict[str, Any]
    config: dict[str, Any]  # the PruneConfig as given
    ratio: float  # the ratio applied (given, or found by the latency/size search)
    params_before: int
    params_after: int  # structured: parameters left; unstructured: non-zero parameters
    flops_before: int  # 2 x multiply-accumulates of one sample's forward pass
    flops_after: int
    layers: list[dict[str, Any]]  # name, shape_before, shape_after, for every Linear/Conv
    variants: list[VariantResult]
    chosen: str | None  # "pruned" when it met the accuracy budget
    search: list[dict[str, Any]] = field(default_factory=list)  # every ratio tried for a latency/size target
    finetune: dict[str, Any] | None = None  # epochs, samples, accuracy before/after fine-tuning
    notes: list[str] = field(default_factory=list)
    eval_samples: int = 0
    created_unix_s: float = 0.0
    kind: str = "prune"
    schema_version: int = PRUNE_SCHEMA_VERSION



def to_markdown(report: PruneReport) -> str:
    cfg = report.config
    def pct(after: int, before: int) -> str:
        return f"{after:,} ({100 * after / before:.1f}% of {before:,})" if before else str(after)

    lines = [
        f"# Prune report: `{Path(report.source['path']).name}`", "",
        f"- mode: {cfg['mode']}, criterion {cfg['criterion']}, ratio {report.ratio:.2f}"
        + (f", channels rounded to multiples of {cfg['round_to']}" if cfg.get("round_to") else ""),
        f"- parameters: {pct(report.params_after, report.params_before)}",
        f"- FLOPs per sample: {pct(report.flops_after, report.flops_before)}",
        f"- export check (pruned PyTorch vs ONNX): max |Δ| = {report.export['max_abs_diff']:.3g}",
        f"- budget: {report.budget['metric']} ≤ {report.budget['max_drop']}"
        + ("" if report.accuracy_measured else " (accuracy NOT measured: no labelled eval data)"),
        f"- timings: onnxruntime and PyTorch with {report.threads} thread(s)",
        f"- result: **{'within budget' if report.chosen else 'outside the accuracy budget'}**", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", "## Layers", "", "| layer | weight before | weight after |", "|---|---|---|"]
    lines += [f"| {lay['name']} | {tuple(lay['shape_before'])} | {tuple(lay['shape_after'])} |"
              for lay in report.layers]
    if report.search:
        lines += ["", "## Ratio search", "", "| ratio | size MB | b32 p50 ms | meets target |", "|---|---|---|---|"]
        lines += [f"| {s['ratio']:.2f} | {s['size_bytes'] / 1e6:.3f} | {s['latency_b32_p50_ms']:.3f} | "
                  f"{'yes' if s['meets_target'] else 'no'} |" for s in report.search]
    if report.finetune:
        lines += ["", f"Fine-tuning: {report.finetune}"]
    if report.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"
