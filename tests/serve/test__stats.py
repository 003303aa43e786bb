from autoscale import metrics as m
from serve._stats import RollingStats


def test_window_rates_percentiles_and_batch_sizes():
    now = [0.0]
    stats = RollingStats(window_s=10, clock=lambda: now[0], rate_window_s=10)
    for i in range(100):
        stats.arrival()
        stats.latency(float(i + 1))
    stats.batch(4)
    stats.batch(8)
    now[0] = 10.0  # 100 arrivals over the 10 s rate window
    snap = stats.snapshot(queue_len=3, ongoing=5)
    assert set(snap) == set(m.ALL)
    assert snap[m.ARRIVAL_RATE_RPS] == 10.0 and snap[m.QUEUE_LEN] == 3 and snap[m.ONGOING] == 5
    assert 50 <= snap[m.LATENCY_P50_MS] <= 51 and 99 <= snap[m.LATENCY_P99_MS] <= 100
    assert snap[m.BATCH_SIZE_MEAN] == 6.0
    now[0] = 11.0  # everything ages out of the window
    later = stats.snapshot(0, 0)
    assert later[m.ARRIVAL_RATE_RPS] == 0 and later[m.LATENCY_P99_MS] == 0 and later[m.BATCH_SIZE_MEAN] == 0
    assert all(isinstance(v, float) for v in later.values())


def test_padding_cost_is_the_share_of_computed_rows_that_were_padding():
    now = [0.0]
    stats = RollingStats(window_s=10, clock=lambda: now[0])
    assert stats.padding() == {"computed_rows": 0.0, "padded_rows": 0.0, "padding_fraction": 0.0}
    stats.batch(3, padded=1)  # 3 rows padded to a bucket of 4
    stats.batch(8)
    now[0] = 5.0
    stats.batch(5, padded=3)
    assert stats.padding() == {"computed_rows": 20.0, "padded_rows": 4.0, "padding_fraction": 0.2}
    assert stats.snapshot(0, 0)[m.BATCH_SIZE_MEAN] == 16 / 3  # the autoscaler sees request rows, not padding
    now[0] = 10.5  # the first two age out
    assert stats.padding()["padding_fraction"] == 3 / 8


def test_the_arrival_rate_is_recent_and_not_diluted_on_a_young_replica():
    now = [0.0]
    stats = RollingStats(clock=lambda: now[0])  # latencies over 30 s, the rate over the last second
    now[0] = 0.5
    for _ in range(10):
        stats.arrival()
    assert stats.snapshot(0, 0)[m.ARRIVAL_RATE_RPS] == 20.0  # 10 requests in the replica's first half second
    now[0] = 20.0
    for _ in range(4):  # a lull at 4 req/s ...
        stats.arrival()
    stats.latency(5.0)
    now[0] = 20.9
    assert stats.snapshot(0, 0)[m.ARRIVAL_RATE_RPS] == 4.0
    for _ in range(40):  # ... then a burst at 40 req/s: seen within a second, not as a 30 s ramp
        stats.arrival()
    now[0] = 21.8
    snap = stats.snapshot(0, 0)
    assert snap[m.ARRIVAL_RATE_RPS] == 40.0 and snap[m.LATENCY_P50_MS] == 5.0  # the latency window is still 30 s


def test_what_ages_out_is_dropped_without_a_snapshot():
    """A deployment that does not autoscale is never asked for a snapshot: recording alone keeps memory bounded."""
    now = [0.0]
    stats = RollingStats(window_s=10, clock=lambda: now[0], rate_window_s=1)
    for i in range(20_000):  # 100 req/s for 200 s, one batch per 10 requests
        now[0] = i / 100
        stats.arrival()
        stats.latency(1.0)
        if i % 10 == 0:
            stats.batch(10)
    # at most two windows kept (pruned once a window), not 200 s worth
    assert len(stats._arrivals) <= 2 * 10 * 100 and len(stats._latencies) <= 2 * 10 * 100
    assert len(stats._batches) <= 2 * 10 * 10
    assert 99 <= stats.snapshot(0, 0)[m.ARRIVAL_RATE_RPS] <= 101  # the rate over the last second, as before
