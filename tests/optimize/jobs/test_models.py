import pytest

from optimize.jobs.models import (
    DEFAULT_MAX_RUNTIME_S,
    MAX_RUNTIME_UPPER_S,
    Compute,
    Hook,
    Job,
    JobRun,
    Recipe,
    RunState,
    can_transition,
    parse_duration_s,
    parse_env_pairs,
)
from optiserve.errors import UserError


def _job(**kw):
    base = dict(name="q", artifact_path="/s/model.pt", artifact_sha256="ab", recipe=Recipe("quantize"))
    return Job(**{**base, **kw})


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                          ("1.5m", 90), (45, 45)])
def test_parse_duration(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5d", "m"])
def test_parse_duration_rejects(text):
    with pytest.raises(UserError, match="duration"):
        parse_duration_s(text)


def test_max_runtime_default_and_upper_bound():
    assert _job(max_runtime_s=None).max_runtime_s == DEFAULT_MAX_RUNTIME_S
    assert _job(max_runtime_s=60).max_runtime_s == 60
    with pytest.raises(UserError, match="max run time"):
        _job(max_runtime_s=MAX_RUNTIME_UPPER_S + 1)
    with pytest.raises(UserError, match="max run time"):
        _job(max_runtime_s=0)


def test_transitions():
    S = RunState
    assert can_transition(S.ACCEPTED, S.IN_PROGRESS)
    assert can_transition(S.ACCEPTED, S.SUCCEEDED)  # observed late
    assert can_transition(S.CANCELING, S.CANCELED)
    assert can_transition(S.CANCELING, S.SUCCEEDED)  # the run ended before the stop took effect
    assert not can_transition(S.IN_PROGRESS, S.ACCEPTED)
    assert not can_transition(S.IN_PROGRESS, S.IN_PROGRESS)
    for end in (S.SUCCEEDED, S.FAILED, S.CANCELED, S.TIMED_OUT):
        assert end.terminal and not any(can_transition(end, s) for s in S)


def test_job_validation():
    with pytest.raises(UserError, match="job name"):
        _job(name="Bad Name")
    with pytest.raises(UserError, match="environment variable"):
        _job(env={"1BAD": "x"})
    with pytest.raises(UserError, match="negative"):
        Compute(cpus=-1)
    with pytest.raises(UserError, match="custom resources"):
        Compute(resources={"GPU": 1})
    with pytest.raises(UserError, match="kind"):
        Recipe("quantize", kind="docker")
    with pytest.raises(UserError, match="subcommand"):
        Recipe("rm -rf /")
    with pytest.raises(UserError, match="needs 'url'"):
        Hook("http")
    with pytest.raises(UserError, match="http://"):
        Hook("http", url="ftp://x")
    with pytest.raises(UserError, match="run states"):
        Hook("shell", command="true", on=["finished"])
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_env_pairs(["NOEQUALS"])


def test_recipe_params_to_args():
    recipe = Recipe("quantize", {"method": "dynamic", "no_per_channel": True, "allow_pickle": False,
                                 "calibration_method": ["minmax", "entropy"], "repeats": 5})
    assert recipe.param_args() == ["--method", "dynamic", "--no-per-channel", "--calibration-method", "minmax",
                                   "--calibration-method", "entropy", "--repeats", "5"]


def test_job_and_run_json_round_trip():
    job = _job(env={"A": "1"}, args=["--x"], compute=Compute(cpus=2, resources={"big": 1}),
               hooks=[Hook("trigger", job="other", args=["--model", "{output_dir}/m.pt"], artifact_from="m.pt")])
    assert Job.from_dict(job.to_dict()) == job
    run = JobRun(id="q-1", job="q", state=RunState.IN_PROGRESS, env={}, args=("--a",), compute=Compute(),
                 max_runtime_s=5, artifact_path="/a", artifact_sha256="ab", output_dir="/o", submission_id="s",
                 cluster_address="c", dashboard_url="http://d", created_at=1.0, deadline_at=6.0, outputs=("x",))
    assert JobRun.from_dict(run.to_dict()) == run


def test_compute_merge_overrides_field_by_field():
    base = Compute(cpus=2, gpus=0, memory_mb=512, resources={"a": 1})
    merged = base.merged(gpus=1, resources={"b": 2})
    assert merged == Compute(cpus=2, gpus=1, memory_mb=512, resources={"a": 1, "b": 2})
