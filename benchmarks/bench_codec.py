"""What one request costs a model replica in Python, protocol by protocol, with the model call stubbed out.

Each protocol's replica-side path, in process, on bench_serve's digits MLP and request bodies:
- json: `parse_request` -> `ModelRuntime.infer` -> `render_response` (what an HTTP JSON request costs past uvicorn);
- binary: the same with Triton's binary tensor extension;
- grpc: `_grpc.infer_many` over a group of GROUP ModelInfer messages (what a coalesced gRPC call costs the
  replica past its one HTTP POST), per message.
The batcher's model call returns zeros at once, so the figure is the translation, checks, batching and
answers, not onnxruntime. HTTP itself (uvicorn, HAProxy) and the gRPC router are not in it.

Timing on a shared machine drifts; the best of `--repeat` runs is reported. For a figure that does not drift at
all, count instructions: run under callgrind at two round counts and divide the difference, e.g.
  for n in 50 150; do valgrind --tool=callgrind --callgrind-out-file=cg.$n python benchmarks/bench_codec.py \\
      --only grpc --rounds $n --repeat 1; done   # (Ir(150) - Ir(50)) / (100 x GROUP) per request

Usage: python benchmarks/bench_codec.py [--only json,binary,grpc] [--rounds 300] [--repeat 7] [--group 8]
       [--out build/bench/serve] [--features 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
from bench_serve import binary_body, build_model, cpu_model, grpc_body, request_body

from serve import _codec, _grpc
from serve._model import ModelRuntime
from serve.config import ModelConfig

PROTOCOLS = ("json", "binary", "grpc")


def stubbed_runtime(repo: Path) -> ModelRuntime:
    """The MLP's runtime with every batch answered by zeros (no batch wait: nothing else arrives)."""
    runtime = ModelRuntime(repo, "mlp", ModelConfig(batch_wait_timeout_ms=0))
    runtime.load_initial()
    for loaded in runtime.versions.values():
        names = [o.name for o in loaded.manifest.outputs]
        loaded.batcher._run = lambda feeds, names=names: {
            n: np.zeros((next(iter(feeds.values())).shape[0], 10), np.float32) for n in names}
    return runtime


def paths(runtime: ModelRuntime, group: int, features: int) -> dict:
    """protocol -> an async callable answering `group` requests."""
    body, (binary, header_length) = request_body(features), binary_body(features)
    message = grpc_body(features)[5:]  # past the gRPC length prefix

    async def http(raw: bytes, header: str | None) -> None:
        async def one() -> None:
            _codec.render_response(await runtime.infer(_codec.parse_request(raw, header)))

        await asyncio.gather(*(one() for _ in range(group)))

    return {
        "json": lambda: http(body, None),
        "binary": lambda: http(binary, str(header_length)),
        "grpc": lambda: _grpc.infer_many(runtime, [message] * group),
    }


async def measure(fn, rounds: int, repeat: int, group: int) -> float:
    """Best of `repeat` runs of `rounds` groups: process CPU seconds per request."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            await fn()
        best = min(best, (time.process_time() - start) / (rounds * group))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/bench_codec.py --only json,grpc --repeat 9")
    parser.add_argument("--only", default="json,binary,grpc", help="protocols, comma-separated")
    parser.add_argument("--rounds", type=int, default=300, help="groups per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per protocol (the best is reported)")
    parser.add_argument("--group", type=int, default=8, help="requests per group (the router's coalesced call)")
    parser.add_argument("--features", type=int, default=64, help="the model's input width (bench_serve's)")
    parser.add_argument("--out", type=Path, default=Path("build/bench/serve"), help="where the model is built")
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(PROTOCOLS)
    if unknown:
        parser.error(f"unknown protocol(s) {sorted(unknown)}; choose from {', '.join(PROTOCOLS)}")
    candidates = paths(stubbed_runtime(build_model(args.out, args.features)), args.group, args.features)

    async def run() -> None:
        for name in args.only.split(","):
            await candidates[name]()  # warm-up
            us = 1e6 * await measure(candidates[name], args.rounds, args.repeat, args.group)
            print(f"{name:7s} {us:7.1f} us CPU per request (best of {args.repeat}, groups of {args.group})", flush=True)

    print(cpu_model())
    asyncio.run(run())


if __name__ == "__main__":
    main()
