"""`optimize sweep MODEL`: prune ratios x quantization methods x calibration methods, one HTML + JSON report."""

from __future__ import annotations

from pathlib import Path

from optimize.commands._common import DATA_FORMATS, add_command, add_settings_arguments, settings_from, with_progress

EXAMPLES = """\
  optimize sweep build/models/mlp/model.pt2 --calibration-data build/models/mlp/calibration.npz \\
      --eval-data build/models/mlp/eval.npz --prune-ratios 0,0.25,0.5 --out build/sweep/mlp
  optimize sweep model.pt2 --grid grid.yaml --executor serial --out build/sweep
  # grid.yaml:
  #   quantization: [none, dynamic, static, fp16]
  #   calibration_methods: [minmax, entropy, percentile]
  #   prune_ratios: [0, 0.3, 0.6]
  #   epochs: 3            # fine-tune each pruned model (needs --finetune-data)
exit codes: 0 at least one variant besides fp32 is within the accuracy budget, 1 none is, 2 usage error
"""


def _list(text: str | None, cast=str):
    return None if text is None else tuple(cast(t.strip()) for t in text.split(",") if t.strip())


def register(subparsers) -> None:
    p = add_command(subparsers, "sweep", "Build and measure a grid of variants (prune ratio x quantization x "
                    "calibration); mark the Pareto-optimal ones.", EXAMPLES)
    p.add_argument("model", type=Path, help="torch.export .pt2 (pruning needs it), TorchScript .pt or .onnx")
    p.add_argument("--out", type=Path, required=True, help="output folder: report.html, report.json, variants/")
    p.add_argument("--grid", type=Path, help="YAML grid file (keys as below, in snake_case); flags override it")
    p.add_argument("--quantization", help="comma-separated: none,dynamic,static,fp16 (default none,dynamic,static)")
    p.add_argument("--calibration-method", help="comma-separated static calibrations (default minmax,entropy)")
    p.add_argument("--prune-ratios", help="comma-separated structured prune ratios (default 0,0.5)")
    p.add_argument("--criterion", choices=["magnitude", "taylor"], help="pruning importance (default magnitude)")
    p.add_argument("--calibration-data", type=Path, help=f"{DATA_FORMATS} of representative inputs (static, Taylor)")
    p.add_argument("--eval-data", type=Path, help=f"{DATA_FORMATS} with inputs and labels for accuracy")
    p.add_argument("--finetune-data", type=Path, help=f"{DATA_FORMATS} with inputs and labels to fine-tune")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per pruned model (default 0)")
    p.add_argument("--executor", choices=["auto", "ray", "serial"],
                   help="build variants as Ray tasks or one by one (default auto: Ray when installed)")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of the local Ray instance (default 4)")
    add_settings_arguments(p, repeats=50, overrides_only=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from optimize.report import print_table
    from optimize.sweep import SweepConfig, sweep

    overrides = {
        "quantization": _list(args.quantization), "calibration_methods": _list(args.calibration_method),
        "prune_ratios": _list(args.prune_ratios, float), "criterion": args.criterion, "epochs": args.epochs,
        "executor": args.executor, "num_cpus": args.num_cpus, **settings_from(args),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}  # unset flags: the grid file's values
    try:
        config = SweepConfig.from_yaml(args.grid, **overrides) if args.grid else SweepConfig(**overrides)
    except ValueError as exc:
        from optiserve.errors import UserError

        raise UserError(f"bad sweep option: {exc}") from None
    report = with_progress(lambda progress: sweep(args.model, args.out, config, progress=progress,
                                                  calibration_path=args.calibration_data, eval_path=args.eval_data,
                                                  finetune_path=args.finetune_data))
    print_table(report)
    print(f"Pareto-optimal: {', '.join(report.pareto) or 'none'}; built with {report.executor} in "
          f"{report.build_wall_s:.1f} s")
    print(f"wrote {args.out / 'report.html'}, {args.out / 'report.json'}")
    feasible = [v for v in report.variants if v.within_budget and v.kind not in ("pytorch", "fp32")]
    return 0 if feasible else 1
