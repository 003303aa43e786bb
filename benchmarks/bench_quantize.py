"""Quantization benchmark: the variant `optimize quantize` chooses, against what a user would otherwise run.

For each example model (digits MLP and CNN), `optimize quantize` runs `--runs` times. Each run times every
candidate side by side in one process, in interleaved rounds, so each ratio below is the median of per-round
paired ratios with its ~96% sign-test interval, and the absolute drift of a noisy machine cancels. Compared:
fp32 ONNX, PyTorch eager, and onnxruntime's one-liner `quantize_dynamic(model, out)` with defaults (the anchor).
The runs also show whether the choice is stable from run to run.

Usage: python benchmarks/bench_quantize.py [--out build/bench/quantize] [--runs 3] [--repeats 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optimize.choice import ANCHOR
from optimize.cpu import detect_cpu
from optimize.examples import build_examples
from optimize.measure import ratio
from optimize.quantize import QuantizeConfig, quantize


def _vs(rounds_of, base: str, chosen: str, batch: str) -> str:
    """'1.91x (1.80-2.02)': how many times faster `chosen` is than `base` at this batch size."""
    if base not in rounds_of:
        return "-"
    r = ratio(rounds_of[base][batch], rounds_of[chosen][batch])
    return f"{r.value:.2f}x ({r.low:.2f}-{r.high:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench/quantize"))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpu = detect_cpu()
    print(f"CPU: {cpu.model_name or cpu.arch} ({', '.join(cpu.features) or 'no int8 ISA extensions'})")
    models = args.out / "models"
    build_examples(models)
    print("| model | run | chosen | tied within noise | b32 vs fp32 ONNX | b1 vs fp32 ONNX | b32 vs PyTorch eager "
          "| b32 vs ORT one-liner | b1 vs ORT one-liner | size vs fp32 | Δ acc pts | b32 p50 ms ± spread |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("mlp", "cnn"):
        folder = models / name
        chosen_names, speedups = [], []
        for run in range(1, args.runs + 1):
            report = quantize(folder / "model.pt", args.out / f"{name}-{run}", QuantizeConfig(repeats=args.repeats),
                              calibration_path=folder / "calibration.npz", eval_path=folder / "eval.npz")
            chosen = report.variant(report.chosen or "fp32")
            rounds_of = {v.name: {"b1": v.latency_b1_rounds_ms, "b32": v.latency_b32_rounds_ms}
                         for v in report.variants if not v.error}
            chosen_names.append(chosen.name)
            speedups.append(chosen.speedup_vs_fp32)
            print(f"| {name} | {run} | {chosen.name} | {', '.join(report.choice['tied']) or '-'} | "
                  f"{_vs(rounds_of, 'fp32', chosen.name, 'b32')} | {_vs(rounds_of, 'fp32', chosen.name, 'b1')} | "
                  f"{_vs(rounds_of, 'pytorch', chosen.name, 'b32')} | {_vs(rounds_of, ANCHOR, chosen.name, 'b32')} | "
                  f"{_vs(rounds_of, ANCHOR, chosen.name, 'b1')} | {chosen.size_ratio or 1:.2f}x | "
                  f"{chosen.accuracy_change_pts or 0:+.2f} | {chosen.latency_b32_p50_ms:.3f} "
                  f"±{chosen.latency_b32_spread_pct or 0:.0f}% |")
        same = "same every run" if len(set(chosen_names)) == 1 else "DIFFERS: " + ", ".join(chosen_names)
        print(f"| {name} | all | {same} | | b32 vs fp32 ranged {min(speedups):.2f}-{max(speedups):.2f}x over runs "
              "| | | | | | | |")


if __name__ == "__main__":
    main()
