"""`modelserve`: serve a model repository on Ray Serve (start, status, stop, config). Thin: parse, call, print."""

from __future__ import annotations

import argparse
import json
import sys

from optiserve.errors import UserError, run_cli

DEFAULT_GRPC_PORT = 9000  # Triton's and Ray Serve's default gRPC port

EPILOG = """examples:
  modelserve start --repository build/repo --port 8000 --grpc-port 9000
  curl -s localhost:8000/v2/models/mlp
  modelserve status
  modelserve stop
  modelserve config --repository /shared/repo -o serve_config.yaml && serve deploy serve_config.yaml
  modelserve batch --repository build/repo --model mlp --input data/ --output build/scores
"""


def _command(subparsers, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserve", description="Serve the ONNX models of a model repository over KServe v2 REST on Ray Serve.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = _command(sub, "start", "deploy every model of a repository and print the URLs", (
        "  modelserve start --repository build/repo\n"
        "  modelserve start --repository build/repo --config serve.yaml --port 8080\n"
        "  modelserve start --repository build/repo --autoscaling-policy queue --autoscaling-config policy.yaml \\\n"
        "      --min-replicas 1 --max-replicas 4\n"
        "The server keeps running after this command returns (on a local Ray started on demand, or --address).\n"
    ))
    start.add_argument("--repository", required=True, help="model repository folder (REPO/<model>/<version>/)")
    start.add_argument("--config", help="YAML serving config (batching, replicas, devices, token); see README")
    start.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: local only)")
    start.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")
    start.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                       help=f"KServe v2 gRPC port on --host (default {DEFAULT_GRPC_PORT}; 0: no gRPC)")
    start.add_argument("--address", help="existing Ray cluster to join (default: RAY_ADDRESS or a local one)")
    start.add_argument("--autoscaling-policy", help="autoscale/ policy name for every model's deployment")
    start.add_argument("--autoscaling-config", help="YAML/JSON parameters of that policy")
    start.add_argument("--min-replicas", type=int, default=1)
    start.add_argument("--max-replicas", type=int, default=4)
    start.set_defaults(func=_start)

    status = _command(sub, "status", "show models, versions, replicas and their state",
                      "  modelserve status\n  modelserve status --json\n")
    status.add_argument("--address", help="Ray cluster (default: the one `start` used)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_status)

    stop = _command(sub, "stop", "shut the application down (and the local Ray that `start` began)",
                    "  modelserve stop\n")
    stop.add_argument("--address", help="Ray cluster (default: the one `start` used)")
    stop.add_argument("--keep-ray", action="store_true", help="leave the local Ray cluster running")
    stop.set_defaults(func=_stop)

    config = _command(sub, "config", "write a Ray Serve config file that deploys the same application", (
        "  modelserve config --repository /shared/repo -o serve_config.yaml\n"
        "  serve deploy serve_config.yaml       # on any Ray cluster whose nodes see /shared/repo\n"
    ))
    config.add_argument("--repository", required=True)
    config.add_argument("--config", help="YAML serving config")
    config.add_argument("--host", default="127.0.0.1")
    config.add_argument("--port", type=int, default=8000)
    config.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT,
                        help=f"KServe v2 gRPC port (default {DEFAULT_GRPC_PORT}; 0: no gRPC)")
    config.add_argument("-o", "--out", help="output file (default: stdout)")
    config.set_defaults(func=_config)
    _add_batch(sub)
    return parser


