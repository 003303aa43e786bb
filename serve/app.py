"""The Ray Serve edge: one application per model (its deployment is its HTTP ingress) plus a small server app.

Layout on the Serve proxy: `/v2/models/<name>` -> application `optiserve.<name>` (deployment `model`,
the replicas that run onnxruntime), everything else -> application `optiserve` (server metadata,
health, 404 for unknown models, the OpenAPI document). One hop from proxy to the replica that batches,
as a plain deployment has. `model_app(args)` and `server_app(args)` are Ray Serve application builders,
so a generated config file (`modelserve config`) deploys the same thing with `serve deploy`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

from ray import serve as rs

from serve._http import build_model_app, build_server_app
from serve._ingress import replica_env, serve_infer_directly, tune_gc
from serve._messages import InferError
from serve._model import ModelRuntime
from serve.config import ModelConfig

SERVER_APP = "optiserve"
MODEL_APP_PREFIX = "optiserve."
MODEL_DEPLOYMENT = "model"
SERVER_DEPLOYMENT = "server"
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def model_app_name(model: str) -> str:
    return MODEL_APP_PREFIX + model


def model_route(model: str) -> str:
    return f"/v2/models/{model}"


class CountedHistogram:
    """A Prometheus histogram as counters: `<name>_bucket` by upper bound `le` (cumulative, "+Inf" last, so it is
    also the count) and `<name>_sum`; Ray exports them as `ray_<name>_bucket_total` and `ray_<name>_sum_total`,
    which `histogram_quantile` reads as it reads a histogram's buckets.

    Why not Ray's Histogram: Ray's metrics agent re-records every observation of a histogram one at a time in
    Python (`record_histogram_aggregated_batch` loops over each bucket's count), ~34 us of the agent's CPU per
    served request, ~10 % of a core at 2,900 req/s on 2 cores (BENCHMARKS.md session 29). A counter costs the
    agent one data point per series and export, whatever the rate; `add` costs one Ray call per bucket in use."""

    def __init__(self, metrics: Any, name: str, description: str, boundaries: list[float],
                 tag_keys: tuple[str, ...]) -> None:
        self.boundaries = sorted(boundaries)
        self.les = [f"{float(b):g}" for b in self.boundaries] + ["+Inf"]
        self.buckets = metrics.Counter(f"{name}_bucket", f"{description} Cumulative count by upper bound le.",
                                       tag_keys=(*tag_keys, "le"))
        self.sum = metrics.Counter(f"{name}_sum", f"{description} Sum of the values.", tag_keys=tag_keys)

    def add(self, values: list[float], tags: dict[str, str]) -> None:
        counts = [0] * len(self.les)
        for value in values:
            counts[bisect_left(self.boundaries, value)] += 1  # le: value <= bound
        below = 0
        for le, n in zip(self.les, counts, strict=True):
            below += n
            if below:  # Ray's counters take positive increments only; an unused low bucket stays absent
                self.buckets.inc(below, tags={**tags, "le": le})
        if total := sum(values):
            self.sum.inc(total, tags=tags)


class RayObserver:
    """Prometheus metrics through Ray's metrics agent (labels: model, version, code, plus Serve's own).

    Requests are counted, and latencies and batch sizes kept, in the replica and handed to Ray together by
    `flush`, which a timer calls every FLUSH_S, as Ray Serve does with its own request metrics. Each Ray metric
    call validates and merges tags and enters Ray's C++ recorder; made once per request on the event loop, the
    latency histogram's calls alone were ~5 % of a replica's loop at 64 connections (py-spy). Latencies and batch
    sizes are `CountedHistogram`s: with Ray's Histogram the metrics agent paid for every request again."""

    FLUSH_S = 0.1

    def __init__(self, model: str, metrics: Any = None) -> None:
        if metrics is None:
            from ray.serve import metrics

        self.model = model
        self.requests = metrics.Counter(
            "optiserve_requests", "Inference requests by model, version and HTTP status code.",
            tag_keys=("model", "version", "code"),
        )
        self.errors = metrics.Counter(
            "optiserve_errors", "Inference requests answered with an error status.",
            tag_keys=("model", "version", "code"),
        )
        self.latency = CountedHistogram(
            metrics, "optiserve_request_latency_ms", "Inference latency inside the replica (queue + model), ms.",
            LATENCY_BOUNDARIES_MS, ("model", "version"),
        )
        self.batch_size = CountedHistogram(
            metrics, "optiserve_batch_size", "Rows per onnxruntime call.", BATCH_BOUNDARIES, ("model", "version"),
        )
        self.queue_depth = metrics.Gauge(
            "optiserve_queue_depth", "Requests waiting in the replica's batching queue.", tag_keys=("model", "version")
        )
        self._counts: dict[tuple[str, int], int] = {}
        self._latencies: dict[str, list[float]] = {}
        self._rows: dict[str, list[int]] = {}
        self._depths: dict[str, int] = {}
        self._tags: dict[str, dict[str, str]] = {}

    def _version_tags(self, version: str) -> dict[str, str]:
        tags = self._tags.get(version)
        if tags is None:
            tags = self._tags[version] = {"model": self.model, "version": version}
        return tags

    def request(self, version: str, code: int, latency_ms: float) -> None:
        key = (version, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        if code < 400:
            self._latencies.setdefault(version, []).append(latency_ms)

    def batch(self, version: str, rows: int, requests: int) -> None:
        self._rows.setdefault(version, []).append(rows)

    def queue(self, version: str, depth: int) -> None:
        self._depths[version] = depth

    def flush(self) -> None:
        """Hand what was counted and kept since the last flush to Ray."""
        counts, latencies, rows, depths = self._counts, self._latencies, self._rows, self._depths
        self._counts, self._latencies, self._rows, self._depths = {}, {}, {}, {}
        for (version, code), n in counts.items():
            tags = {**self._version_tags(version), "code": str(code)}
            self.requests.inc(n, tags=tags)
            if code >= 400:
                self.errors.inc(n, tags=tags)
        for histogram, kept in ((self.latency, latencies), (self.batch_size, rows)):
            for version, values in kept.items():
                histogram.add(values, self._version_tags(version))
        for version, depth in depths.items():
            self.queue_depth.set(depth, tags=self._version_tags(version))


@rs.deployment(name=MODEL_DEPLOYMENT)
@rs.ingress()
class ModelServer:
    """One replica of one model: a warmed-up session per served version, batching, roll-out by polling."""

    async def __init__(
        self, repository: str, model: str, model_config: dict[str, Any], token_sha256: str | None,
        max_body_bytes: int, poll_interval_s: float,
    ) -> None:
        tune_gc()
        self._observer = RayObserver(model)
        self.runtime = ModelRuntime(Path(repository), model, ModelConfig(**model_config), observer=self._observer)
        await asyncio.to_thread(self.runtime.load_initial)
        self._app = build_model_app(self.runtime, token_sha256=token_sha256, max_body_bytes=max_body_bytes)
        serve_infer_directly(model_route(model), self._app)  # infer skips Ray's request wrapper (serve/_ingress.py)
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self.runtime.watch(poll_interval_s))
        self._flush = loop.create_task(self._flush_metrics())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(RayObserver.FLUSH_S)
            try:
                self._observer.flush()
            except Exception:  # noqa: BLE001 - metrics must never stop; what failed is dropped, not kept growing
                logging.getLogger("optiserve.serve").exception("handing metrics to Ray failed")

    def __serve_build_asgi_app__(self):
        return self._app

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom-metrics hook: the autoscaling policy sees these per replica."""
        return self.runtime.autoscaling_stats()

    def check_health(self) -> None:
        if not self.runtime.versions:
            raise RuntimeError(f"model {self.runtime.name} has no loaded version")

    async def model_status(self) -> dict[str, Any]:
        return self.runtime.status()

    # The gRPC front end (serve/_grpc_router.py) calls these through a handle: answers are
    # (HTTP-style status, serialized message or error text, retry-after s), so a client's mistake never
    # travels as a Ray exception.

    async def grpc_infer_many(self, raws: list[bytes]) -> list[tuple[int, bytes | str, float | None]]:
        from serve import _grpc

        return await _grpc.infer_many(self.runtime, raws)

    async def grpc_metadata(self, version: str | None) -> tuple[int, bytes | str, float | None]:
        from serve import _grpc

        try:
            return 200, _grpc.model_metadata(self.runtime.metadata(version)).SerializeToString(), None
        except InferError as exc:
            return exc.status, exc.message, None

    async def grpc_ready(self, version: str | None) -> bool:
        return self.runtime.ready(version)


@rs.deployment(name=SERVER_DEPLOYMENT, ray_actor_options={"num_cpus": 0.1})
@rs.ingress()
class ServerInfo:
    async def __init__(self, models: list[str], token_sha256: str | None, max_body_bytes: int) -> None:
        self.models = list(models)
        self._http = {"token_sha256": token_sha256, "max_body_bytes": max_body_bytes}
        self._ready_cache = (0.0, False)

    async def ready(self) -> bool:
        """Ready when every model application is RUNNING (cached for a second: probes can be frequent)."""
        checked_at, ok = self._ready_cache
        if time.monotonic() - checked_at > 1.0:
            ok = await asyncio.to_thread(_all_running, self.models)
            self._ready_cache = (time.monotonic(), ok)
        return ok

    def __serve_build_asgi_app__(self):
        return build_server_app(lambda: self.models, self.ready, **self._http)


def _all_running(models: list[str]) -> bool:
    apps = rs.status().applications
    return all(
        (app := apps.get(model_app_name(m))) is not None and str(app.status).endswith("RUNNING") for m in models
    )


def deployment_options(cfg: ModelConfig, autoscaling: dict[str, Any] | None = None,
                       ingress: str = "proxy") -> dict[str, Any]:
    """Ray Serve options of a model's deployment: resources, replicas or autoscaling, queue bounds, and the
    replica-side flags of the front end (serve/_ingress.py) in its runtime_env."""
    actor: dict[str, Any] = {"num_cpus": cfg.cpus, "num_gpus": cfg.gpus}
    env = replica_env(ingress)
    if env:
        actor["runtime_env"] = {"env_vars": env}
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        # Let enough requests reach a replica to fill batches; the replica's own bounded queue answers
        # 503 beyond max_queue, and Serve's handle queue is bounded too, so nothing queues without limit.
        "max_ongoing_requests": cfg.max_queue + 2 * cfg.max_batch_size,
        "max_queued_requests": cfg.max_queue,
        "graceful_shutdown_timeout_s": 10,
        "health_check_period_s": 5,
        # Serve's per-request access log line cost ~4% of a replica's time under load; optiserve's own
        # metrics count every request, and errors are still logged.
        "logging_config": {"enable_access_log": False},
    }
    scaling = autoscaling or cfg.autoscaling
    if scaling:
        opts["autoscaling_config"] = scaling
    else:
        opts["num_replicas"] = cfg.num_replicas
    return opts


def model_app(args: dict[str, Any]):
    """Ray Serve application builder for one model (import path `serve.app:model_app`)."""
    cfg = ModelConfig(**args.get("model_config", {}))
    options = deployment_options(cfg, args.get("autoscaling_config"), args.get("ingress", "proxy"))
    return ModelServer.options(**options).bind(
        str(args["repository"]), args["model"], cfg.model_dump(), args.get("token_sha256"),
        int(args.get("max_body_bytes", 8 << 20)), float(args.get("poll_interval_s", 5.0)),
    )


def server_app(args: dict[str, Any]):
    """Ray Serve application builder for the server app (import path `serve.app:server_app`)."""
    options = {"ray_actor_options": {"num_cpus": float(args.get("ingress_cpus", 0.1))}}
    return ServerInfo.options(**options).bind(
        list(args["models"]), args.get("token_sha256"), int(args.get("max_body_bytes", 8 << 20))
    )
