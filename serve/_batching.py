"""Dynamic batching: concurrent requests merged along axis 0 into one model call, rows split back.

Pure asyncio (no Ray), so it is unit-tested with a fake model. Ray Serve's `@serve.batch` is not used
because the server needs what it cannot give: a bounded queue that refuses work (503 + Retry-After)
instead of queueing without limit, the queue depth and batch sizes as metrics, merging only requests
whose non-batch dimensions agree, and isolating a bad request so it cannot fail a whole batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]


class Overloaded(Exception):
    """The queue is full; the client should retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the model's queue is full; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Retired(Exception):
    """The version was retired (a newer one took over) before this request was queued."""


def signature(inputs: Arrays) -> tuple:
    """Requests merge only when every input has the same dtype and the same shape past axis 0."""
    return tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))


def merge(items: list[Arrays]) -> Arrays:
    if len(items) == 1:
        return items[0]
    return {name: np.concatenate([it[name] for it in items], axis=0) for name in items[0]}


def split(outputs: Arrays, rows: list[int]) -> list[Arrays]:
    """Cut each output back into per-request slices; every output must have sum(rows) rows."""
    total = sum(rows)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {list(arr.shape)}, expected {total} rows to split")
    bounds = np.cumsum([0, *rows])
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    sig: tuple
    future: asyncio.Future
    enqueued_s: float = field(default_factory=time.monotonic)


class Batcher:
    """One worker task per model version: waits up to `wait_s` for `max_rows`, runs, answers, repeats.

    `run` is blocking (onnxruntime); it runs on a single-thread executor so the event loop keeps
    accepting requests while a batch computes, which is what fills the next batch under load.
    `on_batch(rows, requests, seconds)` reports each model call.
    """

    def __init__(
        self, run: Callable[[Arrays], Arrays], *, max_rows: int, wait_s: float, max_queue: int,
        can_merge: bool = True, retry_after_s: float = 1.0, executor: Executor | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._run = run
        self._max_rows = max_rows if can_merge else 1
        self._wait_s = wait_s
        self._max_queue = max_queue
        self._retry_after_s = retry_after_s
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._busy = False
        self._closed = False

    @property
    def queue_len(self) -> int:
        return len(self._queue)

    @property
    def ongoing(self) -> int:
        return len(self._queue) + (1 if self._busy else 0)

    async def submit(self, inputs: Arrays, rows: int) -> Arrays:
        if self._closed:
            raise Retired("this model version is no longer served")
        if len(self._queue) >= self._max_queue:
            raise Overloaded(self._retry_after_s)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # first use, or a new event loop (tests call asyncio.run repeatedly): a fresh worker and event
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._loop())
        item = _Item(inputs, rows, signature(inputs), loop.create_future())
        self._queue.append(item)
        self._arrived.set()
        return await item.future

    async def close(self) -> None:
        """Stop taking requests, finish the queued ones (drain), then stop the worker."""
        self._closed = True
        while self._queue or self._busy:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._fill(loop)
            batch = self._take()
            if not batch:
                continue
            self._busy = True
            try:
                await self._answer(loop, batch)
            finally:
                self._busy = False

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for more rows until the oldest request has waited `wait_s` (requests queued during the
        previous batch are already past it, so a loaded server never adds waiting)."""
        deadline = self._queue[0].enqueued_s + self._wait_s
        while sum(it.rows for it in self._queue) < self._max_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # the client went away: skip its work
                self._queue.popleft()
                continue
            if batch and (item.sig != batch[0].sig or rows + item.rows > self._max_rows):
                break
            batch.append(self._queue.popleft())
            rows += item.rows
        return batch

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        rows = [it.rows for it in batch]
        start = time.monotonic()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, merge([it.inputs for it in batch]))
            parts = split(outputs, rows) if len(batch) > 1 else [outputs]
        except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
            if len(batch) == 1:
                _resolve(batch[0].future, exc=exc)
                return
            for item in batch:  # rerun each alone so only the culprit gets the error
                await self._answer(loop, [item])
            return
        if self._on_batch:
            self._on_batch(sum(rows), len(batch), time.monotonic() - start)
        for item, part in zip(batch, parts, strict=True):
            _resolve(item.future, result=part)


def _resolve(future: asyncio.Future, *, result: Arrays | None = None, exc: Exception | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
