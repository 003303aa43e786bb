"""One model on one replica: its loaded versions, their batchers, version roll-out, inference.

No Ray here (the deployment in serve/app.py wraps it), so roll-out and failure handling are tested
in-process. Roll-out: `refresh()` looks at the repository; a new version is verified, loaded and warmed
up beside the serving ones, then becomes the default in one assignment: requests already queued on
the old version finish there, new ones go to the new version, and a version that fails to load is
recorded (status) while the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from optiserve.errors import UserError
from optiserve.repository import MANIFEST_FILE, MODEL_FILE, Manifest, list_versions, version_dir
from serve import _session
from serve._batching import Batcher, Overloaded, Retired
from serve._codec import (
    check_requested,
    decode_inputs,
    encode_outputs,
    metadata_tensors,
)
from serve._messages import InferenceRequest, InferenceResponse, InferError, ModelMetadata
from serve._stats import RollingStats
from serve.config import ModelConfig

log = logging.getLogger("optiserve.serve")


class Observer(Protocol):
    """Where a runtime reports what Prometheus should see (serve/app.py implements it with Ray metrics)."""

    def request(self, version: str, code: int, latency_ms: float) -> None: ...
    def batch(self, version: str, rows: int, requests: int) -> None: ...
    def queue(self, version: str, depth: int) -> None: ...


class _NoObserver:
    def request(self, version: str, code: int, latency_ms: float) -> None:
        pass

    def batch(self, version: str, rows: int, requests: int) -> None:
        pass

    def queue(self, version: str, depth: int) -> None:
        pass


@dataclass
class Loaded:
    version: str
    manifest: Manifest
    batcher: Batcher
    can_merge: bool
    stamp: tuple
    providers: list[str]
    buckets: tuple[int, ...] = ()  # batch sizes merged batches are padded to (empty: none)


def _stamp(repo: Path, name: str, version: str) -> tuple:
    """Changes when the version's files change, so a failed version is retried only after a fix."""
    folder = version_dir(repo, name, version)
    out = []
    for f in (MODEL_FILE, MANIFEST_FILE):
        try:
            st = (folder / f).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class ModelRuntime:
    def __init__(self, repo: Path, name: str, cfg: ModelConfig, observer: Observer | None = None) -> None:
        self.repo = Path(repo)
        self.name = name
        self.cfg = cfg
        self.observer = observer or _NoObserver()
        self.stats = RollingStats()
        self.versions: dict[str, Loaded] = {}
        self.default: str | None = None
        self.failed: dict[str, tuple[tuple, str]] = {}  # version -> (stamp, reason)
        self._refresh_lock = asyncio.Lock()

    # ---- loading and roll-out ----------------------------------------------------------------------

    def _candidates(self) -> list[str]:
        if self.cfg.version:
            return [self.cfg.version]
        return list_versions(self.repo, self.name)[::-1]  # newest first

    def _load_new(self, keep: set[str]) -> tuple[list[tuple[str, Manifest, Any, tuple]], dict[str, tuple]]:
        """Blocking: load the newest candidates not loaded yet, up to max_versions in all. Returns (new, failed)."""
        new, failed, count = [], {}, 0
        for version in self._candidates():
            if count >= self.cfg.max_versions:
                break
            if version in keep:
                count += 1
                continue
            stamp = _stamp(self.repo, self.name, version)
            known = self.failed.get(version)
            if known and known[0] == stamp:
                continue
            try:
                manifest, session = _session.load(self.repo, self.name, version, self.cfg)
            except UserError as exc:
                log.warning("model %s version %s cannot be served: %s", self.name, version, exc)
                failed[version] = (stamp, str(exc))
                continue
            new.append((version, manifest, session, stamp))
            count += 1
        return new, failed

    def _install(self, new: list, failed: dict[str, tuple]) -> list[Batcher]:
        """Apply a load result: add new versions, pick the default, retire versions no longer wanted."""
        self.failed.update(failed)
        for version, manifest, session, stamp in new:
            self.failed.pop(version, None)
            self.versions[version] = self._make(version, manifest, session, stamp)
        wanted = [v for v in self._candidates() if v in self.versions][: self.cfg.max_versions]
        if not wanted:
            return []
        self.default = wanted[0]  # the newest version that loads (or the pinned one)
        retired = [self.versions.pop(v).batcher for v in list(self.versions) if v not in wanted]
        return retired

    def _make(self, version: str, manifest: Manifest, session: Any, stamp: tuple) -> Loaded:
        can_merge = _session.merges(self.cfg, manifest)
        buckets = self.cfg.buckets if can_merge else ()  # the sizes _session.load warmed

        def run(feeds):
            return dict(zip(output_names, session.run(output_names, feeds), strict=True))

        def on_batch(rows: int, requests: int, seconds: float, padded: int) -> None:
            self.stats.batch(rows, padded)
            self.observer.batch(version, rows, requests)

        output_names = [o.name for o in manifest.outputs]
        batcher = Batcher(
            run, max_rows=self.cfg.max_batch_size, wait_s=self.cfg.batch_wait_timeout_s,
            max_queue=self.cfg.max_queue, can_merge=can_merge, on_batch=on_batch, buckets=buckets,
        )
        return Loaded(version, manifest, batcher, can_merge, stamp, list(session.get_providers()), buckets)

    def load_initial(self) -> None:
        """Blocking first load (replica start); raises UserError when no version of the model loads."""
        new, failed = self._load_new(set())
        self._install(new, failed)
        if not self.versions:
            reasons = "; ".join(f"version {v}: {r}" for v, (_, r) in sorted(self.failed.items())) or "no versions"
            raise UserError(f"model {self.name} has no version that can be served ({reasons})")

    async def refresh(self) -> None:
        """Pick up new versions from the repository without interrupting traffic."""
        async with self._refresh_lock:
            new, failed = await asyncio.to_thread(self._load_new, set(self.versions))
            for batcher in self._install(new, failed):
                asyncio.get_running_loop().create_task(batcher.close())  # drain, then drop
            if new:
                log.info("model %s now serves versions %s (default %s)", self.name, sorted(self.versions), self.default)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - a repository hiccup must not stop future roll-outs
                log.exception("refreshing model %s failed", self.name)

    # ---- requests ----------------------------------------------------------------------------------

    def resolve(self, version: str | None) -> Loaded:
        key = version or self.default
        loaded = self.versions.get(key) if key else None
        if loaded is None:
            if version in self.failed:
                reason = self.failed[version][1]
                raise InferError(404, f"version {version} of model {self.name} failed to load: {reason}")
            served = ", ".join(sorted(self.versions, key=int)) or "none"
            raise InferError(404, f"version {version} of model {self.name} is not served (served: {served})")
        return loaded

    async def infer(
        self, request: InferenceRequest, version: str | None = None, wait: bool = True,
    ) -> InferenceResponse:
        """`wait=False`: the batch leaves without waiting for others (see Batcher.submit)."""
        start = time.monotonic()
        self.stats.arrival()
        code, label = 200, version or self.default or "none"
        try:
            loaded = self.resolve(version)
            label = loaded.version
            arrays, rows = decode_inputs(request, loaded.manifest.inputs, split_rows=loaded.can_merge)
            wanted = check_requested(request, loaded.manifest.outputs)
            self.observer.queue(loaded.version, loaded.batcher.queue_len + 1)
            try:
                outputs = await loaded.batcher.submit(arrays, rows, wait)
            except Overloaded as exc:
                raise InferError(503, str(exc), exc.retry_after_s) from None
            except Retired as exc:  # retired between resolve and submit: serve it on the new default
                if version is not None or self.default == loaded.version:
                    raise InferError(404, str(exc)) from None
                loaded = self.resolve(None)
                outputs = await loaded.batcher.submit(arrays, rows, wait)
            except Exception as exc:  # onnxruntime refused this input (the batcher isolated it)
                raise InferError(400, f"the model rejected the input: {str(exc).splitlines()[0][:300]}") from None
            return InferenceResponse(
                model_name=self.name, model_version=loaded.version, id=request.id,
                outputs=encode_outputs(outputs, loaded.manifest.outputs, wanted),
            )
        except InferError as exc:
            code = exc.status
            raise
        finally:
            ms = (time.monotonic() - start) * 1000
            if code == 200:
                self.stats.latency(ms)
            self.observer.request(label, code, ms)

    def metadata(self, version: str | None = None) -> ModelMetadata:
        loaded = self.resolve(version)
        return ModelMetadata(
            name=self.name, versions=sorted(self.versions, key=int),
            inputs=metadata_tensors(loaded.manifest.inputs), outputs=metadata_tensors(loaded.manifest.outputs),
        )

    def ready(self, version: str | None = None) -> bool:
        return (version or self.default) in self.versions

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name, "default_version": self.default, "versions": sorted(self.versions, key=int),
            "failed_versions": {v: reason for v, (_, reason) in sorted(self.failed.items())},
            "device": self.cfg.device,
            "providers": self.versions[self.default].providers if self.default in self.versions else [],
            "stats": self.autoscaling_stats(),
            "batching": {
                "buckets": list(self.versions[self.default].buckets) if self.default in self.versions else [],
                **self.stats.padding(),
            },
        }

    def autoscaling_stats(self) -> dict[str, float]:
        queued = sum(v.batcher.queue_len for v in self.versions.values())
        ongoing = sum(v.batcher.ongoing for v in self.versions.values())
        return self.stats.snapshot(queue_len=queued, ongoing=ongoing)
