"""Dynamic batching: concurrent requests merged along axis 0 into one model call, rows split back.

Pure asyncio (no Ray), so it is unit-tested with a fake model. Ray Serve's `@serve.batch` is not used
because the server needs what it cannot give: a bounded queue that refuses work (503 + Retry-After)
instead of queueing without limit, the queue depth and batch sizes as metrics, merging only requests
whose non-batch dimensions agree, and isolating a bad request so it cannot fail a whole batch.

Shape-stable batching (buckets): on a GPU every new batch size makes onnxruntime's cuDNN search its
convolution algorithms again (measured on an H100: ~240 ms per new shape with EXHAUSTIVE, ~56 ms with
HEURISTIC, ~1.3 ms at a warmed size), and dynamic batching produces a new size almost every call. With
buckets, a merged batch is padded up to the smallest bucket that holds it, so the model only ever sees
the bucket sizes (each warmed at replica start), and the padding rows are dropped from the answer.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Sequence
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


def power_of_two_buckets(max_rows: int) -> tuple[int, ...]:
    """1, 2, 4, ... below max_rows, then max_rows itself (the largest merged batch is always a bucket)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    sizes = [1 << i for i in range(max_rows.bit_length()) if 1 << i < max_rows]
    return (*sizes, max_rows)


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `rows`; `rows` itself when there are no buckets or it exceeds the last
    (only a single request larger than max_batch_size can: it runs at its own size, unpadded), and for an
    empty batch (no row to repeat as padding)."""
    if rows < 1:
        return rows
    i = bisect.bisect_left(buckets, rows)
    return buckets[i] if i < len(buckets) else rows


def pad(arrays: Arrays, to: int) -> Arrays:
    """Every array grown along axis 0 to `to` rows by repeating its last row: an input the model already
    accepts, so padding cannot make a batch fail (zeros could be an invalid token id or trip a NaN check)."""
    out = {}
    for name, arr in arrays.items():
        extra = to - arr.shape[0]
        if extra < 0:
            raise ValueError(f"input {name!r} has {arr.shape[0]} rows, more than the {to} to pad to")
        out[name] = arr if extra == 0 else np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)], axis=0)
    return out


def unpad(outputs: Arrays, rows: int, padded_to: int) -> Arrays:
    """Drop the padding rows: keep the first `rows` of each output, which must have `padded_to` rows."""
    if rows == padded_to:
        return outputs
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != padded_to:
            raise ValueError(f"output {name!r} has shape {list(arr.shape)}, expected {padded_to} rows (padded batch)")
    return {k: v[:rows] for k, v in outputs.items()}


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    sig: tuple
    future: asyncio.Future
    wait: bool = True
    enqueued_s: float = field(default_factory=time.monotonic)


class Batcher:
    """One worker task per model version: waits up to `wait_s` for `max_rows`, runs, answers, repeats.

    `run` is blocking (onnxruntime); it runs on a single-thread executor so the event loop keeps
    accepting requests while a batch computes, which is what fills the next batch under load.
    `buckets` (sorted batch sizes; empty: none) pads each merged batch up to the smallest bucket holding it;
    only used when requests can merge (a model without a dynamic batch axis must get its rows as sent).
    `on_batch(rows, requests, seconds, padded)` reports each model call (`padded`: padding rows added).
    """

    def __init__(
        self, run: Callable[[Arrays], Arrays], *, max_rows: int, wait_s: float, max_queue: int,
        can_merge: bool = True, retry_after_s: float = 1.0, executor: Executor | None = None,
        on_batch: Callable[[int, int, float, int], None] | None = None, buckets: Sequence[int] = (),
    ) -> None:
        self._run = run
        self._max_rows = max_rows if can_merge else 1
        self._buckets = tuple(buckets) if can_merge else ()
        if list(self._buckets) != sorted(set(self._buckets)) or any(b < 1 for b in self._buckets):
            raise ValueError(f"buckets must be strictly increasing positive sizes, got {list(buckets)}")
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
        self._no_wait = 0  # queued requests that must not wait for others

    @property
    def queue_len(self) -> int:
        return len(self._queue)

    @property
    def ongoing(self) -> int:
        return len(self._queue) + (1 if self._busy else 0)

    async def submit(self, inputs: Arrays, rows: int, wait: bool = True) -> Arrays:
        """The request's rows of the outputs. `wait=False`: the batch this request joins leaves without waiting
        for more rows (its caller already gathered what was concurrent, as the gRPC router's groups do)."""
        if self._closed:
            raise Retired("this model version is no longer served")
        if len(self._queue) >= self._max_queue:
            raise Overloaded(self._retry_after_s)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # first use, or a new event loop (tests call asyncio.run repeatedly): a fresh worker and event
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._loop())
        item = _Item(inputs, rows, signature(inputs), loop.create_future(), wait)
        self._queue.append(item)
        self._no_wait += not wait
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
        previous batch are already past it, so a loaded server never adds waiting), or not at all while a request
        that must not wait is queued."""
        deadline = self._queue[0].enqueued_s + self._wait_s
        while not self._no_wait and sum(it.rows for it in self._queue) < self._max_rows:
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
            live = not item.future.done()  # else the client went away: skip its work
            if live and batch and (item.sig != batch[0].sig or rows + item.rows > self._max_rows):
                break
            self._queue.popleft()
            self._no_wait -= not item.wait
            if live:
                batch.append(item)
                rows += item.rows
        return batch

    def _padded_run(self, inputs: Arrays, rows: int, size: int) -> Arrays:
        """Runs on the executor thread: pad to the bucket, run, drop the padding rows."""
        return unpad(self._run(pad(inputs, size)), rows, size)

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        rows = [it.rows for it in batch]
        total = sum(rows)
        size = bucket_for(total, self._buckets)
        start = time.monotonic()
        try:
            outputs = await loop.run_in_executor(
                self._executor, self._padded_run, merge([it.inputs for it in batch]), total, size
            )
            parts = split(outputs, rows) if len(batch) > 1 else [outputs]
        except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
            if len(batch) == 1:
                _resolve(batch[0].future, exc=exc)
                return
            for item in batch:  # rerun each alone so only the culprit gets the error
                await self._answer(loop, [item])
            return
        if self._on_batch:
            self._on_batch(total, len(batch), time.monotonic() - start, size - total)
        for item, part in zip(batch, parts, strict=True):
            _resolve(item.future, result=part)


def _resolve(future: asyncio.Future, *, result: Arrays | None = None, exc: Exception | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
