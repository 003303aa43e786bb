"""JobService's record keeping with a fake Ray edge: reconciliation, crash windows, hooks once, trigger chains."""

import time

import pytest

from optimize.jobs import Compute, Hook, JobRun, JobService, Recipe, RunState
from optimize.jobs._observe import DEADLINE_GRACE_S, SUBMIT_GRACE_S
from optimize.jobs.executor import MISSING, RayStatus
from optiserve.errors import UserError

S = RunState
URL = "http://fake-dashboard"


class FakeRay:
    def __init__(self):
        self.statuses: dict[str, RayStatus] = {}
        self.stopped: list[str] = []

    def status(self, submission_id):
        return self.statuses.get(submission_id, RayStatus(MISSING))

    def stop(self, submission_id):
        self.stopped.append(submission_id)
        return True

    def logs(self, submission_id):
        return f"log of {submission_id}\n"


@pytest.fixture
def svc(tmp_path):
    service = JobService(root=tmp_path, watcher=False)
    ray = FakeRay()
    service._clients[URL] = ray
    model = tmp_path / "model.pt"
    model.write_bytes(b"w")
    marker = tmp_path / "hooks.txt"
    service.create_job("j", model, Recipe("quantize"),
                       hooks=[Hook("shell", on=["*"], command=f"echo $OPTISERVE_RUN_STATE >> {marker}")])
    yield service, ray, marker
    service.close()


def _add(service, run_id, submitted=True, age_s=1.0, state=S.ACCEPTED, **kw):
    now = time.time()
    run = JobRun(id=run_id, job="j", state=S.ACCEPTED, env={}, args=(), compute=Compute(), max_runtime_s=60,
                 artifact_path="/a", artifact_sha256="ab", output_dir=str(service.root / "runs" / run_id / "outputs"),
                 submission_id="sub-" + run_id, cluster_address="c", dashboard_url=URL, created_at=now - age_s,
                 deadline_at=now + 60, submitted_at=(now - age_s) if submitted else None, **kw)
    service.store.add_run(run, "submitted")
    if state != S.ACCEPTED:
        service.store.transition(run_id, state, "setup", started_at=now - age_s)
    return run


def test_reconcile_records_each_change_once_and_fires_hooks_once(svc):
    service, ray, marker = svc
    _add(service, "r1")
    ray.statuses["sub-r1"] = RayStatus("SUCCEEDED", exit_code=0, start_time_s=1.0, end_time_s=2.0)
    assert service.reconcile() == 0
    other = JobService(root=service.root, watcher=False)  # a second process reconciling the same records
    other._clients[URL] = ray
    other.reconcile()
    service.reconcile()
    assert [e.state for e in service.store.events("r1")] == [S.ACCEPTED, S.IN_PROGRESS, S.SUCCEEDED]
    assert marker.read_text().split() == ["accepted", "in_progress", "succeeded"]
    run = service.store.get_run("r1")
    assert run.exit_code == 0 and run.ended_at == 2.0
    assert (service.root / "runs" / "r1" / "run.log").read_text() == "log of sub-r1\n"  # kept
    other.close()


def test_submitter_died_around_submit(svc):
    service, ray, _ = svc
    _add(service, "got-there", submitted=False)  # Ray has it, the record never learnt
    ray.statuses["sub-got-there"] = RayStatus("RUNNING", start_time_s=5.0)
    _add(service, "never", submitted=False, age_s=SUBMIT_GRACE_S + 5)
    _add(service, "just-now", submitted=False)  # maybe still being submitted: leave it
    service.reconcile()
    got = service.store.get_run("got-there")
    assert got.state == S.IN_PROGRESS and got.submitted_at == 5.0
    assert service.store.get_run("never").state == S.FAILED
    assert "stopped before Ray accepted it" in service.store.get_run("never").message
    assert service.store.get_run("just-now").state == S.ACCEPTED


def test_observer_stops_an_overrunning_run(svc):
    service, ray, _ = svc
    _add(service, "slow", state=S.IN_PROGRESS, age_s=60 + DEADLINE_GRACE_S + 5)
    ray.statuses["sub-slow"] = RayStatus("RUNNING")
    service.reconcile()
    assert ray.stopped == ["sub-slow"] and service.store.get_run("slow").state == S.TIMED_OUT
    ray.statuses["sub-slow"] = RayStatus("STOPPED")
    service.reconcile()  # Ray's later STOPPED does not turn it into canceled
    assert service.store.get_run("slow").state == S.TIMED_OUT


def test_dead_local_cluster_and_forgotten_jobs_fail_their_runs(svc):
    service, ray, _ = svc
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    _add(service, "orphan", state=S.IN_PROGRESS, cluster_pid=dead.pid)
    _add(service, "forgotten", state=S.IN_PROGRESS)
    service.reconcile()
    assert "cluster that ran it has stopped" in service.store.get_run("orphan").message
    assert "no record of this run's job" in service.store.get_run("forgotten").message


def test_cancel_records_canceling_then_canceled(svc):
    service, ray, _ = svc
    _add(service, "c", state=S.IN_PROGRESS)
    ray.statuses["sub-c"] = RayStatus("RUNNING")
    assert service.cancel("c").state == S.CANCELING and ray.stopped == ["sub-c"]
    ray.statuses["sub-c"] = RayStatus("STOPPED", end_time_s=9.0)
    assert service.wait("c", timeout_s=5, poll_s=0.01).state == S.CANCELED
    with pytest.raises(UserError, match="already ended"):
        service.cancel("c")


def test_trigger_chains_are_cut(svc):
    service, _, _ = svc
    previous = None
    for i in range(21):
        _add(service, f"chain-{i}", triggered_by=previous)
        previous = f"chain-{i}"
    with pytest.raises(UserError, match="chain of 20"):
        service._trigger("j", [], {}, None, previous)
