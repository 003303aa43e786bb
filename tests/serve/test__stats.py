from autoscale import metrics as m
from serve._stats import RollingStats


def test_window_rates_percentiles_and_batch_sizes():
    now = [0.0]
    stats = RollingStats(window_s=10, clock=lambda: now[0])
    for i in range(100):
        stats.arrival()
        stats.latency(float(i + 1))
    stats.batch(4)
    stats.batch(8)
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
