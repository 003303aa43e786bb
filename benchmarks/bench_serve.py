"""Serving benchmark: optiserve (HAProxy direct ingress) vs its previous path vs its peers, with wrk as the load.

One model (the digits MLP: 64 -> 1024 -> 1024 -> 10, exported to ONNX; `--features N` widens its input to N, so
that the request's encoding weighs as it does for an image or an embedding), one request (a batch-1 KServe v2
JSON body, the same bytes for every server), the same load: `wrk` (C, not the bottleneck) with a Lua
script posting the body over CONNECTIONS keep-alive connections for DURATION seconds. Candidates are
measured in interleaved rounds (a, b, c, ..., a, b, c, ...) so drift on a shared machine hits all of them;
the table gives the median and the range over rounds.

Each server runs in its own process (its own Ray cluster where it uses Ray: Ray Serve reads the front end
from the environment its processes start with, so the two optiserve front ends cannot share one):
- optiserve: `serve.start_app`, 1 replica, 1 CPU, dynamic batching, ingress haproxy (the default);
- optiserve, Python proxy: the same with `ingress: proxy` (the path before HAProxy direct ingress);
- plain Ray Serve: the deployment a user writes first (`async def __call__(request)`: parse JSON, session.run),
  Ray Serve defaults, on the proxy cluster;
- uvicorn + FastAPI: one process, the same onnxruntime session per request, no batching;
- Triton: NVIDIA's server from the `nvidia-pytriton` wheel (model in a Python callable running onnxruntime,
  dynamic batching 32 / 2 ms), when `--triton-python` names a Python that has it (never a project dependency:
  `/usr/bin/python3.11 -m venv build/triton-sys && build/triton-sys/bin/pip install nvidia-pytriton onnxruntime`;
  the venv must come from the Python whose libpython its backend stub links, here Debian's 3.11, not pyenv's);
- in-process onnxruntime: CONNECTIONS threads calling one session (no HTTP): the limit.

Each server is driven with KServe v2 JSON; optiserve and Triton also with Triton's binary tensor extension and
over gRPC (KServe v2 ModelInfer, raw tensor contents). Load: `wrk` for HTTP and `h2load` (Debian's
nghttp2-client) for gRPC, both written in C, one request in flight per connection, at 1, 16 and 64 connections.

Usage: python benchmarks/bench_serve.py [--duration 10] [--connections 1,16,64] [--rounds 3]
       [--out build/bench/serve] [--triton-python build/triton-sys/bin/python] [--only optiserve,triton,...]
       [--protocols json,binary,grpc] [--features 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "optiserve": "optiserve (HAProxy direct ingress)",
    "proxy": "optiserve, Python proxy (previous path)",
    "plain": "plain Ray Serve deployment",
    "uvicorn": "uvicorn + FastAPI, 1 process",
    "triton": "NVIDIA Triton (pytriton)",
    "inproc": "in-process onnxruntime (limit)",
}
# Which protocols each server is measured with: KServe v2 JSON, Triton's binary tensor extension, KServe v2 gRPC.
PROTOCOLS = {"optiserve": ("json", "binary", "grpc"), "triton": ("json", "binary", "grpc")}
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
{extra}local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def build_model(out: Path, features: int) -> Path:
    """The digits MLP architecture, `features` inputs wide, exported to ONNX (weights seeded: speed does not
    depend on training). The repository is kept under OUT per width."""
    import torch

    from optimize.examples import DigitsMLP
    from optiserve.repository import publish

    repo = out / ("repo" if features == 64 else f"repo-{features}")
    if (repo / "mlp" / "1" / "model.onnx").exists():
        return repo
    torch.manual_seed(0)
    model = DigitsMLP(features=features).eval()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"mlp-{features}.onnx"
    torch.onnx.export(model, (torch.zeros(2, features),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    publish(path, repo, "mlp")
    return repo


def _input(features: int) -> np.ndarray:
    return np.random.default_rng(0).random((1, features), dtype=np.float32)


def request_body(features: int) -> bytes:
    x = _input(features)
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": [round(float(v), 6) for v in x.ravel()]}]}).encode()


def binary_body(features: int) -> tuple[bytes, int]:
    """A request in Triton's binary tensor extension (JSON header, then the raw tensor; binary output asked for),
    and the header's length (the `Inference-Header-Content-Length` header)."""
    raw = _input(features).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return header + raw, len(header)


