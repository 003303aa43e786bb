"""Benchmark `autoscale compare` on step, spike and diurnal traces, and the simulator's speed.

1. Export a small image CNN (3x64x64 input: compute-bound, ~10-20 ms per request on one core, so a few
   hundred requests/s need a realistic fleet of CPU replicas) and measure its latency-vs-batch curve
   with `autoscale profile` (onnxruntime, one intra-op thread).
2. `autoscale compare --trace step,spike,diurnal` with every policy, `queue` tuned to the same attainment.
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
    ap.add_argument("--peak-rps", type=float, default=400.0)
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
    autoscale_main(["compare", "--trace", "step,spike,diurnal", "--duration-s", str(args.duration_s),
                    "--trace-param", f"peak_rps={args.peak_rps}", "--profile", profile,
                    "--metrics-interval-s", args.metrics_interval_s,
                    "--out", str(out / "compare.json"), "--plot", str(out / "compare.png")])
    compare_wall = time.perf_counter() - t0
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        autoscale_main(["simulate", "--trace", "constant", "--trace-param", "rps=200", "--duration-s", "3600",
                        "--policy", "queue", "--profile", profile, "--json", "--out", str(out / "speed.json")])
        walls.append(time.perf_counter() - t)
    speed = json.loads((out / "speed.json").read_text())

    data = json.loads((out / "compare.json").read_text())
    print("\n| trace | policy | SLO (requests) | SLO (10 s windows) | p95 ms | p99 ms | replica-s | x bound | "
          "actions | $ / 1k req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tc in data["traces"]:
        for r in tc["results"] + [tc["tuned_queue"]]:
            name = r["policy"] + (f" (target {tc['tuned_target_ongoing_requests']})" if "tuned" in r["policy"]
                                  else "")
            star = " **best**" if r["policy"] == tc["best_policy"] else ""
            print(f"| {tc['trace']} | {name}{star} | {100 * r['slo_attainment_requests']:.2f}% | "
                  f"{100 * r['slo_attainment_windows']:.1f}% | {r['latency_p95_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
                  f"{r['replica_seconds']:,.0f} | {r['ratio_to_bound']:.2f} | {r['scaling_actions']} | "
                  f"{r['cost_per_1k_requests']:.5f} |")
    print("\n| trace | best policy | meets 99% | best / tuned queue | best / lower bound |")
    print("|---|---|---|---|---|")
    for tc in data["traces"]:
        s = tc["summary"]
        print(f"| {tc['trace']} | {s['best_policy']} | {s['best_meets_goal']} | "
              f"{s.get('best_vs_tuned_queue', float('nan')):.2f} | {s['best_vs_bound']:.2f} |")
    print(f"\nsimulate 1 h at 200 req/s ({speed['requests']:,} requests): wall {min(walls):.2f} s best of 3 "
          f"(in-simulator {speed['wall_s']:.2f} s); whole compare {compare_wall:.0f} s. Files in {out}")


if __name__ == "__main__":
    main()
