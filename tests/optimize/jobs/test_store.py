import pytest

from optimize.jobs.models import Compute, Job, JobRun, Recipe, RunState
from optimize.jobs.store import Store
from optiserve.errors import UserError


def _run(run_id="q-1", job="q"):
    return JobRun(id=run_id, job=job, state=RunState.ACCEPTED, env={}, args=(), compute=Compute(),
                  max_runtime_s=5, artifact_path="/a", artifact_sha256="ab", output_dir="/o",
                  submission_id="s-" + run_id, cluster_address="c", dashboard_url="http://d", created_at=1.0,
                  deadline_at=6.0)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "jobs.sqlite")
    yield s
    s.close()


def test_jobs_crud(store):
    job = Job(name="q", artifact_path="/a", artifact_sha256="ab", recipe=Recipe("quantize"), created_at=1.0)
    store.add_job(job)
    assert store.get_job("q") == job
    with pytest.raises(UserError, match="already exists"):
        store.add_job(job)
    store.add_run(_run(), "submitted")
    with pytest.raises(UserError, match="still going"):
        store.delete_job("q")
    store.transition("q-1", RunState.SUCCEEDED, "done")
    store.delete_job("q")
    assert store.list_jobs() == []
    assert store.get_run("q-1").state == RunState.SUCCEEDED  # history outlives the template
    with pytest.raises(UserError, match="no job"):
        store.get_job("q")


def test_transition_records_each_state_once(store, tmp_path):
    store.add_run(_run(), "submitted")
    other = Store(tmp_path / "jobs.sqlite")  # a second process's view of the same file
    assert store.transition("q-1", RunState.IN_PROGRESS, "started", started_at=2.0).started_at == 2.0
    assert other.transition("q-1", RunState.IN_PROGRESS, "started again") is None
    assert other.transition("q-1", RunState.SUCCEEDED, "exit 0", at=3.0, exit_code=0) is not None
    assert store.transition("q-1", RunState.FAILED, "too late") is None
    events = store.events("q-1")
    assert [(e.state, e.reason) for e in events] == [
        (RunState.ACCEPTED, "submitted"), (RunState.IN_PROGRESS, "started"), (RunState.SUCCEEDED, "exit 0")]
    assert events[-1].at == 3.0
    assert store.get_run("q-1").exit_code == 0
    other.close()


def test_event_hooks_claimed_once(store, tmp_path):
    store.add_run(_run(), "submitted")
    [event] = store.pending_events()
    other = Store(tmp_path / "jobs.sqlite")
    assert store.claim_event(event.id)
    assert not other.claim_event(event.id)
    store.finish_event(event.id, "done", "shell exit 0")
    assert store.pending_events() == []
    assert store.events()[0].hooks_detail == "shell exit 0"
    other.close()


def test_records_survive_reopen(store, tmp_path):
    store.add_run(_run("q-1"), "submitted")
    store.add_run(_run("q-2"), "submitted")
    store.transition("q-2", RunState.CANCELING, "user")
    store.close()
    reopened = Store(tmp_path / "jobs.sqlite")
    assert {r.id: r.state for r in reopened.list_runs(states={RunState.ACCEPTED, RunState.CANCELING})} == {
        "q-1": RunState.ACCEPTED, "q-2": RunState.CANCELING}
    reopened.close()
