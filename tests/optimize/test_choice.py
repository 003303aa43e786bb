"""The noise-aware choice rule, driven by injected per-round timings (no real timing anywhere)."""

import pytest

from optimize.choice import ANCHOR, beats, choose, guard_batches, kind_order
from optimize.cpu import detect_cpu
from optimize.report import QuantizeReport, VariantResult

FP32 = [10.0, 11.0, 9.0, 10.5, 12.0, 10.0, 9.5, 11.5, 10.0]  # ms per round at batch 32: about ±10 % noise


def variant(name, kind, scale, *, size=100, drop=0.0, within=True, noise=None, error=None, b1_scale=None,
            b8_scale=None, b1_noise=None):
    """A variant `scale` times as slow as fp32 in every round (times an optional per-round noise factor); at
    batch 1 `b1_scale` times as slow (default: the same, times `b1_noise`); at batch 8, timed only when
    `b8_scale` is given, `b8_scale` times as slow."""
    rounds = [t * scale * (noise[i] if noise else 1.0) for i, t in enumerate(FP32)]
    b1 = [t / 10 * (scale if b1_scale is None else b1_scale) * (b1_noise[i] if b1_noise else 1.0)
          for i, t in enumerate(FP32)]
    b8 = {"8": [t / 3 * b8_scale for t in FP32]} if b8_scale is not None else {}
    return VariantResult(name, kind, size_bytes=size, accuracy_change_pts=-drop, within_budget=within,
                         latency_b32_rounds_ms=rounds, latency_b32_p50_ms=sorted(rounds)[4], latency_b1_rounds_ms=b1,
                         batch_rounds_ms=b8, error=error)


def report_with_fp32(fp32, *variants):
    return QuantizeReport({"path": "m"}, [], {}, {}, 1, {}, True, {}, [fp32, *variants], None)


def report(*variants, labelled=True):
    fp32 = variant("fp32", "fp32", 1.0, size=400)
    return QuantizeReport({"path": "m"}, [], {}, {}, 1, {}, labelled, {}, [fp32, *variants], None)


JITTER = [1.05, 0.95, 1.1, 0.9, 1.0, 1.08, 0.93, 1.02, 0.97]  # a tie: these scatter around each other


def test_a_clearly_faster_variant_is_chosen():
    r = report(variant("dynamic-int8", "dynamic", 0.5), variant("fp16", "fp16", 1.2))
    choose(r)
    assert r.chosen == "dynamic-int8" and r.choice["tied"] == ["dynamic-int8"]


def test_a_gain_inside_the_noise_does_not_beat_fp32_and_the_verdict_says_so():
    r = report(variant("dynamic-int8", "dynamic", 0.97, noise=JITTER))  # 3 % faster by median, ±10 % noise
    choose(r)
    assert r.chosen is None
    assert any("does not beat fp32 here beyond the noise" in n for n in r.notes)
    assert any("no variant within budget beats fp32" in n for n in r.notes)


def test_ties_are_broken_by_accuracy_then_size_then_kind_not_by_the_noisier_median():
    for jitter in (JITTER, JITTER[::-1]):  # whichever of the tied two has the lower median, the same one wins
        r = report(variant("static-int8-minmax", "static", 0.5, size=90, drop=0.3),
                   variant("dynamic-int8", "dynamic", 0.5, size=120, noise=jitter))
        choose(r)
        assert r.chosen == "dynamic-int8"  # no accuracy drop beats a smaller file
        assert r.choice["tied"] == ["dynamic-int8", "static-int8-minmax"]
    r = report(variant("static-int8-minmax", "static", 0.5, size=90), variant("dynamic-int8", "dynamic", 0.5,
                                                                                size=120, noise=JITTER))
    choose(r)
    assert r.chosen == "static-int8-minmax"  # same accuracy: the smaller file
    r = report(variant("static-int8-minmax", "static", 0.5), variant("dynamic-int8", "dynamic", 0.5, noise=JITTER))
    choose(r, kind_order(None, has_conv=True))
    assert r.chosen == "static-int8-minmax"  # same accuracy and size: static, as onnxruntime advises for CNNs
    choose(r, kind_order(None, has_conv=False))
    assert r.chosen == "dynamic-int8"


