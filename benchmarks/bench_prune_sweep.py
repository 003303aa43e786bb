"""Benchmark: latency and size against prune ratio (structured vs unstructured, side by side), and the sweep's
wall time serial vs on a local Ray task pool.

    python benchmarks/bench_prune_sweep.py [--out build/bench-prune] [--repeats 200] [--skip-ray]

Every pruned model of one example is timed in the same interleaved run as its unpruned fp32 ONNX model
(onnxruntime, 1 thread), so the ratios are comparable on a noisy machine. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

STRUCTURED = (0.25, 0.5, 0.75)
UNSTRUCTURED = (0.5,)


def prune_table(examples: Path, out: Path, repeats: int) -> list[str]:
    from optimize.export import session
    from optimize.measure import tile_batch, time_interleaved
    from optimize.prune import PruneConfig, prune
    from optiserve.data import load_npz

    lines = ["| model | variant | size MB | size x | b1 p50 ms | b32 p50 ms | speedup b1 | speedup b32 | params x | "
             "FLOPs x | accuracy Δ pts |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("mlp", "cnn"):
        folder = examples / name
        files, facts = {}, {}
        for mode, ratios in (("structured", STRUCTURED), ("unstructured", UNSTRUCTURED)):
            for ratio in ratios:
                key = f"{mode} {ratio}"
                report = prune(folder / "model.pt2", out / name / key.replace(" ", "-"),
                               PruneConfig(ratio=ratio, mode=mode, repeats=5), eval_path=folder / "eval.npz")
                files["fp32"] = out / name / key.replace(" ", "-") / "variants" / "fp32.onnx"
                files[key] = out / name / key.replace(" ", "-") / "model.onnx"
                facts[key] = (report.params_after / report.params_before, report.flops_after / report.flops_before,
                              report.variant("pruned").accuracy_change_pts)
        facts["fp32"] = (1.0, 1.0, 0.0)
        data = load_npz(folder / "eval.npz")
        data = type(data)({"x": data.inputs["inputs"]}, data.labels)
        runners = {k: (lambda feed, s=session(p, 1): s.run(None, feed)) for k, p in files.items()}
        t1 = time_interleaved(runners, tile_batch(data, 1), repeats * 2)
        t32 = time_interleaved(runners, tile_batch(data, 32), repeats)
        base = files["fp32"].stat().st_size
        for key in ["fp32", *[k for k in files if k != "fp32"]]:
            size = files[key].stat().st_size
            params_x, flops_x, change = facts[key]
            lines.append(
                f"| {name} | {key} | {size / 1e6:.3f} | {size / base:.2f} | {t1[key].p50_ms:.3f} | "
                f"{t32[key].p50_ms:.3f} | {t1['fp32'].p50_ms / t1[key].p50_ms:.2f} | "
                f"{t32['fp32'].p50_ms / t32[key].p50_ms:.2f} | {params_x:.2f} | {flops_x:.2f} | {change:+.2f} |")
    return lines


def sweep_table(examples: Path, out: Path, skip_ray: bool) -> list[str]:
    from optimize.sweep import SweepConfig, sweep

    folder = examples / "mlp"
    lines = ["| executor | variants | build wall s | measure wall s | total wall s |", "|---|---|---|---|---|"]
    for executor in ("serial", *(() if skip_ray else ("ray",))):
        config = SweepConfig(quantization=("none", "dynamic", "static"), calibration_methods=("minmax", "entropy"),
                             prune_ratios=(0.0, 0.25, 0.5), repeats=20, executor=executor, num_cpus=4)
        start = time.perf_counter()
        report = sweep(folder / "model.pt2", out / f"sweep-{executor}", config,
                       calibration_path=folder / "calibration.npz", eval_path=folder / "eval.npz")
        total = time.perf_counter() - start
        lines.append(f"| {executor} | {len(report.variants) - 1} | {report.build_wall_s:.1f} | "
                     f"{report.measure_wall_s:.1f} | {total:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    import torch

    from optimize.examples import build_examples

    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-prune-"))
    examples = out / "examples"
    build_examples(examples)
    print("## Latency and size against prune ratio (onnxruntime CPU, 1 thread, interleaved)\n")
    print("\n".join(prune_table(examples, out, args.repeats)))
    print("\n## Sweep wall time: serial vs local Ray task pool (mlp, 3 prune ratios x 4 quantizations)\n")
    print("\n".join(sweep_table(examples, out, args.skip_ray)))


if __name__ == "__main__":
    main()
