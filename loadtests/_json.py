"""JSON has no NaN or infinity: results write them as null and read null back as NaN where a float belongs."""

from __future__ import annotations

import math


def clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return obj


NAN_FIELDS = frozenset({"mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "target_rps", "value",
                        "requests_within_slo", "windows_met"})


def nan(d: dict) -> dict:
    return {k: (math.nan if v is None and k in NAN_FIELDS else v) for k, v in d.items()}
