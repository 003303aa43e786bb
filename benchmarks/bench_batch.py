"""Batch inference: `modelserve batch` against the loop a user writes and against Ray Data with its defaults, on the
example MLP (64 -> 1024 -> 1024 -> 10) over --rows rows (default 1,000,000) in 8 Parquet files. One run, side by side.

    .venv/bin/python benchmarks/bench_batch.py [--rows 1000000] [--rounds 3] [--out build/bench/batch.json]

Variants, each in its own process, in a rotated order every round (peak memory = the largest summed RSS of
that process and all its descendants, Ray's raylet and workers included, sampled every 0.1 s):
1. plain: one process, one onnxruntime session (default threads); per file read_table -> numpy -> run in
   8192-row chunks -> write a Parquet file of id, logits, prediction.
2. ray-data-defaults: ray.data.read_parquet -> map_batches(callable class holding a session; no compute,
   batch_size or threads given) -> write_parquet.
3. modelserve batch: serve.batch.run_batch with the CLI's defaults (--key-columns id): here one actor with
   both CPUs as onnxruntime threads, each file read, scored and written by it.
Rows/s count the timed section only (Ray already started for 2 and 3, as on a running cluster); end-to-end
seconds (process start to exit, Ray start-up included) are reported beside them. Ratios are taken against
plain in the same round: median and min..max over the rounds. For modelserve batch, "start" is the run's time
not spent by its actor on files (each shard's marker records that time): the pool's start (Ray Data, a worker
process, imports, the session) and hand-overs; "after it" the rows/s of the files themselves.
4. Scaling: modelserve batch on a ray.cluster_utils.Cluster with one node of 1 CPU, then two nodes of 1 CPU
each (simulated on this machine: the second node adds a real core only where the machine has one free).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILES = 8
VARIANTS = ("plain", "ray-data-defaults", "modelserve-batch")


# ---- set-up (parent process)


def build_model(folder: Path) -> Path:
    """The example MLP (trained on digits) exported to ONNX with a dynamic batch axis."""
    import torch

    from optimize.examples import build_example

    build_example("mlp", folder)
    module = torch.jit.load(str(folder / "mlp" / "model.pt")).eval()
    path = folder / "mlp.onnx"
    torch.onnx.export(module, (torch.zeros(2, 64),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def build_data(folder: Path, rows: int) -> list[Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per, files = -(-rows // FILES), []
    for i in range(FILES):
        n = min(per, rows - i * per)
        x = (rng.random((n, 64), dtype=np.float32) * 16).round()  # digits-like pixel values 0..16
        table = pa.table({"id": np.arange(i * per, i * per + n), **{f"f{j}": x[:, j] for j in range(64)}})
        pq.write_table(table, folder / f"part{i}.parquet", row_group_size=32768)
        files.append(folder / f"part{i}.parquet")
    return files


# ---- variants (child processes): print one JSON line {rows, timed_s}


def _features(table):
    import numpy as np

    return np.stack([table.column(f"f{j}").to_numpy() for j in range(64)], axis=1).astype(np.float32)


def _local_ray() -> None:
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")


def run_plain(repo: Path, data: Path, out: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    session = ort.InferenceSession(str(repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    start, rows = time.perf_counter(), 0
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(data.glob("*.parquet")):
        table = pq.read_table(path)
        x = _features(table)
        logits = np.concatenate([session.run(None, {"input": x[i:i + 8192]})[0] for i in range(0, len(x), 8192)])
        pq.write_table(pa.table({"id": table.column("id"), "logits": pa.FixedSizeListArray.from_arrays(
            pa.array(logits.reshape(-1)), 10), "prediction": logits.argmax(1)}), out / path.name)
        rows += len(x)
    return {"rows": rows, "timed_s": time.perf_counter() - start}


class _DefaultPredictor:
    def __init__(self, model: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def __call__(self, batch):
        import numpy as np

        x = np.stack([batch[f"f{j}"] for j in range(64)], axis=1).astype(np.float32)
        logits = self.session.run(None, {"input": x})[0]
        return {"id": batch["id"], "logits": logits, "prediction": logits.argmax(1)}


def run_ray_defaults(repo: Path, data: Path, out: Path) -> dict:
    import ray
    import ray.data

    _local_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    ds = ray.data.read_parquet(str(data)).map_batches(
        _DefaultPredictor, fn_constructor_kwargs={"model": str(repo / "mlp" / "1" / "model.onnx")})
    ds.write_parquet(str(out))
    timed = time.perf_counter() - start
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))
    ray.shutdown()
    return {"rows": rows, "timed_s": timed}


def run_modelserve(repo: Path, data: Path, out: Path, address: str | None = None) -> dict:
    import ray

    from serve.batch import BatchConfig, run_batch

    if address:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    else:
        _local_ray()
    start = time.perf_counter()
    summary = run_batch(BatchConfig(str(repo), "mlp", (str(data),), str(out), key_columns=("id",), progress=False),
                        log=lambda line: None)
    timed = time.perf_counter() - start
    ray.shutdown()
    # each marker says how long its actor spent on the file; with one actor (the default here) the rest of the
    # run is the pool's start and hand-overs
    import json

    actors = summary.cluster["pool"]["max_actors"]
    scoring = sum(json.loads(p.read_text())["seconds"] for p in (out / "shards").glob("*.done.json")) / actors
    return {"rows": summary.output_rows, "timed_s": timed, "actors_cluster": summary.cluster,
            "startup_s": timed - scoring, "after_start_rows_per_s": summary.output_rows / scoring}


def run_scaling(repo: Path, data: Path, out: Path, nodes: int) -> dict:
    from ray.cluster_utils import Cluster

    from optiserve.ray_cluster import free_port

    def ports():
        return {"dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
                "metrics_export_port": free_port(), "runtime_env_agent_port": free_port()}

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "gcs_server_port": free_port(), **ports()})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, **ports())
        cluster.wait_for_nodes()
        return run_modelserve(repo, data, out, address=cluster.address)
    finally:
        cluster.shutdown()


# ---- measuring (parent)


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(variant: str, repo: Path, data: Path, work: Path, extra: list[str] = ()) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=work))
    argv = [sys.executable, __file__, "--child", variant, "--repo", str(repo), "--data", str(data),
            "--child-out", str(out), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    subprocess.run(["rm", "-rf", str(out)], check=False)
    return {**result, "wall_s": wall, "peak_rss_mb": peak / 2**20, "rows_per_s": result["rows"] / result["timed_s"]}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-scaling", action="store_true", help="skip the simulated 2-node scaling phase")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (plain is always run: ratios need it)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=[*VARIANTS, "scaling-1", "scaling-2"], help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runner = {"plain": run_plain, "ray-data-defaults": run_ray_defaults, "modelserve-batch": run_modelserve,
                  "scaling-1": lambda r, d, o: run_scaling(r, d, o, 1),
                  "scaling-2": lambda r, d, o: run_scaling(r, d, o, 2)}[args.child]
        print(json.dumps(runner(args.repo, args.data, args.child_out)))
        return 0

    from optiserve.repository import publish

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        print(f"building the example MLP and {args.rows:,} rows in {FILES} Parquet files ...", flush=True)
        publish(build_model(work / "model"), work / "repo", "mlp")
        data = work / "data"
        build_data(data, args.rows)
        variants = tuple(v for v in VARIANTS if v == "plain" or v in args.variants.split(","))
        rounds = []
        for r in range(args.rounds):
            k = r % len(variants)
            order = variants[k:] + variants[:k]
            results = {v: measure(v, work / "repo", data, work) for v in order}
            rounds.append(results)
            print(f"round {r + 1}: " + ", ".join(f"{v} {x['rows_per_s']:,.0f} rows/s ({x['wall_s']:.1f} s end to end, "
                                                  f"peak {x['peak_rss_mb']:,.0f} MB)" for v, x in results.items()),
                  flush=True)
        summary = {}
        for v in variants:
            summary[v] = {
                "rows_per_s": _spread([rd[v]["rows_per_s"] for rd in rounds]),
                "ratio_vs_plain": _spread([rd[v]["rows_per_s"] / rd["plain"]["rows_per_s"] for rd in rounds]),
                "wall_s": _spread([rd[v]["wall_s"] for rd in rounds]),
                "peak_rss_mb": _spread([rd[v]["peak_rss_mb"] for rd in rounds]),
            }
        scaling = None
        if not args.no_scaling:
            one = measure("scaling-1", work / "repo", data, work, [])
            two = measure("scaling-2", work / "repo", data, work, [])
            scaling = {"one_node_rows_per_s": one["rows_per_s"], "two_nodes_rows_per_s": two["rows_per_s"],
                       "ratio": two["rows_per_s"] / one["rows_per_s"]}
    print(f"\nbatch inference, example MLP, {args.rows:,} rows, {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'variant':<20}{'rows/s (median)':>18}{'x plain (median, min..max)':>30}{'end to end s':>14}"
          f"{'peak RSS MB':>13}")
    ours = [rd for rd in rounds if "modelserve-batch" in rd]
    starts = [rd["modelserve-batch"]["startup_s"] for rd in ours]
    after = [rd["modelserve-batch"]["after_start_rows_per_s"] / rd["plain"]["rows_per_s"] for rd in ours]
    for v, s in summary.items():
        r = s["ratio_vs_plain"]
        print(f"{v:<20}{s['rows_per_s']['median']:>18,.0f}{r['median']:>14.2f} ({r['min']:.2f}..{r['max']:.2f})"
              f"{s['wall_s']['median']:>22.1f}{s['peak_rss_mb']['median']:>13,.0f}")
    print(f"modelserve batch: actor pool start {statistics.median(starts):.1f} s (median; "
          f"{min(starts):.1f}..{max(starts):.1f}); after it {statistics.median(after):.2f}x plain "
          f"({min(after):.2f}..{max(after):.2f})" if after else "")
    if scaling:
        print(f"scaling on a simulated cluster (modelserve batch): 1 node x 1 CPU {scaling['one_node_rows_per_s']:,.0f}"
              f" rows/s, 2 nodes x 1 CPU {scaling['two_nodes_rows_per_s']:,.0f} rows/s: {scaling['ratio']:.2f}x")
    result = {"rows": args.rows, "rounds": args.rounds, "cpus": os.cpu_count(), "summary": summary,
              "modelserve_startup_s": _spread(starts) if starts else None,
              "modelserve_after_start_vs_plain": _spread(after) if after else None,
              "per_round": rounds, "scaling": scaling}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
