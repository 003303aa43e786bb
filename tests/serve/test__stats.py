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
