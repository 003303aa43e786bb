"""The Ray edge (the actor pool). Without Ray: model/version resolution, input errors and the resource checks
(GPU actors on a CPU-only cluster). With Ray (marked): one simulated two-node cluster (ray.cluster_utils.Cluster)
per module, every input format end to end, rejects and --max-rejects, a run killed midway (SIGKILL) and resumed
exactly once, an actor killed midway and restarted, GPU actors refused on the CPU-only cluster, and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optiserve.errors import UserError
from serve.batch import BatchConfig, BatchSummary, run_batch
from serve.batch._pipeline import (
    KILL_ACTOR_AFTER_ROWS_ENV,
    KILL_AFTER_ROWS_ENV,
    KILLED_ONCE,
    ClusterBusy,
    check_resources,
    resolve_version,
    sized_pool,
)

CPU_ONLY = {"nodes": 2, "cpus": 3, "gpus": 0, "max_node_cpus": 2, "max_node_gpus": 0, "node_cpus": [2, 1],
            "node_gpus": [0, 0], "free_cpus": 3, "free_gpus": 0}
ROOT = Path(__file__).resolve().parents[3]


def _config(repo, inputs, out, **changes):
    return BatchConfig(**{"repository": str(repo), "model": "lin", "inputs": tuple(map(str, inputs)),
                          "output": str(out), "key_columns": ("id",), "batch_size": 64, "max_actors": 2,
                          "progress": False, **changes})


# ---- without Ray


def test_unknown_model_and_version_are_one_sentence(batch_repo):
    repo, _, _ = batch_repo
    assert resolve_version(repo, "lin", None) == "1"
    with pytest.raises(UserError, match=r"model 'nope' is not in repository .* \(it holds lin\)"):
        resolve_version(repo, "nope", None)
    with pytest.raises(UserError, match=r"model 'lin' has no version 7 .*versions: 1"):
        resolve_version(repo, "lin", "7")


def test_no_input_files_fails_before_starting_ray(batch_repo, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no input files found"):
        run_batch(_config(batch_repo[0], [tmp_path / "empty"], tmp_path / "out"))


def test_resource_checks():
    config = BatchConfig("r", "m", ("d",), "o", gpus_per_actor=1)
    with pytest.raises(UserError, match=r"--gpus-per-actor 1 asks for GPU actors, but the Ray cluster has no GPUs"):
        check_resources(config, CPU_ONLY)
    with pytest.raises(UserError, match="more than any node has"):
        check_resources(BatchConfig("r", "m", ("d",), "o", gpus_per_actor=2), {**CPU_ONLY, "gpus": 2,
                                                                               "max_node_gpus": 1})
    with pytest.raises(UserError, match="--threads-per-actor 4 reserves more CPUs than any node has"):
        check_resources(BatchConfig("r", "m", ("d",), "o", threads_per_actor=4), CPU_ONLY)
    with pytest.raises(UserError, match="--min-actors 4 needs 4 actor"):
        check_resources(BatchConfig("r", "m", ("d",), "o", min_actors=4), CPU_ONLY)
    # by default an actor takes the smallest node's CPUs (1 here), so each node hosts actors; 1 thread: 3 actors
    assert check_resources(BatchConfig("r", "m", ("d",), "o"), CPU_ONLY) == (1, 3, 1)
    assert check_resources(BatchConfig("r", "m", ("d",), "o", max_actors=1), CPU_ONLY) == (1, 1, 1)
    assert check_resources(BatchConfig("r", "m", ("d",), "o", threads_per_actor=2), CPU_ONLY) == (1, 1, 2)
    one_node = {**CPU_ONLY, "nodes": 1, "cpus": 8, "max_node_cpus": 8, "node_cpus": [8], "free_cpus": 8}
    assert check_resources(BatchConfig("r", "m", ("d",), "o"), one_node) == (1, 1, 8)
    # CPUs held by other work (a job's entrypoint): sized from what is free, never waiting for the impossible
    assert check_resources(BatchConfig("r", "m", ("d",), "o"), {**one_node, "free_cpus": 7}) == (1, 1, 7)
    assert check_resources(BatchConfig("r", "m", ("d",), "o", threads_per_actor=2),
                           {**one_node, "free_cpus": 5}) == (1, 2, 2)
    with pytest.raises(UserError, match=r"room for 0 now \(1 of 8 CPUs free\)"):
        check_resources(BatchConfig("r", "m", ("d",), "o", threads_per_actor=2), {**one_node, "free_cpus": 1})
    head_without_cpus = {**CPU_ONLY, "node_cpus": [0, 2], "max_node_cpus": 2, "cpus": 2, "free_cpus": 2}
    assert check_resources(BatchConfig("r", "m", ("d",), "o"), head_without_cpus) == (1, 1, 2)
    gpu = {**one_node, "gpus": 2, "max_node_gpus": 2, "node_gpus": [2], "free_gpus": 2}
    assert check_resources(BatchConfig("r", "m", ("d",), "o", gpus_per_actor=1), gpu) == (1, 2, 1)


def test_a_busy_cluster_is_asked_again_before_the_run_gives_up(monkeypatch):
    """CPUs a run that just ended still holds (Ray frees a killed actor's once its process exits) are waited for."""
    from serve.batch import _pipeline

    answers = iter([{**CPU_ONLY, "free_cpus": 0}, {**CPU_ONLY, "free_cpus": 0}, CPU_ONLY])
    monkeypatch.setattr(_pipeline, "cluster_resources", lambda: next(answers))
    monkeypatch.setattr(_pipeline.time, "sleep", lambda s: None)
    assert sized_pool(BatchConfig("r", "m", ("d",), "o"))[1] == (1, 3, 1)
    monkeypatch.setattr(_pipeline, "cluster_resources", lambda: {**CPU_ONLY, "free_cpus": 0})
    with pytest.raises(ClusterBusy, match=r"room for 0 now \(0 of 3 CPUs free\)"):
        sized_pool(BatchConfig("r", "m", ("d",), "o"), wait_s=0.0)
    asked = []  # what no wait can change fails at once
    monkeypatch.setattr(_pipeline, "cluster_resources", lambda: asked.append(1) or CPU_ONLY)
    with pytest.raises(UserError, match="more CPUs than any node has"):
        sized_pool(BatchConfig("r", "m", ("d",), "o", threads_per_actor=4))
    assert asked == [1]


# ---- on a simulated two-node cluster


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    from optiserve.ray_cluster import free_port, use_token_auth_if_available

    use_token_auth_if_available()  # the head and every client (this process, the CLI subprocess) agree on auth

    def ports():  # other Rays on this machine hold the default ports
        return {"dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
                "metrics_export_port": free_port(), "runtime_env_agent_port": free_port()}

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "gcs_server_port": free_port(), **ports()})
    try:
        cluster.add_node(num_cpus=1, **ports())
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _data(folder: Path, formats, n=300):
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, suffix in enumerate(formats):
        ids, x = _rows(n, start=i * n)
        path = _write(folder / f"part{i}{suffix}", ids, x)
        expected[str(path.resolve())] = (ids, x)
    return expected


