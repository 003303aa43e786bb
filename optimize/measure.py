"""Side-by-side measurement of model variants: latency, throughput, accuracy and output agreement.

Every candidate runs on the same inputs in the same process, and timings are taken in interleaved rounds
(each round times every candidate a little) so machine noise spreads evenly instead of favouring whoever
ran during a quiet moment. Each round's median is kept: comparing two candidates round by round (paired)
cancels slow drifts in machine speed, and the spread of those paired ratios says how much of a difference is
noise. Percentile maths is plain numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from optiserve.data import Dataset

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
CURVE_BATCHES = (1, 2, 4, 8, 16, 32)


ROUNDS = 9  # interleaved rounds per timing: 9 paired rounds give a ~96% sign-test interval (2nd..8th of 9)


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    samples: int
    round_p50_ms: tuple[float, ...] = ()  # the median of each interleaved round, in round order

    @property
    def spread_pct(self) -> float | None:
        """Half the width of the median's confidence interval over rounds, in % of the median: this figure's noise."""
        if len(self.round_p50_ms) < 2:
            return None
        low, high, _ = median_interval(self.round_p50_ms)
        return 50 * (high - low) / self.p50_ms


@dataclass(frozen=True)
class Ratio:
    """How many times faster `other` is than `base`: the median over paired rounds of base/other, with its
    distribution-free (sign-test) confidence interval. Rounds pair up because both ran in the same round."""

    value: float
    low: float
    high: float
    confidence: float  # coverage the interval really has for this number of rounds

    @property
    def faster(self) -> bool:
        """Faster beyond the noise: even the low end of the interval is above 1."""
        return self.low > 1.0

    @property
    def slower(self) -> bool:
        return self.high < 1.0


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Sign-test confidence interval of the median: (x_(k), x_(n+1-k)) of the sorted values, with the largest k
    whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is still >= `confidence` (k = 1, the full range, for few values).
    Returns (low, high, coverage)."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def ratio(base: Sequence[float], other: Sequence[float]) -> Ratio:
    """Speed of `other` relative to `base` from their per-round latencies (same rounds, same order)."""
    if len(base) != len(other) or not base:
        raise ValueError("ratio needs the same, non-zero number of rounds on both sides")
    paired = [b / o for b, o in zip(base, other, strict=True)]
    low, high, cov = median_interval(paired)
    return Ratio(float(np.median(paired)), low, high, cov)


def percentile_timing(samples_s: list[float], rounds: int = 1) -> Timing:
    ms = np.asarray(samples_s) * 1e3
    per_round = np.array_split(ms, rounds) if rounds > 1 else []
    return Timing(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), len(ms),
                  tuple(float(np.median(r)) for r in per_round))


def time_interleaved(runners: dict[str, Runner], inputs: dict[str, np.ndarray], repeats: int, rounds: int = ROUNDS,
                     warmup: int = 5) -> dict[str, Timing]:
    """Latency of each runner on `inputs`: `warmup` untimed calls, then about `repeats` timed calls in `rounds`
    rounds. Every round times every runner; odd rounds run them in reverse order so a steady drift in machine
    speed favours nobody. Each round's median is kept, so comparisons can pair runners round by round."""
    for run in runners.values():
        for _ in range(warmup):
            run(inputs)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_round = max(1, -(-repeats // rounds))
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            run = runners[name]
            for _ in range(per_round):
                start = time.perf_counter()
                run(inputs)
                samples[name].append(time.perf_counter() - start)
    return {name: percentile_timing(s, rounds) for name, s in samples.items()}


def predict(run: Runner, data: Dataset, batch: int = 256) -> np.ndarray:
    return np.concatenate([run(b) for b in data.batches(batch)])


@dataclass(frozen=True)
class Agreement:
    max_abs_diff: float
    relative_error: float  # ||out - ref|| / ||ref||
    top1_agreement: float | None  # share of samples whose argmax matches (classification outputs only)


def agreement(out: np.ndarray, ref: np.ndarray) -> Agreement:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    rel = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12))
    top1 = float(np.mean(out.argmax(-1) == ref.argmax(-1))) if ref.ndim == 2 and ref.shape[1] > 1 else None
    return Agreement(float(np.max(np.abs(out - ref))), rel, top1)


def accuracy(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy when labels exist and the output is a score per class."""
    if labels is None or out.ndim != 2 or len(out) != len(labels):
        return None
    return float(np.mean(out.argmax(1) == labels))


def tile_batch(data: Dataset, size: int) -> dict[str, np.ndarray]:
    """A batch of exactly `size` rows, repeating the data if it is shorter."""
    out = {}
    for name, array in data.inputs.items():
        reps = -(-size // len(array))
        out[name] = np.ascontiguousarray(np.concatenate([array] * reps)[:size])
    return out
