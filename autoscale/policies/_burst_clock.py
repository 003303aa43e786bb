"""The burst clock of `adaptive`: periodic bursts learned from their onsets, their capacity asked ahead and
released after each. Pure: `(BurstClock, inputs) -> BurstClock`; the policy keeps it in its JSON state.

When the burst onsets recur on a clock (at least four, the latest gaps' coefficient of variation at most
`periodic_max_cv`), holding the peak through every lull pays for capacity the clock says is not needed.
Then a burst's need is held apart from the steady recommendations and released `periodic_hold_starts`
starts after the burst ends (the rate back under what was held before it), at once rather than in steps;
the lull's steady need ignores the burst's samples. The next burst's need (the highest of the latest
bursts) is asked a start plus the metrics lag plus `periodic_jitter_k` x the gaps' standard deviation (its
upper confidence bound, since few gaps understate it; at least one push) before the rise is expected, and
held until that burst has come and gone. A rise that comes the same margin plus the lag late is overdue:
what was asked falls back into the policy's hold window, and its recurring hold keeps it. An early rise is
reacted to as ever and, if it breaks the clock, brings back the recurring hold. Irregular bursts (mmpp,
heavy-tailed) never pass the test; a clock costs two scaling actions per burst (up ahead of it, down
after it).

The onsets are the policy's fast rises and the jumps the held capacity absorbs (`onset_level`: the rate
past `onset_ratio` x the lull's low and a replica's capacity above it, confirmed as a rise is): a burst the
lull's steady need (or what is asked ahead) already covers is no fast rise, yet it still marks the clock;
with rises alone, such bursts never showed a period and their capacity was held through every lull (issue
14's live run, 4 -> 40 req/s at 15 req/s per replica: 4 replicas for 10 minutes). A clock learned while a
burst is under way keeps what was asked for that burst until it ends (its onset may come a push before its
rise, when the rate seen so far needs less than the capacity held for it).

Tried and left out: three rises (two gaps) as enough to call a clock (two exponential gaps agree within CV
0.1 7 % of the time, three 0.8 %; with bursts at exponential gaps, a clock judged on the latest two gaps
misfired and lost up to 1.5 points); the gaps' plain standard deviation as the jitter (120 +- 8 s bursts
arrived up to 12 s early after three gaps that agreed within 2 s: 98.5 %).

The settings are `AdaptiveConfig`'s (`ClockConfig` names the ones read here), so YAML configs are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

NO_LULL = -1e18  # lull_start when every sample in the window counts


class ClockConfig(Protocol):
    """The `AdaptiveConfig` fields the clock reads."""

    capacity_rps_per_replica: float | None
    look_back_period_s: float
    bucket_s: float
    rise_lag_s: float
    memory_s: float
    periodic_min_gaps: int
    periodic_gaps: int
    periodic_max_cv: float
    periodic_jitter_k: float
    periodic_hold_starts: float
    onset_ratio: float


@dataclass(frozen=True)
class Burst:
    """The burst under way: over once the rate falls under `level_rps`; `need` is the most it needed."""

    level_rps: float
    since_s: float
    need: float = 0


@dataclass(frozen=True)
class BurstHold:
    """A periodic burst's capacity (or what is asked ahead of one), held apart until `until_s`."""

    until_s: float
    need: float


@dataclass(frozen=True)
class BurstClock:
    onsets: tuple[float, ...] = ()  # burst onsets within memory_s: the clock's marks
    onset_pending: float | None = None  # when the rate first passed onset_level, awaiting confirmation
    burst: Burst | None = None
    needs: tuple[float, ...] = ()  # the most each finished burst needed (the latest periodic_gaps + 1)
    hold: BurstHold | None = None
    settled_s: float | None = None  # the last burst's samples leave the look-back window at this time

    @classmethod
    def from_state(cls, state: dict) -> BurstClock:
        """Read the clock from the policy's JSON state (its keys sit beside the policy's own)."""
        burst, hold = state.get("burst"), state.get("bhold")
        return cls(onsets=tuple(state.get("onsets", ())), onset_pending=state.get("onset_pending"),
                   burst=Burst(*burst) if burst is not None else None,
                   needs=tuple(state.get("burst_needs", ())),
                   hold=BurstHold(*hold) if hold is not None else None, settled_s=state.get("settled_s"))

    def to_state(self) -> dict:
        b, h = self.burst, self.hold
        return {"onsets": list(self.onsets), "onset_pending": self.onset_pending,
                "burst": [b.level_rps, b.since_s, b.need] if b is not None else None,
                "burst_needs": list(self.needs), "bhold": [h.until_s, h.need] if h is not None else None,
                "settled_s": self.settled_s}