def _rows(n, start):
    rng = np.random.default_rng(start)
    return np.arange(start, start + n, dtype=np.int64), rng.random((n, 64), dtype=np.float32)


def _write(path, ids, x):
    import pyarrow.csv as pcsv

    if path.name.endswith(".npy"):
        np.save(path, x)
    elif path.name.endswith(".npz"):
        np.savez(path, id=ids, x=x)
    else:
        table = pa.table({"id": ids, **{f"f{i}": x[:, i] for i in range(x.shape[1])}})
        if path.name.endswith(".parquet"):
            pq.write_table(table, path, row_group_size=max(1, len(ids) // 3))
        else:
            pcsv.write_csv(table, path)
    return path


def _outputs(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "shards").glob("*.parquet"))],
                            promote_options="default")


def _check_exact(out: Path, expected: dict, w, b, rejected=()):
    """Every input row exactly once (scored or rejected), in its file's row order, with the right logits."""
    table = _outputs(out)
    pairs = list(zip(table.column("source").to_pylist(), table.column("row").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)), "duplicate output rows"
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {(r["source"], r["row"]) for r in rejects} == set(rejected)
    assert set(pairs) | set(rejected) == {(s, r) for s, (ids, _) in expected.items() for r in range(len(ids))}
    assert not set(pairs) & set(rejected)
    logits = np.array(table.column("logits").to_pylist())
    for i, (source, row) in enumerate(pairs):
        ids, x = expected[source]
        if "id" in table.column_names and table.column("id")[i].is_valid:
            assert table.column("id")[i].as_py() == ids[row]
        if i % 37 == 0:
            np.testing.assert_allclose(logits[i], x[row] @ w + b, rtol=1e-4, atol=1e-5)
    assert (table.column("prediction").to_numpy() == logits.argmax(1)).all()
    assert not list((out / "shards").glob("*.tmp"))
    return table


