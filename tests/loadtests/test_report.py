import base64
import csv
import re

from loadtests.capacity import SearchConfig, StepMeasurement, build_report, find_capacity
from loadtests.replicas import ReplicaSample
from loadtests.report import write_capacity_report, write_run_report
from loadtests.result import Objectives, RunConfig, build_result
from loadtests.stats import Records


def _result():
    rows = [(i * 0.05, 5.0 + (i % 7), i % 50 != 0, "" if i % 50 else "HTTP 503") for i in range(400)]
    samples = [ReplicaSample(float(t), 1 + (5 <= t < 15), starting=int(t == 4)) for t in range(20)]
    return build_result(RunConfig("http://127.0.0.1:9", "digits<mlp>", "step", 20.0), Objectives(slo_p95_ms=8.0),
                        Records.from_rows(rows), samples, 0.0, 20.0)


def _self_contained(text: str):
    assert "<script" not in text.lower()
    # every src/href is inline data, never a URL
    for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert ref.startswith("data:"), ref
    assert "http://" not in text.replace("http://127.0.0.1:9", "")


def test_run_report_is_self_contained_with_csvs(tmp_path):
    paths = write_run_report(_result(), tmp_path)
    text = paths["html"].read_text()
    _self_contained(text)
    assert "digits&lt;mlp&gt;" in text  # escaped
    assert "Verdict: FAIL" in text  # p95 of 5..11 ms misses 8 ms
    png = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text).group(1)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["timeseries"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and int(rows[0]["sent"]) == 20
    with paths["replicas"].open() as fh:
        assert [int(r["running"]) for r in csv.DictReader(fh)][4:6] == [1, 2]


def test_capacity_report(tmp_path):
    def measure(rates, step_s):
        return [StepMeasurement(r, min(r, 80), 3, 4 if r <= 60 else 90, 5, 0.0, 100) for r in rates]

    cfg = SearchConfig(slo_p95_ms=50, start_rps=10, growth=2)
    rep = build_report("mlp", cfg, [find_capacity(measure, cfg, label="cpu-1 batch 1")], peak_rps=300)
    paths = write_capacity_report(rep, tmp_path)
    text = paths["html"].read_text()
    _self_contained(text)
    assert "Recommended: <b>cpu-1 batch 1</b>" in text
    assert "capacity_rps_per_replica" in text
    assert paths["steps"].read_text().startswith("configuration,offered_rps")
