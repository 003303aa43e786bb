"""`autoscale` command line: simulate one policy, compare policies, profile a model."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from rich.console import Console
from rich.progress import Progress

from optiserve.errors import EXIT_OK, EXIT_VERDICT_FAILED, UserError, run_cli

from ._render import comparison_html, plot, results_table, worst_case_table
from .compare import Comparison, compare_trace, default_configs
from .cost import CostModel, PriceTable
from .policies import DEFAULT_POLICY, POLICIES
from .profile import DEFAULT_PROFILE_PATH, ModelProfile, measure_profile
from .simulator import SimConfig, simulate
from .traces import TRACE_KINDS, Trace, trace_from_spec

DEFAULT_PROFILE = DEFAULT_PROFILE_PATH

SIMULATE_EPILOG = """examples:
  autoscale simulate --trace mmpp --slo-p95-ms 50                 # the default policy, adaptive
  autoscale simulate --trace diurnal --policy slo --slo-p95-ms 50
  autoscale simulate --trace step --trace-param peak_rps=400 --policy queue --json --out run.json
  autoscale simulate --trace csv:my_traffic.csv --policy predictive --profile profile.json --plot run.html
"""
COMPARE_EPILOG = """examples:
  autoscale compare --trace step,spike,diurnal,bursty,mmpp,heavy
  autoscale compare --trace step,spike,diurnal --policies adaptive,queue,target-tracking,slo,predictive
  autoscale compare --trace diurnal,csv:prod.csv --duration-s 1800 --json --plot compare.html
The replica start time comes from the profile (replica_start_s); compare prints the value it assumed.
"""
PROFILE_EPILOG = """examples:
  autoscale profile model.onnx --out profile.json
  autoscale profile model.onnx --batch-sizes 1,2,4,8 --replica-start-s 12 --max-batch-size 4 --out p.json
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=3600.0, help="trace length (default 3600)")
    p.add_argument("--trace-param", action="append", default=[], metavar="KEY=VALUE",
                   help="trace parameter, e.g. peak_rps=400 (repeatable)")
    p.add_argument("--slo-p95-ms", type=float, default=50.0, help="latency objective (default 50)")
    p.add_argument("--profile", help="model profile JSON or optimize report (default: the shipped profile)")
    p.add_argument("--policy-config", action="append", default=[], metavar="NAME=FILE",
                   help="YAML config for a policy (repeatable); plain FILE applies to the simulated policy")
    p.add_argument("--max-batch-size", type=int, help="override the profile's serving batch size limit")
    p.add_argument("--batch-wait-ms", type=float, help="override the profile's batch wait")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics-interval-s", type=float, default=2.0,
                   help="replicas' metrics push period (default 2, as the Ray adapter configures; Ray's own is 10)")
    p.add_argument("--replica-kind", default="cpu-1", help="price table key (default cpu-1)")
    p.add_argument("--prices", help="YAML price table overriding the defaults")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--out", help="also save the JSON result here")
    p.add_argument("--plot", help="write a plot of demand, replicas and latency (.png or .html)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="autoscale", description="Autoscaling policies, simulator, profiles.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="simulate one policy on one trace", epilog=SIMULATE_EPILOG,
                       formatter_class=fmt)
    s.add_argument("--trace", default="diurnal", help=f"{', '.join(TRACE_KINDS[:-1])}, or csv:PATH (per-second "
                   "rps or per-request timestamp_s column)")
    s.add_argument("--policy", default=DEFAULT_POLICY, choices=list(POLICIES),
                   help=f"autoscaling policy (default {DEFAULT_POLICY})")
    _common(s)
    c = sub.add_parser("compare", help="compare policies on traces", epilog=COMPARE_EPILOG, formatter_class=fmt)
    c.add_argument("--trace", default="step,spike,diurnal,bursty,mmpp,heavy",
                   help="comma-separated kinds or csv:PATH (default step,spike,diurnal,bursty,mmpp,heavy)")
    c.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policy names")
    c.add_argument("--no-tune-queue", action="store_true", help="skip tuning `queue` to the same attainment")
    c.add_argument("--goal", type=float, default=0.99, help="share of requests within the SLO (default 0.99)")
    _common(c)
    p = sub.add_parser("profile", help="measure a model's latency-versus-batch-size curve",
                       epilog=PROFILE_EPILOG, formatter_class=fmt)
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--out", required=True, help="profile JSON to write")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--replica-start-s", type=float, default=10.0, help="replica start time to record")
    p.add_argument("--max-batch-size", type=int, default=8, help="serving batch size limit to record")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="serving batch wait to record")
    return parser


