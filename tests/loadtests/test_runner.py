import numpy as np
import pytest

from loadtests.bodies import make_bodies
from loadtests.runner import _align, check_loopback, run_locust
from loadtests.shapes import build_trace
from optiserve.errors import UserError

SPEC = [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com", "ftp://127.0.0.1:1", "127.0.0.1:80"])
def test_only_loopback_targets(url):
    with pytest.raises(UserError):
        check_loopback(url)


def test_loopback_accepted():
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:1") == "http://localhost:1"
    assert check_loopback("http://[::1]:1") == "http://[::1]:1"


def test_align_puts_samples_on_the_trace_clock():
    raw = [(99.0, {"running": 1}), (99.6, {"running": 2}), (100.5, {"running": 3}), (130.0, {"running": 9})]
    s = _align(raw, started=100.0, duration_s=10.0)
    assert [(x.t_s, x.running) for x in s] == [(0.0, 2), (0.5, 3)]


@pytest.mark.locust
def test_locust_follows_a_step_trace_and_records_every_request(fake_server, tmp_path):
    trace = build_trace("step", 12, {"base_rps": 10, "peak_rps": 40, "step_up_at_s": 4, "step_down_at_s": 8})
    calls = []
    run = run_locust(fake_server, "m", trace, make_bodies(SPEC, 4), tmp_path,
                     sampler=lambda: calls.append(1) or {"running": 1, "starting": 1})
    rec = run.records
    assert run.returncode == 1  # Locust signals the 503s; they are in the records, not an error here
    per_s = np.bincount(rec.start_s.astype(int), minlength=12)
    # the peak stairs carry clearly more load than the base stairs (Poisson: ~160 vs ~80 expected)
    assert per_s[4:8].sum() > 2 * per_s[:4].sum() * 0.7
    assert rec.latency_ms[rec.ok].min() >= 5.0  # exact latencies: never below the server's 5 ms
    assert set(e for e, ok in zip(rec.error, rec.ok, strict=True) if not ok) == {"HTTP 503"}
    assert 0.05 < 1 - rec.ok.mean() < 0.2  # every 10th request fails
    assert calls and run.samples and run.samples[0].t_s == 0.0 and run.samples[0].committed == 2


@pytest.mark.locust
def test_plain_locust_command_line(fake_server, tmp_path):
    """The locustfile works with plain `locust -f`: bodies from the model's metadata, trace from options."""
    import subprocess
    import sys

    from loadtests.runner import LOCUSTFILE

    record = tmp_path / "r.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", fake_server, "--model", "m",
         "--trace", "constant", "--trace-duration", "4", "--trace-params", '{"rps": 10}', "--record", str(record),
         "--only-summary"], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    lines = record.read_text().splitlines()
    assert lines[0].startswith("#start,")
    assert len(lines) > 10
    assert "/v2/models/m/infer" in proc.stdout + proc.stderr