class Phase(NamedTuple):
    active: bool  # the onsets show a clock and the next burst is not overdue
    anticipating: bool  # ... and it is time to ask for the next burst's capacity


def periodic(cfg: ClockConfig, onsets: list | tuple) -> tuple[float, float] | None:
    """(period, its standard deviation) when the burst onsets (fast rises included) recur on a clock, else None.

    Periodic: at least `periodic_min_gaps` gaps between onsets (so at least four: two gaps agree by
    chance too often, mmpp shows 64 s then 68 s), and over the latest `periodic_gaps` of them the
    coefficient of variation is at most `periodic_max_cv`. A rise is stamped at the push that confirms it,
    so even a clock-exact burst shows a jitter of a push or so; irregular bursts (Markov-modulated,
    heavy-tailed) have gap CVs near 1.
    """
    gaps = [b - a for a, b in zip(onsets, onsets[1:], strict=False)][-cfg.periodic_gaps:]
    if len(gaps) < cfg.periodic_min_gaps:
        return None
    mean = sum(gaps) / len(gaps)
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1))
    if not (mean > 0 and std <= cfg.periodic_max_cv * mean):
        return None
    # A few gaps understate the jitter (3 gaps drawn with a 4 s spread often agree within 2 s): use the
    # standard deviation's 90 % upper confidence bound, s sqrt(v / chi2_0.10(v)), v = gaps - 1, with the
    # Wilson-Hilferty approximation of the chi-square quantile (within 7 % of it from v = 2).
    v = len(gaps) - 1
    chi2 = v * (1.0 - 2.0 / (9.0 * v) - 1.2816 * math.sqrt(2.0 / (9.0 * v))) ** 3
    return mean, std * math.sqrt(v / chi2)


def anticipation(cfg: ClockConfig, start_s: float, onsets: list | tuple) -> tuple[float, float] | None:
    """(ask_s, give_up_s): when to ask for the next periodic burst's capacity, and when to stop expecting it.

    The next onset is expected a period after the last (onsets are stamped when confirmed, up to the metrics
    lag `rise_lag_s` after the burst begins), so the capacity is asked a start plus the metrics lag plus a
    margin before that: the margin is `periodic_jitter_k` standard deviations of the period, at least one
    push (`bucket_s`). A rise that is not seen by the same margin plus the metrics lag after the expected
    one is late: the pattern is broken and the policy falls back to its recurring hold.
    """
    per = periodic(cfg, onsets)
    if per is None:
        return None
    period, std = per
    margin = max(cfg.periodic_jitter_k * std, cfg.bucket_s)
    expected = onsets[-1] + period
    return expected - start_s - cfg.rise_lag_s - margin, expected + cfg.rise_lag_s + margin


def onset_level(cfg: ClockConfig, low_rps: float) -> float:
    """The rate a burst onset must pass: `onset_ratio` x the lull's low and one replica's capacity above it.

    A fast rise is measured against the capacity held, so a burst the held capacity absorbs is not one
    (with a small base rate the steady need alone may cover it: Erlang C keeps 3 replicas of 15 req/s for
    4 req/s at a 100 ms objective and 67 ms service, 45 req/s, above 40 req/s bursts). The periodic clock
    needs every burst's start, absorbed or not, so it is marked by the jump of the rate itself: well above
    the lull (a ratio, so noise on a base does not pass it) and by more than a replica (so a jump between
    two small rates does not either).
    """
    return max(cfg.onset_ratio * low_rps, low_rps + (cfg.capacity_rps_per_replica or 1.0))


