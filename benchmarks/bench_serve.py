"""Serving benchmark: in-process onnxruntime vs a plain Ray Serve deployment vs optiserve, equal concurrency.

One run, one Ray instance, one Serve proxy, the same model (the digits MLP: 64 -> 1024 -> 1024 -> 10,
exported to ONNX) and the same load: CONCURRENCY clients on loopback, each sending one-row KServe v2
JSON requests back to back, a fixed number of requests, after a warm-up. Candidates are measured in
interleaved rounds (plain, optiserve, plain, optiserve, ...) so drift on this shared machine hits both.

- in-process: CONCURRENCY threads calling one onnxruntime session directly (no HTTP): the limit.
- plain: the Ray Serve deployment a user writes first: `async def __call__(request)` parses the JSON and
  calls session.run once per request; Ray Serve defaults (1 replica, max_ongoing_requests 5).
- plain, 1 onnxruntime thread: the same with intra_op_num_threads=1 (isolates batching from thread settings).
- optiserve: `serve.start_app` on the same model, 1 replica with the same CPU, dynamic batching.

Usage: python benchmarks/bench_serve.py [--requests 1000] [--concurrency 16] [--rounds 3] [--out build/bench/serve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(out: Path) -> Path:
    """The digits MLP architecture exported to ONNX (weights seeded: speed does not depend on training)."""
    import torch

    from optimize.examples import DigitsMLP
    from optiserve.repository import publish

    torch.manual_seed(0)
    model = DigitsMLP().eval()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mlp.onnx"
    torch.onnx.export(model, (torch.zeros(2, 64),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    publish(path, out / "repo", "mlp")
    return out / "repo"


def summary(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = np.array(latencies_s) * 1000
    return {"requests": len(ms), "throughput_rps": len(ms) / wall_s, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def bench_in_process(model_path: Path, requests: int, concurrency: int) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t = time.perf_counter()
            session.run(None, {"input": x})
            with lock:
                latencies.append(time.perf_counter() - t)

    for _ in range(50):
        session.run(None, {"input": x})
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - start)


async def _load(url: str, body: dict, requests: int, concurrency: int, warmup: int) -> dict[str, float]:
    import httpx

    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(warmup):
            (await client.post(url, content=payload, headers=headers)).raise_for_status()
        latencies: list[float] = []
        errors = 0
        remaining = requests

        async def worker():
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                r = await client.post(url, content=payload, headers=headers)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result = summary(latencies, time.perf_counter() - start)
        result["errors"] = errors
        return result


def deploy_plain(model_path: Path, name: str = "plain", threads: int | None = None) -> None:
    from ray import serve as rs
    from starlette.requests import Request

    @rs.deployment
    class Plain:
        def __init__(self, path: str, threads: int | None) -> None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            tensor = body["inputs"][0]
            x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
            out = self.session.run(None, {"input": x})[0]
            return {"model_name": "mlp", "outputs": [{"name": "logits", "shape": list(out.shape), "datatype": "FP32",
                                                      "data": out.ravel().tolist()}]}

    rs.run(Plain.options(ray_actor_options={"num_cpus": 1}).bind(str(model_path), threads), name=name,
           route_prefix=f"/{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench/serve"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = parser.parse_args()

    import ray

    import serve
    from optiserve.repository import MODEL_FILE, version_dir

    repo = build_model(args.out)
    model_path = version_dir(repo, "mlp", "1") / MODEL_FILE
    config = args.out / "serve.yaml"
    config.write_text(f"defaults: {{max_batch_size: {args.max_batch_size}, batch_wait_timeout_ms: {args.batch_wait_ms},"
                      " cpus: 1, max_queue: 1024}\n")
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}

    plain1 = "plain Ray Serve, 1 onnxruntime thread"
    results: dict[str, list[dict]] = {"in-process onnxruntime": [], "plain Ray Serve": [], plain1: [], "optiserve": []}
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        port = free_port()
        info = serve.start_app(repo, port=port, config_path=config)
        deploy_plain(model_path)
        deploy_plain(model_path, "plain1", threads=1)
        base = f"http://127.0.0.1:{info.port}"
        urls = {"plain Ray Serve": f"{base}/plain", plain1: f"{base}/plain1",
                "optiserve": f"{base}/v2/models/mlp/infer"}
        for round_ in range(args.rounds):
            results["in-process onnxruntime"].append(bench_in_process(model_path, args.requests, args.concurrency))
            for name, url in urls.items():
                r = asyncio.run(_load(url, body, args.requests, args.concurrency, warmup=50))
                results[name].append(r)
                print(f"round {round_ + 1} {name}: {r['throughput_rps']:.0f} req/s  p50 {r['p50_ms']:.1f} ms  "
                      f"p99 {r['p99_ms']:.1f} ms  errors {r['errors']}", flush=True)
        stats = serve.status()["mlp"]["stats"]
    finally:
        serve.stop_app()
        ray.shutdown()

    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("throughput_rps", "p50_ms", "p99_ms")}
           for name, runs in results.items()}
    plain, ours = med["plain Ray Serve"], med["optiserve"]
    print(f"\n{args.concurrency} concurrent clients, {args.requests} one-row requests per candidate and round, "
          f"{args.rounds} interleaved rounds (medians); optiserve mean batch {stats['batch_size_mean']:.1f} rows\n")
    print("| candidate | throughput req/s | p50 ms | p99 ms | throughput vs plain |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['throughput_rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
              f"{m['throughput_rps'] / plain['throughput_rps']:.2f}x |")
    print(f"\noptiserve / plain: {ours['throughput_rps'] / plain['throughput_rps']:.2f}x throughput, "
          f"p99 {ours['p99_ms']:.1f} ms vs {plain['p99_ms']:.1f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"rounds": results, "median": med, "args": vars(args)},
                                                      indent=2, default=str))


if __name__ == "__main__":
    main()
