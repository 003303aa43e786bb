"""Side-by-side measurement of model variants: latency, throughput, accuracy and output agreement.

Every candidate runs on the same inputs in the same process, and timings are taken in interleaved rounds
(each round times every candidate a little) so machine noise spreads evenly instead of favouring whoever
ran during a quiet moment. Percentile maths is plain numpy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optimize.data import Dataset

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
CURVE_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    samples: int


def percentile_timing(samples_s: list[float]) -> Timing:
    ms = np.asarray(samples_s) * 1e3
    return Timing(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), len(ms))


def time_interleaved(runners: dict[str, Runner], inputs: dict[str, np.ndarray], repeats: int, rounds: int = 5,
                     warmup: int = 5) -> dict[str, Timing]:
    """Latency of each runner on `inputs`: `warmup` untimed calls, then `repeats` timed calls in `rounds` rounds."""
    for run in runners.values():
        for _ in range(warmup):
            run(inputs)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                run(inputs)
                samples[name].append(time.perf_counter() - start)
    return {name: percentile_timing(s) for name, s in samples.items()}


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
