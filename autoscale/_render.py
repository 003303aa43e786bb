"""Renderers of simulation results: a rich table per trace, and a plot of demand, replicas and latency."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from rich.table import Table

from ._results import SimulationResult


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def results_table(title: str, results: list[SimulationResult], best: str | None = None,
                  vs_tuned: dict[str, dict] | None = None, fair_bound_rs: float | None = None) -> Table:
    """One row per result; `vs_tuned` (policy -> policy_rows() row) adds the x tuned-queue column,
    `fair_bound_rs` (the fair bound's replica-seconds) the x fair bound column."""
    t = Table(title=title, title_justify="left")
    cols = ["policy", "SLO req", "SLO 10s win", "p50 ms", "p95 ms", "p99 ms", "replica-s", "cost $",
            "$ / 1k req", "actions", "x bound"] + (["x fair bound"] if fair_bound_rs else []) + \
        (["x queue tuned"] if vs_tuned is not None else [])
    for col in cols:
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        name = f"[bold]{r.policy}[/bold] *" if r.policy == best else r.policy
        row = [name, _pct(r.slo_attainment_requests), _pct(r.slo_attainment_windows),
               f"{r.latency_p50_ms:.1f}", f"{r.latency_p95_ms:.1f}", f"{r.latency_p99_ms:.1f}",
               f"{r.replica_seconds:,.0f}", f"{r.cost_total:.4f}", f"{r.cost_per_1k_requests:.5f}",
               str(r.scaling_actions), _x(r.ratio_to_bound)]
        if fair_bound_rs:
            row.append(_x(r.replica_seconds / fair_bound_rs))
        if vs_tuned is not None:
            v = vs_tuned.get(r.policy)
            row.append("-" if not v or v["vs_tuned_queue"] is None else
                       f"{v['vs_tuned_queue']:.2f}" + ("" if v["tuned_queue_reached"] else " (q<)"))
        t.add_row(*row)
    return t


def worst_case_table(title: str, rows: list[dict]) -> Table:
    """Each policy's worst attainment, x tuned queue and x bound across traces, with the trace it came from."""
    t = Table(title=title, title_justify="left")
    for col in ("policy", "worst SLO req", "on", "worst x queue tuned", "on", "worst x bound", "on",
                "worst x fair bound", "on", "meets goal everywhere", "total replica-s"):
        t.add_column(col, justify="left" if col in ("policy", "on") else "right")
    for r in rows:
        t.add_row(r["policy"], _pct(r["worst_attainment"]), r["worst_attainment_trace"],
                  _x(r["worst_vs_tuned_queue"]), r["worst_vs_tuned_queue_trace"] or "-", _x(r["worst_vs_bound"]),
                  r["worst_vs_bound_trace"] or "-", _x(r.get("worst_vs_fair_bound")),
                  r.get("worst_vs_fair_bound_trace") or "-", "yes" if r["meets_goal_everywhere"] else "no",
                  f"{r['total_replica_seconds']:,.0f}")
    return t


def comparison_html(data: dict) -> str:
    """HTML tables of a Comparison's JSON: the worst case per policy, then every trace's policies."""
    from html import escape

    def table(headers: list[str], rows: list[list]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table border='1' cellspacing='0' cellpadding='4'><tr>{head}</tr>{body}</table>"

    pct = lambda v: _pct(v) if v is not None else "-"  # noqa: E731
    out = [f"<p>Assumed replica start time: {data.get('replica_start_s')} s (profile: "
           f"{escape(str(data.get('profile_source') or 'given'))}).</p><h2>Worst case across traces</h2>",
           table(["policy", "worst SLO req", "on", "worst x queue tuned", "on", "worst x bound", "on",
                  "worst x fair bound", "on", "meets goal everywhere"],
                 [[w["policy"], pct(w["worst_attainment"]), w["worst_attainment_trace"],
                   _x(w["worst_vs_tuned_queue"]), w["worst_vs_tuned_queue_trace"], _x(w["worst_vs_bound"]),
                   w["worst_vs_bound_trace"], _x(w.get("worst_vs_fair_bound")), w.get("worst_vs_fair_bound_trace"),
                   "yes" if w["meets_goal_everywhere"] else "no"]
                  for w in data.get("worst_case", [])])]
    for tc in data.get("traces", []):
        out.append(f"<h2>{escape(tc['trace'])}</h2><p>Reachable: {escape(tc.get('references', {}).get('verdict', ''))}"
                   "</p>")
        out.append(table(["policy", "SLO req", "replica-s", "x bound", "x fair bound", "x queue tuned",
                          "queue target", "actions"],
                         [[r["policy"], pct(r["slo_attainment_requests"]), f"{r['replica_seconds']:,.0f}",
                           _x(r["vs_bound"]), _x(r.get("vs_fair_bound")),
                           _x(r["vs_tuned_queue"]) + ("" if r["tuned_queue_reached"] in (True, None)
                                                      else " (queue short)"),
                           r["tuned_queue_target"], r["scaling_actions"]] for r in tc.get("policies", [])]))
    return "\n".join(out)


def plot(groups: dict[str, list[SimulationResult]], path: str | Path, extra_html: str = "") -> Path:
    """One column per trace: demand, replicas per policy, p95 latency per policy. PNG, or HTML with it inlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".png", ".html"):
        from optiserve.errors import UserError

        raise UserError(f"--plot must end in .png or .html, got {path.name}.")
    cols = len(groups)
    fig, axes = plt.subplots(3, cols, figsize=(6 * cols, 8), sharex="col", squeeze=False)
    for c, (trace, results) in enumerate(groups.items()):
        ts = results[0].timeseries
        t_min = [t / 60 for t in ts["t_s"]]
        axes[0][c].plot(t_min, ts["demand_rps"], color="black")
        axes[0][c].set_title(trace)
        axes[0][c].set_ylabel("demand (req/s)")
        for r in results:
            axes[1][c].step(t_min, r.timeseries["replicas"], where="post", label=r.policy)
            lat = [float("nan") if v is None else v for v in r.timeseries["latency_p95_ms"]]
            axes[2][c].plot(t_min, lat, label=r.policy)
        axes[1][c].set_ylabel("replicas")
        axes[2][c].axhline(results[0].slo_p95_ms, color="red", linestyle="--", linewidth=1, label="SLO")
        axes[2][c].set_ylabel("p95 latency (ms, 10 s)")
        axes[2][c].set_yscale("log")
        axes[2][c].set_xlabel("time (min)")
    axes[1][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        path.write_bytes(buf.getvalue())
    else:
        b64 = base64.b64encode(buf.getvalue()).decode()
        path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>autoscale</title></head><body>"
                        f"<h1>Autoscaling simulation</h1>{extra_html}<img alt='demand, replicas and latency' "
                        f"src='data:image/png;base64,{b64}'></body></html>\n")
    return path
