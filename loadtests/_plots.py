"""matplotlib figures as base64 PNG strings, to inline in self-contained HTML (no files, no network)."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _nan(v):
    return math.nan if v is None else v


def run_timeline(result) -> str:
    """Four stacked panels: demand/throughput, latency, errors, replicas; one shared time axis."""
    ts = result.timeseries
    t = [r.t_s for r in ts]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, [_nan(r.target_rps) for r in ts], "--", color="grey", label="target (trace)")
    ax[0].plot(t, [r.sent for r in ts], label="sent")
    ax[0].plot(t, [r.ok for r in ts], label="ok")
    ax[0].set_ylabel("requests / s")
    ax[0].legend(loc="upper left", fontsize=8)
    for q, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax[1].plot(t, [_nan(getattr(r, q)) for r in ts], label=name)
    if result.objectives.slo_p95_ms:
        ax[1].axhline(result.objectives.slo_p95_ms, color="red", ls=":", label="p95 objective")
    ax[1].set_ylabel("latency (ms)")
    ax[1].set_yscale("log")
    ax[1].legend(loc="upper left", fontsize=8)
    ax[2].bar(t, [r.failed for r in ts], width=1.0, color="tab:red")
    ax[2].set_ylabel("errors / s")
    rs = result.replicas
    if rs:
        rt = [s.t_s for s in rs]
        ax[3].step(rt, [s.running for s in rs], where="post", label="running")
        ax[3].step(rt, [s.committed for s in rs], where="post", ls="--", label="running + starting")
        ax[3].legend(loc="upper left", fontsize=8)
    ax[3].set_ylabel("replicas")
    ax[3].set_xlabel("time (s)")
    return _png(fig)


def capacity_curves(report) -> str:
    """Throughput versus p95 latency, one line per configuration, with the objective."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for c in report.curves:
        steps = [s for s in c.steps if s.p95_ms is not None and not math.isnan(s.p95_ms)]
        ax.plot([s.achieved_rps for s in steps], [s.p95_ms for s in steps], "o-", label=f"{c.label}")
        if c.capacity_rps > 0:
            ax.axvline(c.capacity_rps, ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.axhline(report.slo_p95_ms, color="red", ls="--", label="p95 objective")
    ax.set_xlabel("achieved throughput (requests / s, one replica)")
    ax.set_ylabel("p95 latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _png(fig)


def validation_overlay(live, simulated) -> str:
    """Replicas and p95 over time, live versus simulated, on the same trace."""
    fig, ax = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax[0].step([s.t_s for s in live.replicas], [s.committed for s in live.replicas], where="post", label="live")
    ax[0].step(simulated["t_s"], simulated["replicas"], where="post", ls="--", label="simulated")
    ax[0].set_ylabel("replicas")
    ax[0].legend(fontsize=8)
    ax[1].plot([r.t_s for r in live.timeseries], [_nan(r.p95_ms) for r in live.timeseries], label="live p95")
    if simulated.get("p95_ms"):
        ax[1].plot(simulated["t_s"][: len(simulated["p95_ms"])], simulated["p95_ms"], ls="--", label="simulated p95")
    if live.objectives.slo_p95_ms:
        ax[1].axhline(live.objectives.slo_p95_ms, color="red", ls=":", label="objective")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("p95 latency (ms)")
    ax[1].set_xlabel("time (s)")
    ax[1].legend(fontsize=8)
    return _png(fig)
