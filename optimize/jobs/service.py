"""The Python API of optimization jobs: create templates, start runs with overrides, watch, cancel, read.

Ray's Jobs API executes runs (status, logs, stop, resources, runtime env); this layer adds templates,
overrides, limits, events, hooks and history. Records live in SQLite under the state directory. Any process
that looks at active runs (a CLI command, `--wait`, the detached watcher) reconciles them with Ray: state
changes are recorded once (store.transition) and each event's hooks fire once (store.claim_event).

    svc = JobService()
    svc.create_job("q", "build/models/mlp/model.pt", Recipe("quantize", {"method": "dynamic"}))
    run = svc.run("q", env={"OMP_NUM_THREADS": "1"}, wait=True)
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from optimize.jobs._artifacts import store_artifact
from optimize.jobs._observe import Step, decide, not_submitted
from optimize.jobs._watcher import ensure_running
from optimize.jobs.executor import MISSING, ClusterUnreachable, RayJobs, RayStatus, fits_on_some_node
from optimize.jobs.hooks import fire
from optimize.jobs.models import (
    Compute,
    Event,
    Hook,
    Job,
    JobRun,
    LogSettings,
    Recipe,
    RunState,
    check_env,
    check_max_runtime_s,
)
from optimize.jobs.store import Store
from optiserve.errors import UserError
from optiserve.ray_cluster import ensure_cluster, state_dir

CLUSTER_START_TIMEOUT_S = 180  # a fresh local head takes a minute on a busy 2-core machine
MAX_TRIGGER_CHAIN = 20  # runs started by hooks, one after another, before a chain is cut
ACTIVE = {RunState.ACCEPTED, RunState.IN_PROGRESS, RunState.CANCELING}


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class JobService:
    def __init__(self, address: str | None = None, root: Path | None = None, watcher: bool | None = None) -> None:
        self.root = Path(root) if root else state_dir()
        self.address = address
        self.store = Store(self.root / "jobs.sqlite")
        # The detached watcher records state changes and fires hooks while no CLI is running;
        # OPTISERVE_JOBS_WATCHER=0 turns it off (then the next command that looks reconciles instead).
        self.watcher = (os.environ.get("OPTISERVE_JOBS_WATCHER", "1") != "0") if watcher is None else watcher
        self._clients: dict[str, RayJobs] = {}

    def close(self) -> None:
        self.store.close()

    def _ray(self, dashboard_url: str) -> RayJobs:
        if dashboard_url not in self._clients:
            self._clients[dashboard_url] = RayJobs(dashboard_url)
        return self._clients[dashboard_url]

    # ---- jobs
    def create_job(self, name: str, artifact: str | Path, recipe: Recipe, env: dict[str, str] | None = None,
                   args: list[str] | None = None, compute: Compute | None = None, max_runtime_s: float | None = None,
                   logs: LogSettings | None = None, hooks: list[Hook] | None = None) -> Job:
        """Validate everything, copy the artifact (and a python recipe's script) into the job store, record it."""
        store_root = self.root / "job-store"
        script = None
        if recipe.kind == "python":
            if not Path(recipe.command).is_file():
                raise UserError(f"recipe script {recipe.command} does not exist; give the path of a python file")
            script = str(store_artifact(Path(recipe.command), store_root)[0])
        job = Job(name=name, artifact_path="-", artifact_sha256="-", recipe=recipe, env=dict(env or {}),
                  args=tuple(args or ()), compute=compute or Compute(), max_runtime_s=max_runtime_s,
                  logs=logs or LogSettings(), hooks=tuple(hooks or ()), script_path=script, created_at=time.time())
        for hook in job.hooks:
            if hook.kind == "trigger" and hook.job != name:
                self.store.get_job(hook.job)  # the job it triggers must exist (a clear error now, not at run time)
        stored, sha = store_artifact(Path(artifact), store_root)
        job = Job.from_dict({**job.to_dict(), "artifact_path": str(stored), "artifact_sha256": sha})
        self.store.add_job(job)
        return job

    def get_job(self, name: str) -> Job:
        return self.store.get_job(name)

    def list_jobs(self) -> list[Job]:
        return self.store.list_jobs()

    def delete_job(self, name: str) -> None:
        """Remove the template; its runs' records stay (history)."""
        self.reconcile()
        self.store.delete_job(name)

    # ---- runs
    def run(self, job_name: str, env: dict[str, str] | None = None, args: list[str] | None = None,
            cpus: float | None = None, gpus: float | None = None, memory_mb: int | None = None,
            resources: dict[str, float] | None = None, max_runtime_s: float | None = None,
            artifact: Path | None = None, triggered_by: str | None = None, wait: bool = False,
            wait_timeout_s: float | None = None) -> JobRun:
        """Start a run of a job with overrides (env/args appended to the job's, compute replaced field by field)."""
        job = self.store.get_job(job_name)
        compute = job.compute.merged(cpus, gpus, memory_mb, resources)
        cluster = ensure_cluster(self.address, timeout_s=CLUSTER_START_TIMEOUT_S)
        if cluster.dashboard_url is None:
            raise UserError(f"jobs need the Ray Jobs API: give the cluster's dashboard address "
                            f"(e.g. --address http://HEAD:8265), not {cluster.address}")
        ray = self._ray(cluster.dashboard_url)
        try:
            nodes = ray.node_resources()
        except ClusterUnreachable as exc:
            raise UserError(f"cannot reach the Ray Jobs API at {cluster.dashboard_url}; check --address / "
                            "RAY_ADDRESS (the dashboard address, e.g. http://HEAD:8265)") from exc
        problem = fits_on_some_node(compute, nodes)
        if problem:
            raise UserError(problem)
        artifact_path, sha = job.artifact_path, job.artifact_sha256
        if artifact is not None:
            stored, sha = store_artifact(Path(artifact), self.root / "job-store")
            artifact_path = str(stored)
        limit = check_max_runtime_s(max_runtime_s if max_runtime_s is not None else job.max_runtime_s)
        run_id = f"{job.name}-{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        now = time.time()
        run = JobRun(
            id=run_id, job=job.name, state=RunState.ACCEPTED, env={**job.env, **check_env(env or {})},
            args=(*job.args, *(args or ())), compute=compute, max_runtime_s=limit, artifact_path=artifact_path,
            artifact_sha256=sha, output_dir=str(self.root / "runs" / run_id / "outputs"),
            submission_id=f"optiserve-{run_id}-{secrets.token_hex(3)}", cluster_address=cluster.address,
            dashboard_url=cluster.dashboard_url, cluster_pid=cluster.pid, created_at=now,
            deadline_at=now + limit, triggered_by=triggered_by,
        )
        Path(run.output_dir).mkdir(parents=True, exist_ok=True)
        reason = f"triggered by run {triggered_by}" if triggered_by else "submitted"
        self.store.add_run(run, reason)  # recorded before Ray sees it: a crash leaves a record, never a stray run
        try:
            ray.submit(job, run)
        except ClusterUnreachable as exc:
            self.store.transition(run.id, RunState.FAILED, f"Ray did not answer: {exc}", ended_at=time.time())
            self.dispatch_hooks()
            raise UserError(f"run {run.id} failed: the Ray Jobs API at {cluster.dashboard_url} did not answer") from exc
        except UserError as exc:
            self.store.transition(run.id, RunState.FAILED, str(exc), ended_at=time.time(), message=str(exc))
            self.dispatch_hooks()
            raise
        self.store.update_run(run.id, submitted_at=time.time())
        self.dispatch_hooks()
        if self.watcher:
            ensure_running(self.root)
        return self.wait(run.id, wait_timeout_s) if wait else self.store.get_run(run.id)

    def list_runs(self, job: str | None = None, reconcile: bool = True) -> list[JobRun]:
        if reconcile:
            self.reconcile()
        return self.store.list_runs(job)

    def get_run(self, run_id: str, reconcile: bool = True) -> JobRun:
        run = self.store.get_run(run_id)
        if reconcile and run.state in ACTIVE:
            self.observe(run)
            self.dispatch_hooks()
            run = self.store.get_run(run_id)
        return run

    def events(self, run_id: str | None = None) -> list[Event]:
        if run_id:
            self.get_run(run_id)
        return self.store.events(run_id)

    def cancel(self, run_id: str, reason: str = "canceled by the user") -> JobRun:
        """Ask Ray to stop the run (freeing its resources); it becomes canceled once Ray confirms."""
        run = self.get_run(run_id)
        if run.state.terminal:
            raise UserError(f"run {run_id} already ended ({run.state}); nothing to cancel")
        self.store.transition(run_id, RunState.CANCELING, reason)
        try:
            self._ray(run.dashboard_url).stop(run.submission_id)
        except ClusterUnreachable:
            pass  # the cluster is gone, and the run with it: observe() records that
        self.dispatch_hooks()
        return self.get_run(run_id)

    def wait(self, run_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> JobRun:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.reconcile()  # every active run, not just this one: their records and hooks stay current too
            run = self.get_run(run_id)
            if run.state.terminal:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"run {run_id} is still {run.state} after {timeout_s:g} s")
            time.sleep(poll_s)

    # ---- logs
    def logs(self, run_id: str) -> str:
        run = self.get_run(run_id)
        kept = Path(run.output_dir).parent / "run.log"
        if kept.exists():
            return kept.read_text(errors="replace")
        try:
            return self._ray(run.dashboard_url).logs(run.submission_id)
        except ClusterUnreachable as exc:
            raise UserError(f"the logs of run {run_id} are not kept and its cluster does not answer") from exc

    def follow_logs(self, run_id: str) -> Iterator[str]:
        """The log so far, then new lines as the run writes them, until it ends."""
        run = self.get_run(run_id)
        if run.state.terminal:
            yield self.logs(run_id)
            return
        yield from self._ray(run.dashboard_url).follow(run.submission_id)
        self.wait(run_id)

    # ---- reconciliation
    def reconcile(self) -> int:
        """Bring every active run's record in line with Ray; fire pending hooks. Idempotent. Returns how many
        runs are still active."""
        active = self.store.list_runs(states=ACTIVE)
        for run in active:
            self.observe(run)
        self.dispatch_hooks()
        return len(self.store.list_runs(states=ACTIVE))

    def observe(self, run: JobRun) -> JobRun:
        """Look at one run's Ray job and record what changed (hooks fire later, in dispatch_hooks)."""
        now = time.time()
        if not _pid_alive(run.cluster_pid):
            return self._apply(run, [Step(RunState.FAILED, "the local Ray cluster that ran it has stopped")], None)
        ray = self._ray(run.dashboard_url)
        try:
            status = ray.status(run.submission_id)
        except ClusterUnreachable:
            return run  # maybe transient; the next look decides
        if run.submitted_at is None:  # its submitter died around submit_job: did Ray get it?
            if status.status == MISSING:
                return self._apply(run, not_submitted(run, now).steps, None)
            run = self.store.update_run(run.id, submitted_at=status.start_time_s or now)
        decision = decide(run, status, now)
        if decision.stop:
            try:
                ray.stop(run.submission_id)
            except ClusterUnreachable:
                pass
        return self._apply(run, decision.steps, status)

    def _apply(self, run: JobRun, steps: list[Step], status: RayStatus | None) -> JobRun:
        for step in steps:
            state, reason, at = step.state, step.reason, step.at
            changes: dict = {}
            if state == RunState.IN_PROGRESS:
                changes["started_at"] = at or time.time()
            if state.terminal:
                changes = {**self._finish(run, status), **changes}
                if state != RunState.SUCCEEDED:
                    changes["message"] = self._failure_message(reason, status)
            run = self.store.transition(run.id, state, reason, at=at, **changes) or self.store.get_run(run.id)
        return run

    def _finish(self, run: JobRun, status: RayStatus | None) -> dict:
        """Keep the log and list the outputs when a run ends."""
        job_logs = self._job_logs_settings(run.job)
        run_dir = Path(run.output_dir).parent
        if job_logs.keep and status is not None:
            try:
                text = self._ray(run.dashboard_url).logs(run.submission_id)
                limit = int(job_logs.max_kept_mb * 2**20)
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "run.log").write_text(text[-limit:])
            except ClusterUnreachable:
                pass
        out = Path(run.output_dir)
        outputs = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) if out.exists() else []
        return {"ended_at": (status.end_time_s if status and status.end_time_s else time.time()),
                "exit_code": status.exit_code if status else None, "outputs": tuple(outputs)}

    def _job_logs_settings(self, job_name: str) -> LogSettings:
        try:
            return self.store.get_job(job_name).logs
        except UserError:  # the template was deleted; its runs still end properly
            return LogSettings()

    @staticmethod
    def _failure_message(reason: str, status: RayStatus | None) -> str:
        if status is None or not status.message:
            return reason
        noise = ("Running entrypoint for job", "optiserve: running ", "Runtime env is setting up")
        lines = status.message.strip().splitlines()[1:]
        tail = [line[:300] for line in lines if line.strip() and not any(n in line for n in noise)][-5:]
        return reason + ("; last log lines:\n" + "\n".join(tail) if tail else "")

    # ---- hooks
    def dispatch_hooks(self) -> None:
        """Fire the hooks of every event not yet handled, each event once, oldest first."""
        for event in self.store.pending_events():
            if not self.store.claim_event(event.id):
                continue  # another process took it
            run = self.store.get_run(event.run_id)
            try:
                hooks = [h for h in self.store.get_job(run.job).hooks if h.fires_on(event.state)]
            except UserError:
                hooks = []
            results = [fire(h, run, event, self._trigger) for h in hooks]
            status = "done" if all(ok for ok, _ in results) else "failed"
            self.store.finish_event(event.id, status, "; ".join(detail for _, detail in results))

    def _trigger(self, job: str, args: list[str], env: dict[str, str], artifact: Path | None, by: str) -> str:
        depth, cause = 0, by
        while cause is not None:  # a job may trigger itself (iterative pruning), but not forever
            depth += 1
            if depth > MAX_TRIGGER_CHAIN:
                raise UserError(f"not starting {job}: run {by} ends a chain of {MAX_TRIGGER_CHAIN} triggered runs")
            cause = self.store.get_run(cause).triggered_by
        return self.run(job, env=env, args=args, artifact=artifact, triggered_by=by).id
