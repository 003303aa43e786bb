"""Load-test benchmark: the capacity plan for the example model, then a live-versus-simulated validation run
per autoscaling policy on the step and diurnal traces (`loadtest capacity` and `loadtest validate`).

    .venv/bin/python benchmarks/bench_loadtest.py [--repository build/demo/repository] [--duration 120s]

Builds the example digits MLP and quantizes it into build/bench/loadtest when no repository is given.
Prints a Markdown table (for BENCHMARKS.md) and writes build/bench/loadtest/summary.json. Every policy
gets the same trace, the same capacity figure and the same short delays, so the runs compare side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "digits-mlp"


def sh(*cmd: str) -> int:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def ensure_repository(out: Path) -> tuple[Path, Path]:
    repo, models = out / "repository", out / "models"
    if not (repo / MODEL).is_dir():
        sh(str(BIN / "optimize"), "example", "--out", str(models))
        sh(str(BIN / "optimize"), "quantize", str(models / "mlp" / "model.pt"), "--calibration-data",
           str(models / "mlp" / "calibration.npz"), "--eval-data", str(models / "mlp" / "eval.npz"), "--out",
           str(out / "quantized"), "--publish", str(repo), "--name", MODEL)
    return repo, models / "mlp" / "eval.npz"


def policy_configs(capacity_rps: float, slo_ms: float, delay_s: float) -> dict[str, dict]:
    """Each policy's config with the same short scale-down delay; capacity-aware ones get the measured capacity."""
    cap = {"slo_p95_ms": slo_ms, "capacity_rps_per_replica": round(capacity_rps, 2), "headroom": 0.25,
           "downscale_delay_s": delay_s}
    return {
        "queue": {"queue": {"target_ongoing_requests": 2.0, "upscale_delay_s": 3.0, "downscale_delay_s": delay_s,
                            "look_back_period_s": 12.0}},
        "target-tracking": {"target-tracking": {"target_ongoing_per_replica": 2.0, "stable_window_s": 20.0,
                                                "scale_down_stabilization_s": delay_s}},
        "slo": {"slo": cap},
        "predictive": {"predictive": cap},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repository", help="model repository holding digits-mlp (default: build one)")
    ap.add_argument("--samples", help="eval.npz of realistic inputs")
    ap.add_argument("--out", default="build/bench/loadtest")
    ap.add_argument("--duration", default="120s")
    ap.add_argument("--slo-p95-ms", type=float, default=100.0)
    ap.add_argument("--policies", default="queue,target-tracking,slo,predictive")
    ap.add_argument("--traces", default="step,diurnal")
    ap.add_argument("--max-replicas", type=int, default=3)
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.repository:
        repo, samples = Path(args.repository).resolve(), Path(args.samples).resolve() if args.samples else None
    else:
        repo, samples = ensure_repository(out)
    sample_args = ["--samples", str(samples)] if samples else []
    lt = str(BIN / "loadtest")

    t0 = time.monotonic()
    sh(lt, "capacity", "--repository", str(repo), "--model", MODEL, "--slo-p95-ms", str(args.slo_p95_ms),
       "--peak-rps", "200", "--step", "5s", "--downscale-delay-s", "10", "--out", str(out / "capacity"),
       *sample_args)
    cap = json.loads((out / "capacity" / "capacity.json").read_text())
    capacity = cap["curves"][0]["capacity_rps"]
    cap_s = time.monotonic() - t0
    # Peak at 1.5x one replica's capacity: every policy must add replicas, and the machine (2 cores) can
    # still answer; base at a fifth of capacity.
    peak, base = round(1.5 * capacity), max(2, round(0.2 * capacity))
    traces = {"step": ["--trace-param", f"base_rps={base}", "--trace-param", f"peak_rps={peak}"],
              "diurnal": ["--trace-param", f"min_rps={base}", "--trace-param", f"peak_rps={peak}",
                          "--trace-param", "noise=0.05"]}
    rows = []
    configs = policy_configs(capacity, args.slo_p95_ms, 10.0)
    for trace in args.traces.split(","):
        for policy in args.policies.split(","):
            cfg_path = out / f"policy-{policy}.yaml"
            cfg_path.write_text(yaml.safe_dump(configs[policy]))
            dest = out / f"validate-{policy}-{trace}"
            rc = sh(lt, "validate", "--repository", str(repo), "--model", MODEL, "--policy", policy,
                    "--policy-config", str(cfg_path), "--shape", trace, "--duration", args.duration,
                    *traces[trace], "--slo-p95-ms", str(args.slo_p95_ms), "--max-replicas", str(args.max_replicas),
                    "--out", str(dest), *sample_args)
            path = dest / "validation.json"
            if not path.is_file():
                rows.append({"policy": policy, "trace": trace, "error": f"exit {rc}"})
                continue
            v = json.loads(path.read_text())
            fig = {r["figure"]: r for r in v["rows"]}
            rows.append({"policy": policy, "trace": trace, "live_verdict": v["live_verdict_passed"],
                         "scale_ups": v["live_scale_ups"], "scale_downs": v["live_scale_downs"],
                         **{f"{k}_{side}": fig[name][side] for k, name in
                            (("p95_ms", "p95 latency (ms)"), ("attain", "SLO attainment, requests"),
                             ("replica_s", "replica-seconds")) for side in ("live", "simulated")},
                         "overhead_ms": v.get("profile_overhead_ms")})
    summary = {"capacity": cap, "capacity_s": cap_s, "peak_rps": peak, "base_rps": base, "runs": rows,
               "total_s": time.monotonic() - t0, "duration": args.duration, "slo_p95_ms": args.slo_p95_ms}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary))
    return 0


def _f(v, fmt="{:.3g}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown(s: dict) -> str:
    c, plan = s["capacity"]["curves"][0], (s["capacity"]["plans"] or [None])[0]
    lines = [f"Capacity of one replica ({c['label']}), p95 <= {s['slo_p95_ms']:g} ms: "
             f"**{c['capacity_rps']:.1f} req/s** "
             f"(limited by {c['limited_by']}, {len(c['steps'])} steps, {s['capacity_s']:.0f} s)."]
    if plan:
        lines.append(f"Plan for 200 req/s: {plan['replicas_needed']} x {plan['replica_kind']} at "
                     f"{plan['target_utilization']:.0%} utilisation, ${plan['cost_per_hour']:.3f}/hour, "
                     f"${plan['cost_per_million']:.3f} per million inferences; autoscaling "
                     f"min {plan['autoscaling']['min_replicas']} max {plan['autoscaling']['max_replicas']}.")
    lines += ["", f"Validation runs ({s['duration']} each, base {s['base_rps']} / peak {s['peak_rps']} req/s):", "",
              "| trace | policy | scale-ups/downs | p95 ms live / sim | SLO attainment live / sim "
              "| replica-s live / sim | verdict |",
              "|---|---|---|---|---|---|---|"]
    for r in s["runs"]:
        if "error" in r:
            lines.append(f"| {r['trace']} | {r['policy']} | {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['trace']} | {r['policy']} | {r['scale_ups']}/{r['scale_downs']} | {_f(r['p95_ms_live'])} / "
            f"{_f(r['p95_ms_simulated'])} | {_f(r['attain_live'], '{:.1%}')} / {_f(r['attain_simulated'], '{:.1%}')}"
            f" | {_f(r['replica_s_live'], '{:.0f}')} / {_f(r['replica_s_simulated'], '{:.0f}')} | "
            f"{'pass' if r['live_verdict'] else 'fail'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
