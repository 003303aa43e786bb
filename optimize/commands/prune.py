"""`optimize prune MODEL`: structured (channel) or unstructured (sparsity) pruning, measured like quantize."""

from __future__ import annotations

import re
from pathlib import Path

from optimize.commands._common import DATA_FORMATS, add_command, add_settings_arguments, settings_from, with_progress
from optiserve.errors import UserError

EXAMPLES = """\
  optimize prune build/models/mlp/model.pt2 --ratio 0.5 --eval-data build/models/mlp/eval.npz \\
      --finetune-data build/models/mlp/calibration.npz --epochs 5 --out build/p/mlp
  optimize prune model.pt2 --max-latency-ms 0.3 --criterion taylor --calibration-data calib.npz --out build/p
  optimize prune model.pt2 --target-size 0.5x --round-to 8 --ignore 'head.*' --out build/p
  optimize prune model.pt2 --mode unstructured --ratio 0.8 --out build/p     # sparsity, not CPU speed
  optimize prune model.pkl --allow-pickle --ratio 0.3 --out build/p           # a pickled nn.Module you trust
  optimize prune model.onnx --ratio 0.5 --eval-data eval.npz --out build/p    # converted to torch layers first
  # then quantize the pruned model:
  optimize quantize build/p/mlp/model.pt2 --calibration-data build/models/mlp/calibration.npz --out build/pq
exit codes: 0 the pruned model is within the accuracy budget, 1 it is not, 2 usage error
"""

_SIZE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>x|b|kb|mb|gb)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int | float:
    """'1.5MB', '800KB', '123456' -> bytes; '0.5x' -> a float share of the unpruned size (resolved later)."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"--target-size {text!r} is not understood; write e.g. 2MB, 800KB or 0.5x")
    n, unit = float(match["n"]), (match["unit"] or "b").lower()
    if unit == "x":
        if not 0 < n < 1:
            raise UserError("--target-size as a share of the unpruned size must be between 0 and 1, e.g. 0.5x")
        return n
    return int(n * {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9}[unit])


def register(subparsers) -> None:
    p = add_command(subparsers, "prune", "Prune a model (remove channels, or zero weights) and measure the pruned "
                    "ONNX model against the original.", EXAMPLES)
    p.add_argument("model", type=Path, help="torch.export .pt2, TorchScript .pt, .onnx (Gemm/MatMul/Conv graphs), "
                   "or a pickled nn.Module with --allow-pickle")
    p.add_argument("--out", type=Path, required=True, help="output folder: model.onnx, model.pt2, report.json/.md")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="share of channels to remove from each layer (default 0.5)")
    target.add_argument("--max-latency-ms", type=float, help="find the least pruning whose batch-32 p50 is below")
    target.add_argument("--target-size", help="find the least pruning whose ONNX file is at most this: 2MB, 0.5x")
    p.add_argument("--mode", default="structured", choices=["structured", "unstructured"])
    p.add_argument("--criterion", default="magnitude", choices=["magnitude", "taylor"],
                   help="channel importance: weight magnitude, or |weight x gradient| on the calibration data")
    p.add_argument("--round-to", type=int, help="keep channel counts multiples of this, e.g. 8")
    p.add_argument("--ignore", action="append", default=[], metavar="MODULE",
                   help="module name or pattern never pruned (repeatable); output layers are always kept")
    p.add_argument("--global-pruning", action="store_true", help="rank channels across layers, not per layer")
    p.add_argument("--calibration-data", type=Path, help=f"{DATA_FORMATS} of representative inputs (Taylor)")
    p.add_argument("--eval-data", type=Path, help=f"{DATA_FORMATS} with inputs and labels for accuracy")
    p.add_argument("--finetune-data", type=Path, help=f"{DATA_FORMATS} of inputs and labels for fine-tuning")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (default 0: off)")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    add_settings_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from optimize.prune import PruneConfig, prune
    from optimize.report import print_table

    target_size = parse_size(args.target_size) if args.target_size else None
    if args.epochs and not args.finetune_data:
        raise UserError("--epochs needs --finetune-data (a data file of inputs and labels to train on)")
    config = PruneConfig(
        ratio=args.ratio, max_latency_ms=args.max_latency_ms,
        target_size_bytes=target_size if isinstance(target_size, int) else None,
        target_size_share=target_size if isinstance(target_size, float) else None, mode=args.mode,
        criterion=args.criterion, round_to=args.round_to, ignore=tuple(args.ignore),
        global_pruning=args.global_pruning, epochs=args.epochs, learning_rate=args.learning_rate,
        **settings_from(args),
    )
    report = with_progress(lambda progress: prune(args.model, args.out, config, progress=progress,
                                                  calibration_path=args.calibration_data, eval_path=args.eval_data,
                                                  finetune_path=args.finetune_data))
    print_table(report)
    print(f"parameters {report.params_before:,} -> {report.params_after:,}, FLOPs/sample {report.flops_before:,} -> "
          f"{report.flops_after:,} (ratio {report.ratio:.2f})")
    print(f"wrote {args.out / 'model.onnx'}, {args.out / 'model.pt2'}, {args.out / 'report.json'}, "
          f"{args.out / 'report.md'}")
    return 0 if report.chosen else 1