@pytest.mark.ray
@pytest.mark.slow
def test_every_input_format_once(cluster, batch_repo, tmp_path, monkeypatch):
    repo, w, b = batch_repo
    expected = _data(tmp_path / "data", [".parquet", ".csv", ".tsv", ".npz", ".npy"])
    tsv = next(p for p in expected if p.endswith(".tsv"))
    Path(tsv).write_text(Path(tsv).read_text().replace(",", "\t"))
    monkeypatch.setattr("serve.batch._plan.PART_ROWS", 150)  # the Parquet file (3 x 100 rows) as 2 shards
    lines = []
    summary = run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out", progress=True), log=lines.append)
    assert summary.complete and summary.shards == summary.shards_written == 6
    assert summary.rows == summary.output_rows == 1500 and summary.rejected == 0
    assert summary.cluster["nodes"] == 2
    assert BatchSummary.from_json((tmp_path / "out" / "summary.json").read_text()) == summary
    table = _check_exact(tmp_path / "out", expected, w, b)
    assert [line.split(" done:")[0] for line in lines if "done:" in line] == [
        f"batch: shard {i}/6" for i in range(1, 7)]  # progress, one line per shard
    npy = table.filter(pa.compute.ends_with(table.column("source"), ".npy"))
    assert npy.num_rows == 300 and npy.column("id").null_count == 300  # .npy files carry no key columns
    again = run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out"))  # all complete: nothing to do
    assert again.shards_skipped == 6 and again.shards_written == 0 and again.rows_this_run == 0
    next((tmp_path / "out" / "shards").glob("*-p0001.done.json")).unlink()  # the split file's second part, lost
    redo = run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out"))
    assert redo.shards_skipped == 5 and redo.shards_written == 1 and redo.rows_this_run == 100


