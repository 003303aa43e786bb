"""The Ray Jobs API edge: submit, status, logs, stop, cluster resources. Everything Ray-specific is here.

`build_entrypoint` and `fits_on_some_node` are pure (tested without Ray). The entrypoint is wrapped in
`optimize.jobs._runner`, which enforces the max run time inside the job itself, so a run ends on time even
when no optiserve process is alive to watch it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from optimize.jobs.models import Compute, Job, JobRun
from optiserve.errors import UserError
from optiserve.ray_cluster import use_token_auth_if_available

TIMED_OUT_EXIT = 124  # the runner's exit code when it stopped the command at its max run time (as GNU timeout)
AGENT_WAIT_S = 60.0  # how long to retry a submission while a fresh head's job agent comes up
MISSING = "MISSING"  # Ray has no job with this submission id


def job_python() -> str:
    """The interpreter runs use: $OPTISERVE_JOB_PYTHON (a cluster whose nodes keep the project elsewhere),
    else this one (a local cluster shares our virtual environment)."""
    return os.environ.get("OPTISERVE_JOB_PYTHON") or sys.executable


def command_argv(job: Job, run: JobRun, python: str) -> list[str]:
    """The project command a run executes: recipe + job args + run args + --out."""
    recipe = job.recipe
    if recipe.kind == "python":
        head = [python, job.script_path or recipe.command]
    elif recipe.kind == "batch":
        head = [python, "-m", "serve.cli", "batch"]  # `modelserve batch`, by module: no console script needed
    else:
        head = [python, "-m", "optimize", recipe.command]
    artifact = []
    if recipe.artifact_flag == "":
        artifact = [run.artifact_path]
    elif recipe.artifact_flag:
        artifact = [recipe.artifact_flag, run.artifact_path]
    return [*head, *artifact, *recipe.param_args(), *run.args, "--out", run.output_dir]


def build_entrypoint(job: Job, run: JobRun, python: str | None = None) -> str:
    python = python or job_python()
    runner = [python, "-m", "optimize.jobs._runner", "--max-runtime-s", f"{run.max_runtime_s:g}",
              "--cwd", os.path.dirname(run.output_dir), "--"]
    return shlex.join(runner + command_argv(job, run, python))


def fits_on_some_node(compute: Compute, nodes: list[dict[str, float]]) -> str | None:
    """None when some node's total resources could host the run, else why not (one sentence)."""
    need = {"CPU": compute.cpus, "GPU": compute.gpus, "memory": compute.memory_mb * 2**20, **compute.resources}
    need = {k: v for k, v in need.items() if v > 0}
    if not nodes or any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return None
    short = [k for k, v in need.items() if max(node.get(k, 0) for node in nodes) < v]
    names = {"CPU": "CPU(s)", "GPU": "GPU(s)", "memory": "bytes of memory"}
    what = ", ".join(f"{need[k]:g} {names.get(k, repr(k) + ' resource')}" for k in short) or "these resources"
    best = ", ".join(f"{max(node.get(k, 0) for node in nodes):g}" for k in short)
    return (f"the run asks for {what} but no node of the Ray cluster has that much (largest node: {best}); "
            "ask for less (e.g. --gpus 0) or point --address at a cluster that has them")


@dataclass(frozen=True)
class RayStatus:
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED, or MISSING
    message: str = ""
    exit_code: int | None = None
    start_time_s: float | None = None
    end_time_s: float | None = None


class ClusterUnreachable(Exception):
    """The dashboard (Jobs API) did not answer."""


class RayJobs:
    """A thin client of one cluster's Jobs API."""

    def __init__(self, dashboard_url: str) -> None:
        self.dashboard_url = dashboard_url
        self._client = None
        use_token_auth_if_available()

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.dashboard_url)
            except (ConnectionError, RuntimeError) as exc:
                raise ClusterUnreachable(str(exc)) from exc
        return self._client

    def node_resources(self, wait_s: float = 5.0) -> list[dict[str, float]]:
        """Total resources of each alive node (a fresh head registers its node a moment after it answers)."""
        from ray.util.state import list_nodes

        deadline = time.monotonic() + wait_s
        while True:
            try:
                listed = list_nodes(address=self.dashboard_url, detail=True)
            except Exception as exc:  # ServerUnavailable, connection errors: Ray's own classes vary by version
                raise ClusterUnreachable(str(exc).splitlines()[0]) from exc
            nodes = [n.resources_total for n in listed if n.state == "ALIVE"]
            if nodes or time.monotonic() > deadline:
                return nodes
            time.sleep(0.5)

    def submit(self, job: Job, run: JobRun) -> None:
        env = {**run.env, "OPTISERVE_RUN_ID": run.id, "OPTISERVE_JOB": run.job, "PYTHONUNBUFFERED": "1"}
        kwargs = {}
        if run.compute.memory_mb:
            kwargs["entrypoint_memory"] = int(run.compute.memory_mb * 2**20)
        if run.compute.resources:
            kwargs["entrypoint_resources"] = dict(run.compute.resources)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.client.submit_job(
                    entrypoint=build_entrypoint(job, run), submission_id=run.submission_id,
                    runtime_env={"env_vars": env}, metadata={"optiserve_run": run.id, "optiserve_job": run.job},
                    entrypoint_num_cpus=run.compute.cpus, entrypoint_num_gpus=run.compute.gpus, **kwargs,
                )
                return
            except (ConnectionError, RuntimeError) as exc:
                # A head that just started answers before its job agent registers: Ray says to try again.
                if "No available agent" in str(exc) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise UserError(f"Ray did not accept run {run.id}: {str(exc).splitlines()[0]}") from exc

    def status(self, submission_id: str) -> RayStatus:
        try:
            info = self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return RayStatus(MISSING)
            raise ClusterUnreachable(str(exc)) from exc
        except (ConnectionError, OSError) as exc:
            raise ClusterUnreachable(str(exc)) from exc
        ms = lambda t: t / 1000 if t else None  # noqa: E731
        return RayStatus(str(info.status.value), info.message or "", info.driver_exit_code,
                         ms(info.start_time), ms(info.end_time))

    def stop(self, submission_id: str) -> bool:
        try:
            return bool(self.client.stop_job(submission_id))
        except (RuntimeError, ConnectionError, OSError) as exc:
            raise ClusterUnreachable(str(exc)) from exc

    def logs(self, submission_id: str) -> str:
        try:
            return self.client.get_job_logs(submission_id)
        except (RuntimeError, ConnectionError, OSError) as exc:
            raise ClusterUnreachable(str(exc)) from exc

    def follow(self, submission_id: str) -> Iterator[str]:
        """Log chunks as they are written, until the job ends (Ray's websocket tail)."""
        import logging

        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # "WebSocket closed" noise
        agen = self.client.tail_job_logs(submission_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()
