"""Which measured variant becomes `model.onnx`: a rule that gives the same answer when the timings are noisy.

Timings on a shared machine move by tens of percent from run to run, so "fastest median" alone would pick
a different variant each time. The rule works on paired per-round timings (`optimize.measure.ratio`):

1. Candidates are variants that were built, measured and are within the accuracy budget.
2. One model beats another when, at the batch size the choice optimises for (`--batch-size`, default 32), even
   the low end of the confidence interval of its speed ratio is above 1 + MIN_GAIN (faster beyond the noise, and
   by enough to matter), and at the other batch sizes timed in rounds (1 and 32) it is not slower beyond the
   noise. A candidate that does not beat fp32 is never chosen; when none does, `model.onnx` is the
   fp32 export and the command exits 1.
3. Of the candidates that beat fp32, those that no other candidate beats are tied for fastest (so the choice
   is never beaten by any candidate, onnxruntime's own one-liner included).
4. Among the tied: the least accuracy drop (an improvement counts as no drop), then those no other of them
   beats at a guard batch size (by the same rule, that size taken as primary), then the smallest file, then
   the kind onnxruntime's guidance prefers for this model and CPU (`kind_order`), then the name.

Pure: reads and fills a report's variants, no timing of its own; tests drive it with injected rounds.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from optimize.cpu import CpuInfo
from optimize.measure import Ratio, ratio
from optimize.report import VariantResult

ANCHOR = "ort-quantize-dynamic"  # onnxruntime's one-line quantize_dynamic with defaults, measured beside ours

MIN_GAIN = 0.05  # a speed-up under 5 % is not worth a different model, however sure the measurement is

TIMED_BATCHES = (1, 32)  # batch sizes every measurement times in rounds; --batch-size adds its own when different
TIE_RULE = ("least accuracy drop, then not beaten at the other timed batch sizes by another of them, then smallest "
            "file, then kind order, then name")


def guard_batches(batch_size: int) -> tuple[int, ...]:
    """The batch sizes where a winner must merely not be slower: every timed size but the one optimised for."""
    return tuple(b for b in TIMED_BATCHES if b != batch_size)


def rule(batch_size: int = 32) -> str:
    guards = " and ".join(f"batch {b}" for b in guard_batches(batch_size))
    return (f"A beats B = A's batch-{batch_size} speed ratio over B has its whole ~96% interval above "
            f"{1 + MIN_GAIN:g} and A is not slower at {guards} beyond the noise; among the variants within the "
            f"budget that beat fp32 and that no other beats: {TIE_RULE}")


def kind_order(cpu: CpuInfo | None, has_conv: bool) -> tuple[str, ...]:
    """Variant kinds from most to least preferred when speed and accuracy tie. onnxruntime's quantization guide
    recommends static quantization for CNNs and dynamic quantization for transformers and other MatMul models;
    fp16 on a CPU mostly runs through casts unless it has native fp16 arithmetic (ARM asimdhp, AVX-512 FP16)."""
    int8 = ("static", "dynamic") if has_conv else ("dynamic", "static")
    native_fp16 = cpu is not None and any(f in cpu.features for f in ("asimdhp", "avx512fp16"))
    return (*int8, "graph-optimized", *(("fp16", "fp32") if native_fp16 else ("fp32", "fp16")))


def rounds_at(v: VariantResult, batch: int) -> list[float]:
    """A variant's per-round latencies at `batch` ([] when that size was not timed in rounds)."""
    if batch == 1:
        return v.latency_b1_rounds_ms
    if batch == 32:
        return v.latency_b32_rounds_ms
    return v.batch_rounds_ms.get(str(batch), [])


def speed_vs(base: VariantResult, other: VariantResult, batch: int = 32) -> Ratio | None:
    """How many times faster `other` is than `base` at `batch`, paired by round; None without rounds."""
    a, b = rounds_at(base, batch), rounds_at(other, batch)
    return ratio(a, b) if a and len(a) == len(b) else None


def beats(winner: VariantResult, loser: VariantResult, batch_size: int = 32,
          guards: tuple[int, ...] | None = None) -> bool:
    """Faster beyond the noise by at least MIN_GAIN at `batch_size`, and not slower beyond the noise at the
    `guards` batch sizes (default: the other timed ones)."""
    primary = speed_vs(loser, winner, batch_size)
    if primary is None or primary.low <= 1 + MIN_GAIN:
        return False
    ratios = (speed_vs(loser, winner, b) for b in (guard_batches(batch_size) if guards is None else guards))
    return not any(r is not None and r.slower for r in ratios)


def accuracy_drop(v: VariantResult, labelled: bool) -> float:
    """Accuracy points lost (an improvement counts as 0), or the relative output error in % without labels."""
    if labelled and v.accuracy_change_pts is not None:
        return max(0.0, -v.accuracy_change_pts)
    return 100 * (v.relative_error or 0.0)


def _ratios(base: VariantResult, other: VariantResult, batches: tuple[int, ...]) -> str:
    """'batch 32 3.50x (3.10-3.90), batch 1 ...' for the sizes that were timed in rounds."""
    parts = []
    for b in batches:
        r = speed_vs(base, other, b)
        if r is not None:
            parts.append(f"batch {b} {r.value:.2f}x ({r.low:.2f}-{r.high:.2f})")
    return ", ".join(parts)


