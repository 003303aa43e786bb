"""`adaptive` (the default): capacity from the arrival rate, held in proportion to what a replica start costs and
to the bursts already seen; built to hold the SLO on every trace family rather than to win on one.

What it copies, and from where:
- Knative KPA: a stable need and a panic need; panic (the fleet is behind: requests queue, or the latest
  need is at least `panic_threshold` x the ready replicas) scales up at once and never scales down while it
  lasts (KPA's rule against churn); it ends only after a calm stable window.
- Kubernetes HPA `behavior`: scale-up has no stabilisation window, scale-down takes the highest
  recommendation of a window (`stabilizationWindowSeconds`, default 300 s) and is rate-limited (HPA's
  scale-down `policies`; here one step per `downscale_step_s`, of at most half the surplus).
- Ray Serve's default (`queue`): a long downscale delay (600 s) against flapping; here the delay is not a
  constant but scales with the replica start time and the burstiness seen.

Why hold longer when starts are slow and traffic is bursty: a released replica is only worth releasing if
the demand does not come back within a start time; otherwise every request of the burst that arrives
before the new replica is ready misses the objective, and no later scaling can win them back. So:

- steady need: square-root staffing / Erlang C on the rate (shared with `slo`), times
  (1 + `headroom_per_start` x start time), so a slower start keeps more spare capacity for growth during it;
- the miss budget spent evenly in time (`miss_target`): the objective counts requests, so a second at a low
  rate can miss a larger share of its few requests for the same late requests per second. Below the mean rate
  seen over `memory_s`, the steady need lets `lull_miss` x that mean rate requests per second wait too long
  (never more than `max_miss` of them, never less than `target_miss`): bursty's lulls at 20 req/s (mean 65)
  are served by one replica, 1.1 % late, instead of two. Fast rises are still judged against what the
  per-request target holds (judged against the leaner lull, more jumps count as rises: heavy +6 % replica-s);
- burst memory: a *fast rise* is a rate increase within about one start time (plus the metrics lag) that is
  larger than the spare capacity held then, i.e. a burst faster than a start. It is confirmed on a second
  push, or at once when requests already queue (more than one per ready replica). Their times are kept for
  `memory_s`;
- first reaction to a rise: the rate is projected along its slope over half the metrics lag plus one start
  (what is asked now serves a start later; at most `max_growth` x), and the backlog the ready replicas
  pile up meanwhile is asked for too, drained within `drain_s` (KPA's panic, sized by the start);
- hold window (scale-down stabilisation): `hold_starts` x start time, at least `min_hold_s`; after a fast
  rise, what it needed is kept until `rise_hold_starts` start times after it (a burst tends to come back,
  and a miss costs what arrives during a start; a long plateau that ends is not a burst, so a step down is
  released after the short hold); once fast rises recur, `recurring_hold`: the mean gap between them x
  ln(the requests a missed burst costs / the miss budget per mean gap), i.e. proportional to the burst
  period seen and growing with the start cost and the bursts' size (Poisson recurrence; see there),
  never shorter than `burst_gap_factor` x the longest gap seen, capped at `memory_s`. Smooth traffic (no
  fast rises) keeps a short hold and pays little; bursty traffic keeps its peak capacity, because
  releasing it loses the SLO.
- periodic bursts: when the burst onsets recur on a clock, a burst's capacity is asked a start ahead of
  it and released a short hold after it instead of held through every lull (`_burst_clock`: the onsets,
  the test for a clock, the anticipation and the burst hold; this policy feeds it and obeys it);
- the first burst of a kind cannot be served: no policy without foresight has capacity for a burst that
  rises faster than a replica starts plus the metrics lag (see `bound.references`); this policy makes
  sure it is the only one.

Settings measured and left out (4.43 s start, seven trace families): standing headroom in proportion to
the start time (`headroom_per_start` 0.05-0.1/s) costs 29-38 % more replica-seconds on step and spike and does not lift
spike (it raises the capacity a rise must pass to be seen); projecting the first push of any significant
jump (before a rise is confirmed) gains 0.03 points on spike and flaps on bursty (179 actions); so neither.
`rise_hold_starts` below 150 (100 reaches 1.29x the fair bound on spike, but loses 0.27-0.85 points on
three of seven other mmpp draws, e.g. trace seed 6: 99.23 -> 98.38 %). Past the short hold, keeping only the
capacity that keeps up with the held peak (its Erlang need at a miss share of 1, i.e. the queue does not grow, or
of 0.1) instead of its SLO need: spike 11,196 -> 10,617 replica-s (1.43x -> 1.36x, attainment unchanged), but mmpp
falls from 99.26 % to 98.88 % (98.96 % at 0.1); so not. (For the clock's: `_burst_clock`.)

Pure: `(Observation, AdaptiveConfig, state) -> (replicas, state)`; the state is a JSON-able dict (the
clock's keys beside the policy's). The arrival rate must be a recent one (as the simulator's: Ray's
look-back average of per-push rates): a rate already averaged over a burst's length ramps up too slowly
for a burst's onset to be seen, and the clock is never learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optiserve.errors import UserError

from . import _burst_clock as burst_clock
from ._base import Observation
from .slo import SloPolicyConfig, burst_need, steady_need


@dataclass(frozen=True)
class AdaptiveConfig(SloPolicyConfig):
    target_miss: float = 0.005  # leaves half of a 1 % miss budget to transitions (bursts, starts)
    lull_miss: float = 0.01  # below the mean rate: late requests per second up to this x the mean rate ...
    max_miss: float = 0.03  # ... but at most this share of the requests (see `miss_target`)
    headroom_per_start: float = 0.0  # standing spare capacity per second of start time (0.01: +10 % at 10 s)
    min_hold_s: float = 60.0  # shortest scale-down stabilisation window (KPA's stable window)
    hold_starts: float = 6.0  # ... and at least this many replica start times
    rise_hold_starts: float = 150.0  # after a fast rise, hold its need until this many start times after it ...
    burst_gap_factor: float = 1.5  # ... and, once they recur, see `recurring_hold`, at least this x the longest gap
    max_growth: float = 3.0  # in a rise, the rate is extrapolated over the metrics lag, at most this x
    memory_s: float = 1800.0  # how long a fast rise is remembered (and the longest hold)
    rise_lag_s: float = 6.0  # metrics lag added to the start time when looking for fast rises
    bucket_s: float = 2.0  # rate history resolution (one metrics push)
    panic_threshold: float = 2.0  # KPA: panic when the latest need >= this x the ready replicas
    downscale_step_s: float = 10.0  # at most one scale-down step per this many seconds ...
    downscale_fraction: float = 0.5  # ... removing at most this share of the surplus (at least one)
    look_back_period_s: float = 4.0
    # Periodic bursts (see `_burst_clock`): anticipated instead of held through the lulls.
    periodic_min_gaps: int = 3  # at least this many gaps between fast rises (4 rises) ...
    periodic_gaps: int = 8  # ... judged over the latest this many gaps ...
    periodic_max_cv: float = 0.1  # ... whose coefficient of variation is at most this
    periodic_jitter_k: float = 3.0  # asked this many standard deviations of the gap early (at least one push)
    periodic_hold_starts: float = 1.0  # a periodic burst's capacity is kept this many starts after it ends
    onset_ratio: float = 2.0  # a burst onset (the clock's marks, see `_burst_clock.onset_level`): >= this x the lull

    def validate(self) -> None:
        super().validate()
        if self.bucket_s <= 0 or self.memory_s <= 0 or self.burst_gap_factor < 1 or self.panic_threshold < 1:
            raise UserError("bucket_s and memory_s must be positive, burst_gap_factor and panic_threshold >= 1.")
        if not 0 < self.downscale_fraction <= 1:
            raise UserError("downscale_fraction must lie in (0, 1].")
        if not 0 < self.lull_miss < 1 or not self.target_miss <= self.max_miss < 1:
            raise UserError("lull_miss must lie in (0, 1) and max_miss in [target_miss, 1).")
        if self.onset_ratio <= 1:
            raise UserError("onset_ratio must be above 1.")
        if self.periodic_min_gaps < 2 or self.periodic_gaps < self.periodic_min_gaps:
            raise UserError("periodic_min_gaps must be at least 2 and periodic_gaps at least periodic_min_gaps.")


def _hold_window(cfg: AdaptiveConfig, start_s: float, rises: list, t: float, peaks: list) -> float:
    hold = max(cfg.min_hold_s, cfg.hold_starts * start_s)
    since = t - rises[-1] if rises else None
    if since is not None and since <= min(cfg.rise_hold_starts * start_s, cfg.memory_s):
        hold = max(hold, since)  # keep what the last fast rise needed until rise_hold_starts starts after it
    if len(rises) >= 2:
        hold = max(hold, min(recurring_hold(cfg, start_s, rises, peaks), cfg.memory_s))
    return hold


def recurring_hold(cfg: AdaptiveConfig, start_s: float, rises: list, peaks: list) -> float:
    """How long to keep a recurring burst's capacity after it: ḡ ln(L / (ḡ B)), at least the longest gap seen.

    Bursts recur with mean gap ḡ; taken as Poisson (exponential gaps, the memoryless worst case), capacity
    released H after a burst misses the next one with probability e^(-H/ḡ). A miss costs L = peak rate x
    (start + metrics lag) late requests (all that arrive before a new replica serves); the budget for such
    misses is B = target_miss x the mean rate (late requests per second). Holding until the expected
    missed requests per second, L e^(-H/ḡ) / ḡ, fall to B gives H = ḡ ln(L / (ḡ B)): proportional to the
    burst period seen, growing with the start cost and with the bursts' size over the mean. Never shorter
    than `burst_gap_factor` x the longest gap already seen (a lull that long was seen to end in a burst).
    """
    gaps = [b - a for a, b in zip(rises, rises[1:], strict=False)]
    mean_gap = max(sum(gaps) / len(gaps), 1e-9)
    peak = max((p[1] for p in peaks), default=0.0)
    miss = peak * (start_s + cfg.rise_lag_s)
    budget = cfg.target_miss * _mean_rate(peaks)
    poisson = mean_gap * math.log(miss / (mean_gap * budget)) if budget > 0 and miss > mean_gap * budget else 0.0
    return max(poisson, cfg.burst_gap_factor * max(gaps))


def _mean_rate(peaks: list) -> float:
    """The mean measured rate over the memory, from the per-minute [start, max, sum, n] records."""
    n = sum(p[3] for p in peaks)
    return sum(p[2] for p in peaks) / n if n else 0.0


def miss_target(cfg: AdaptiveConfig, rate: float, mean_rate: float) -> float:
    """The share of requests the steady need may let wait too long at `rate`: `target_miss`, or below the mean
    rate seen, `lull_miss` x mean_rate late requests per second (at most `max_miss` of them): the objective
    counts requests, and a lull has few."""
    if rate <= 0.0 or rate >= mean_rate:
        return cfg.target_miss
    return min(cfg.max_miss, max(cfg.target_miss, cfg.lull_miss * mean_rate / rate))


def _need(cfg: AdaptiveConfig, obs: Observation, rate: float, headroom: float, mean_rate: float = 0.0) -> int:
    if cfg.capacity_rps_per_replica is None:  # no capacity model: ongoing requests / 2 per replica
        return math.ceil(obs.ongoing_requests * (1.0 + headroom) / cfg.fallback_ongoing_per_replica - 1e-9)
    # steady_need adds cfg.headroom on top; mean_rate 0: the per-request target
    return steady_need(cfg, rate * (1.0 + headroom), miss_target(cfg, rate, mean_rate))


def adaptive_policy(obs: Observation, cfg: AdaptiveConfig, state: dict) -> tuple[int, dict]:
    t, rate, start_s = obs.time_s, max(obs.arrival_rate_rps, 0.0), obs.replica_start_s
    # The observation changes once per metrics push; between pushes only the clock moves, so a full
    # evaluation at most every 0.5 s is enough (and keeps a one-hour simulation fast).
    key = [rate, obs.queued_requests, obs.ongoing_requests, obs.current_replicas, obs.target_replicas]
    if state.get("key") == key and t - state.get("eval_s", -1e9) < 0.5:
        return obs.clamp(state["desired"]), state
    cap = cfg.capacity_rps_per_replica or 1.0
    headroom = cfg.headroom_per_start * start_s

    # Rate history: [bucket_start_s, max, min, sum, n] per bucket, over the fast-rise and smoothing windows.
    look = start_s + cfg.rise_lag_s
    keep = max(look, cfg.rate_window_s) + cfg.bucket_s
    hist = [list(h) for h in state.get("hist", []) if t - h[0] <= keep]
    if hist and t - hist[-1][0] < cfg.bucket_s:
        h = hist[-1]
        hist[-1] = [h[0], max(h[1], rate), min(h[2], rate), h[3] + rate, h[4] + 1]
    else:
        hist.append([t, rate, rate, rate, 1])

    # A fast rise: within one start time plus the metrics lag the rate grew past the capacity the fleet's
    # steady need held at the low point, by more than one replica: a burst faster than a start.
    rises = [r for r in state.get("rises", []) if t - r < cfg.memory_s]
    low = min(h[2] for h in hist if t - h[0] <= look)
    held_then = _need(cfg, obs, low, headroom) * cap
    # Confirmed on two successive observations, so one noisy sample is not a burst ...
    fresh = not rises or t - rises[-1] > look
    above = cfg.capacity_rps_per_replica is not None and rate > held_then and rate - low > cap and fresh
    pending = state.get("rise_pending")
    # ... or at once when the fleet already queues (more than one request waiting per ready replica): noise
    # does not build a queue at the steady need, a burst does, and each push waited costs a push of backlog.
    queueing = obs.queued_requests > max(obs.current_replicas, 1)
    confirmed = above and (queueing or (pending is not None and t - pending[0] >= cfg.bucket_s - 1e-9))
    if confirmed:
        rises.append(t)
        pending = None
    else:
        pending = (pending or [t, rate]) if above else None
    # The burst clock's onsets: every fast rise (its burst over once the rate is back under what was held
    # before it), and the jumps the held capacity absorbs.
    clock = burst_clock.mark(burst_clock.BurstClock.from_state(state), cfg, t, rate, low, look, queueing,
                             held_then if confirmed else None)

    # Highest measured rate per minute over the memory: the size recurring bursts have shown.
    # ([minute start, max, sum, n]: also the mean rate over the memory, for the miss budget.)
    peaks = [list(p) for p in state.get("peaks", []) if t - p[0] < cfg.memory_s and len(p) == 4]
    if peaks and t - peaks[-1][0] < 60.0:
        p = peaks[-1]
        peaks[-1] = [p[0], max(p[1], obs.arrival_rate_rps), p[2] + obs.arrival_rate_rps, p[3] + 1]
    else:
        peaks.append([t, obs.arrival_rate_rps, obs.arrival_rate_rps, 1])
    # Periodic bursts: anticipated (asked a start ahead of the next one, released a short hold after each)
    # while the next is not overdue; otherwise (or once overdue) the holds below keep the burst capacity.
    phase = burst_clock.phase(clock, cfg, t, start_s)
    active = phase.active
    hold_s = max(cfg.min_hold_s, cfg.hold_starts * start_s) if active else _hold_window(cfg, start_s, rises, t, peaks)
    ready = obs.current_replicas
    cur = state.get("cur", [t, obs.arrival_rate_rps])
    prev = state.get("prev", cur)
    if cur[1] != obs.arrival_rate_rps:  # a new metrics push: remember the last two rates for the slope
        prev, cur = cur, [t, obs.arrival_rate_rps]
    state = {**state, "prev": prev, "cur": cur}
    rising = bool(rises) and t - rises[-1] <= look
    # What the hold window keeps: the need of the mean rate over rate_window_s (noise does not ratchet the
    # windowed maximum up), or of the latest rate when it jumped above that mean by jump_tolerance.
    settled = burst_clock.lull_start(clock, phase)  # a periodic burst's samples are not the lull's
    recent = [h for h in hist if t - h[0] < cfg.rate_window_s and h[0] >= settled]
    mean = sum(h[3] for h in recent) / max(sum(h[4] for h in recent), 1)
    steady = _need(cfg, obs, rate if rate > mean * (1.0 + cfg.jump_tolerance) else mean, headroom, _mean_rate(peaks))
    if rising:  # the lagged mean trails a fast rise: extrapolate its slope over half the metrics lag plus a
        # start, since what is asked now serves a start later (no further than max_growth x)
        (prev_t, prev_rate), (cur_t, _) = prev, cur
        slope = (rate - prev_rate) / (cur_t - prev_t) if cur_t > prev_t else 0.0
        rate = min(max(rate, rate + slope * (cfg.rise_lag_s / 2 + start_s)), max(rate, low) * cfg.max_growth)
        if len(rises) >= 2:  # recurring bursts have shown their size: do not project past it
            rate = min(rate, max(obs.arrival_rate_rps, max((p[1] for p in peaks), default=0.0)))
    need_panic, panic_state = (0, {}) if cfg.capacity_rps_per_replica is None else burst_need(obs, cfg, rate, state)
    if rising and cfg.capacity_rps_per_replica is not None and rate > cap * ready:
        # Burst faster than a start: ask now for the backlog the ready replicas will pile up until new
        # ones start, drained within drain_s (every queued request is late; a quick drain saves the next).
        backlog = obs.queued_requests + max(rate - cap * ready, 0.0) * start_s
        need_panic = max(need_panic, math.ceil(_need(cfg, obs, rate, headroom) + backlog / (cap * cfg.drain_s) - 1e-9))
    panic_until = state.get("panic_until_s")
    if need_panic > 0 or rising or (steady > ready and steady >= cfg.panic_threshold * max(ready, 1)):
        panic_until = t + start_s
    elif panic_until is not None and t >= panic_until:
        panic_until = None

    clock = burst_clock.track(clock, cfg, t, obs.arrival_rate_rps, steady)

    # Scale-down stabilisation: the highest steady need over the hold window (HPA); scale-up is immediate.
    recs = [list(r) for r in state.get("recs", []) if t - r[0] < hold_s]
    # A periodic burst's need (and what is asked ahead of it) is held apart, until a short hold after it.
    peak_need = lambda: _need(cfg, obs, max(p[1] for p in peaks), headroom)  # noqa: E731
    clock, steady, fallback = burst_clock.hold(clock, cfg, t, start_s, phase, steady, obs.target_replicas,
                                               peak_need)
    if fallback is not None:
        recs.append([t, fallback])
    if recs and t - recs[-1][0] < cfg.bucket_s:
        recs[-1][1] = max(recs[-1][1], steady)
    else:
        recs.append([t, steady])
    want = max(max(r for _, r in recs), need_panic, burst_clock.held_need(clock))

    target = obs.target_replicas
    last_down = state.get("last_down_s")
    if want < target:
        if panic_until is not None or (last_down is not None and t - last_down < cfg.downscale_step_s):
            want = target  # KPA: no scale-down in panic; HPA-style rate limit between steps
        else:
            fraction = 1.0 if active else cfg.downscale_fraction  # periodic: the next burst is asked ahead
            want = target - max(1, math.floor((target - want) * fraction))
            last_down = t
    if want < 1 and (obs.ongoing_requests > 0 or obs.queued_requests > 0 or obs.arrival_rate_rps > 0):
        want = 1  # scale from zero (min_replicas 0): requests wait at the proxy with no replica to report a rate
    desired = obs.clamp(want)
    return desired, {**panic_state, "prev": prev, "cur": cur, "hist": hist, "rises": rises, "recs": recs,
                     "peaks": peaks, "rise_pending": pending, "panic_until_s": panic_until, "last_down_s": last_down,
                     "hold_s": hold_s, "key": key, "eval_s": t, "desired": desired, **clock.to_state(),
                     "periodic": active}
