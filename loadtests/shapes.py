"""Traces for load tests: built from autoscale/traces.py (the simulator's demand) and passed to Locust as JSON.

The parent process builds the trace once and writes its rate table to a file, so the live run and the
simulator see exactly the same curve, including any scaling or stretching.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from autoscale.traces import TRACE_KINDS, Trace, load_csv, make_trace
from optiserve.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")


def parse_duration(text: str | float) -> float:
    """'90', '90s', '5m', '1h', '250ms' -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise UserError(f"cannot read duration {text!r}; write e.g. 90s, 5m or 1h.")
    value, unit = float(m.group(1)), m.group(2) or "s"
    seconds = value * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise UserError(f"duration {text!r} must be positive.")
    return seconds


def parse_params(items: list[str] | None) -> dict:
    """['peak_rps=40', 'base_rps=5'] -> {'peak_rps': 40.0, 'base_rps': 5.0}."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"trace parameter {item!r} must look like name=value, e.g. peak_rps=40.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def build_trace(shape: str, duration_s: float, params: dict | None = None, csv_path: str | None = None) -> Trace:
    """A trace of kind `shape` lasting `duration_s`; `replay` reads `csv_path` and is stretched to the duration."""
    if shape == "replay" and csv_path:
        trace = load_csv(csv_path)
        return trace.stretched(duration_s) if abs(trace.duration_s - duration_s) > 1e-6 else trace
    if shape not in TRACE_KINDS:
        raise UserError(f"unknown shape {shape!r}; choose one of {', '.join(TRACE_KINDS)}.")
    return make_trace(shape, duration_s, **(params or {}))


def staircase(rates_rps: list[float], step_s: float, lead_in_s: float = 0.0) -> Trace:
    """Constant stairs of `step_s` each, for step-load capacity searches; an optional lead-in at the first rate."""
    per_s = np.repeat(np.asarray(rates_rps, float), max(1, int(round(step_s))))
    lead = np.full(int(round(lead_in_s)), float(rates_rps[0]))
    return make_trace("replay", rates_rps=np.concatenate([lead, per_s]).tolist())


def trace_to_dict(trace: Trace) -> dict:
    return {"kind": trace.kind, "duration_s": trace.duration_s, "times_s": trace.times_s.tolist(),
            "rates_rps": trace.rates_rps.tolist(), "params": _jsonable(trace.params)}


def trace_from_dict(d: dict) -> Trace:
    try:
        return Trace(d["kind"], float(d["duration_s"]), np.asarray(d["times_s"], float),
                     np.asarray(d["rates_rps"], float), dict(d.get("params", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"not a trace file ({exc!r}).") from None


def write_trace(trace: Trace, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(trace_to_dict(trace)))
    return path


def read_trace(path: str | Path) -> Trace:
    try:
        return trace_from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise UserError(f"trace file {path} does not exist.") from None


def _jsonable(params: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()
            if isinstance(v, str | int | float | bool | list | np.ndarray) or v is None}
