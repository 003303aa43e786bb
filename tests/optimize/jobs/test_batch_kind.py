"""Jobs of kind batch: `modelserve batch` over the job's artifact (a data file or folder) as a job run, with the
jobs' overrides, limits, logs and triggers. The recipe and command line without Ray; a real run, a run started by
another job's trigger, and a second run resuming into a fixed output folder on the project's local Ray (marked)."""

import json
from pathlib import Path

import numpy as np
import pytest

from optimize.jobs import Hook, Job, JobRun, JobService, Recipe, RunState
from optimize.jobs.executor import command_argv
from optiserve.errors import UserError

FAKE = str(Path(__file__).with_name("fake_recipe.py"))


def test_batch_recipe_defaults_and_mistakes():
    recipe = Recipe("", kind="batch", params={"repository": "repo", "model": "mlp", "key_columns": "id"})
    assert recipe.command == "batch" and recipe.artifact_flag == "--input"
    assert Recipe("batch", kind="batch", artifact_flag=None).artifact_flag is None
    with pytest.raises(UserError, match="its command is 'batch'"):
        Recipe("quantize", kind="batch")
    with pytest.raises(UserError, match="optimize, python, batch"):
        Recipe("x", kind="shell")


def test_batch_command_line_is_modelserve_batch_and_parses():
    from serve.cli import build_parser

    recipe = Recipe("batch", kind="batch", params={"repository": "repo", "model": "mlp", "key_columns": "id",
                                                   "max_actors": 2, "no_progress": True})
    job = Job(name="score", artifact_path="/store/abc/data", artifact_sha256="abc", recipe=recipe)
    run = JobRun(id="r1", job="score", state=RunState.ACCEPTED, env={}, args=("--nan", "zero"), compute=job.compute,
                 max_runtime_s=60, artifact_path="/store/abc/data", artifact_sha256="abc", output_dir="/runs/r1/out",
                 submission_id="s", cluster_address="", dashboard_url="", created_at=0, deadline_at=60)
    argv = command_argv(job, run, "python")
    assert argv[:4] == ["python", "-m", "serve.cli", "batch"]
    args = build_parser().parse_args(argv[3:])
    assert args.input == ["/store/abc/data"] and args.out == "/runs/r1/out" and args.output is None
    assert (args.repository, args.model, args.key_columns, args.max_actors, args.nan) == ("repo", "mlp", "id", 2,
                                                                                         "zero")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optiserve.ray_cluster import ensure_cluster, stop_cluster
    from optiserve.repository import publish

    root = tmp_path_factory.mktemp("batch-jobs")
    publish(_linear(root / "lin.onnx"), root / "repo", "lin")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        x = rng.random((100, 64), dtype=np.float32)
        pq.write_table(pa.table({"id": np.arange(i * 100, (i + 1) * 100), **{f"f{j}": x[:, j] for j in range(64)}}),
                       data / f"part{i}.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTISERVE_STATE_DIR", str(root / "state"))
        mp.delenv("RAY_ADDRESS", raising=False)
        cluster = ensure_cluster(timeout_s=180)
        try:
            service = JobService(watcher=False)
            params = {"repository": str(root / "repo"), "model": "lin", "key_columns": "id", "max_actors": 1,
                      "batch_size": 64}
            service.create_job("score", data, Recipe("batch", params, kind="batch"), max_runtime_s=600)
            service.create_job("score-fixed", data, Recipe("batch", {**params, "output": str(root / "scores")},
                                                           kind="batch"), max_runtime_s=600)
            service.create_job("prep", root / "lin.onnx", Recipe(FAKE, kind="python"),
                               hooks=[Hook("trigger", on=("succeeded",), job="score")])
            yield {"root": root, "service": service}
            service.close()
        finally:
            stop_cluster(cluster)


def _summary(run) -> dict:
    return json.loads((Path(run.output_dir) / "summary.json").read_text())


@pytest.mark.ray
@pytest.mark.slow
def test_a_batch_run_and_one_started_by_a_trigger(env):
    svc = env["service"]
    prep = svc.run("prep", wait=True, wait_timeout_s=300)
    assert prep.state == RunState.SUCCEEDED, prep.message
    triggered = [r for r in svc.list_runs("score") if r.triggered_by == prep.id]
    assert len(triggered) == 1
    run = svc.wait(triggered[0].id, timeout_s=400)
    assert run.state == RunState.SUCCEEDED, run.message
    summary = _summary(run)
    assert summary["rows"] == summary["output_rows"] == 300 and summary["shards_written"] == 3
    assert len([o for o in run.outputs if o.startswith("shards/") and o.endswith(".done.json")]) == 3
    assert "shard 3/3 done" in svc.logs(run.id)


@pytest.mark.ray
@pytest.mark.slow
def test_a_second_run_into_a_fixed_output_folder_resumes(env):
    svc = env["service"]
    first = svc.run("score-fixed", wait=True, wait_timeout_s=400)
    assert first.state == RunState.SUCCEEDED, first.message
    second = svc.run("score-fixed", args=["--max-rejects", "0"], wait=True, wait_timeout_s=400)
    assert second.state == RunState.SUCCEEDED, second.message
    assert _summary(first)["shards_written"] == 3
    assert _summary(second)["shards_skipped"] == 3 and _summary(second)["rows_this_run"] == 0
    assert (env["root"] / "scores" / "summary.json").exists()


def _linear(path: Path):
    from onnx import TensorProto, helper, numpy_helper, save

    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path
