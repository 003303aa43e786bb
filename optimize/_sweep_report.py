"""The typed sweep report (report.json), its Pareto front, and its self-contained HTML renderer (the variant table
and an inline PNG plot; no network, no scripts)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optimize.report import VariantResult, VariantsReport

SWEEP_SCHEMA_VERSION = 1


@dataclass
class SweepReport(VariantsReport):
    KIND: ClassVar[str | None] = "sweep"
    SCHEMA: ClassVar[int] = SWEEP_SCHEMA_VERSION

    source: dict[str, Any]
    inputs: list[dict[str, Any]]
    cpu: dict[str, Any]
    quant_format: dict[str, Any]
    threads: int
    accuracy_measured: bool
    budget: dict[str, Any]
    config: dict[str, Any]
    executor: str  # "ray" | "serial": how the variants were built
    build_wall_s: float  # building every variant (the parallel part)
    measure_wall_s: float  # measuring them side by side (always serial)
    variants: list[VariantResult]
    pareto: list[str]  # names of the Pareto-optimal variants (batch-32 p50 latency vs accuracy)
    chosen: str | None = None  # fastest feasible variant (same rule as quantize)
    notes: list[str] = field(default_factory=list)
    eval_samples: int = 0
    created_unix_s: float = 0.0
    kind: str = "sweep"
    schema_version: int = SWEEP_SCHEMA_VERSION
    choice: dict[str, Any] = field(default_factory=dict)  # the rule applied and the tie (optimize.choice)



def quality(v: VariantResult, labelled: bool) -> float | None:
    """Higher is better: accuracy change in points, or minus the relative output error in % without labels."""
    if labelled:
        return v.accuracy_change_pts
    return None if v.relative_error is None else -100 * v.relative_error


def pareto_front(variants: list[VariantResult], labelled: bool) -> list[str]:
    """Variants that no other variant beats on both batch-32 p50 latency and quality (ties allowed)."""
    points = [(v.name, v.latency_b32_p50_ms, quality(v, labelled)) for v in variants
              if not v.error and v.kind != "pytorch" and v.latency_b32_p50_ms is not None
              and quality(v, labelled) is not None]
    front = []
    for name, lat, q in points:
        dominated = any(lat2 <= lat and q2 >= q and (lat2 < lat or q2 > q) for _, lat2, q2 in points)
        if not dominated:
            front.append(name)
    return front


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
tr.pareto td{background:#eef8ee;font-weight:600}tr.bad td{color:#999}img{max-width:100%}"""


def plot_png(report) -> bytes:
    """Accuracy change (or minus relative error) against batch-32 p50 latency; the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = report.accuracy_measured
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    points = [(v, v.latency_b32_p50_ms, quality(v, labelled)) for v in report.variants
              if v.kind != "pytorch" and not v.error and v.latency_b32_p50_ms is not None]
    points = [(v, x, y) for v, x, y in points if y is not None]
    for v, x, y in points:
        on_front = v.name in report.pareto
        ax.scatter(x, y, s=60 if on_front else 30, c="tab:green" if on_front else "tab:gray",
                   marker="*" if on_front else "o", zorder=3)
        ax.annotate(v.name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted((x, y) for v, x, y in points if v.name in report.pareto)
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), c="tab:green", lw=1, zorder=2)
    ax.axhline(-report.budget["max_drop"], c="tab:red", ls="--", lw=1, label="accuracy budget")
    ax.set_xlabel(f"latency at batch 32, p50 (ms, {report.threads} thread(s))")
    ax.set_ylabel("accuracy change (points)" if labelled else "− relative output error vs fp32 (%)")
    ax.set_title("variants: Pareto front in green")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _cell(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render(report) -> str:
    labelled = report.accuracy_measured
    metric = "Δ accuracy (pts)" if labelled else "rel. error (%)"
    head = ["variant", "prune ratio", "quantization", "calibration", "size (MB)", "b1 p50", "b1 p95", "b32 p50",
            "b32 p95", "x fp32", metric, "int8 ops", "feasible", "Pareto"]
    body = []
    for v in report.variants:
        cls = "pareto" if v.name in report.pareto else ("bad" if v.error or v.within_budget is False else "")
        q = v.accuracy_change_pts if labelled else (None if v.relative_error is None else 100 * v.relative_error)
        cells = [v.name + (" (chosen)" if v.name == report.chosen else ""), _cell(v.extra.get("prune_ratio"), "g"),
                 v.extra.get("quantization", v.kind), v.calibration_method or "-",
                 _cell(v.size_bytes and v.size_bytes / 1e6), _cell(v.latency_b1_p50_ms), _cell(v.latency_b1_p95_ms),
                 _cell(v.latency_b32_p50_ms), _cell(v.latency_b32_p95_ms), _cell(v.speedup_vs_fp32, ".2f"),
                 _cell(q, "+.2f"), _cell(v.quantized_share, ".0%"),
                 "-" if v.within_budget is None else ("yes" if v.within_budget else "no"),
                 "★" if v.name in report.pareto else ""]
        if v.error:
            cells = [v.name, *["-"] * (len(head) - 3), f"failed: {v.error}", ""]
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    png = base64.b64encode(plot_png(report)).decode()
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    name = html.escape(Path(report.source["path"]).name)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sweep: {name}</title>
<style>{_CSS}</style></head><body>
<h1>Sweep: {name}</h1>
<p>{len(report.variants)} variants built with <b>{report.executor}</b> in {report.build_wall_s:.1f} s, measured side
by side in {report.measure_wall_s:.1f} s ({report.threads} thread(s)). Budget: {report.budget['metric']} ≤
{report.budget['max_drop']}. CPU: {html.escape(report.cpu.get('model_name') or report.cpu['arch'])}.
Chosen (fastest feasible, faster than fp32): <b>{html.escape(report.chosen or 'none')}</b>.
Pareto-optimal variants (★): no other variant is both at least as fast at batch 32 and at least as accurate.</p>
<img alt="accuracy change against latency" src="data:image/png;base64,{png}">
<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>{''.join(body)}</tbody></table>
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
</body></html>
"""
