"""A served model's measured cost: latency versus batch size, replica start time, batching settings.

The simulator takes service times from this curve and the `slo` policy its capacity model, so both rest
on measurements of the real model (`autoscale profile MODEL.onnx`, or an optimize report's
`latency_curve_ms`), not on guesses.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optiserve.errors import UserError

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
DEFAULT_PROFILE_PATH = Path(__file__).with_name("default_profile.json")  # shipped: the benchmark CNN


@dataclass(frozen=True)
class ModelProfile:
    """Latency (ms) of one replica running one batch, keyed by batch size."""

    batch_latency_ms: dict[int, float]
    replica_start_s: float = 5.0
    max_batch_size: int = 8
    batch_wait_ms: float = 2.0
    source: str = ""
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        curve = {int(k): float(v) for k, v in self.batch_latency_ms.items()}
        if not curve or min(curve) < 1 or any(not (v > 0) for v in curve.values()):
            raise UserError("a model profile needs batch_latency_ms with positive latencies at batch sizes >= 1.")
        object.__setattr__(self, "batch_latency_ms", dict(sorted(curve.items())))
        if self.replica_start_s < 0 or self.batch_wait_ms < 0 or self.max_batch_size < 1:
            raise UserError("replica_start_s and batch_wait_ms must be >= 0 and max_batch_size >= 1.")

    def latency_ms(self, batch_size: np.ndarray | int) -> np.ndarray | float:
        """Batch latency at any batch size: linear between measured points, linear extrapolation beyond."""
        xs = np.array(list(self.batch_latency_ms), float)
        ys = np.array(list(self.batch_latency_ms.values()), float)
        b = np.asarray(batch_size, float)
        out = np.interp(b, xs, ys)
        if len(xs) > 1:
            hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            out = np.where(b > xs[-1], ys[-1] + hi_slope * (b - xs[-1]), out)
            lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
            out = np.where(b < xs[0], np.maximum(ys[0] + lo_slope * (b - xs[0]), 1e-3), out)
        return float(out) if np.ndim(out) == 0 else out

    def throughput_rps(self, batch_size: int) -> float:
        return batch_size * 1000.0 / self.latency_ms(batch_size)

    def capacity_rps(self, slo_ms: float, latency_factor: float = 1.0) -> float:
        """Most requests/s one replica sustains with batches whose latency x `latency_factor` <= slo_ms.

        latency_factor=1 is the optimistic bound (no queueing); 2 allows a request to wait out one batch.
        Falls back to batch size 1 when even that misses the objective (the SLO is then unreachable).
        """
        sizes = np.arange(1, self.max_batch_size + 1)
        lat = np.asarray(self.latency_ms(sizes)) * latency_factor + (self.batch_wait_ms if latency_factor > 1
                                                                      else 0.0)
        ok = lat <= slo_ms
        thr = sizes * 1000.0 / np.asarray(self.latency_ms(sizes))
        return float(thr[ok].max()) if ok.any() else float(thr[0])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_latency_ms"] = {str(k): v for k, v in self.batch_latency_ms.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelProfile:
        try:
            return cls(**{**d, "batch_latency_ms": {int(k): float(v) for k, v in d["batch_latency_ms"].items()}})
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a model profile ({exc}); expected batch_latency_ms and optional "
                            "replica_start_s, max_batch_size, batch_wait_ms.") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"profile {path} does not exist; make one with `autoscale profile MODEL.onnx`.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"profile {path} is not valid JSON ({exc}).") from None
        if "batch_latency_ms" not in data and "latency_curve_ms" in json.dumps(data):
            return cls.from_optimize_report(path)
        return cls.from_dict(data)

    @classmethod
    def from_optimize_report(cls, path: str | Path, variant: str | None = None, **kw) -> ModelProfile:
        """Read `latency_curve_ms` ({"1": p50_ms, ...}) of one variant (default: the first that has one)."""
        path = Path(path)
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read optimize report {path} ({exc}).") from None
        found: list[tuple[str, dict]] = []

        def walk(node, name: str) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("latency_curve_ms"), dict) and node["latency_curve_ms"]:
                    found.append((str(node.get("name", node.get("variant", name))), node["latency_curve_ms"]))
                for k, v in node.items():
                    walk(v, str(k) if isinstance(v, dict) else name)
            elif isinstance(node, list):
                for item in node:
                    walk(item, name)

        walk(report, "")
        if variant is not None:
            found = [f for f in found if f[0] == variant]
        if not found:
            what = f"variant {variant!r} with " if variant else ""
            raise UserError(f"optimize report {path} has no {what}latency_curve_ms; measure the model with "
                            "`autoscale profile MODEL.onnx` instead.")
        name, curve = found[0]
        return cls({int(k): float(v) for k, v in curve.items()}, source=f"{path}#{name}", **kw)


def replica_start_s_of(profile_path: str | Path | None = None) -> float:
    """The replica start time recorded in a profile (default: the shipped one): policies and the simulator
    read it from here, never from a constant, so a measured value reaches both once it is recorded."""
    return ModelProfile.load(profile_path or DEFAULT_PROFILE_PATH).replica_start_s


def _feed(session, batch: int) -> dict:
    feeds = {}
    for inp in session.get_inputs():
        shape = [batch if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(inp.shape)]
        if "int" in inp.type:
            feeds[inp.name] = np.zeros(shape, dtype=np.int64 if "int64" in inp.type else np.int32)
        else:
            dtype = np.float16 if "float16" in inp.type else np.float32
            feeds[inp.name] = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return feeds


def measure_profile(onnx_path: str | Path, batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
                    warmup: int = 5, repeats: int = 30, replica_start_s: float = 5.0,
                    max_batch_size: int = 8, batch_wait_ms: float = 2.0, progress=None) -> ModelProfile:
    """Median batch latency per batch size with onnxruntime, one intra-op thread (as one CPU replica has).

    `replica_start_s` is not measurable in-process (it is mostly Ray actor start-up); pass a measured value.
    The session load time is recorded in `notes`.
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"model {onnx_path} does not exist.")
    if warmup < 0 or repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise UserError("need warmup >= 0, repeats >= 1 and batch sizes >= 1.")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise UserError(f"onnxruntime cannot load {onnx_path} ({str(exc).splitlines()[0]}).") from None
    load_s = time.perf_counter() - t0
    curve = {}
    for b in batch_sizes:
        feeds = _feed(session, b)
        try:
            for _ in range(warmup):
                session.run(None, feeds)
        except Exception as exc:
            raise UserError(f"model {onnx_path} does not run at batch size {b} (is its first axis dynamic?): "
                            f"{str(exc).splitlines()[0]}") from None
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            session.run(None, feeds)
            samples.append((time.perf_counter() - t) * 1000.0)
        curve[int(b)] = float(np.median(samples))
        if progress is not None:
            progress(b, curve[int(b)])
    return ModelProfile(curve, replica_start_s=replica_start_s, max_batch_size=max_batch_size,
                        batch_wait_ms=batch_wait_ms, source=f"measured: {onnx_path.name}",
                        notes={"session_load_s": round(load_s, 4), "repeats": repeats, "intra_op_threads": 1})
