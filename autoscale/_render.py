"""Renderers of simulation results: a rich table per trace, and a plot of demand, replicas and latency."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from rich.table import Table

from ._results import SimulationResult


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def results_table(title: str, results: list[SimulationResult], best: str | None = None) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("policy", "SLO req", "SLO 10s win", "p50 ms", "p95 ms", "p99 ms", "replica-s", "cost $",
                "$ / 1k req", "actions", "x bound"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        name = f"[bold]{r.policy}[/bold] *" if r.policy == best else r.policy
        ratio = r.ratio_to_bound
        t.add_row(name, _pct(r.slo_attainment_requests), _pct(r.slo_attainment_windows),
                  f"{r.latency_p50_ms:.1f}", f"{r.latency_p95_ms:.1f}", f"{r.latency_p99_ms:.1f}",
                  f"{r.replica_seconds:,.0f}", f"{r.cost_total:.4f}", f"{r.cost_per_1k_requests:.5f}",
                  str(r.scaling_actions), f"{ratio:.2f}" if ratio else "-")
    return t


def plot(groups: dict[str, list[SimulationResult]], path: str | Path) -> Path:
    """One column per trace: demand, replicas per policy, p95 latency per policy. PNG, or HTML with it inlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".png", ".html"):
        from optimize._errors import UserError

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
                        f"<h1>Autoscaling simulation</h1><img alt='demand, replicas and latency' "
                        f"src='data:image/png;base64,{b64}'></body></html>\n")
    return path