def _by_batch(base: VariantResult, other: VariantResult, batches: tuple[int, ...]) -> dict[str, Any]:
    out = {}
    for b in batches:
        r = speed_vs(base, other, b)
        if r is not None:
            out[str(b)] = {"speedup": r.value, "interval": [r.low, r.high]}
    return out


def choose(report, kinds: tuple[str, ...] | None = None, batch_size: int = 32) -> None:
    """Set `report.chosen` (None: nothing beats fp32), `report.choice` (the batch size optimised for, the rule,
    the tie, the anchor) and notes. A variant byte-identical to an earlier one is that one's model, not another
    candidate."""
    kinds = kinds or kind_order(None, has_conv=False)
    batches = (batch_size, *guard_batches(batch_size))
    fp32 = report.variant("fp32")
    feasible = [v for v in report.variants if v.kind not in ("pytorch", "fp32") and not v.error and v.within_budget
                and "identical_to" not in v.extra and speed_vs(fp32, v, batch_size) is not None]
    faster = [v for v in feasible if beats(v, fp32, batch_size)]
    for v in feasible:
        if v not in faster:
            r = speed_vs(fp32, v, batch_size)
            rest = _ratios(fp32, v, guard_batches(batch_size))
            report.notes.append(f"{v.name} meets the budget but does not beat fp32 here beyond the noise (batch "
                                f"{batch_size} {r.value:.2f}x, interval {r.low:.2f}-{r.high:.2f}"
                                f"{', ' + rest if rest else ''}), so it is not picked")
    choice: dict[str, Any] = {"batch_size": batch_size, "guard_batch_sizes": list(guard_batches(batch_size)),
                              "rule": rule(batch_size), "kind_order": list(kinds), "tied": []}
    if not faster:
        report.chosen = None
        why = "no variant met the accuracy budget" if not feasible else "no variant within budget beats fp32"
        report.notes.append(f"{why}: model.onnx is the fp32 export")
    else:
        pace = min(faster, key=lambda v: median(rounds_at(v, batch_size)))
        tied = [v for v in faster if not any(beats(w, v, batch_size) for w in faster)] or [pace]
        best = _break_tie(tied, report.accuracy_measured, kinds, batch_size)
        report.chosen = best.name
        choice["tied"] = sorted(v.name for v in tied)
        choice["vs_fp32"] = _by_batch(fp32, best, batches)
        if len(tied) > 1:
            report.notes.append(f"{', '.join(choice['tied'])} are tied for fastest at batch {batch_size} within "
                                f"the noise; {best.name} is chosen by the tie rule: {TIE_RULE}")
        report.notes.append(f"chosen for batch {batch_size}: {best.name}, against fp32 {_ratios(fp32, best, batches)}")
    choice["anchor"] = _against_anchor(report, batch_size)
    report.choice = choice


def _break_tie(tied: list[VariantResult], labelled: bool, kinds: tuple[str, ...], batch_size: int) -> VariantResult:
    """The tie rule (TIE_RULE). Speed at the guard sizes comes after accuracy and before size: e.g. per-channel
    and per-tensor weights tie at batch 32, but per-channel scales cost a fixed few µs per call at batch 1."""
    least = min(accuracy_drop(v, labelled) for v in tied)
    level = [v for v in tied if accuracy_drop(v, labelled) == least]
    def beaten_at(v: VariantResult, b: int) -> bool:  # and not slower at the other sizes, the primary included
        others = tuple(x for x in (batch_size, *TIMED_BATCHES) if x != b)
        return any(beats(w, v, b, others) for w in level)

    quick = [v for v in level if not any(beaten_at(v, b) for b in guard_batches(batch_size))] or level
    rank = {k: i for i, k in enumerate(kinds)}
    return min(quick, key=lambda v: (v.size_bytes or 0, rank.get(v.kind, len(rank)), v.name))


def _against_anchor(report, batch_size: int = 32) -> dict[str, Any] | None:
    """How the chosen model (fp32 when nothing is chosen) compares with onnxruntime's one-liner."""
    anchor = next((v for v in report.variants if v.name == ANCHOR and not v.error), None)
    if anchor is None:
        return None
    chosen = report.variant(report.chosen or "fp32")
    r = speed_vs(anchor, chosen, batch_size)
    if r is None:
        return None
    verdict = "faster than" if beats(chosen, anchor, batch_size) else \
        "beaten by" if beats(anchor, chosen, batch_size) else "tied with"
    same = chosen is anchor or anchor.extra.get("identical_to") == chosen.name or \
        chosen.extra.get("identical_to") == anchor.name
    if same:
        verdict = "is"
    batches = (batch_size, *guard_batches(batch_size))
    report.notes.append(f"against onnxruntime's one-liner (quantize_dynamic with defaults): {chosen.name} "
                        + ("is that model" + ("" if chosen is anchor else ", byte for byte") if same else
                           f"is {verdict} it at batch {batch_size}: {_ratios(anchor, chosen, batches)}")
                        + ("" if anchor.within_budget else " (the one-liner is outside the accuracy budget)"))
    return {"name": ANCHOR, "chosen": chosen.name, "batch_size": batch_size, "speedup": r.value,
            "interval": [r.low, r.high], "confidence": r.confidence, "verdict": verdict,
            "by_batch": _by_batch(anchor, chosen, batches), "anchor_within_budget": anchor.within_budget}
