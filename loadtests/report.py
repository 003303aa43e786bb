"""Renderers: self-contained HTML (plots inlined as base64 PNG, inline CSS, no script, no network) and CSVs.

Each renderer reads only the typed result, so a report can be rebuilt from results.json alone.
"""

from __future__ import annotations

import csv
import html
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

from . import _plots
from .capacity import CapacityReport
from .result import LoadTestResult

_CSS = """body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:960px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.pass{color:#087f23;font-weight:bold}
.fail{color:#b00020;font-weight:bold}img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}"""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return html.escape(str(v))


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def page(title: str, body: str) -> str:
    # The empty data: icon keeps the browser from requesting /favicon.ico (a console error on file://).
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}"
            f"<p><small>generated {time.strftime('%Y-%m-%d %H:%M:%S')} by optiserve loadtest</small></p>"
            "</body></html>")


def img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def verdict_html(v) -> str:
    cls = "pass" if v.passed else "fail"
    rows = [(c.name, c.value, c.limit, "pass" if c.passed else "FAIL") for c in v.checks]
    return (f'<p class="{cls}">Verdict: {"PASS" if v.passed else "FAIL"}</p>'
            + _table(rows, ("objective", "measured", "limit", "result")))


def run_html(r: LoadTestResult) -> str:
    c, s, rs = r.config, r.summary, r.replica_summary
    cfg = [("url", c.url), ("model", c.model), ("shape", c.shape), ("duration (s)", r.duration_s),
           ("trace parameters", ", ".join(f"{k}={v}" for k, v in c.trace_params.items()) or "defaults"),
           ("users (Locust)", c.users), ("policy", c.policy or "as deployed"), ("replica kind", c.replica_kind)]
    lat = [("requests sent (trace asked for)", f"{s.requests} ({r.target_requests:.0f})"),
           ("successes", s.successes), ("failures", s.failures),
           ("error rate", s.error_rate), ("achieved (ok/s)", s.achieved_rps), ("mean (ms)", s.mean_ms),
           ("p50 (ms)", s.p50_ms), ("p90 (ms)", s.p90_ms), ("p95 (ms)", s.p95_ms), ("p99 (ms)", s.p99_ms),
           ("max (ms)", s.max_ms)]
    fails = _table(list(s.failures_by_kind.items()), ("failure", "count")) if s.failures_by_kind else "<p>none</p>"
    slo = ""
    if r.slo:
        slo = "<h2>SLO attainment</h2>" + _table([
            ("objective p95 (ms)", r.slo.slo_p95_ms), ("requests within objective", r.slo.requests_within_slo),
            (f"{r.slo.window_s:g} s windows meeting objective", r.slo.windows_met),
            ("windows with traffic", r.slo.windows), ("SLO misses (slow or failed)", r.slo.slo_misses)])
    cost = _table([("replica-seconds", rs.replica_seconds), ("replicas min / mean / max",
                    f"{rs.min_replicas} / {rs.mean_replicas:.2f} / {rs.max_replicas}"),
                   ("scale-ups / scale-downs", f"{rs.scale_ups} / {rs.scale_downs}"),
                   ("replica cost (USD)", r.cost.replica_cost), ("total cost (USD)", r.cost.total),
                   ("cost per 1k requests (USD)", r.cost.cost_per_1k_requests)])
    body = (verdict_html(r.verdict) + "<h2>Run</h2>" + _table(cfg) + "<h2>Latency (successful requests)</h2>"
            + _table(lat) + "<h2>Failures (excluded from latency)</h2>" + fails + slo
            + "<h2>Replicas and cost</h2>" + cost + "<h2>Over time</h2>" + img(_plots.run_timeline(r), "timeline")
            + "<p>Data: <code>results.json</code>, <code>timeseries.csv</code>, <code>replicas.csv</code></p>")
    return page(f"Load test: {c.model} ({c.shape})", body)


def write_csv(path: Path, rows: list, cls=None) -> Path:
    cols = [f.name for f in fields(cls)] if cls else list(rows[0].keys()) if rows else []
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(asdict(row) if cls else row)
    return path


def write_run_report(r: LoadTestResult, out_dir: str | Path) -> dict[str, Path]:
    """results.json, timeseries.csv, replicas.csv and report.html in `out_dir`."""
    from .replicas import ReplicaSample
    from .stats import SecondStats

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": r.save(out / "results.json"),
             "timeseries": write_csv(out / "timeseries.csv", r.timeseries, SecondStats),
             "replicas": write_csv(out / "replicas.csv", r.replicas, ReplicaSample)}
    (out / "report.html").write_text(run_html(r))
    paths["html"] = out / "report.html"
    return paths


def capacity_html(rep: CapacityReport) -> str:
    curves = [(c.label, c.replica_kind, c.max_batch_size, c.batch_wait_ms, c.capacity_rps, c.limited_by)
              for c in rep.curves]
    body = (f"<p>Highest throughput one replica sustains with p95 &le; {rep.slo_p95_ms:g} ms and error rate "
            f"&le; {rep.max_error_rate:g}.</p>"
            + _table(curves, ("configuration", "replica kind", "max batch", "batch wait (ms)",
                              "capacity (req/s)", "limited by"))
            + img(_plots.capacity_curves(rep), "throughput versus latency"))
    for c in rep.curves:
        body += f"<h3>Steps: {html.escape(c.label)}</h3>" + _table(
            [(s.offered_rps, s.achieved_rps, s.p50_ms, s.p95_ms, s.p99_ms, s.error_rate, s.requests,
              "pass" if s.passed else "fail") for s in c.steps],
            ("offered (req/s)", "achieved (ok/s)", "p50 (ms)", "p95 (ms)", "p99 (ms)", "error rate", "requests",
             "within objective"))
    if rep.plans:
        body += f"<h2>Capacity plan for a peak of {rep.peak_rps:g} req/s</h2>" + _table(
            [(p.label, p.capacity_rps, p.target_utilization, p.replicas_needed, p.cost_per_hour, p.cost_per_million,
              f"{p.autoscaling['min_replicas']}–{p.autoscaling['max_replicas']}") for p in rep.plans],
            ("configuration", "capacity (req/s)", "utilisation", "replicas at peak", "USD / hour",
             "USD / 1M inferences", "autoscaling min–max"))
        best = next(p for p in rep.plans if p.label == rep.recommended)
        body += (f"<p>Recommended: <b>{html.escape(best.label)}</b>. Autoscaling config:</p><pre>"
                 + html.escape(_yaml(best.autoscaling)) + "</pre>")
    return page(f"Capacity: {rep.model}", body)


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def write_capacity_report(rep: CapacityReport, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = [{"configuration": c.label, **asdict(s)} for c in rep.curves for s in c.steps]
    paths = {"json": rep.save(out / "capacity.json"), "steps": write_csv(out / "capacity_steps.csv", steps)}
    (out / "capacity.html").write_text(capacity_html(rep))
    paths["html"] = out / "capacity.html"
    return paths
