"""`loadtest`: live load tests with verdicts, live-versus-simulated policy validation, capacity plans.

Thin: parse, call the library, print. Exit codes: 0 ok, 1 verdict failed, 2 usage error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from optiserve.errors import EXIT_OK, EXIT_VERDICT_FAILED, UserError, run_cli

EPILOG = """examples:
  loadtest run --url http://127.0.0.1:8000 --model digits-mlp --shape diurnal --duration 5m \\
      --trace-param peak_rps=60 --slo-p95-ms 100 --out build/lt/run
  loadtest capacity --repository build/demo/repository --model digits-mlp --slo-p95-ms 100 --peak-rps 500
  loadtest validate --repository build/demo/repository --model digits-mlp --policy slo \\
      --policy-config build/lt/capacity/autoscaling.yaml --shape step --duration 2m
"""


def _add_trace(p: argparse.ArgumentParser, shape: str, duration: str) -> None:
    p.add_argument("--shape", default=shape, help=f"trace: constant, step, spike, ramp, diurnal, bursty or replay "
                   f"(default {shape})")
    p.add_argument("--duration", default=duration, help=f"how long the load lasts: 90s, 5m, 1h (default {duration})")
    p.add_argument("--trace-param", action="append", default=[], metavar="KEY=VALUE",
                   help="trace parameter, repeatable: e.g. peak_rps=60 base_rps=10 (see `autoscale` traces)")
    p.add_argument("--trace-csv", help="CSV to replay with --shape replay (timestamp_s or rps column)")


def _add_objectives(p: argparse.ArgumentParser, slo_required: bool = False) -> None:
    p.add_argument("--slo-p95-ms", type=float, required=slo_required, help="p95 latency objective in ms")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="largest acceptable failed share (0.01)")
    p.add_argument("--replica-kind", default="cpu-1", help="price table key of one replica (default cpu-1)")
    p.add_argument("--prices", help="YAML price table (replica kind: USD per hour) overriding the defaults")


def _add_bodies(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", help=".npz, CSV or Parquet of realistic inputs (e.g. the example's eval.npz)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest", description="Load tests, autoscaling validation and capacity plans for served models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog="examples:\n" + epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    r = add("run", "Play a trace against a served model; report latency, errors, replicas, cost and a verdict.",
            "  loadtest run --url http://127.0.0.1:8000 --model digits-mlp --shape diurnal --duration 5m \\\n"
            "      --trace-param peak_rps=60 --slo-p95-ms 100 --max-cost-per-1k 0.01 --out build/lt/run\n")
    r.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000 (loopback only)")
    r.add_argument("--model", required=True)
    r.add_argument("--version", help="model version (default: the served default)")
    r.add_argument("--repository", help="model repository: request bodies from the manifest (else the server's "
                   "metadata)")
    _add_trace(r, "constant", "60s")
    _add_objectives(r)
    r.add_argument("--max-cost-per-1k", type=float, help="largest acceptable cost per 1000 requests (USD)")
    _add_bodies(r)
    r.add_argument("--address", help="Ray cluster to read replica counts from (default: the recorded app's)")
    r.add_argument("--no-replicas", action="store_true", help="do not sample replica counts from Ray Serve")
    r.add_argument("--users-per-rps", type=float, default=1.0, help="Locust users per req/s of peak (1.0)")
    r.add_argument("--out", default="build/loadtest/run", help="report folder (default build/loadtest/run)")
    r.set_defaults(func=_run)

    v = add("validate", "Serve the model with an autoscaling policy, run a trace live and in the simulator, "
            "and compare.",
            "  loadtest validate --repository build/demo/repository --model digits-mlp --policy slo \\\n"
            "      --policy-config build/lt/capacity/autoscaling.yaml --shape step --duration 2m \\\n"
            "      --trace-param base_rps=10 --trace-param peak_rps=80 --slo-p95-ms 100\n")
    v.add_argument("--policy", required=True, help="adaptive, queue, target-tracking, slo or predictive")
    v.add_argument("--policy-config", help="policy YAML (e.g. the autoscaling.yaml `loadtest capacity` writes)")
    v.add_argument("--repository", required=True)
    v.add_argument("--model", required=True)
    v.add_argument("--min-replicas", type=int, default=1)
    v.add_argument("--max-replicas", type=int, default=4)
    v.add_argument("--max-batch-size", type=int, default=8)
    v.add_argument("--batch-wait-ms", type=float, default=2.0)
    v.add_argument("--profile", help="model profile for the simulator (default: measured from model.onnx)")
    v.add_argument("--replica-start-s", type=float,
                   help="replica start time for the simulator (default: the profile's replica_start_s, as the "
                   "live policy reads it; measure it with `loadtest replica-start`)")
    v.add_argument("--no-calibrate", action="store_true",
                   help="simulate with onnxruntime's latency alone (default: add the measured HTTP overhead)")
    _add_trace(v, "step", "2m")
    _add_objectives(v)
    _add_bodies(v)
    v.add_argument("--address", help="existing Ray cluster (default: an embedded one, stopped at the end)")
    v.add_argument("--out", default="build/loadtest/validate")
    v.set_defaults(func=_validate)

    c = add("capacity", "Step-load one replica per configuration to find its capacity; plan replicas and cost "
            "for a peak.",
            "  loadtest capacity --repository build/demo/repository --model digits-mlp --slo-p95-ms 100 \\\n"
            "      --peak-rps 500 --replica-kinds cpu-1,cpu-2 --batching 1:0,8:2\n")
    c.add_argument("--repository", help="model repository; the model is deployed with one replica per config")
    c.add_argument("--model", required=True)
    c.add_argument("--url", help="measure this running deployment as is (one replica!) instead of deploying")
    _add_objectives(c, slo_required=True)
    c.add_argument("--peak-rps", type=float, help="target peak to plan for (requests per second)")
    c.add_argument("--min-rps", type=float, default=0.0, help="off-peak traffic, sets min_replicas")
    c.add_argument("--replica-kinds", default="cpu-1", help="comma-separated replica kinds (default cpu-1)")
    c.add_argument("--batching", default="8:2", help="MAX_BATCH:WAIT_MS list (default 8:2)")
    c.add_argument("--utilization", type=float, default=0.8, help="target share of capacity per replica (0.8)")
    c.add_argument("--downscale-delay-s", type=float, default=60.0,
                   help="scale-down delay in the recommended slo policy config (default 60)")
    c.add_argument("--step", default="10s", help="length of each load step (default 10s)")
    c.add_argument("--start-rps", type=float, default=10.0)
    c.add_argument("--growth", type=float, default=1.6, help="coarse step factor (default 1.6)")
    c.add_argument("--max-rps", type=float, default=2000.0)
    c.add_argument("--refine-steps", type=int, default=3)
    _add_bodies(c)
    c.add_argument("--address", help="existing Ray cluster (default: an embedded one, stopped at the end)")
    c.add_argument("--out", default="build/loadtest/capacity")
    c.set_defaults(func=_capacity)

    s = add("replica-start", "Measure what a replica start costs (scaling decision to first request served) and "
            "the first request after scale to zero; record it in a profile's replica_start_s.",
            "  loadtest replica-start --repository build/demo/repository --model digits-mlp --starts 3 --cold 2 \\\n"
            "      --profile-out build/lt/profile.json\n"
            "  autoscale compare --profile build/lt/profile.json   # simulate with the measured start\n")
    s.add_argument("--repository", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--starts", type=int, default=3, help="replica starts to measure, one at a time (default 3)")
    s.add_argument("--cold", type=int, default=0,
                   help="scale-from-zero tries (min_replicas 0; each waits for the idle replica to go; default 0)")
    s.add_argument("--high-rps", type=float, default=10.0,
                   help="probe load that makes the policy ask for a second replica (default 10)")
    s.add_argument("--profile", help="profile to record the start into (default: the model's own, measured now)")
    s.add_argument("--profile-out", required=True,
                   help="where to write the profile with replica_start_s = the measured median")
    s.add_argument("--out", default="build/loadtest/replica-start", help="folder for replica_start.json")
    s.set_defaults(func=_replica_start)
    return parser


def _replica_start(args) -> int:
    from ._start_probe import run_start_probe

    if args.starts < 0 or args.cold < 0 or args.high_rps <= 0:
        raise UserError("--starts and --cold must be >= 0 and --high-rps positive.")
    res = run_start_probe(args.repository, args.model, starts=args.starts, cold=args.cold,
                          profile_in=args.profile, profile_out=args.profile_out, work_dir=args.out,
                          high_rps=args.high_rps)
    if "replica_start" in res:
        s = res["replica_start"]
        bound = (" (a lower bound: some starts timed to 'initialized', the replicas' access log is off)"
                 if s["lower_bound"] else "")
        print(f"replica start, decision -> first request served{bound}: median {s['median_s']:.2f} s, "
              f"min {s['min_s']:.2f}, max {s['max_s']:.2f} over {s['n']} starts (to initialized: median "
              f"{s['median_to_running_s']:.2f} s); recorded in {res['profile']}")
    if "cold_start_sentence" in res:
        print(res["cold_start_sentence"])
    print(f"data: {Path(args.out) / 'replica_start.json'}")
    return EXIT_OK


def _cost_model(args):
    from autoscale.cost import CostModel, PriceTable

    table = PriceTable.load(args.prices) if args.prices else PriceTable()
    table.price(args.replica_kind)  # an unknown kind is a clear error now, not after the load test
    return CostModel(table)


def _trace(args):
    from .shapes import build_trace, parse_duration, parse_params

    return build_trace(args.shape, parse_duration(args.duration), parse_params(args.trace_param), args.trace_csv)


def _print_result(result, paths_dir: Path) -> None:
    from optiserve.console import console

    s, out = result.summary, console()
    out.print(f"[bold]{result.config.model}[/] {result.config.shape} {result.duration_s:.0f} s: {s.requests} requests, "
              f"{s.failures} failed ({s.error_rate:.2%}), p50 {s.p50_ms:.1f} ms, p95 {s.p95_ms:.1f} ms, "
              f"p99 {s.p99_ms:.1f} ms")
    rs = result.replica_summary
    out.print(f"replicas {rs.min_replicas}..{rs.max_replicas} ({rs.scale_ups} scale-ups, {rs.scale_downs} "
              f"scale-downs), {rs.replica_seconds:.0f} replica-seconds, cost ${result.cost.total:.6f} "
              f"(${result.cost.cost_per_1k_requests:.6f} per 1k)")
    out.print(result.verdict.explain())
    out.print(f"report: {paths_dir / 'report.html'}")


def _run(args) -> int:
    from .live import bodies_for, run_live
    from .result import Objectives
    from .runner import check_loopback

    url = check_loopback(args.url)
    objectives = Objectives(args.slo_p95_ms, args.max_error_rate, args.max_cost_per_1k)
    cost, trace = _cost_model(args), _trace(args)
    bodies = bodies_for(url, args.model, repository=args.repository, version=args.version,
                        samples_path=args.samples, seed=args.seed)
    sampler = None
    if not args.no_replicas:
        from ._serve_probe import replica_sampler

        sampler = replica_sampler(args.model, args.address)
        if sampler is None:
            print("note: no Ray Serve deployment found for replica counts (use --address); replicas and cost "
                  "will read 0")
    result = run_live(url, args.model, trace, args.out, objectives=objectives, bodies=bodies, sampler=sampler,
                      replica_kind=args.replica_kind, cost_model=cost, seed=args.seed,
                      users_per_rps=args.users_per_rps)
    _print_result(result, Path(args.out))
    return EXIT_OK if result.verdict.passed else EXIT_VERDICT_FAILED


def _validate(args) -> int:
    from .result import Objectives
    from .validate_live import ValidateSetup, validate_live

    setup = ValidateSetup(
        repository=Path(args.repository), model=args.model, policy=args.policy, policy_config=args.policy_config,
        min_replicas=args.min_replicas, max_replicas=args.max_replicas, max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms, replica_kind=args.replica_kind, seed=args.seed, samples=args.samples,
        address=args.address, profile=args.profile, replica_start_s=args.replica_start_s,
        calibrate=not args.no_calibrate)
    objectives = Objectives(args.slo_p95_ms or 50.0, args.max_error_rate)
    v, live = validate_live(setup, _trace(args), objectives, _cost_model(args), Path(args.out))
    _print_validation(v, Path(args.out))
    return EXIT_OK if live.verdict.passed else EXIT_VERDICT_FAILED


def _print_validation(v, out: Path) -> None:
    from rich.table import Table

    from optiserve.console import console

    t = Table(title=f"{v.policy} on {v.trace}: live vs simulated")
    for col in ("figure", "live", "simulated", "sim / live"):
        t.add_column(col, justify="right" if col != "figure" else "left")
    for r in v.rows:
        t.add_row(r.figure, f"{r.live:.4g}", f"{r.simulated:.4g}", f"{r.ratio:.3g}")
    con = console()
    con.print(t)
    con.print(f"live scale-ups {v.live_scale_ups}, scale-downs {v.live_scale_downs}; report: "
              f"{out / 'validation.html'}")


def _capacity(args) -> int:
    from .capacity import SearchConfig
    from .capacity_live import measure_and_plan
    from .shapes import parse_duration

    if not args.repository and not args.url:
        raise UserError("give --repository (deploy and measure) or --url (measure a running deployment).")
    search = SearchConfig(slo_p95_ms=args.slo_p95_ms, max_error_rate=args.max_error_rate, start_rps=args.start_rps,
                          growth=args.growth, max_rps=args.max_rps, refine_steps=args.refine_steps,
                          step_s=parse_duration(args.step))
    report = measure_and_plan(
        args.model, search, _cost_model(args), Path(args.out), repository=args.repository, url=args.url,
        replica_kinds=[k.strip() for k in args.replica_kinds.split(",") if k.strip()], batching=args.batching,
        peak_rps=args.peak_rps, utilization=args.utilization, min_rps=args.min_rps,
        downscale_delay_s=args.downscale_delay_s, samples=args.samples, seed=args.seed, address=args.address)
    from .report import write_capacity_report

    _print_capacity(report, write_capacity_report(report, Path(args.out)), Path(args.out))
    return EXIT_OK


def _print_capacity(report, paths: dict, out: Path) -> None:
    import yaml

    for c in report.curves:
        print(f"{c.label}: {c.capacity_rps:.1f} req/s within p95 <= {report.slo_p95_ms:g} ms ({c.limited_by})")
    for p in report.plans:
        print(f"  peak {p.peak_rps:g} req/s -> {p.replicas_needed} x {p.replica_kind}, ${p.cost_per_hour:.4f}/h, "
              f"${p.cost_per_million:.4f} per million inferences")
    if report.recommended:
        best = next(p for p in report.plans if p.label == report.recommended)
        cfg = out / "autoscaling.yaml"
        cfg.write_text(yaml.safe_dump({best.autoscaling["policy"]: best.autoscaling["policy_config"],
                                       "min_replicas": best.autoscaling["min_replicas"],
                                       "max_replicas": best.autoscaling["max_replicas"]}, sort_keys=False))
        print(f"recommended: {best.label}, min {best.autoscaling['min_replicas']} max "
              f"{best.autoscaling['max_replicas']} replicas; policy config: {cfg}")
    print(f"report: {paths['html']}  data: {paths['json']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
