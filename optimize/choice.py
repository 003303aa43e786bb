"""Which measured variant becomes `model.onnx`: a rule that gives the same answer when the timings are noisy.

Timings on a shared machine move by tens of percent from run to run, so "fastest median" alone would pick
a different variant each time. The rule works on paired per-round timings (`optimize.measure.ratio`):

1. Candidates are variants that were built, measured and are within the accuracy budget.
2. One model beats another when, at batch 32, even the low end of the confidence interval of its speed ratio
   is above 1 + MIN_GAIN (faster beyond the noise, and by enough to matter), and at batch 1 it is not slower
   beyond the noise. A candidate that does not beat fp32 is never chosen; when none does, `model.onnx` is the
   fp32 export and the command exits 1.
3. Of the candidates that beat fp32, those that no other candidate beats are tied for fastest (so the choice
   is never beaten by any candidate, onnxruntime's own one-liner included).
4. Among the tied: the least accuracy drop (an improvement counts as no drop), then the smallest file, then
   the kind onnxruntime's guidance prefers for this model and CPU (`kind_order`), then the name.

Pure: reads and fills a report's variants, no timing of its own; tests drive it with injected rounds.
"""

from __future__ import annotations

from typing import Any

from optimize.cpu import CpuInfo
from optimize.measure import Ratio, ratio
from optimize.report import VariantResult

ANCHOR = "ort-quantize-dynamic"  # onnxruntime's one-line quantize_dynamic with defaults, measured beside ours

MIN_GAIN = 0.05  # a speed-up under 5 % is not worth a different model, however sure the measurement is

RULE = (f"A beats B = A's batch-32 speed ratio over B has its whole ~96% interval above {1 + MIN_GAIN:g} and A is "
        "not slower at batch 1 beyond the noise; among the variants within the budget that beat fp32 and that no "
        "other beats: least accuracy drop, then smallest file, then kind order, then name")


def kind_order(cpu: CpuInfo | None, has_conv: bool) -> tuple[str, ...]:
    """Variant kinds from most to least preferred when speed and accuracy tie. onnxruntime's quantization guide
    recommends static quantization for CNNs and dynamic quantization for transformers and other MatMul models;
    fp16 on a CPU mostly runs through casts unless it has native fp16 arithmetic (ARM asimdhp, AVX-512 FP16)."""
    int8 = ("static", "dynamic") if has_conv else ("dynamic", "static")
    native_fp16 = cpu is not None and any(f in cpu.features for f in ("asimdhp", "avx512fp16"))
    return (*int8, "graph-optimized", *(("fp16", "fp32") if native_fp16 else ("fp32", "fp16")))


def speed_vs(base: VariantResult, other: VariantResult, batch: int = 32) -> Ratio | None:
    """How many times faster `other` is than `base` at batch 1 or 32, paired by round; None without rounds."""
    a, b = (base.latency_b32_rounds_ms, other.latency_b32_rounds_ms) if batch == 32 else \
        (base.latency_b1_rounds_ms, other.latency_b1_rounds_ms)
    return ratio(a, b) if a and len(a) == len(b) else None


def beats(winner: VariantResult, loser: VariantResult) -> bool:
    """Faster beyond the noise by at least MIN_GAIN at batch 32, and not slower beyond the noise at batch 1."""
    r32, r1 = speed_vs(loser, winner, 32), speed_vs(loser, winner, 1)
    return r32 is not None and r32.low > 1 + MIN_GAIN and not (r1 is not None and r1.slower)


def accuracy_drop(v: VariantResult, labelled: bool) -> float:
    """Accuracy points lost (an improvement counts as 0), or the relative output error in % without labels."""
    if labelled and v.accuracy_change_pts is not None:
        return max(0.0, -v.accuracy_change_pts)
    return 100 * (v.relative_error or 0.0)


def choose(report, kinds: tuple[str, ...] | None = None) -> None:
    """Set `report.chosen` (None: nothing beats fp32), `report.choice` (the rule, the tie, the anchor) and notes."""
    kinds = kinds or kind_order(None, has_conv=False)
    fp32 = report.variant("fp32")
    feasible = [v for v in report.variants if v.kind not in ("pytorch", "fp32") and not v.error and v.within_budget
                and speed_vs(fp32, v) is not None]
    faster = [v for v in feasible if beats(v, fp32)]
    for v in feasible:
        if v not in faster:
            r32, r1 = speed_vs(fp32, v, 32), speed_vs(fp32, v, 1)
            b1 = f", batch 1 {r1.value:.2f}x ({r1.low:.2f}-{r1.high:.2f})" if r1 else ""
            report.notes.append(f"{v.name} meets the budget but does not beat fp32 here beyond the noise (batch 32 "
                                f"{r32.value:.2f}x, interval {r32.low:.2f}-{r32.high:.2f}{b1}), so it is not picked")
    choice: dict[str, Any] = {"rule": RULE, "kind_order": list(kinds), "tied": []}
    if not faster:
        report.chosen = None
        why = "no variant met the accuracy budget" if not feasible else "no variant within budget beats fp32"
        report.notes.append(f"{why}: model.onnx is the fp32 export")
    else:
        pace = min(faster, key=lambda v: v.latency_b32_p50_ms)
        tied = [v for v in faster if not any(beats(w, v) for w in faster)] or [pace]
        rank = {k: i for i, k in enumerate(kinds)}
        best = min(tied, key=lambda v: (accuracy_drop(v, report.accuracy_measured), v.size_bytes or 0,
                                        rank.get(v.kind, len(rank)), v.name))
        report.chosen = best.name
        choice["tied"] = sorted(v.name for v in tied)
        if len(tied) > 1:
            report.notes.append(f"{', '.join(choice['tied'])} are tied for fastest within the noise; {best.name} "
                                f"is chosen by the tie rule: {RULE.split(': ', 1)[1]}")
    choice["anchor"] = _against_anchor(report)
    report.choice = choice


def _against_anchor(report) -> dict[str, Any] | None:
    """How the chosen model (fp32 when nothing is chosen) compares with onnxruntime's one-liner."""
    anchor = next((v for v in report.variants if v.name == ANCHOR and not v.error), None)
    if anchor is None:
        return None
    chosen = report.variant(report.chosen or "fp32")
    r = speed_vs(anchor, chosen)
    if r is None:
        return None
    verdict = "faster than" if beats(chosen, anchor) else "beaten by" if beats(anchor, chosen) else "tied with"
    if chosen is anchor:
        verdict = "is"
    report.notes.append(f"against onnxruntime's one-liner (quantize_dynamic with defaults): {chosen.name} "
                        + ("is that model" if chosen is anchor else
                           f"is {verdict} it: {r.value:.2f}x, interval {r.low:.2f}-{r.high:.2f}x")
                        + ("" if anchor.within_budget else " (the one-liner is outside the accuracy budget)"))
    return {"name": ANCHOR, "chosen": chosen.name, "speedup": r.value, "interval": [r.low, r.high],
            "confidence": r.confidence, "verdict": verdict, "anchor_within_budget": anchor.within_budget}
