"""Quantization benchmark: the variant `optimize quantize` chooses, against what a user would otherwise run.

For each example model (digits MLP and CNN), `optimize quantize` runs `--runs` times. Each run times every
candidate side by side in one process, in interleaved rounds, so each ratio below is the median of per-round
paired ratios with its ~96% sign-test interval, and the absolute drift of a noisy machine cancels. Compared:
fp32 ONNX, PyTorch eager, and onnxruntime's one-liner `quantize_dynamic(model, out)` with defaults (the anchor).
The runs also show whether the choice is stable from run to run.

With `--peers-python`, the peers a user would pick instead are built from the same fp32 ONNX model and the same
calibration data by benchmarks/_peer_quantizers.py in their own environment (NNCF's `nncf.quantize`, Intel Neural
Compressor's ONNX Runtime path static and dynamic, Olive's OnnxStaticQuantization and OnnxDynamicQuantization, each
with its defaults), then timed in the project's onnxruntime side by side with optiserve's choice, fp32 and the
one-liner, in one interleaved run: ratios are optiserve's choice over each candidate, paired round by round.

Usage: python benchmarks/bench_quantize.py [--out build/bench/quantize] [--runs 3] [--repeats 300]
       [--peers-python build/peers-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from optimize.choice import ANCHOR
from optimize.cpu import detect_cpu
from optimize.examples import build_examples
from optimize.export import session
from optimize.measure import accuracy, predict, ratio, tile_batch, time_interleaved
from optimize.quantize import QuantizeConfig, quantize
from optiserve.data import load_dataset


def _vs(rounds_of, base: str, chosen: str, batch: str) -> str:
    """'1.91x (1.80-2.02)': how many times faster `chosen` is than `base` at this batch size."""
    if base not in rounds_of:
        return "-"
    r = ratio(rounds_of[base][batch], rounds_of[chosen][batch])
    return f"{r.value:.2f}x ({r.low:.2f}-{r.high:.2f})"


def compare_peers(name: str, run_dir: Path, data_dir: Path, peers_python: str, out: Path, repeats: int) -> None:
    """Build the peers from run 1's fp32 model, then time them against its choice in one interleaved run."""
    report = json.loads((run_dir / "report.json").read_text())
    fp32 = run_dir / "variants" / "fp32.onnx"
    peers_dir = out / f"{name}-peers"
    peers_dir.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve().with_name("_peer_quantizers.py")
    subprocess.run([os.path.abspath(peers_python),  # abspath, not resolve: keep the venv's own link
                    str(script), str(fp32.resolve()), str((data_dir / "calibration.npz").resolve()),
                    str(peers_dir.resolve())], check=True, capture_output=True, timeout=1800,
                   cwd=peers_dir)  # Olive writes its cache into the working directory
    built = json.loads((peers_dir / "peers.json").read_text())
    files = {f"optiserve ({report['chosen']})": run_dir / "model.onnx", "fp32": fp32,
             ANCHOR: run_dir / "variants" / f"{ANCHOR}.onnx"}
    files.update({peer: peers_dir / f"{peer}.onnx" for peer, r in built.items() if r["ok"]})
    sessions = {label: session(path) for label, path in files.items() if path.exists()}
    runners = {label: (lambda feeds, s=s: s.run(None, feeds)[0]) for label, s in sessions.items()}
    data = load_dataset(data_dir / "eval.npz", "eval data")
    input_name = next(iter(sessions.values())).get_inputs()[0].name
    data = type(data)({input_name: next(iter(data.inputs.values()))}, data.labels)
    timings = {b: time_interleaved(runners, tile_batch(data, b), repeats) for b in (32, 1)}
    ours = next(iter(runners))
    print(f"\n{name}: optiserve's choice against its peers (one interleaved run; ratio = how many times faster "
          "optiserve's choice is, median of paired rounds with its ~96% interval)\n")
    print("| candidate | b32 p50 ms ± spread | b1 p50 ms ± spread | choice vs it at b32 | choice vs it at b1 | "
          "accuracy % | size KB |")
    print("|---|---|---|---|---|---|---|")
    for label, run in runners.items():
        t32, t1 = timings[32][label], timings[1][label]
        vs = {b: ratio(timings[b][label].round_p50_ms, timings[b][ours].round_p50_ms) for b in (32, 1)}
        acc = accuracy(predict(run, data), data.labels)
        size = sum(p.stat().st_size for p in files[label].parent.glob(files[label].name + "*")) / 1024
        print(f"| {label} | {t32.p50_ms:.3f} ±{t32.spread_pct or 0:.0f}% | {t1.p50_ms:.4f} ±{t1.spread_pct or 0:.0f}% "
              f"| {vs[32].value:.2f}x ({vs[32].low:.2f}-{vs[32].high:.2f}) | {vs[1].value:.2f}x "
              f"({vs[1].low:.2f}-{vs[1].high:.2f}) | {100 * acc if acc is not None else float('nan'):.2f} | "
              f"{size:.0f} |")
    for peer, r in built.items():
        if not r["ok"]:
            print(f"| {peer} | failed: {r['error'][:150]} | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench/quantize"))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers-python", help="a Python with nncf, onnx-neural-compressor and olive-ai (own venv)")
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
    if args.peers_python:
        for name in ("mlp", "cnn"):
            compare_peers(name, args.out / f"{name}-1", models / name, args.peers_python, args.out, args.repeats)


if __name__ == "__main__":
    main()
