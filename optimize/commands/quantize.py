"""`optimize quantize MODEL`: int8/fp16 ONNX variants, measured against PyTorch and fp32 ONNX."""

from __future__ import annotations

from pathlib import Path

from optimize.commands._common import DATA_FORMATS, add_command, add_settings_arguments, settings_from, with_progress

EXAMPLES = """\
  optimize quantize build/models/mlp/model.pt --calibration-data build/models/mlp/calibration.npz \\
      --eval-data build/models/mlp/eval.npz --out build/q/mlp
  optimize quantize model.pt2 --method static --calibration-method entropy --out build/q
  optimize quantize model.onnx --input-shape 1,64 --out build/q          # no data: output agreement only
  optimize quantize model.pt --out build/q --publish build/repo --name digits-mlp
  optimize quantize model.pt2 --calibration-data calib.npz --batch-size 1 --out build/q   # serve one at a time
  optimize quantize my-bert/ --eval-data tokens.npz --out build/q   # save_pretrained folder: optimum O1-O3 + int8
  # tabular data: columns in file order are the features, the column named label/target/class/y the labels
  optimize quantize model.pt --calibration-data train.csv --eval-data test.csv --label-column species \\
      --out build/q
  optimize quantize model.pt --eval-data test.parquet --feature-columns f1,f2,f3 --label-column y --out build/q
  optimize quantize model.onnx --eval-data data.npz --inputs input=X --labels y --out build/q
exit codes: 0 a variant within the budget beats fp32 beyond the measured noise and was chosen (the rule:
  optimize/choice.py), 1 none does (model.onnx is fp32), 2 usage error
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "quantize", "Quantize a model to int8/fp16 ONNX and pick the fastest variant "
                    "within the accuracy budget.", EXAMPLES)
    p.add_argument("model", type=Path, help="TorchScript .pt, torch.export .pt2, .onnx, or a Hugging Face "
                   "save_pretrained folder (optimum)")
    p.add_argument("--out", type=Path, required=True, help="output folder: model.onnx, variants/, report.json/.md")
    p.add_argument("--method", default="auto", choices=["auto", "dynamic", "static", "fp16"],
                   help="which variants to build (auto: all applicable, then pick)")
    p.add_argument("--calibration-data", type=Path, help=f"{DATA_FORMATS} of representative inputs (static int8)")
    p.add_argument("--calibration-method", default="minmax,entropy,percentile",
                   help="comma-separated static calibration methods (default: all three)")
    p.add_argument("--no-per-channel", action="store_true",
                   help="per-tensor weights only (default: per-channel; --method auto also tries each int8 "
                   "variant with per-tensor weights, the -per-tensor variants)")
    p.add_argument("--eval-data", type=Path, help=f"{DATA_FORMATS} with inputs and labels for accuracy")
    p.add_argument("--publish", type=Path, metavar="REPO", help="publish the chosen model into this repository")
    p.add_argument("--name", help="model name in the repository (default: the model file's stem)")
    add_settings_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from optimize.quantize import QuantizeConfig, quantize
    from optimize.report import print_table
    from optiserve.repository import publish

    config = QuantizeConfig(
        method=args.method, calibration_methods=tuple(m.strip() for m in args.calibration_method.split(",")),
        per_channel=not args.no_per_channel, **settings_from(args))
    report = with_progress(lambda progress: quantize(args.model, args.out, config, progress=progress,
                                                     calibration_path=args.calibration_data,
                                                     eval_path=args.eval_data))
    print_table(report)
    print(f"wrote {args.out / 'model.onnx'} ({report.chosen or 'fp32'}), {args.out / 'report.json'}, "
          f"{args.out / 'report.md'}")
    if args.publish:
        manifest = publish(args.out / "model.onnx", args.publish, args.name or args.model.stem,
                           source_sha256=report.source["sha256"], report=report.to_dict())
        where = args.publish / manifest.name / manifest.version
        print(f"published {manifest.name} version {manifest.version} -> {where}")
    return 0 if report.chosen else 1
