"""Lifecycle hooks: what a run's state change sets off. Shell commands, HTTP callbacks, runs of other jobs.

`fire(hook, run, event, trigger)` fires one hook and returns a one-line outcome; it never raises, so one
broken hook cannot stop the others or the record keeping. The service fires each event's hooks at most once
(see store.claim_event).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from optimize.jobs.models import Event, Hook, JobRun

# trigger(job_name, args, env, artifact_or_None, triggered_by_run_id) -> the new run's id
Trigger = Callable[[str, list[str], dict[str, str], Path | None, str], str]


def run_env(run: JobRun, event: Event) -> dict[str, str]:
    """What a shell hook learns about the run, as environment variables."""
    return {
        "OPTISERVE_RUN_ID": run.id, "OPTISERVE_JOB": run.job, "OPTISERVE_RUN_STATE": event.state.value,
        "OPTISERVE_RUN_REASON": event.reason, "OPTISERVE_EVENT_AT": f"{event.at:.3f}",
        "OPTISERVE_RUN_OUTPUT_DIR": run.output_dir, "OPTISERVE_RUN_OUTPUTS": json.dumps(list(run.outputs)),
        "OPTISERVE_RUN_EXIT_CODE": "" if run.exit_code is None else str(run.exit_code),
    }


def payload(run: JobRun, event: Event) -> dict:
    """The JSON body of an HTTP hook."""
    return {
        "event": {"run_id": run.id, "job": run.job, "state": event.state.value, "at": event.at,
                  "reason": event.reason},
        "run": run.to_dict(),
    }


def substitute(text: str, run: JobRun, event: Event) -> str:
    """{run_id}, {job}, {state}, {output_dir} in trigger args/env; other braces stay as written."""
    values = {"run_id": run.id, "job": run.job, "state": event.state.value, "output_dir": run.output_dir}
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def fire(hook: Hook, run: JobRun, event: Event, trigger: Trigger) -> tuple[bool, str]:
    """(ok, one-line outcome)."""
    try:
        if hook.kind == "shell":
            proc = subprocess.run(hook.command, shell=True, env={**os.environ, **run_env(run, event)},
                                  capture_output=True, text=True, timeout=hook.timeout_s)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            return proc.returncode == 0, f"shell exit {proc.returncode}" + (f": {tail[0][:200]}" if tail[0] else "")
        if hook.kind == "http":
            body = json.dumps(payload(run, event)).encode()
            request = urllib.request.Request(hook.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=hook.timeout_s) as response:
                return 200 <= response.status < 300, f"http {response.status} from {hook.url}"
        if hook.kind == "trigger":
            artifact = None
            if hook.artifact_from:
                artifact = Path(run.output_dir) / hook.artifact_from
                if not artifact.exists():
                    return False, f"trigger {hook.job}: {hook.artifact_from} is not among run {run.id}'s outputs"
            args = [substitute(a, run, event) for a in hook.args]
            env = {k: substitute(v, run, event) for k, v in hook.env.items()}
            new_id = trigger(hook.job, args, env, artifact, run.id)
            return True, f"triggered run {new_id} of job {hook.job}"
        return False, f"unknown hook kind {hook.kind}"
    except subprocess.TimeoutExpired:
        return False, f"shell hook still running after {hook.timeout_s:g} s; stopped"
    except urllib.error.HTTPError as exc:
        return False, f"http {exc.code} from {hook.url}"
    except Exception as exc:  # a hook must never break record keeping; say what happened instead
        return False, f"{hook.kind} hook failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
