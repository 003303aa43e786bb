"""`optimize jobs create|list|show|delete|run` and `optimize runs list|show|logs|cancel|events`: thin argparse
front ends of JobService. Tables for people, `--json` for programs."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from optimize.commands._common import add_command
from optiserve.errors import UserError

JOBS_EPILOG = """  optimize example --out build/models --only mlp
  optimize jobs create quant build/models/mlp/model.pt --command quantize \\
      --param input_shape=1,64 --param repeats=5 --max-runtime 10m --hook-url http://127.0.0.1:9000/events
  optimize jobs run quant --arg="--method dynamic" --wait
  optimize jobs run quant --env OMP_NUM_THREADS=2 --cpus 2 --max-runtime 5m --arg="--method fp16"
  optimize jobs list
"""
RUNS_EPILOG = """  optimize runs list --job quant
  optimize runs logs quant-1122-044538-3da5 --follow
  optimize runs events quant-1122-044538-3da5
  optimize runs cancel quant-1122-044538-3da5
"""


def register(subparsers) -> None:
    jobs = add_command(subparsers, "jobs", "Optimization job templates and their runs on Ray.", JOBS_EPILOG)
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    p = add_command(sub, "create", "Create a job: an immutable template (artifact, recipe, env, args, compute, "
                    "limits, hooks).",
                    "  optimize jobs create quant model.pt --command quantize --param input_shape=1,64\n"
                    "  optimize jobs create prune model.pt --command prune --on-success-trigger quant:model.pt\n"
                    "  optimize jobs create custom model.pt --kind python --command my_recipe.py --gpus 1\n"
                    "  optimize jobs create score data/ --kind batch --param repository=build/repo \\\n"
                    "      --param model=mlp --param key_columns=id   # modelserve batch over data/\n"
                    "  optimize jobs create quant2 model.pt --from-file job.yaml\n")
    p.add_argument("name")
    p.add_argument("artifact", type=Path, help="the model file (or folder); copied into the job store by sha256")
    p.add_argument("--command", help="optimize subcommand (e.g. quantize), or a script path with --kind python "
                   "(--kind batch runs `modelserve batch` on the artifact: a data file or folder)")
    p.add_argument("--kind", choices=["optimize", "python", "batch"], default="optimize")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="recipe parameter -> --k v")
    p.add_argument("--artifact-flag", default="", help="pass the artifact as this flag instead of positionally; "
                   "'none' to not pass it")
    _add_overrides(p)
    p.add_argument("--no-keep-logs", action="store_true", help="do not copy the log into the run folder at the end")
    p.add_argument("--hook-shell", action="append", default=[], metavar="CMD",
                   help="shell command run on each state change (run info in OPTISERVE_RUN_* env vars)")
    p.add_argument("--hook-url", action="append", default=[], metavar="URL", help="POST JSON here on each change")
    p.add_argument("--hook-on", default="*", help="comma-separated states for --hook-shell/--hook-url (default all)")
    p.add_argument("--on-success-trigger", action="append", default=[], metavar="JOB[:OUTPUT_FILE]",
                   help="start a run of JOB when a run succeeds (OUTPUT_FILE of its outputs as that run's artifact)")
    p.add_argument("--from-file", type=Path, help="YAML/JSON job spec (recipe, env, args, compute, hooks, ...)")
    p.set_defaults(func=_create)

    p = add_command(sub, "list", "List jobs.", "  optimize jobs list\n  optimize jobs list --json\n")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list_jobs)
    p = add_command(sub, "show", "Show a job template.", "  optimize jobs show quant --json\n")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show_job)
    p = add_command(sub, "delete", "Delete a job template (its runs' records stay).", "  optimize jobs delete quant\n")
    p.add_argument("name")
    p.set_defaults(func=_delete_job)

    p = add_command(sub, "run", "Start a run of a job with overrides (--arg is appended to the job's arguments).",
                    "  optimize jobs run quant --wait\n"
                    "  optimize jobs run quant --env OMP_NUM_THREADS=1 --max-runtime 90s --arg='--method dynamic'\n"
                    "  optimize jobs run quant --address http://head:8265 --gpus 1\n")
    p.add_argument("job")
    _add_overrides(p)
    p.add_argument("--artifact", type=Path, help="run on this artifact instead of the job's (recorded by sha256)")
    p.add_argument("--address", help="Ray dashboard address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it succeeded")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_job)

    runs = add_command(subparsers, "runs", "Runs of optimization jobs: list, inspect, follow logs, cancel.",
                       RUNS_EPILOG)
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    p = add_command(sub, "list", "List runs (reconciled with Ray first).", "  optimize runs list --job quant\n")
    p.add_argument("--job")
    p.add_argument("--state", help="only runs in this state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list_runs)
    p = add_command(sub, "show", "Show a run: state, reason, overrides, outputs.", "  optimize runs show RUN\n")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show_run)
    p = add_command(sub, "logs", "Print a run's log (kept after the run); --follow streams it while it runs.",
                    "  optimize runs logs RUN\n  optimize runs logs RUN --follow\n")
    p.add_argument("run")
    p.add_argument("--follow", "-f", action="store_true")
    p.set_defaults(func=_logs)
    p = add_command(sub, "cancel", "Cancel a run (Ray stops it and frees its resources).",
                    "  optimize runs cancel RUN --wait\n")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="wait until Ray confirms")
    p.set_defaults(func=_cancel)
    p = add_command(sub, "events", "State changes (time, reason, hook outcome) of one run or all.",
                    "  optimize runs events RUN\n  optimize runs events --json\n")
    p.add_argument("run", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_events)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable")
    p.add_argument("--arg", action="append", default=[], metavar="ARGS",
                   help="extra command arguments (split like a shell: --arg='--method dynamic')")
    p.add_argument("--cpus", type=float, help="CPUs reserved for the run")
    p.add_argument("--gpus", type=float, help="GPUs reserved for the run (never falls back to CPU)")
    p.add_argument("--memory", help="memory reserved, e.g. 512m or 2g")
    p.add_argument("--resource", action="append", default=[], metavar="NAME=N", help="custom Ray resource")
    p.add_argument("--max-runtime", help="stop the run after this long, e.g. 90s, 30m, 2h (default 1h, max 24h)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} takes NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_memory_mb(text: str | None) -> int | None:
    if text is None:
        return None
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    raw = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if raw and raw[-1] in units:
            return int(float(raw[:-1]) * units[raw[-1]])
        return int(float(raw))
    except ValueError:
        raise UserError(f"cannot read the memory size {text!r}; write it like 512m or 2g") from None


def _overrides(args) -> dict:
    from optimize.jobs.models import parse_duration_s, parse_env_pairs

    def number(value: str, what: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{what} must be a number, got {value!r}") from None

    return {
        "env": parse_env_pairs(args.env),
        "args": [piece for a in args.arg for piece in shlex.split(a)],
        "cpus": args.cpus, "gpus": args.gpus, "memory_mb": parse_memory_mb(args.memory),
        "resources": {k: number(v, f"--resource {k}") for k, v in _pairs(args.resource, "--resource").items()},
        "max_runtime_s": parse_duration_s(args.max_runtime) if args.max_runtime else None,
    }


def _service(address: str | None = None):
    from optimize.jobs.service import JobService

    return JobService(address=address)


def _create(args) -> int:
    from optimize.jobs._spec import create_job_from_args

    job = create_job_from_args(_service(), args, _overrides(args))
    print(f"created job {job.name}: {job.recipe.kind} {job.recipe.command} on {Path(job.artifact_path).name} "
          f"(sha256 {job.artifact_sha256[:12]}), max run time {job.max_runtime_s:g} s, {len(job.hooks)} hook(s)")
    return 0


def _list_jobs(args) -> int:
    from optimize.jobs import _render

    jobs = _service().list_jobs()
    _render.emit([j.to_dict() for j in jobs] if args.json else _render.jobs_table(jobs), args.json)
    return 0


def _show_job(args) -> int:
    from optimize.jobs import _render

    job = _service().get_job(args.name)
    _render.emit(job.to_dict() if args.json else _render.job_detail(job), args.json)
    return 0


def _delete_job(args) -> int:
    _service().delete_job(args.name)
    print(f"deleted job {args.name} (its runs' records stay)")
    return 0


def _run_job(args) -> int:
    from optimize.jobs import _render

    svc = _service(args.address)
    o = _overrides(args)
    run = svc.run(args.job, env=o["env"], args=o["args"], cpus=o["cpus"], gpus=o["gpus"], memory_mb=o["memory_mb"],
                  resources=o["resources"], max_runtime_s=o["max_runtime_s"], artifact=args.artifact)
    if not args.json:
        print(f"run {run.id} accepted (output folder {run.output_dir})", flush=True)
    if args.wait:
        run = svc.wait(run.id)
    _render.emit(run.to_dict() if args.json else (_render.run_detail(run, svc.events(run.id)) if args.wait else None),
                 args.json)
    return 0 if not args.wait or run.state == "succeeded" else 1


def _list_runs(args) -> int:
    from optimize.jobs import _render

    runs = [r for r in _service().list_runs(args.job) if not args.state or r.state == args.state]
    _render.emit([r.to_dict() for r in runs] if args.json else _render.runs_table(runs), args.json)
    return 0


def _show_run(args) -> int:
    from optimize.jobs import _render

    svc = _service()
    run = svc.get_run(args.run)
    _render.emit(run.to_dict() if args.json else _render.run_detail(run, svc.events(run.id)), args.json)
    return 0


def _logs(args) -> int:
    svc = _service()
    if not args.follow:
        sys.stdout.write(svc.logs(args.run))
        return 0
    for chunk in svc.follow_logs(args.run):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    run = svc.get_run(args.run)
    print(f"-- run {run.id} {run.state}: {run.message or 'ok'}", file=sys.stderr)
    return 0


def _cancel(args) -> int:
    svc = _service()
    run = svc.cancel(args.run)
    if args.wait:
        run = svc.wait(run.id)
    print(f"run {run.id} {run.state}")
    return 0


def _events(args) -> int:
    from optimize.jobs import _render

    svc = _service()
    if args.run is None:
        svc.reconcile()
    events = svc.events(args.run)
    _render.emit([_render.event_dict(e) for e in events] if args.json else _render.events_table(events), args.json)
    return 0