def test_never_slower_than_the_one_liner_beyond_the_noise():
    r = report(variant("dynamic-int8", "dynamic", 0.6, size=50), variant(ANCHOR, "dynamic", 0.3, size=100))
    choose(r)
    assert r.chosen == ANCHOR and r.choice["anchor"]["verdict"] == "is"
    r = report(variant("dynamic-int8", "dynamic", 0.3, size=50), variant(ANCHOR, "dynamic", 0.3, size=100,
                                                                         noise=JITTER))
    choose(r)
    assert r.chosen == "dynamic-int8" and r.choice["anchor"]["verdict"] == "tied with"
    assert any("onnxruntime's one-liner" in n and "tied with" in n for n in r.notes)


def test_out_of_budget_or_failed_variants_are_never_chosen():
    r = report(variant("static-int8-minmax", "static", 0.2, within=False),
               variant("fp16", "fp16", 0.1, error="boom"), variant("dynamic-int8", "dynamic", 0.5))
    choose(r)
    assert r.chosen == "dynamic-int8"
    r = report(variant("static-int8-minmax", "static", 0.2, within=False))
    choose(r)
    assert r.chosen is None and any("no variant met the accuracy budget" in n for n in r.notes)


def test_without_labels_the_relative_error_breaks_ties():
    a = variant("static-int8-minmax", "static", 0.5, size=90)
    b = variant("dynamic-int8", "dynamic", 0.5, size=120, noise=JITTER)
    a.relative_error, b.relative_error = 0.02, 0.01
    r = report(a, b, labelled=False)
    choose(r)
    assert r.chosen == "dynamic-int8"


@pytest.mark.parametrize("flags,expected", [("avx2", "fp32"), ("asimd asimdhp", "fp16")])
def test_fp16_ranks_above_fp32_only_with_native_fp16(flags, expected):
    cpu = detect_cpu(f"flags\t: {flags}\n")
    order = kind_order(cpu, has_conv=False)
    other = "fp16" if expected == "fp32" else "fp32"
    assert order.index(expected) < order.index(other)


def test_a_sure_but_tiny_gain_does_not_count():
    r = report(variant("dynamic-int8", "dynamic", 0.97))  # 3 % faster in every single round: below MIN_GAIN
    choose(r)
    assert r.chosen is None


def test_faster_at_batch_32_but_slower_at_batch_1_does_not_beat():
    r = report(variant("fp16", "fp16", 0.5, b1_scale=1.5))
    choose(r)
    assert r.chosen is None and any("batch 1 0.67x" in n for n in r.notes)
    # between candidates: the static variant is faster at batch 32 only, so the smaller dynamic one stays tied
    r = report(variant("static-int8-minmax", "static", 0.4, size=120, b1_scale=0.6),
               variant("dynamic-int8", "dynamic", 0.5, size=100, b1_scale=0.3))
    choose(r)
    assert r.choice["tied"] == ["dynamic-int8", "static-int8-minmax"] and r.chosen == "dynamic-int8"
    assert beats(r.variant("static-int8-minmax"), r.variant("fp32"))


# --- the batch size the choice optimises for (--batch-size; issue 13) ---

def per_channel_and_per_tensor():
    """Issue 13's MLP: per-channel weights tie per-tensor ones at batch 32 but cost a fixed few µs per call, so
    they are clearly slower at batch 1; per-tensor loses a little accuracy."""
    return (variant("dynamic-int8", "dynamic", 0.5, size=100, b1_scale=0.6),
            variant("dynamic-int8-per-tensor", "dynamic", 0.5, size=100, drop=0.2, b1_scale=0.4, noise=JITTER))


