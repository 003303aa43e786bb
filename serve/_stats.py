"""Per-replica rolling statistics for the autoscaler: arrival rate (last second), latency percentiles and batch
sizes (last 30 s);
and for the status page, the padding cost of shape-stable batching.

Pure (an injectable clock), so the windowing is unit-tested without sleeping. The keys of
`snapshot()` are the names autoscale/ reads (autoscale/metrics.py), so producer and consumer agree.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from autoscale import metrics as m

# The arrival rate is taken over the last second, about the interval Ray Serve records the replica's metrics at
# (0.2 x a 4 s look-back, at most the 2 s push interval), as the simulator's samples are: averaged over a 30 s
# window, a 4 -> 40 req/s burst reached the policy as a 30 s ramp, and the live policy never saw bursts begin.
RATE_WINDOW_S = 1.0


class RollingStats:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 rate_window_s: float = RATE_WINDOW_S) -> None:
        self.window_s, self.rate_window_s = window_s, rate_window_s
        self._clock = clock
        self._born = clock()
        self._arrivals: deque[float] = deque()
        self._latencies: deque[tuple[float, float]] = deque()  # (time, ms)
        self._batches: deque[tuple[float, int, int]] = deque()  # (time, rows, padding rows)
        self._next_prune = self._born + window_s

    # Ray Serve asks for `snapshot` only when the deployment autoscales; a fixed-size deployment never does, so
    # recording also drops what aged out, at most once a window: the deques hold about two windows, whatever the
    # uptime (before: ~290 bytes a request kept for good, ~3 GB an hour at 3,000 req/s).

    def arrival(self) -> None:
        now = self._clock()
        self._arrivals.append(now)
        if now >= self._next_prune:
            self._prune()

    def latency(self, ms: float) -> None:
        self._latencies.append((self._clock(), ms))

    def batch(self, rows: int, padded: int = 0) -> None:
        """One model call: `rows` from requests, `padded` rows added to reach a bucket size."""
        self._batches.append((self._clock(), rows, padded))

    def _prune(self) -> float:
        now = self._clock()
        self._next_prune = now + self.window_s
        cutoff = now - self.window_s
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()
        for q in (self._latencies, self._batches):
            while q and q[0][0] < cutoff:
                q.popleft()
        return now

    def snapshot(self, queue_len: int, ongoing: int) -> dict[str, float]:
        """Metric name -> value (ints and floats only, as Ray Serve's custom-metrics hook requires)."""
        now = self._prune()
        # a replica younger than the window has seen traffic for less than it: its rate is not diluted
        span = max(min(self.rate_window_s, now - self._born), 1e-3)
        lat = np.array([ms for _, ms in self._latencies]) if self._latencies else None
        p50, p95, p99 = (float(v) for v in np.percentile(lat, [50, 95, 99])) if lat is not None else (0.0,) * 3
        return {
            m.QUEUE_LEN: float(queue_len),
            m.ONGOING: float(ongoing),
            m.ARRIVAL_RATE_RPS: len(self._arrivals) / span,
            m.LATENCY_P50_MS: p50,
            m.LATENCY_P95_MS: p95,
            m.LATENCY_P99_MS: p99,
            m.BATCH_SIZE_MEAN: float(np.mean([r for _, r, _ in self._batches])) if self._batches else 0.0,
        }

    def padding(self) -> dict[str, float]:
        """Rows the model computed in the window, how many were padding, and their share (the padding cost).
        Kept out of `snapshot`: its keys are exactly the autoscaler's metrics."""
        self._prune()
        rows = sum(r for _, r, _ in self._batches)
        padded = sum(p for _, _, p in self._batches)
        computed = rows + padded
        return {"computed_rows": float(computed), "padded_rows": float(padded),
                "padding_fraction": padded / computed if computed else 0.0}