def mark(clock: BurstClock, cfg: ClockConfig, t: float, rate: float, low: float, look: float, queueing: bool,
         rise_level: float | None) -> BurstClock:
    """Mark burst onsets at `t`: a fast rise the policy confirmed now (`rise_level`: the capacity held
    before it, the level under which its burst is over), or a jump past `onset_level(low)` seen on two
    observations a push apart (or on the next one when `queueing`). `look`: how far back `low` reaches;
    one onset per look."""
    onsets = [o for o in clock.onsets if t - o < cfg.memory_s]
    needs, burst, pending = list(clock.needs), clock.burst, clock.onset_pending
    fresh = not onsets or t - onsets[-1] > look
    if rise_level is not None:
        # a rise within an onset's look continues the burst that onset started (its need so far kept)
        onset_burst = burst is not None and bool(onsets) and burst.since_s == onsets[-1] and not fresh
        if burst is not None and not onset_burst:
            needs.append(burst.need)
        burst = Burst(rise_level, t, burst.need if onset_burst else 0)
        if fresh:
            onsets.append(t)
        pending = None
    else:
        jump = cfg.capacity_rps_per_replica is not None and rate > onset_level(cfg, low) and fresh
        if jump and pending is not None and (queueing or t - pending >= cfg.bucket_s - 1e-9):
            onsets.append(t)
            pending = None
            if burst is not None:
                needs.append(burst.need)
            burst = Burst(onset_level(cfg, low), t, 0)
        elif jump:
            pending = pending if pending is not None else t
        else:
            pending = None
    return replace(clock, onsets=tuple(onsets), onset_pending=pending, burst=burst, needs=tuple(needs))


def phase(clock: BurstClock, cfg: ClockConfig, t: float, start_s: float) -> Phase:
    ant = anticipation(cfg, start_s, clock.onsets)
    active = ant is not None and t <= ant[1]
    return Phase(active, active and t >= ant[0])


def lull_start(clock: BurstClock, ph: Phase) -> float:
    """Rate samples before this time belong to the last periodic burst, not to the lull's steady need."""
    return clock.settled_s if ph.active and clock.settled_s is not None else NO_LULL


def track(clock: BurstClock, cfg: ClockConfig, t: float, rate: float, steady: float) -> BurstClock:
    """Record the burst's steady need at `t`; end the burst once `rate` falls back under its level."""
    burst, needs, settled = clock.burst, list(clock.needs), clock.settled_s
    if burst is not None:
        burst = Burst(burst.level_rps, burst.since_s, max(burst.need, steady))
        if rate < burst.level_rps:  # over; the look-back still averages it in for a while
            needs.append(burst.need)
            settled = t + cfg.look_back_period_s
            burst = None
    return replace(clock, burst=burst, needs=tuple(needs[-(cfg.periodic_gaps + 1):]), settled_s=settled)


def hold(clock: BurstClock, cfg: ClockConfig, t: float, start_s: float, ph: Phase, steady: float,
         target: int, peak_need: Callable[[], float]) -> tuple[BurstClock, float, float | None]:
    """Hold a periodic burst's need apart from the steady recommendations: (clock, the steady need left to
    the policy's hold window, a held need to put back into that window when the clock is lost, or None).

    Held while the burst lasts, or its next one is anticipated (what the latest bursts needed, or
    `peak_need()` before one has ended), and `periodic_hold_starts` starts after either.
    """
    bhold = clock.hold
    if ph.active and (clock.burst is not None or ph.anticipating or (bhold is not None and t < bhold.until_s)):
        short = max(cfg.periodic_hold_starts * start_s, cfg.look_back_period_s)
        if bhold is None and clock.burst is not None:  # the clock learned (or an early burst) mid-burst: what
            bhold = BurstHold(t, target)  # was asked for it is kept until it ends (not the steady need so far)
        expect = max(clock.needs or [peak_need()]) if ph.anticipating else 0
        until = t + short if clock.burst is not None or ph.anticipating else bhold.until_s
        bhold = BurstHold(until, max(bhold.need if bhold else 0, steady, expect))
        return replace(clock, hold=bhold), 0, None
    if bhold is not None:
        # overdue (or no longer periodic): the held need falls back to the hold window
        return replace(clock, hold=None), steady, None if ph.active else bhold.need
    return clock, steady, None


def held_need(clock: BurstClock) -> float:
    return clock.hold.need if clock.hold is not None else 0