def test_the_batch_size_asked_for_decides_and_the_report_says_which():
    r = report(*per_channel_and_per_tensor())
    choose(r)  # batch 32: tied there, so the tie rule's least accuracy drop keeps per-channel
    assert r.chosen == "dynamic-int8" and r.choice["batch_size"] == 32 and r.choice["guard_batch_sizes"] == [1]
    assert r.choice["tied"] == ["dynamic-int8", "dynamic-int8-per-tensor"] and "batch-32" in r.choice["rule"]
    r = report(*per_channel_and_per_tensor())
    choose(r, batch_size=1)  # batch 1: per-tensor is 1.5x faster there and not slower at batch 32
    assert r.chosen == "dynamic-int8-per-tensor" and r.choice["tied"] == ["dynamic-int8-per-tensor"]
    assert r.choice["batch_size"] == 1 and r.choice["guard_batch_sizes"] == [32]
    assert "batch-1 speed ratio" in r.choice["rule"] and "not slower at batch 32" in r.choice["rule"]
    assert r.choice["vs_fp32"]["1"]["speedup"] == pytest.approx(2.5)
    assert r.choice["vs_fp32"]["32"]["speedup"] == pytest.approx(2.0, rel=0.1)
    assert any(n.startswith("chosen for batch 1: dynamic-int8-per-tensor, against fp32 batch 1 2.50x") for n in r.notes)


def test_at_batch_1_the_batch_32_latency_is_the_guard():
    fast_b1_slow_b32 = variant("fp16", "fp16", 1.5, b1_scale=0.5)
    r = report(fast_b1_slow_b32)
    choose(r, batch_size=1)
    assert r.chosen is None and any("batch 1 2.00x" in n and "batch 32 0.67x" in n for n in r.notes)
    assert not beats(fast_b1_slow_b32, r.variant("fp32"), 1) and not beats(fast_b1_slow_b32, r.variant("fp32"))


def test_a_batch_size_between_guards_both_timed_sizes():
    assert guard_batches(8) == (1, 32) and guard_batches(1) == (32,) and guard_batches(32) == (1,)
    fp32 = variant("fp32", "fp32", 1.0, size=400, b8_scale=1.0)
    quick = variant("static-int8-minmax", "static", 0.9, b8_scale=0.5)  # 2x at batch 8, 1.1x at 32 and 1
    slow_b1 = variant("dynamic-int8", "dynamic", 0.9, b8_scale=0.4, b1_scale=1.3)  # faster at 8, slower at 1
    r = report_with_fp32(fp32, quick, slow_b1)
    choose(r, batch_size=8)
    assert r.chosen == "static-int8-minmax" and r.choice["guard_batch_sizes"] == [1, 32]
    assert not beats(slow_b1, fp32, 8) and beats(quick, fp32, 8)
    # a size that was not timed gives no candidate rather than a guess from another size
    r = report(variant("dynamic-int8", "dynamic", 0.5))
    choose(r, batch_size=8)
    assert r.chosen is None and r.choice["batch_size"] == 8


def test_a_byte_identical_twin_is_not_another_candidate_and_the_anchor_twin_is_the_same_model():
    per_tensor = variant("dynamic-int8-per-tensor", "dynamic", 0.5, size=90)
    anchor = variant(ANCHOR, "dynamic", 0.5, size=90)
    anchor.extra["identical_to"] = per_tensor.name
    r = report(per_tensor, anchor)
    choose(r)
    assert r.chosen == "dynamic-int8-per-tensor" and r.choice["tied"] == ["dynamic-int8-per-tensor"]
    assert r.choice["anchor"]["verdict"] == "is" and set(r.choice["anchor"]["by_batch"]) == {"1", "32"}
    assert any("is that model, byte for byte" in n for n in r.notes)


def test_among_the_tied_the_one_faster_at_the_guard_batch_size_wins_before_size():
    # same accuracy, same size: without the guard-size step the name ("dynamic-int8" < "...-per-tensor") would pick
    per_channel = variant("dynamic-int8", "dynamic", 0.5, b1_scale=0.6)
    per_tensor = variant("dynamic-int8-per-tensor", "dynamic", 0.5, b1_scale=0.4, noise=JITTER)
    r = report(per_channel, per_tensor)
    choose(r)
    assert r.choice["tied"] == ["dynamic-int8", "dynamic-int8-per-tensor"] and r.chosen == "dynamic-int8-per-tensor"
    # within the noise at batch 1 as well: back to size, then name
    r = report(variant("dynamic-int8", "dynamic", 0.5, b1_scale=0.4, b1_noise=JITTER),
               variant("dynamic-int8-per-tensor", "dynamic", 0.5, b1_scale=0.4, noise=JITTER))
    choose(r)
    assert r.chosen == "dynamic-int8"
