"""`optimize example`: build the digits example models and their data sets."""

from __future__ import annotations

from pathlib import Path

from optimize.commands._common import add_command


def register(subparsers) -> None:
    p = add_command(
        subparsers, "example", "Train the example digits models (MLP, CNN) and write .pt, .pt2 and .npz files.",
        "  optimize example --out build/models\n  optimize example --out build/models --only mlp\n",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (one subfolder per model)")
    p.add_argument("--only", choices=["mlp", "cnn"], action="append", help="build only these models")
    p.set_defaults(func=run)


def run(args) -> int:
    from optimize.examples import EXAMPLES, build_example
    from optiserve.console import console as make_console

    console = make_console()
    for name in args.only or EXAMPLES:
        with console.status(f"training digits {name} ..."):
            info = build_example(name, args.out)
        console.print(
            f"[green]✓[/] {name}: eval accuracy {info.eval_accuracy:.2%} -> {args.out / name}/"
            "{model.pt, model.pt2, calibration.npz, eval.npz}"
        )
    return 0