def _trace(spec: str, args) -> Trace:
    params = {}
    for item in args.trace_param:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--trace-param takes KEY=VALUE, got {item!r}.")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--trace-param {key} needs a number, got {value!r}.") from None
    if (spec.startswith("csv:") or spec.lower().endswith(".csv")) and params:
        raise UserError("--trace-param does not apply to a CSV trace.")
    return trace_from_spec(spec, args.duration_s, **params)


def _profile(args) -> ModelProfile:
    if args.profile:
        prof = ModelProfile.load(args.profile)
    elif DEFAULT_PROFILE.is_file():
        prof = ModelProfile.load(DEFAULT_PROFILE)
    else:
        raise UserError("no --profile given and no shipped default; run `autoscale profile MODEL.onnx --out p.json`.")
    changes = {k: v for k, v in (("max_batch_size", args.max_batch_size), ("batch_wait_ms", args.batch_wait_ms))
               if v is not None}
    return ModelProfile.from_dict({**prof.to_dict(), **changes}) if changes else prof


def _config_paths(args, default_policy: str | None) -> dict[str, str]:
    out = {}
    for item in args.policy_config:
        name, sep, path = item.partition("=")
        if not sep:
            if default_policy is None:
                raise UserError("with compare, give --policy-config as NAME=FILE.")
            name, path = default_policy, item
        if name not in POLICIES:
            raise UserError(f"--policy-config names unknown policy {name!r}.")
        out[name] = path
    return out


def _setup(args) -> tuple[ModelProfile, SimConfig, CostModel]:
    profile = _profile(args)
    sim = SimConfig(min_replicas=args.min_replicas, max_replicas=args.max_replicas, slo_p95_ms=args.slo_p95_ms,
                    seed=args.seed, replica_kind=args.replica_kind, metrics_interval_s=args.metrics_interval_s)
    prices = PriceTable.load(args.prices) if args.prices else PriceTable()
    prices.price(args.replica_kind)  # unknown kind: fail before simulating
    return profile, sim, CostModel(prices)


def _simulate(args, console: Console) -> int:
    profile, sim, cost = _setup(args)
    trace = _trace(args.trace, args)
    cfg = default_configs([args.policy], profile, args.slo_p95_ms, _config_paths(args, args.policy))[args.policy]
    from .bound import lower_bound

    arrivals = trace.arrivals(sim.seed)
    result = simulate(trace, args.policy, cfg, profile, sim, cost, arrivals=arrivals)
    result.lower_bound_replica_seconds = lower_bound(arrivals, trace.duration_s, profile, sim.slo_p95_ms,
                                                     sim.min_replicas).replica_seconds
    if args.out:
        result.save(args.out)
    if args.plot:
        plot({trace.kind: [result]}, args.plot)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        console.print(results_table(f"{trace.kind}: {result.requests:,} requests, SLO p95 <= {sim.slo_p95_ms} ms",
                                    [result]))
        console.print(f"simulated {trace.duration_s:.0f} s in {result.wall_s:.2f} s; assumed replica start time "
                      f"{profile.replica_start_s:g} s (profile: {profile.source or 'given'})")
    return EXIT_OK