@pytest.mark.ray
@pytest.mark.slow
def test_rejects_and_max_rejects(cluster, batch_repo, tmp_path):
    repo, w, b = batch_repo
    expected = _data(tmp_path / "data", [".parquet", ".csv"], n=200)
    parquet, csv = list(expected)
    ids, x = expected[parquet]
    x = x.copy()
    x[[5, 150], 3] = np.nan
    expected[parquet] = (ids, x)
    _write(Path(parquet), ids, x)
    ragged = pa.table({"id": [900, 901, 902], "input": [list(range(64)), list(range(63)), [0.5] * 64]})
    pq.write_table(ragged, tmp_path / "data" / "ragged.parquet")
    expected[str((tmp_path / "data" / "ragged.parquet").resolve())] = (np.array([900, 901, 902]),
                                                                        np.array([np.arange(64), np.zeros(64),
                                                                                  np.full(64, 0.5)], np.float32))
    with pytest.raises(UserError, match=r"3 rows were rejected, more than --max-rejects 2 .*NaN"):
        run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out", max_rejects=2))
    failed = BatchSummary.from_json((tmp_path / "out" / "summary.json").read_text())
    assert not failed.complete and "--max-rejects" in failed.failures[0]
    summary = run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out", max_rejects=10))
    assert summary.complete and summary.rejected == 3 and summary.rows == 403
    ragged_path = str((tmp_path / "data" / "ragged.parquet").resolve())
    _check_exact(tmp_path / "out", expected, w, b, rejected={(parquet, 5), (parquet, 150), (ragged_path, 1)})
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sum("NaN" in r for r in reasons) == 2 and sum("bad shape" in r for r in reasons) == 1
    zero = run_batch(_config(repo, [parquet], tmp_path / "zero", nan="zero"))
    assert zero.rejected == 0 and zero.output_rows == 200


@pytest.mark.ray
@pytest.mark.slow
def test_killed_midway_then_resumed_exactly_once(cluster, batch_repo, tmp_path):
    repo, w, b = batch_repo
    expected = _data(tmp_path / "data", [".parquet", ".csv", ".parquet", ".npz", ".csv", ".parquet"], n=250)
    cmd = [sys.executable, "-m", "serve.cli", "batch", "--repository", str(repo), "--model", "lin",
           "--input", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--key-columns", "id",
           "--batch-size", "50", "--max-actors", "1", "--address", cluster.address, "--no-progress"]
    killed = subprocess.run(cmd, env={**os.environ, KILL_AFTER_ROWS_ENV: "600"}, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    shards = tmp_path / "out" / "shards"
    # one actor scores the files in order: 2 x 250 rows committed, the third cut midway (at 600 rows)
    assert len(list(shards.glob("*.done.json"))) == 2
    assert list(shards.glob("*.tmp"))  # the partial shard left only temporary files
    resumed = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = BatchSummary.from_json(resumed.stdout)
    assert summary.shards_skipped == 2 and summary.shards_written == 4 and summary.rows_this_run == 1000
    assert summary.rows == summary.output_rows == 1500
    table = _check_exact(tmp_path / "out", expected, w, b)
    assert sorted(table.column("id").to_pylist()) == list(range(1500))


@pytest.mark.ray
@pytest.mark.slow
def test_an_actor_killed_midway_is_restarted_and_its_file_redone(cluster, batch_repo, tmp_path, monkeypatch):
    repo, w, b = batch_repo
    expected = _data(tmp_path / "data", [".parquet", ".csv", ".parquet"], n=250)
    monkeypatch.setenv(KILL_ACTOR_AFTER_ROWS_ENV, "400")  # the only actor dies inside the second file, once
    summary = run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out", max_actors=1, batch_size=50))
    assert (tmp_path / "out" / KILLED_ONCE).exists()
    assert summary.complete and summary.shards_written == 3 and summary.rows == summary.output_rows == 750
    _check_exact(tmp_path / "out", expected, w, b)


@pytest.mark.ray
@pytest.mark.slow
def test_gpu_actors_on_a_cpu_only_cluster_are_refused(cluster, batch_repo, tmp_path):
    repo, _, _ = batch_repo
    _data(tmp_path / "data", [".parquet"], n=10)
    with pytest.raises(UserError, match="asks for GPU actors, but the Ray cluster has no GPUs") as info:
        run_batch(_config(repo, [tmp_path / "data"], tmp_path / "out", gpus_per_actor=1))
    assert "\n" not in str(info.value)
    from serve.cli import main

    code = main(["batch", "--repository", str(repo), "--model", "lin", "--input", str(tmp_path / "data"),
                 "--output", str(tmp_path / "out2"), "--gpus-per-actor", "1"])
    assert code == 2