def _add_batch(sub) -> None:
    batch = _command(sub, "batch", "score data files with a published model on Ray actors (resumable)", (
        "  modelserve batch --repository build/repo --model mlp --input data/ --output build/scores\n"
        "  modelserve batch --repository build/repo --model mlp --version 2 --input a.parquet b.csv \\\n"
        "      --output build/scores --key-columns id --max-actors 4 --threads-per-actor 2 --nan zero\n"
        "  modelserve batch ... --address ray://head:10001 --gpus-per-actor 1 --batch-size 4096\n"
        "Inputs: .parquet, .csv/.tsv, .npz, .npy files or folders of them. Each file is read, scored and written\n"
        "by one actor on a Ray node: on a cluster, inputs and --output must be on storage every node shares.\n"
        "Output: OUT/shards/<file>.parquet (source, row, keys, outputs, probabilities, prediction),\n"
        "OUT/rejects.jsonl (rows that could not be scored, with the reason), OUT/summary.json. Rerunning the same\n"
        "command after a crash or cancel skips the shards already complete and redoes the others.\n"
    ))
    batch.add_argument("--repository", required=True, help="model repository folder (REPO/<model>/<version>/)")
    batch.add_argument("--model", required=True, help="model name in the repository")
    batch.add_argument("--version", help="model version (default: the newest)")
    batch.add_argument("--input", nargs="+", action="extend", required=True, metavar="PATH",
                       help="data files or folders (repeatable)")
    batch.add_argument("--output", help="output folder (shards, rejects, summary); rerun with the same to resume")
    batch.add_argument("--out", help="a job run's folder: the output folder when --output is not given, else where "
                       "the summary and rejects are copied (how optimize jobs of kind batch pass their run folder)")
    batch.add_argument("--batch-size", type=int, default=1024, help="rows per model call (default 1024)")
    batch.add_argument("--min-actors", type=int, default=1, help="smallest actor pool (default 1)")
    batch.add_argument("--max-actors", type=int, help="largest actor pool (default: as many as the cluster fits)")
    batch.add_argument("--threads-per-actor", type=int,
                       help="CPUs reserved per actor = its onnxruntime threads, at most the machine's cores "
                            "(default: a node's CPUs, one actor per node)")
    batch.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor: run on CUDA (default 0)")
    batch.add_argument("--key-columns", default="", help="comma-separated columns copied beside the outputs")
    batch.add_argument("--feature-columns", default="", help="comma-separated feature columns, in order "
                       "(default: all columns but keys and the label)")
    batch.add_argument("--inputs", action="append", default=[], metavar="INPUT=COLS",
                       help="which column(s) or array feed a model input, e.g. --inputs input=pixels")
    batch.add_argument("--label-column", help="label column kept beside the outputs (default: y/label/target...)")
    batch.add_argument("--nan", choices=["reject", "zero", "propagate"], default="reject",
                       help="rows with NaN/inf inputs: reject them (default), replace by 0, or feed as they are")
    batch.add_argument("--max-rejects", type=int, default=1000, help="fail the run past this many rejected rows")
    batch.add_argument("--address", help="Ray cluster to run on (default: RAY_ADDRESS, else a local Ray)")
    batch.add_argument("--no-progress", action="store_true", help="no line per committed shard")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    batch.set_defaults(func=_batch)


def _copy_results(output: str, run_folder: str) -> None:
    """A job run's folder gets the summary and rejects of the shared output folder (the shards stay there)."""
    import shutil
    from pathlib import Path

    Path(run_folder).mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "rejects.jsonl"):
        if (Path(output) / name).exists() and Path(output).resolve() != Path(run_folder).resolve():
            shutil.copyfile(Path(output) / name, Path(run_folder) / name)


def _batch(args: argparse.Namespace) -> int:
    from optiserve.data import DataOptions
    from serve.batch import BatchConfig, run_batch

    split = lambda text: tuple(c.strip() for c in text.split(",") if c.strip())  # noqa: E731
    if not (args.output or args.out):
        raise UserError("give --output DIR: the folder for the output shards, rejects and summary")
    options = DataOptions.from_flags(args.inputs, None, args.feature_columns)
    config = BatchConfig(
        repository=args.repository, model=args.model, version=args.version, inputs=tuple(args.input),
        output=args.output or args.out, batch_size=args.batch_size, min_actors=args.min_actors,
        max_actors=args.max_actors, threads_per_actor=args.threads_per_actor, gpus_per_actor=args.gpus_per_actor,
        key_columns=split(args.key_columns), feature_columns=options.feature_columns, input_map=options.inputs,
        label_column=args.label_column, nan=args.nan, max_rejects=args.max_rejects, address=args.address,
        progress=not args.no_progress,
    )
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        summary = run_batch(config, log=log)
    finally:
        if args.output and args.out:
            _copy_results(args.output, args.out)
    if args.json:
        print(summary.to_json())
    return 0