def _compare(args, console: Console) -> int:
    profile, sim, cost = _setup(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise UserError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}.")
    traces = [_trace(t.strip(), args) for t in args.trace.split(",") if t.strip()]
    configs = default_configs(sorted(set(policies) | {"queue"}), profile, args.slo_p95_ms,
                              _config_paths(args, None))
    comparison = Comparison(sim_config=asdict(sim), replica_start_s=profile.replica_start_s,
                            profile_source=profile.source)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("simulating", total=None)
        for trace in traces:
            comparison.traces.append(compare_trace(
                trace, policies, profile, sim, configs, cost, tune_queue=not args.no_tune_queue, goal=args.goal,
                progress=lambda msg: progress.update(task, description=msg)))
    if args.out:
        comparison.save(args.out)
    if args.plot:
        html = comparison_html(comparison.to_dict()) if args.plot.lower().endswith(".html") else ""
        plot({tc.trace: tc.results for tc in comparison.traces}, args.plot, extra_html=html)
    if args.json:
        print(json.dumps(comparison.to_dict()))
    else:
        for tc in comparison.traces:
            rows = tc.results + ([tc.tuned_queue] if tc.tuned_queue else [])
            fair = tc.fair_bound.get("replica_seconds")
            console.print(results_table(f"{tc.trace}: SLO p95 <= {sim.slo_p95_ms} ms, lower bound "
                                        f"{tc.lower_bound['replica_seconds']:,.0f} replica-s, fair bound "
                                        f"{fair:,.0f}", rows, tc.best_policy,
                                        {r["policy"]: r for r in tc.policy_rows()}, fair))
            s = tc.summary()
            line = f"best: {s['best_policy']} ({'meets' if s['best_meets_goal'] else 'misses'} {args.goal:.0%})"
            if "best_vs_tuned_queue" in s:
                line += (f"; {s['best_vs_tuned_queue']:.2f}x the replica-seconds of queue tuned to the same "
                         f"attainment (target_ongoing_requests={tc.tuned_target_ongoing_requests})")
            line += f"; {s['best_vs_bound']:.2f}x the lower bound"
            if "best_vs_fair_bound" in s:
                line += f", {s['best_vs_fair_bound']:.2f}x the fair bound"
            console.print(line)
            react = s.get("reactive_goal_vs_fair_bound")
            fair_note = "" if react is None else (
                f" Without foresight the reactive reference's cheapest {args.goal:.0%} is {react:.2f}x the fair "
                "bound (a fluid model without queueing: optimistic for reaction).")
            console.print(f"reachable: {tc.references['verdict']}{fair_note}\n")
        console.print(worst_case_table(f"worst case across {len(comparison.traces)} traces (goal {args.goal:.0%})",
                                       comparison.worst_case()))
        start = profile.notes.get("replica_start", {}) if isinstance(profile.notes, dict) else {}
        origin = (f"measured: {start['source']}" if isinstance(start, dict) and start.get("source") else
                  "set replica_start_s in the profile to a measured value")
        console.print(f"assumed replica start time: {profile.replica_start_s:g} s (profile: "
                      f"{profile.source or 'given'}; {origin})")
        console.print("bounds: lower = perfect foresight, instant free starts, no queueing (a true floor); "
                      "fair = perfect foresight with the same replicas, queue and start (autoscale/fair_bound.py)")
    met = all(tc.summary()["best_meets_goal"] for tc in comparison.traces)
    return EXIT_OK if met else EXIT_VERDICT_FAILED


def _profile_cmd(args, console: Console) -> int:
    try:
        sizes = tuple(int(x) for x in args.batch_sizes.split(","))
    except ValueError:
        raise UserError(f"--batch-sizes takes comma-separated integers, got {args.batch_sizes!r}.") from None
    prof = measure_profile(args.model, sizes, warmup=args.warmup, repeats=args.repeats,
                           replica_start_s=args.replica_start_s, max_batch_size=args.max_batch_size,
                           batch_wait_ms=args.batch_wait_ms,
                           progress=lambda b, ms: console.print(f"batch {b:>3}: {ms:8.3f} ms"))
    prof.save(args.out)
    console.print(f"wrote {args.out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 170)
    handlers = {"simulate": _simulate, "compare": _compare, "profile": _profile_cmd}
    return run_cli(lambda: handlers[args.command](args, console))


if __name__ == "__main__":
    sys.exit(main())
