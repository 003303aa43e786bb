"""Benchmark `autoscale compare` on step, spike, diurnal, bursty, mmpp and heavy traces, and the simulator's speed.

1. Export a small image CNN (3x64x64 input: compute-bound, ~10-20 ms per request on one core, so a few
   hundred requests/s need a realistic fleet of CPU replicas) and measure its latency-vs-batch curve
   with `autoscale profile` (onnxruntime, one intra-op thread).
2. `autoscale compare --trace step,spike,diurnal,bursty,mmpp,heavy` (each trace's default shape, 1 h) with every
   policy; `queue` swept over target_ongoing_requests and matched to each policy's attainment; the worst case per
   policy across traces; what is reachable at all (queueing floor, reactive reference).
3. Wall time of `autoscale simulate` for one hour of 200 requests/s (720k requests).

Usage: python benchmarks/bench_autoscale.py [--out-dir DIR] [--duration-s 3600]
Prints a Markdown table for BENCHMARKS.md; writes compare.json, compare.png and profile.json to DIR.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from autoscale.cli import main as autoscale_main


def export_bench_model(path: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(),
        nn.Conv2d(48, 96, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(96, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(192, 10),
    ).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--profile", help="reuse a measured profile instead of exporting and measuring the CNN")
    ap.add_argument("--traces", default="step,spike,diurnal,bursty,mmpp,heavy")
    ap.add_argument("--metrics-interval-s", default="2", help="metrics push period (the Ray adapter sets 2 s)")
    args = ap.parse_args()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="bench_autoscale_"))
    out.mkdir(parents=True, exist_ok=True)
    profile = args.profile
    if profile is None:
        model = export_bench_model(out / "cnn.onnx")
        profile = str(out / "profile.json")
        autoscale_main(["profile", str(model), "--out", profile, "--batch-sizes", "1,2,4,8,16",
                        "--replica-start-s", "10", "--max-batch-size", "1", "--batch-wait-ms", "0"])
    t0 = time.perf_counter()
    autoscale_main(["compare", "--trace", args.traces, "--duration-s", str(args.duration_s), "--profile", profile,
                    "--metrics-interval-s", args.metrics_interval_s,
                    "--out", str(out / "compare.json"), "--plot", str(out / "compare.html")])
    compare_wall = time.perf_counter() - t0
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        autoscale_main(["simulate", "--trace", "constant", "--trace-param", "rps=200", "--duration-s", "3600",
                        "--policy", "queue", "--profile", profile, "--json", "--out", str(out / "speed.json")])
        walls.append(time.perf_counter() - t)
    speed = json.loads((out / "speed.json").read_text())

    data = json.loads((out / "compare.json").read_text())
    print(f"\nassumed replica start time: {data['replica_start_s']} s (profile: {data['profile_source']})")
    print("\n| trace | policy | SLO (requests) | p95 ms | p99 ms | replica-s | x bound | x queue tuned (target) | "
          "actions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tc in data["traces"]:
        rows = {p["policy"]: p for p in tc["policies"]}
        for r in tc["results"]:
            p = rows[r["policy"]]
            tuned = (f"{p['vs_tuned_queue']:.2f} ({p['tuned_queue_target']}"
                     f"{'' if p['tuned_queue_reached'] else ', queue never reaches it'})")
            star = " **best**" if r["policy"] == tc["best_policy"] else ""
            print(f"| {tc['trace']} | {r['policy']}{star} | {100 * r['slo_attainment_requests']:.2f}% | "
                  f"{r['latency_p95_ms']:.1f} | {r['latency_p99_ms']:.1f} | {r['replica_seconds']:,.0f} | "
                  f"{r['ratio_to_bound']:.2f} | {tuned} | {r['scaling_actions']} |")
    print("\n| policy | worst SLO (trace) | worst x queue tuned (trace) | worst x bound (trace) | 99 % everywhere |")
    print("|---|---|---|---|---|")
    for w in data["worst_case"]:
        print(f"| {w['policy']} | {100 * w['worst_attainment']:.2f}% ({w['worst_attainment_trace']}) | "
              f"{w['worst_vs_tuned_queue']:.2f} ({w['worst_vs_tuned_queue_trace']}) | "
              f"{w['worst_vs_bound']:.2f} ({w['worst_vs_bound_trace']}) | {w['meets_goal_everywhere']} |")
    print("\n| trace | bound replica-s | queueing floor x bound | reactive reference | what is reachable |")
    print("|---|---|---|---|---|")
    for tc in data["traces"]:
        ref = tc["references"]
        react = f"{100 * ref['reactive_attainment']:.2f}%"
        print(f"| {tc['trace']} | {ref['bound_replica_seconds']:,.0f} | {ref['queueing_floor_ratio']:.2f} | {react} | "
              f"{ref['verdict']} |")
    print(f"\nsimulate 1 h at 200 req/s ({speed['requests']:,} requests): wall {min(walls):.2f} s best of 3 "
          f"(in-simulator {speed['wall_s']:.2f} s); whole compare {compare_wall:.0f} s. Files in {out}")


if __name__ == "__main__":
    main()
