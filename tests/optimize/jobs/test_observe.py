from optimize.jobs._observe import DEADLINE_GRACE_S, SUBMIT_GRACE_S, decide, not_submitted
from optimize.jobs.executor import MISSING, TIMED_OUT_EXIT, RayStatus
from optimize.jobs.models import Compute, JobRun, RunState

S = RunState


def _run(state=S.ACCEPTED, started_at=None, max_runtime_s=60.0):
    return JobRun(id="q-1", job="q", state=state, env={}, args=(), compute=Compute(), max_runtime_s=max_runtime_s,
                  artifact_path="/a", artifact_sha256="ab", output_dir="/o", submission_id="s",
                  cluster_address="c", dashboard_url="http://d", created_at=100.0, deadline_at=160.0,
                  submitted_at=101.0, started_at=started_at)


def _states(decision):
    return [step.state for step in decision.steps]


def test_pending_records_nothing():
    assert _states(decide(_run(), RayStatus("PENDING"), 105)) == []


def test_running_starts_the_run_once():
    assert _states(decide(_run(), RayStatus("RUNNING"), 105)) == [S.IN_PROGRESS]
    assert _states(decide(_run(S.IN_PROGRESS, started_at=105), RayStatus("RUNNING"), 110)) == []


def test_late_observation_records_the_whole_path():
    decision = decide(_run(), RayStatus("SUCCEEDED", exit_code=0, start_time_s=101, end_time_s=130), 200)
    assert _states(decision) == [S.IN_PROGRESS, S.SUCCEEDED]
    assert decision.steps[-1].at == 130


def test_failed_timed_out_and_never_started():
    assert _states(decide(_run(S.IN_PROGRESS), RayStatus("FAILED", "boom", exit_code=3), 120)) == [S.FAILED]
    timed = decide(_run(S.IN_PROGRESS), RayStatus("FAILED", exit_code=TIMED_OUT_EXIT), 170)
    assert _states(timed) == [S.TIMED_OUT] and not timed.stop
    never = decide(_run(), RayStatus("FAILED", "runtime env setup failed\ndetails"), 120)
    assert _states(never) == [S.FAILED] and never.steps[0].reason == "runtime env setup failed"


def test_overrun_is_stopped_by_the_observer():
    run = _run(S.IN_PROGRESS, started_at=100.0, max_runtime_s=60)
    assert not decide(run, RayStatus("RUNNING"), 100 + 60 + DEADLINE_GRACE_S - 1).stop
    late = decide(run, RayStatus("RUNNING"), 100 + 60 + DEADLINE_GRACE_S + 1)
    assert late.stop and _states(late) == [S.TIMED_OUT]


def test_stopped_is_canceled_with_the_right_reason():
    assert decide(_run(S.CANCELING), RayStatus("STOPPED"), 120).steps[0].reason == "canceled"
    outside = decide(_run(S.IN_PROGRESS), RayStatus("STOPPED"), 120).steps[0]
    assert outside.state == S.CANCELED and "outside optiserve" in outside.reason


def test_missing_job_and_unsubmitted_run_fail():
    assert _states(decide(_run(S.IN_PROGRESS), RayStatus(MISSING), 120)) == [S.FAILED]
    assert _states(not_submitted(_run(), 100 + SUBMIT_GRACE_S - 1)) == []
    assert _states(not_submitted(_run(), 100 + SUBMIT_GRACE_S + 1)) == [S.FAILED]


def test_terminal_runs_are_left_alone():
    assert _states(decide(_run(S.SUCCEEDED), RayStatus("FAILED", exit_code=1), 120)) == []
