"""The typed, versioned optimization report (report.json) and its renderers (Markdown, terminal table)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

SCHEMA_VERSION = 1


@dataclass
class VariantResult:
    name: str  # "pytorch", "fp32", "dynamic-int8", "static-int8-minmax", "fp16", ...
    kind: str  # "pytorch" | "fp32" | "dynamic" | "static" | "fp16" | other producers (prune, ...)
    path: str | None = None  # relative to the report's folder
    calibration_method: str | None = None
    per_channel: bool = False
    size_bytes: int | None = None
    size_ratio: float | None = None  # size / fp32 ONNX size
    latency_b1_p50_ms: float | None = None
    latency_b1_p95_ms: float | None = None
    latency_b32_p50_ms: float | None = None
    latency_b32_p95_ms: float | None = None
    latency_b1_rounds_ms: list[float] = field(default_factory=list)  # median of each interleaved round, batch 1
    latency_b32_rounds_ms: list[float] = field(default_factory=list)  # the same at batch 32
    batch_rounds_ms: dict[str, list[float]] = field(default_factory=dict)  # the same at --batch-size if not 1 or 32
    latency_b1_spread_pct: float | None = None  # half the median's confidence interval, % of the median
    latency_b32_spread_pct: float | None = None
    throughput_sps: float | None = None  # samples/s at batch 32
    speedup_vs_fp32: float | None = None  # median over rounds of fp32 ONNX p50 / this p50, batch 32
    speedup_vs_fp32_interval: list[float] | None = None  # [low, high]: its sign-test confidence interval (~96%)
    speedup_vs_pytorch: float | None = None  # PyTorch eager p50 / this p50, batch 32
    latency_curve_ms: dict[str, float] = field(default_factory=dict)  # batch size -> p50 ms
    accuracy: float | None = None
    accuracy_change_pts: float | None = None  # percentage points against the reference (PyTorch, else fp32)
    max_abs_diff: float | None = None  # against the fp32 ONNX outputs
    relative_error: float | None = None
    top1_agreement: float | None = None
    quantized_share: float | None = None  # share of MatMul/Gemm/Conv running in int8
    within_budget: bool | None = None
    faster_than_fp32: bool | None = None  # beats fp32 by optimize.choice's rule (at --batch-size, guarded at others)
    error: str | None = None  # why the variant could not be built or measured
    extra: dict[str, Any] = field(default_factory=dict)  # producer-specific facts (e.g. prune ratio, params)


class VariantsReport:
    """JSON and lookup methods shared by the reports that hold measured variants (quantize, prune, sweep).
    Subclasses are dataclasses with `variants` and `schema_version` fields; `KIND` is their `kind` field's value
    (None for the quantize report, which predates the field)."""

    KIND: ClassVar[str | None] = None
    SCHEMA: ClassVar[int] = SCHEMA_VERSION

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".json.tmp")  # write then rename: a crash never leaves half a report
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if data.get("schema_version") != cls.SCHEMA or data.get("kind") != cls.KIND:
            raise ValueError(f"not a {cls.KIND or 'quantize'} report of schema {cls.SCHEMA} "
                             f"(kind {data.get('kind')}, schema {data.get('schema_version')})")
        names = {f.name for f in fields(VariantResult)}
        variants = [VariantResult(**{k: v for k, v in d.items() if k in names}) for d in data["variants"]]
        return cls(**{**data, "variants": variants})

    @classmethod
    def load(cls, path: Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class QuantizeReport(VariantsReport):
    source: dict[str, Any]  # path, kind, sha256
    inputs: list[dict[str, Any]]  # name, shape (without batch), dtype
    cpu: dict[str, Any]
    quant_format: dict[str, Any]  # activation_type, weight_type, reduce_range, reason
    threads: int
    export: dict[str, Any]  # max_abs_diff, tolerance, verified_samples
    accuracy_measured: bool
    budget: dict[str, Any]  # metric ("accuracy_pts" | "relative_error"), max_drop
    variants: list[VariantResult]
    chosen: str | None
    notes: list[str] = field(default_factory=list)
    eval_samples: int = 0
    created_unix_s: float = 0.0
    schema_version: int = SCHEMA_VERSION
    choice: dict[str, Any] = field(default_factory=dict)  # batch size, the rule applied, the tie, the one-liner


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:{spec}}{suffix}"


def _timing(p50_ms: float | None, spread_pct: float | None) -> str:
    return _fmt(p50_ms, ".3f") + ("" if spread_pct is None or p50_ms is None else f" ±{spread_pct:.0f}%")


def _speedup(v: VariantResult) -> str:
    if v.speedup_vs_fp32 is None or not v.speedup_vs_fp32_interval or v.kind == "fp32":
        return _fmt(v.speedup_vs_fp32)
    low, high = v.speedup_vs_fp32_interval
    return f"{v.speedup_vs_fp32:.2f} ({low:.2f}-{high:.2f})"


COLUMNS = ("variant", "size", "size x", "b1 p50 ms", "b32 p50 ms", "b32 p95 ms", "x fp32 (interval)", "x torch",
           "accuracy", "Δ pts", "max |Δ|", "int8 ops", "ok")


def rows(report: QuantizeReport) -> list[list[str]]:
    out = []
    for v in report.variants:
        mark = " *" if v.name == report.chosen else ""
        if v.error:
            out.append([v.name, *["-"] * (len(COLUMNS) - 2), f"failed: {v.error}"])
            continue
        out.append([
            v.name + mark, _fmt(v.size_bytes and v.size_bytes / 1e6, ".2f", " MB"), _fmt(v.size_ratio),
            _timing(v.latency_b1_p50_ms, v.latency_b1_spread_pct),
            _timing(v.latency_b32_p50_ms, v.latency_b32_spread_pct), _fmt(v.latency_b32_p95_ms, ".3f"),
            _speedup(v), _fmt(v.speedup_vs_pytorch), _fmt(v.accuracy and 100 * v.accuracy, ".2f", "%"),
            _fmt(v.accuracy_change_pts, "+.2f"), _fmt(v.max_abs_diff, ".2g"), _fmt(v.quantized_share, ".0%"),
            _fmt(v.within_budget),
        ])
    return out


def to_markdown(report: QuantizeReport) -> str:
    fmt = report.quant_format
    lines = [
        f"# Optimization report: `{Path(report.source['path']).name}`", "",
        f"- source: {report.source['kind']}, sha256 `{report.source['sha256'][:16]}…`",
        f"- CPU: {report.cpu.get('model_name') or report.cpu['arch']} ({', '.join(report.cpu['features']) or 'none'})",
        f"- int8 format: activations {fmt['activation_type']}, weights {fmt['weight_type']}, "
        f"reduce_range={fmt['reduce_range']} — {fmt['reason']}",
        f"- timings: onnxruntime and PyTorch with {report.threads} thread(s), p50/p95 over interleaved rounds; "
        "± is half the ~96% confidence interval of the median over rounds, x fp32 is the median of paired "
        "per-round ratios with its interval",
        f"- choice optimised for batch size {report.choice.get('batch_size', 32)} (--batch-size); "
        f"not slower beyond the noise at batch {', '.join(map(str, report.choice.get('guard_batch_sizes', [1])))}",
        f"- choice rule: {report.choice.get('rule', '-')}",
        f"- export check: max |ONNX − PyTorch| = {report.export['max_abs_diff']:.3g} "
        f"(tolerance {report.export['tolerance']:.3g}, {report.export['verified_samples']} samples)",
        f"- budget: {report.budget['metric']} ≤ {report.budget['max_drop']}"
        + ("" if report.accuracy_measured else " (accuracy NOT measured: no labelled eval data)"),
        f"- chosen: **{report.chosen or 'none'}** (* in the table)", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    if report.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


def print_table(report: QuantizeReport) -> None:
    from rich.table import Table

    from optiserve.console import console as make_console

    table = Table(title=f"{Path(report.source['path']).name}: variants (chosen: {report.chosen or 'none'})")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows(report):
        table.add_row(*r)
    console = make_console()
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