def _quiet_ray() -> None:
    import logging

    # The CLI prints its own summary; Serve resets its logger's level when it starts, not `disabled`.
    logging.getLogger("ray.serve").disabled = True


def _start(args: argparse.Namespace) -> int:
    from optiserve.ray_cluster import free_port
    from serve import start_app

    _quiet_ray()
    if args.autoscaling_config and not args.autoscaling_policy:
        raise UserError("--autoscaling-config needs --autoscaling-policy")
    info = start_app(
        args.repository, host=args.host, port=args.port or free_port(), config_path=args.config,
        autoscaling_policy=args.autoscaling_policy, autoscaling_config=args.autoscaling_config,
        address=args.address, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        grpc_port=_grpc_port(args.grpc_port),
    )
    for name, version in sorted(info.models.items()):
        print(f"serving {name} (version {version}) at {info.urls[name]}")
    for name, reason in sorted(info.skipped.items()):
        print(f"not serving {name}: {reason}", file=sys.stderr)
    for note in info.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"server metadata: {info.urls['server']}   OpenAPI: {info.urls['openapi']}   docs: {info.urls['docs']}")
    if info.grpc_port:
        print(f"gRPC (KServe v2, inference.GRPCInferenceService): {info.host}:{info.grpc_port}")
    print(f"Ray cluster: {info.address}   front end: {info.ingress}   stop with: modelserve stop")
    return 0


def _grpc_port(value: int) -> int | None:
    if value < 0 or value > 65535:
        raise UserError(f"--grpc-port must be a port number (0: no gRPC), got {value}")
    return value or None


def _connect_existing(address: str | None) -> bool:
    """Join the cluster `start` used; False when none is known or reachable."""
    import os

    import ray

    from optiserve.ray_cluster import use_token_auth_if_available
    from serve._deploy import recorded_app

    address = address or os.environ.get("RAY_ADDRESS") or getattr(recorded_app(), "address", None)
    if not address:
        return False
    use_token_auth_if_available()  # the head `start` began may require Ray's token
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except Exception:  # noqa: BLE001 - ray raises several types for an unreachable cluster
        return False
    return True


def _status(args: argparse.Namespace) -> int:
    _quiet_ray()
    if not _connect_existing(args.address):
        raise UserError("no running server found: start one with `modelserve start --repository REPO`")
    from serve import status

    try:
        report = status()
    except Exception:  # noqa: BLE001 - Serve not running on that cluster
        raise UserError("Ray is running but Serve is not: start it with `modelserve start`") from None
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    if not report:
        print("no models are deployed")
    for model, entry in sorted(report.items()):
        reps = entry.get("replicas", {})
        print(f"{model}: {entry.get('app_status')}  default version {entry.get('default_version')}  "
              f"versions {','.join(entry.get('versions', []))}  replicas running {reps.get('running', 0)} "
              f"starting {reps.get('starting', 0)} stopping {reps.get('stopping', 0)}")
        for version, reason in entry.get("failed_versions", {}).items():
            print(f"  version {version} failed to load: {reason}")
        if entry.get("error"):
            print(f"  error: {entry['error']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from optiserve.ray_cluster import stop_cluster
    from serve import stop_app

    if _connect_existing(args.address):
        try:
            stop_app()
            print("Serve application stopped")
        except Exception:  # noqa: BLE001 - nothing to stop is fine
            print("Serve was not running")
    if not args.keep_ray and not args.address and stop_cluster():
        print("local Ray cluster stopped")
    return 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from serve import load_config, serve_config
    from serve._deploy import cluster_env_comment

    cfg = load_config(args.config)
    text = cluster_env_comment(cfg) + yaml.safe_dump(
        serve_config(args.repository, cfg, host=args.host, port=args.port, grpc_port=_grpc_port(args.grpc_port)),
        sort_keys=False)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}; deploy it with: serve deploy {args.out}")
    else:
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
