"""Renderers of job/run/event records: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.table import Table

from optimize.jobs.models import Event, Job, JobRun

STATE_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "red", "canceled": "yellow",
               "canceling": "yellow", "in_progress": "cyan", "accepted": "blue"}


def emit(data, as_json: bool) -> None:
    if data is None:
        return
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        Console(soft_wrap=False).print(data)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _duration(run: JobRun) -> str:
    if not run.started_at:
        return "-"
    return f"{(run.ended_at or time.time()) - run.started_at:.1f} s"


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def jobs_table(jobs: list[Job]) -> Table:
    table = Table("job", "recipe", "artifact", "sha256", "compute", "max run time", "hooks", title="jobs")
    for j in jobs:
        compute = f"{j.compute.cpus:g} cpu" + (f", {j.compute.gpus:g} gpu" if j.compute.gpus else "")
        table.add_row(j.name, f"{j.recipe.command} {' '.join(j.recipe.param_args())}".strip(),
                      j.artifact_path.rsplit("/", 1)[-1], j.artifact_sha256[:12], compute, f"{j.max_runtime_s:g} s",
                      str(len(j.hooks)))
    return table


def job_detail(job: Job) -> Table:
    table = Table.grid(padding=(0, 2))
    d = job.to_dict()
    for key in ("name", "artifact_path", "artifact_sha256", "recipe", "env", "args", "compute", "max_runtime_s",
                "logs", "hooks"):
        table.add_row(f"[bold]{key}[/]", json.dumps(d[key]) if isinstance(d[key], dict | list) else str(d[key]))
    return table


def runs_table(runs: list[JobRun]) -> Table:
    table = Table("run", "job", "state", "created", "duration", "args", "outputs", "reason", title="runs")
    for r in runs:
        table.add_row(r.id, r.job, _state(r.state), _when(r.created_at), _duration(r), " ".join(r.args),
                      str(len(r.outputs)), (r.message.splitlines() or [""])[0][:60])
    return table


def run_detail(run: JobRun, events: list[Event]) -> Table:
    table = Table.grid(padding=(0, 2))
    rows = [("run", run.id), ("job", run.job), ("state", _state(run.state)), ("reason", run.message or "-"),
            ("exit code", "-" if run.exit_code is None else str(run.exit_code)),
            ("args", " ".join(run.args) or "-"), ("env", json.dumps(run.env)),
            ("compute", json.dumps(run.compute.__dict__)), ("max run time", f"{run.max_runtime_s:g} s"),
            ("artifact", f"{run.artifact_path} (sha256 {run.artifact_sha256[:12]})"),
            ("created", _when(run.created_at)), ("duration", _duration(run)),
            ("output folder", run.output_dir), ("outputs", ", ".join(run.outputs) or "-"),
            ("ray job", f"{run.submission_id} on {run.dashboard_url}")]
    if run.triggered_by:
        rows.append(("triggered by", run.triggered_by))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    table.add_row("[bold]events[/]", events_table(events))
    return table


def event_dict(e: Event) -> dict:
    return {"id": e.id, "run_id": e.run_id, "state": e.state.value, "at": e.at, "reason": e.reason,
            "hooks_status": e.hooks_status, "hooks_detail": e.hooks_detail}


def events_table(events: list[Event]) -> Table:
    table = Table("time", "run", "state", "reason", "hooks")
    for e in events:
        table.add_row(_when(e.at), e.run_id, _state(e.state), e.reason,
                      f"{e.hooks_status}{': ' + e.hooks_detail if e.hooks_detail else ''}")
    return table
