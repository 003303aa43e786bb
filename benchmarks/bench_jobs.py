"""Jobs on Ray: what a run adds over running the same command directly, and a sweep of 8 runs on a simulated
2-node cluster against the same 8 commands run one after another. Everything side by side in one process run.

    .venv/bin/python benchmarks/bench_jobs.py [--repeats 3] [--out build/bench/jobs.json]

1. Overhead, on the project's local Ray head (started first, not timed): a trivial command and a real
   `optimize quantize --method dynamic` of the example MLP, each run directly (subprocess) and as a job run
   (submit -> succeeded observed, polling every 0.1 s), alternating, median of --repeats.
2. Sweep: 8 quantize runs (dynamic / fp16 alternating, 1 CPU each) submitted at once to a
   ray.cluster_utils.Cluster of two nodes with 2 CPUs each, vs the same 8 commands run serially and directly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _direct(argv: list[str]) -> float:
    start = time.perf_counter()
    code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    assert code in (0, 1), f"{argv} exited {code}"  # 1: quantize's verdict (no variant in budget) - it ran through
    return time.perf_counter() - start


def _as_job(service, job: str, args: list[str]) -> float:
    start = time.perf_counter()
    run = service.run(job, args=args)
    run = service.wait(run.id, poll_s=0.1)
    assert run.exit_code in (0, 1), run.message
    return time.perf_counter() - start


def overhead(service, model: Path, work: Path, repeats: int) -> list[dict]:
    from optimize.jobs import Recipe

    trivial = work / "trivial.py"
    trivial.write_text("import sys\nprint('ok', sys.argv[1:])\n")
    service.create_job("bench-trivial", model, Recipe(str(trivial), kind="python"))
    service.create_job("bench-quant", model, Recipe("quantize", {"input_shape": "1,64", "repeats": 5}))
    py = sys.executable
    cases = {
        "trivial python script": ("bench-trivial", [], [py, str(trivial), str(model), "--out", str(work / "t")]),
        "optimize quantize --method dynamic": (
            "bench-quant", ["--method", "dynamic"],
            [py, "-m", "optimize", "quantize", str(model), "--input-shape", "1,64", "--repeats", "5",
             "--method", "dynamic", "--out", str(work / "q")]),
    }
    _as_job(service, "bench-trivial", [])  # warm-up, not timed: the head's first job starts its job agent's workers
    rows = []
    for name, (job, args, argv) in cases.items():
        direct, job_s = [], []
        for _ in range(repeats):  # alternate so drift hits both sides alike
            direct.append(_direct(argv))
            job_s.append(_as_job(service, job, args))
        d, j = statistics.median(direct), statistics.median(job_s)
        rows.append({"command": name, "direct_s": round(d, 2), "job_run_s": round(j, 2),
                     "overhead_s": round(j - d, 2), "ratio": round(j / d, 2)})
    return rows


def sweep(model: Path, work: Path) -> dict:
    from ray.cluster_utils import Cluster

    from optimize.jobs import JobService, Recipe
    from optiserve.ray_cluster import free_port

    def ports() -> dict:
        return {"dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
                "metrics_export_port": free_port(), "runtime_env_agent_port": free_port()}

    methods = ["dynamic", "fp16"] * 4  # 8 runs
    py = sys.executable
    serial_start = time.perf_counter()
    for i, method in enumerate(methods):
        _direct([py, "-m", "optimize", "quantize", str(model), "--input-shape", "1,64", "--repeats", "5",
                 "--method", method, "--out", str(work / f"serial-{i}")])
    serial_s = time.perf_counter() - serial_start

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port(),
        "gcs_server_port": free_port(), **ports()})
    try:
        cluster.add_node(num_cpus=2, **ports())
        cluster.wait_for_nodes()
        service = JobService(address="http://" + cluster.webui_url, root=work / "sweep-state", watcher=False)
        service.create_job("sweep", model, Recipe("quantize", {"input_shape": "1,64", "repeats": 5}),
                           env={"OMP_NUM_THREADS": "1"})
        service.run("sweep", args=["--method", "dynamic"], wait=True)  # warm both the agent and a worker: not timed
        start = time.perf_counter()
        runs = [service.run("sweep", args=["--method", m]) for m in methods]
        done = [service.wait(r.id, poll_s=0.2) for r in runs]
        sweep_s = time.perf_counter() - start
        assert all(r.exit_code in (0, 1) for r in done), [r.message for r in done]
        nodes = {service._ray(r.dashboard_url).client.get_job_info(r.submission_id).driver_node_id for r in done}
        service.close()
    finally:
        cluster.shutdown()
    return {"runs": len(methods), "serial_direct_s": round(serial_s, 1), "sweep_s": round(sweep_s, 1),
            "speedup": round(serial_s / sweep_s, 2), "nodes_used": len(nodes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        work = Path(tmp)
        os.environ["OPTISERVE_STATE_DIR"] = str(work / "state")
        os.environ["OPTISERVE_JOBS_WATCHER"] = "0"
        from optimize.examples import build_example
        from optimize.jobs import JobService
        from optiserve.ray_cluster import ensure_cluster, stop_cluster

        build_example("mlp", work / "models")
        model = work / "models" / "mlp" / "model.pt"
        cluster = ensure_cluster(timeout_s=180)
        try:
            service = JobService()
            rows = overhead(service, model, work, args.repeats)
            service.close()
        finally:
            stop_cluster(cluster)
        result = {"overhead": rows, "sweep": sweep(model, work)}
    print("| command | direct (s) | as a job run (s) | overhead (s) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['command']} | {r['direct_s']} | {r['job_run_s']} | {r['overhead_s']} | {r['ratio']} |")
    s = result["sweep"]
    print(f"\nsweep of {s['runs']} quantize runs on 2 simulated nodes (2 CPUs each, 1 CPU per run): "
          f"{s['sweep_s']} s vs {s['serial_direct_s']} s serial direct -> {s['speedup']}x, "
          f"{s['nodes_used']} nodes used")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
