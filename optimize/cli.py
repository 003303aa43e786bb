"""`optimize`: the command-line entry point. Each subcommand lives in its own module under
optimize/commands (or a feature package) and registers itself through `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import warnings

from optiserve.errors import run_cli

# Modules that add subcommands; each has `register(subparsers)`. Heavy imports stay inside handlers
# so `optimize --help` is instant.
COMMAND_MODULES = [
    "optimize.commands.example",
    "optimize.commands.quantize",
    "optimize.commands.prune",
    "optimize.commands.sweep",
    "optimize.jobs.cli",
]

EPILOG = """examples:
  optimize example --out build/models
  optimize quantize build/models/mlp/model.pt --calibration-data build/models/mlp/calibration.npz \\
      --eval-data build/models/mlp/eval.npz --out build/q/mlp
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimize", description="Post-training optimization of PyTorch models into fast ONNX models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


# torch's own pytree code trips its own deprecation warning when a torch.export program is copied or loaded
# (prune, sweep); it says nothing a user can act on.
QUIET_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


def main(argv: list[str] | None = None) -> int:
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