def grpc_body(features: int) -> bytes:
    """One KServe v2 ModelInfer call as gRPC puts it on the wire (a length-prefixed protobuf), raw tensor contents."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32")
    tensor.shape.extend([1, features])
    request.raw_input_contents.append(_input(features).tobytes())
    request.outputs.add(name="logits")
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def check_grpc(port: int, features: int, timeout_s: float = 240) -> None:
    """One real ModelInfer through Triton's gRPC client: h2load sees HTTP status only, not gRPC's status."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = grpcclient.InferInput("input", [1, features], "FP32")
    tensor.set_data_from_numpy(_input(features))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = client.infer("mlp", [tensor]).as_numpy("logits")
            assert out.shape == (1, 10), out.shape
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# ---- servers (each runs in its own process: `bench_serve.py --serve KIND ...`) ------------------------------

def _wait_forever() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.is_set() and sys.stdin.readline():  # the parent closes stdin (or signals) to stop us
        pass


def serve_ray(kind: str, repo: Path, port: int, grpc_port: int | None, out: Path) -> None:
    import ray

    import serve
    from serve import _ingress

    ingress = "haproxy" if kind == "optiserve" else "proxy"
    os.environ.update(_ingress.cluster_env(ingress, f"bench:{os.getpid()}", free_port))  # the local head inherits it
    config = out / f"serve-{ingress}.yaml"
    config.write_text(f"ingress: {ingress}\ndefaults: {{max_batch_size: 32, batch_wait_timeout_ms: 2, cpus: 1, "
                      "max_queue: 1024}\n")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        info = serve.start_app(repo, port=port, config_path=config, grpc_port=grpc_port)
        assert info.ingress == ingress, info
        if kind == "proxy":
            deploy_plain(repo / "mlp" / "1" / "model.onnx")
        _wait_forever()
    finally:
        serve.stop_app()
        ray.shutdown()


def deploy_plain(model_path: Path) -> None:
    from ray import serve as rs
    from starlette.requests import Request

    @rs.deployment
    class Plain:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            tensor = body["inputs"][0]
            x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
            out = self.session.run(None, {"input": x})[0]
            return {"model_name": "mlp", "outputs": [{"name": "logits", "shape": list(out.shape), "datatype": "FP32",
                                                      "data": out.ravel().tolist()}]}

    rs.run(Plain.options(ray_actor_options={"num_cpus": 1}).bind(str(model_path)), name="plain", route_prefix="/plain")


def serve_uvicorn(model_path: Path, port: int) -> None:
    import onnxruntime as ort
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    app = FastAPI()

    async def infer(request):  # a plain Starlette endpoint: the raw request, no FastAPI parameter parsing
        tensor = json.loads(await request.body())["inputs"][0]
        x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        out = session.run(None, {"input": x})[0]
        return JSONResponse({"model_name": "mlp", "outputs": [
            {"name": "logits", "shape": list(out.shape), "datatype": "FP32", "data": out.ravel().tolist()}]})

    app.router.add_route("/v2/models/mlp/infer", infer, methods=["POST"])

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def stop_on_eof() -> None:
        sys.stdin.read()  # the parent closes stdin to stop us
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    server.run()


