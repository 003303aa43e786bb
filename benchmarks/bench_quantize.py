"""Quantization benchmark: every variant of the example models against fp32 ONNX and PyTorch eager.

All candidates are timed side by side in one process on the same inputs (interleaved rounds), so the
ratios hold even on a noisy machine. Usage: python benchmarks/bench_quantize.py [--out build/bench/quantize]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optimize.examples import build_examples
from optimize.quantize import QuantizeConfig, quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench/quantize"))
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    models = args.out / "models"
    build_examples(models)
    print("| model | variant | b1 p50 ms | b32 p50 ms | speedup vs fp32 ONNX (b1 / b32) | speedup vs PyTorch (b32) "
          "| size vs fp32 | accuracy | Δ pts vs PyTorch | chosen |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("mlp", "cnn"):
        folder = models / name
        report = quantize(folder / "model.pt", args.out / name, QuantizeConfig(repeats=args.repeats),
                          calibration_path=folder / "calibration.npz", eval_path=folder / "eval.npz")
        fp32 = report.variant("fp32")
        for v in report.variants:
            b1 = fp32.latency_b1_p50_ms / v.latency_b1_p50_ms
            size = f"{v.size_ratio:.2f}x" if v.size_ratio else "-"
            mark = "*" if v.name == report.chosen else ""
            print(f"| {name} | {v.name} | {v.latency_b1_p50_ms:.3f} | {v.latency_b32_p50_ms:.3f} | "
                  f"{b1:.2f}x / {v.speedup_vs_fp32:.2f}x | {v.speedup_vs_pytorch:.2f}x | {size} | "
                  f"{100 * v.accuracy:.2f}% | {v.accuracy_change_pts:+.2f} | {mark} |")


if __name__ == "__main__":
    main()
