"""Job specs from the command line and/or a YAML/JSON file (`optimize jobs create --from-file`).

File keys: recipe {command, params, kind, artifact_flag}, env, args, compute {cpus, gpus, memory_mb, resources},
max_runtime ("30m") or max_runtime_s, logs {keep, max_kept_mb}, hooks [{kind, on, command|url|job, ...}].
Flags given on the command line win over the file.
"""

from __future__ import annotations

from pathlib import Path

from optimize.jobs.models import Compute, Hook, Job, LogSettings, Recipe, parse_duration_s
from optiserve.config import read_mapping
from optiserve.errors import UserError


def load_spec(path: Path | None) -> dict:
    if path is None:
        return {}
    return read_mapping(path, "job spec", "recipe: {command: quantize}")


def _typed(value: str):
    """--param values: true/false become flags, the rest stay text (the command parses them)."""
    return {"true": True, "false": False}.get(value.lower(), value)


def create_job_from_args(service, args, overrides: dict) -> Job:
    spec = load_spec(args.from_file)
    try:
        recipe_spec = dict(spec.get("recipe", {}))
        params = dict(recipe_spec.get("params", {}))
        for pair in args.param:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UserError(f"--param takes NAME=VALUE, got {pair!r}")
            params[key] = _typed(value)
        flag = args.artifact_flag if args.artifact_flag else recipe_spec.get("artifact_flag", "")
        recipe = Recipe(
            command=args.command or recipe_spec.get("command", ""), params=params,
            kind=args.kind if args.kind != "optimize" else recipe_spec.get("kind", "optimize"),
            artifact_flag=None if flag in (None, "none") else flag,
        )
        compute = Compute(**spec.get("compute", {})).merged(
            overrides["cpus"], overrides["gpus"], overrides["memory_mb"], overrides["resources"])
        max_runtime_s = overrides["max_runtime_s"]
        if max_runtime_s is None and "max_runtime" in spec:
            max_runtime_s = parse_duration_s(str(spec["max_runtime"]))
        if max_runtime_s is None:
            max_runtime_s = spec.get("max_runtime_s")
        logs = LogSettings(**spec.get("logs", {}))
        if args.no_keep_logs:
            logs = LogSettings(keep=False, max_kept_mb=logs.max_kept_mb)
        # YAML 1.1 reads a bare `on:` key as the boolean true; take it back
        hooks = [Hook(**{("on" if k is True else k): v for k, v in h.items()}) for h in spec.get("hooks", [])]
        on = tuple(s.strip() for s in args.hook_on.split(",") if s.strip())
        hooks += [Hook("shell", on=on, command=c) for c in args.hook_shell]
        hooks += [Hook("http", on=on, url=u) for u in args.hook_url]
        for target in args.on_success_trigger:
            job, _, output = target.partition(":")
            hooks.append(Hook("trigger", on=("succeeded",), job=job, artifact_from=output or None))
    except TypeError as exc:  # unknown keys in the file
        raise UserError(f"job spec has a field it does not know: {exc}") from None
    return service.create_job(
        args.name, args.artifact, recipe, env={**spec.get("env", {}), **overrides["env"]},
        args=[*map(str, spec.get("args", [])), *overrides["args"]], compute=compute, max_runtime_s=max_runtime_s,
        logs=logs, hooks=hooks,
    )
