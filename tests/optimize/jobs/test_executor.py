import shlex

import pytest

from optimize.jobs.executor import build_entrypoint, command_argv, fits_on_some_node
from optimize.jobs.models import Compute, Job, JobRun, Recipe, RunState


def _pair(recipe, args=(), script=None):
    job = Job(name="q", artifact_path="/store/ab/model.pt", artifact_sha256="ab", recipe=recipe, script_path=script)
    run = JobRun(id="q-1", job="q", state=RunState.ACCEPTED, env={}, args=tuple(args), compute=Compute(),
                 max_runtime_s=30, artifact_path="/store/ab/model.pt", artifact_sha256="ab",
                 output_dir="/state/runs/q-1/outputs", submission_id="s", cluster_address="c",
                 dashboard_url="http://d", created_at=0.0, deadline_at=30.0)
    return job, run


def test_optimize_recipe_command():
    job, run = _pair(Recipe("quantize", {"method": "dynamic"}), args=["--repeats", "5"])
    assert command_argv(job, run, "py") == ["py", "-m", "optimize", "quantize", "/store/ab/model.pt", "--method",
                                            "dynamic", "--repeats", "5", "--out", "/state/runs/q-1/outputs"]


def test_artifact_flag_and_no_artifact():
    job, run = _pair(Recipe("prune", artifact_flag="--model"))
    assert command_argv(job, run, "py")[4:6] == ["--model", "/store/ab/model.pt"]
    job, run = _pair(Recipe("example", artifact_flag=None))
    assert command_argv(job, run, "py") == ["py", "-m", "optimize", "example", "--out", "/state/runs/q-1/outputs"]


def test_python_recipe_uses_the_stored_script_and_the_runner():
    job, run = _pair(Recipe("my script.py", kind="python"), script="/store/cd/my script.py")
    argv = shlex.split(build_entrypoint(job, run, python="py"))
    assert argv[:8] == ["py", "-m", "optimize.jobs._runner", "--max-runtime-s", "30", "--cwd", "/state/runs/q-1",
                        "--"]
    assert argv[8:10] == ["py", "/store/cd/my script.py"]


NODES = [{"CPU": 8.0, "memory": 16e9}, {"CPU": 2.0, "GPU": 1.0, "memory": 8e9, "big": 1.0}]


@pytest.mark.parametrize("compute", [Compute(cpus=8), Compute(gpus=1, cpus=2), Compute(resources={"big": 1})])
def test_fits(compute):
    assert fits_on_some_node(compute, NODES) is None


def test_does_not_fit_says_why():
    message = fits_on_some_node(Compute(gpus=1), [{"CPU": 8.0}])
    assert "1 GPU(s)" in message and "no node" in message and "--gpus 0" in message
    # each request fits somewhere, but no single node has both
    assert "no node" in fits_on_some_node(Compute(cpus=8, gpus=1), NODES)
    assert "'huge' resource" in fits_on_some_node(Compute(resources={"huge": 1}), NODES)
    assert fits_on_some_node(Compute(gpus=4), []) is None  # nodes unknown: leave it to Ray's pending state
