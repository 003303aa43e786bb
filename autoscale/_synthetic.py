"""Production-like rate curves generated from a seed: a Markov-modulated Poisson process and superposed
heavy-tailed ON/OFF sources. Both return a piecewise-constant rate table; `traces.make_trace` wraps it.

The seed belongs to the trace (like diurnal's `noise_seed`), not to the arrival draw, so every policy and a
live load test see the same demand curve; `Trace.arrivals(seed)` then draws Poisson arrivals from it, which
makes `mmpp` an exact MMPP and `heavy` a doubly stochastic process with a self-similar rate.
"""

from __future__ import annotations

import numpy as np

from optiserve.errors import UserError


def mmpp_points(duration_s: float, base_rps: float, peak_rps: float, states: int, mean_dwell_s: float,
                seed: int) -> list[tuple[float, float]]:
    """(time, rate) breakpoints of a continuous-time Markov chain over `states` rate levels.

    Levels are geometric from `base_rps` to `peak_rps`; the dwell time in level k is exponential with mean
    `mean_dwell_s` x (base/level)^0.5, so high levels are visited briefly (bursts) and low ones for long;
    each jump goes to a uniformly chosen other level. Starts in the lowest level.
    """
    if states < 2 or int(states) != states:
        raise UserError(f"mmpp states must be an integer of at least 2, got {states}.")
    if not (0 < base_rps <= peak_rps) or mean_dwell_s <= 0:
        raise UserError("mmpp needs 0 < base_rps <= peak_rps and a positive mean_dwell_s.")
    k = int(states)
    levels = base_rps * (peak_rps / base_rps) ** (np.arange(k) / (k - 1))
    dwell = mean_dwell_s * np.sqrt(base_rps / levels)
    rng = np.random.default_rng(int(seed))
    t, state, pts = 0.0, 0, []
    while t < duration_s:
        pts.append((t, float(levels[state])))
        t += float(rng.exponential(dwell[state]))
        state = int((state + rng.integers(1, k)) % k)
    return pts


def heavy_points(duration_s: float, mean_rps: float, sources: int, alpha: float, mean_on_s: float,
                 mean_off_s: float, base_rps: float, seed: int) -> list[tuple[float, float]]:
    """(time, rate) breakpoints of `sources` superposed Pareto ON/OFF sources plus a constant `base_rps`.

    ON and OFF durations are Pareto with tail index `alpha` in (1, 2) (finite mean, infinite variance), so
    the aggregate is asymptotically self-similar with Hurst parameter (3 - alpha) / 2 (Willinger, Taqqu,
    Sherman and Wilson 1997). Each ON source adds the same rate, chosen so the long-run mean is `mean_rps`.
    Sources start in their stationary ON/OFF mix, with a uniformly random residual time.
    """
    if not 1.0 < alpha < 2.0:
        raise UserError(f"heavy alpha must lie strictly between 1 and 2 (heavy tail, finite mean), got {alpha}.")
    if sources < 1 or int(sources) != sources or mean_on_s <= 0 or mean_off_s <= 0:
        raise UserError("heavy needs an integer sources >= 1 and positive mean_on_s and mean_off_s.")
    if not mean_rps > base_rps:
        raise UserError("heavy mean_rps must exceed base_rps (the ON/OFF sources carry the difference).")
    n = int(sources)
    p_on = mean_on_s / (mean_on_s + mean_off_s)
    per_source = (mean_rps - base_rps) / (n * p_on)
    rng = np.random.default_rng(int(seed))

    def pareto(mean: float, size: int) -> np.ndarray:
        x_m = mean * (alpha - 1.0) / alpha  # Pareto scale giving this mean
        return x_m * (1.0 + rng.pareto(alpha, size))

    events: list[tuple[float, int]] = []  # (time, +1 source turns ON / -1 turns OFF)
    on0 = 0
    for _ in range(n):
        on = bool(rng.uniform() < p_on)
        on0 += on
        t = float(rng.uniform() * pareto(mean_on_s if on else mean_off_s, 1)[0])  # residual of the first period
        while t < duration_s:
            events.append((t, -1 if on else +1))
            on = not on
            t += float(pareto(mean_on_s if on else mean_off_s, 1)[0])
    events.sort()
    pts, active = [(0.0, base_rps + on0 * per_source)], on0
    for t, delta in events:
        active += delta
        pts.append((t, base_rps + active * per_source))
    return pts
