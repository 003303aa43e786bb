"""Pure mapping from what Ray reports about a run's job to the state change optiserve records.

`decide(run, ray_status, now)` returns the transitions to record, in order (a run observed late can go
accepted -> in_progress -> succeeded in one look), and whether the run must be stopped for overrunning.
No I/O here: service.py fetches the status and applies the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimize.jobs.executor import MISSING, TIMED_OUT_EXIT, RayStatus
from optimize.jobs.models import JobRun, RunState

DEADLINE_GRACE_S = 15.0  # the runner stops a run at its limit; the watcher steps in only when that failed
# the project's exit-code convention (optiserve.errors); other commands' codes are shown as they are
EXIT_MEANINGS = {1: " (its verdict failed: see the log and the report in its outputs)",
                 2: " (it rejected its arguments or input)"}
SUBMIT_GRACE_S = 120.0  # a run recorded but never handed to Ray for this long: its submitter died


@dataclass(frozen=True)
class Step:
    state: RunState
    reason: str
    at: float | None = None


@dataclass(frozen=True)
class Decision:
    steps: list[Step] = field(default_factory=list)
    stop: bool = False  # stop the Ray job (it overran its max run time)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else ""


def not_submitted(run: JobRun, now: float) -> Decision:
    if now - run.created_at < SUBMIT_GRACE_S:
        return Decision()
    return Decision([Step(RunState.FAILED, "the process that submitted this run stopped before Ray accepted it")])


def decide(run: JobRun, ray: RayStatus, now: float) -> Decision:
    if run.state.terminal:
        return Decision()
    S = RunState
    started = [] if run.state != S.ACCEPTED else [Step(S.IN_PROGRESS, "Ray started the run", ray.start_time_s)]
    if ray.status == MISSING:
        return Decision([Step(S.FAILED, "Ray has no record of this run's job (was the cluster restarted?)")])
    if ray.status == "PENDING":
        return Decision()
    if ray.status == "RUNNING":
        steps = [Step(S.IN_PROGRESS, "Ray started the run")] if run.state == S.ACCEPTED else []
        began = run.started_at or now
        if run.state != S.CANCELING and now > began + run.max_runtime_s + DEADLINE_GRACE_S:
            reason = f"still running {now - began:.0f} s after it started, past its max run time of " \
                     f"{run.max_runtime_s:g} s; stopped"
            return Decision(steps + [Step(S.TIMED_OUT, reason)], stop=True)
        return Decision(steps)
    if ray.status == "SUCCEEDED":
        return Decision(started + [Step(S.SUCCEEDED, "the command exited 0", ray.end_time_s)])
    if ray.status == "FAILED":
        if ray.exit_code is None:  # the command never ran: runtime env setup failed, no resources in time, ...
            return Decision([Step(S.FAILED, _first_line(ray.message) or "Ray could not start the run",
                                  ray.end_time_s)])
        if ray.exit_code == TIMED_OUT_EXIT:
            return Decision(started + [Step(S.TIMED_OUT, f"exceeded its max run time of {run.max_runtime_s:g} s; "
                                            "stopped", ray.end_time_s)])
        meaning = EXIT_MEANINGS.get(ray.exit_code, "")
        return Decision(started + [Step(S.FAILED, f"the command exited {ray.exit_code}{meaning}", ray.end_time_s)])
    if ray.status == "STOPPED":
        reason = "canceled" if run.state == S.CANCELING else "stopped outside optiserve (e.g. `ray job stop`)"
        return Decision([Step(S.CANCELED, reason, ray.end_time_s)])
    return Decision()