TRITON_SERVER = """
import sys, numpy as np, onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
path, http, grpc, metrics, features = sys.argv[1], *map(int, sys.argv[2:6])
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
@batch
def infer(input):
    return {"logits": session.run(None, {"input": input})[0]}
config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                      metrics_port=metrics)
with Triton(config=config) as triton:
    triton.bind(model_name="mlp", infer_func=infer, inputs=[Tensor(name="input", dtype=np.float32, shape=(features,))],
                outputs=[Tensor(name="logits", dtype=np.float32, shape=(10,))],
                config=ModelConfig(max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)))
    triton.run()
    print("READY", flush=True)
    sys.stdin.readline()
"""


# ---- load -----------------------------------------------------------------------------------------------------

def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    """req/s, p50/p99 (ms) and failed requests (non-2xx + socket errors) from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    pct = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+(\S+)", output, re.M)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"throughput_rps": rps, "p50_ms": pct.get("50", float("nan")), "p99_ms": pct.get("99", float("nan")),
            "errors": errors}


def run_wrk(url: str, lua: Path, connections: int, duration_s: float, threads: int = 2) -> dict[str, float]:
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
           "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    return parse_wrk(out)


def run_h2load(url: str, body: Path, connections: int, duration_s: float, log: Path,
               threads: int = 2) -> dict[str, float]:
    """gRPC load from h2load (nghttp2's C HTTP/2 load generator): one stream per connection at a time, like wrk.

    p50/p99 come from its per-request log; a stream that did not end in HTTP 200 counts as failed."""
    log.unlink(missing_ok=True)  # h2load appends to its log file
    cmd = ["h2load", f"-t{min(threads, connections)}", f"-c{connections}", "-m1", f"-D{duration_s:g}",
           f"--log-file={log}", "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    rows = np.loadtxt(log, dtype=np.int64, ndmin=2, usecols=(1, 2))
    ok = rows[rows[:, 0] == 200, 1] / 1000.0
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    return {"throughput_rps": rps * len(ok) / max(len(rows), 1), "p50_ms": float(np.percentile(ok, 50)),
            "p99_ms": float(np.percentile(ok, 99)), "errors": int(len(rows) - len(ok))}


def bench_in_process(model_path: Path, features: int, connections: int, duration_s: float) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = _input(features)
    latencies: list[list[float]] = [[] for _ in range(connections)]
    deadline = time.perf_counter() + duration_s

    def worker(out: list[float]) -> None:
        while (t := time.perf_counter()) < deadline:
            session.run(None, {"input": x})
            out.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(lat,)) for lat in latencies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.concatenate([np.array(lat) for lat in latencies]) * 1000
    return {"throughput_rps": len(ms) / (time.perf_counter() - start), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": 0}


def _start(cmd: list[str], url: str, body: bytes, timeout_s: float = 240) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            if urllib.request.urlopen(req, timeout=5).status == 200:
                return proc
        except OSError:
            time.sleep(1)
    _stop(proc)
    raise RuntimeError(f"{cmd[:4]} did not answer {url} in {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


SERVED_BY = {"plain": "proxy"}  # the plain Ray Serve deployment runs on the proxy cluster's process
QUIET_NOTE = "idle servers at niceness 19 while another is measured"
NOT_QUIET_NOTE = "idle servers NOT reniced (not root): their background work shares the CPU"


def _session_threads(sid: int) -> list[int]:
    """Every thread of every process in session `sid` (Linux keeps a niceness per thread)."""
    tids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getsid(int(proc.name)) == sid:
                tids += [int(t.name) for t in (proc / "task").iterdir()]
        except OSError:  # gone meanwhile
            continue
    return tids


@contextlib.contextmanager
def quiet(procs: list[subprocess.Popen]):
    """The servers not under measurement at niceness 19 while one is measured, each thread's own niceness restored
    after. Every server runs in its own session (a Ray cluster's raylet, workers and HAProxy with it). An idle
    optiserve cluster takes ~25 % of a core (Ray's controller loop, metrics pushes, health checks), and at the same
    niceness as the measured server that is taken from it. Needs root, to restore a lower niceness; without it the
    servers are left as they are (and the report says so)."""
    saved: dict[int, int] = {}
    if os.geteuid() == 0:
        for proc in procs:
            for tid in _session_threads(proc.pid):
                try:
                    saved[tid] = os.getpriority(os.PRIO_PROCESS, tid)
                    os.setpriority(os.PRIO_PROCESS, tid, 19)
                except OSError:
                    continue
    try:
        yield
    finally:
        for tid, nice in saved.items():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, nice)


class Load:
    """The request files and how to drive one (server, protocol) candidate at a given concurrency."""

    def __init__(self, out: Path, features: int) -> None:
        self.out = out
        (out / "body.json").write_bytes(request_body(features))
        binary, header_len = binary_body(features)
        (out / "body.bin").write_bytes(binary)
        (out / "body.grpc").write_bytes(grpc_body(features))
        self.lua = {"json": out / "post.lua", "binary": out / "post-binary.lua"}
        self.lua["json"].write_text(WRK_LUA.format(content_type="application/json", extra="",
                                                   body=out / "body.json"))
        self.lua["binary"].write_text(WRK_LUA.format(
            content_type="application/octet-stream", body=out / "body.bin",
            extra=f'wrk.headers["Inference-Header-Content-Length"] = "{header_len}"\n'))

    def run(self, url: str, protocol: str, connections: int, duration_s: float) -> dict[str, float]:
        if protocol == "grpc":
            return run_h2load(url, self.out / "body.grpc", connections, duration_s, self.out / "h2load.log")
        return run_wrk(url, self.lua[protocol], connections, duration_s)


def start_servers(args, wanted: list[str], model_path: Path, body: bytes) -> tuple[dict, dict[str, dict[str, str]]]:
    """Start every wanted server in its own process (session); return the processes and each one's URL per
    protocol, both by kind."""
    me = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--features", str(args.features)]
    procs, urls = {}, {}
    for kind in ("optiserve", "proxy", "uvicorn", "triton"):
        if kind not in wanted and not (kind == "proxy" and "plain" in wanted):  # plain runs on the proxy cluster
            continue
        port, grpc = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        infer = "/plain" if kind == "proxy" and "proxy" not in wanted else "/v2/models/mlp/infer"
        if kind == "triton":
            cmd = [args.triton_python, "-c", TRITON_SERVER, str(model_path), str(port), str(grpc), str(free_port()),
                   str(args.features)]
        else:
            cmd = [*me, "--serve", kind, "--port", str(port)]
            cmd += ["--grpc-port", str(grpc)] if "grpc" in PROTOCOLS.get(kind, ()) else []
        try:
            procs[kind] = _start(cmd, base + infer, body)
        except RuntimeError as exc:  # a peer that does not run here is reported, not fatal
            print(f"{NAMES[kind]} skipped: {exc}"[:300], flush=True)
            continue
        urls[kind] = {p: base + "/v2/models/mlp/infer" for p in PROTOCOLS.get(kind, ("json",)) if p != "grpc"}
        if "grpc" in PROTOCOLS.get(kind, ()):
            try:
                check_grpc(grpc, args.features, timeout_s=60)
                urls[kind]["grpc"] = f"http://127.0.0.1:{grpc}{GRPC_PATH}"
            except Exception as exc:  # noqa: BLE001 - reported, the other protocols still run
                print(f"{NAMES[kind]} gRPC skipped: {exc}"[:300], flush=True)
        if kind == "proxy":
            urls["plain"] = {"json": base + "/plain"}
    return procs, urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench/serve"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per candidate and round")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--triton-python", help="a Python with nvidia-pytriton installed (its own venv)")
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(NAMES))
    parser.add_argument("--protocols", default="json,binary,grpc", help="subset of json,binary,grpc")
    parser.add_argument("--features", type=int, default=64, help="the model's input width (the request's size)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run one server in this process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.features < 1:
        parser.error("--features must be at least 1")
    repo = build_model(args.out, args.features)
    model_path = repo / "mlp" / "1" / "model.onnx"
    if args.serve in ("optiserve", "proxy"):
        return serve_ray(args.serve, repo, args.port, args.grpc_port, args.out)
    if args.serve == "uvicorn":
        return serve_uvicorn(model_path, args.port)

    load = Load(args.out, args.features)
    levels = [int(c) for c in args.connections.split(",")]
    protocols = args.protocols.split(",")
    if "grpc" in protocols and not shutil.which("h2load"):
        print("gRPC skipped: no h2load (Debian: apt-get install nghttp2-client)", flush=True)
        protocols.remove("grpc")
    wanted = args.only.split(",") if args.only else list(NAMES)
    if "triton" in wanted and not args.triton_python:
        print("Triton skipped: no --triton-python (install nvidia-pytriton in its own venv)", flush=True)
        wanted.remove("triton")
    procs, urls = start_servers(args, wanted, model_path, request_body(args.features))
    try:
        candidates = [(kind, p) for kind in NAMES if kind in wanted for p in PROTOCOLS.get(kind, ("json",))
                      if p in protocols and (kind == "inproc" or p in urls.get(kind, {}))]
        results: dict[str, dict[str, list[dict]]] = {f"{k}/{p}": {str(c): [] for c in levels} for k, p in candidates}
        loads = []
        for kind, protocol in candidates:
            if kind != "inproc":
                load.run(urls[kind][protocol], protocol, 16, 2)  # warm-up
        for round_ in range(args.rounds):
            for connections in levels:
                for kind, protocol in candidates:
                    loads.append(os.getloadavg()[0])
                    if kind == "inproc":
                        r = bench_in_process(model_path, args.features, connections, args.duration)
                    else:
                        with quiet([proc for k, proc in procs.items() if k != SERVED_BY.get(kind, kind)]):
                            r = load.run(urls[kind][protocol], protocol, connections, args.duration)
                    results[f"{kind}/{protocol}"][str(connections)].append(r)
                    print(f"round {round_ + 1} c{connections} {NAMES[kind]} {protocol}: {r['throughput_rps']:.0f} "
                          f"req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  "
                          f"(load {loads[-1]:.1f})", flush=True)
    finally:
        for proc in procs.values():
            _stop(proc)
    report(args, levels, results, loads)


def report(args, levels: list[int], results: dict[str, dict[str, list[dict]]], loads: list[float]) -> None:
    def span(runs, key, fmt):
        values = [r[key] for r in runs]
        return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    def rps(name: str, c: int) -> float | None:
        runs = results.get(name, {}).get(str(c))
        return statistics.median(r["throughput_rps"] for r in runs) if runs else None

    print(f"\n{cpu_model()}; load average during the run {min(loads):.1f}-{max(loads):.1f}; wrk (HTTP) and h2load "
          f"(gRPC), batch-1 requests, {args.duration:g} s per candidate, {args.rounds} interleaved rounds: "
          f"median (min-max); {QUIET_NOTE if os.geteuid() == 0 else NOT_QUIET_NOTE}")
    for c in levels:
        triton = rps("triton/json", c)
        print(f"\n{c} connection{'s' if c > 1 else ''}\n")
        print("| server | protocol | req/s | p50 ms | p99 ms | failed | vs Triton JSON |")
        print("|---|---|---|---|---|---|---|")
        for name, by_level in results.items():
            kind, protocol = name.split("/")
            runs = by_level[str(c)]
            ratio = f"{rps(name, c) / triton:.2f}x" if triton else "-"
            print(f"| {NAMES[kind]} | {protocol} | {span(runs, 'throughput_rps', '{:.0f}')} | "
                  f"{span(runs, 'p50_ms', '{:.1f}')} | {span(runs, 'p99_ms', '{:.1f}')} | "
                  f"{sum(r['errors'] for r in runs)} | {ratio} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"rounds": results, "loadavg": loads, "cpu": cpu_model(), "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
