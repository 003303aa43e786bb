import json

import pytest

from autoscale.cli import main
from autoscale.profile import ModelProfile


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "profile.json"
    ModelProfile({1: 10.0, 2: 12.0, 4: 16.0}, replica_start_s=5.0, max_batch_size=4).save(path)
    return str(path)


def test_simulate_json_and_plot(profile_path, tmp_path, capsys):
    plot = tmp_path / "run.html"
    rc = main(["simulate", "--trace", "step", "--duration-s", "300", "--trace-param", "peak_rps=300",
               "--policy", "slo", "--slo-p95-ms", "50", "--profile", profile_path, "--json", "--plot", str(plot)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "slo" and out["requests"] > 1000 and out["ratio_to_bound"] >= 1.0
    assert plot.read_text().startswith("<!doctype html>") and "base64," in plot.read_text()


def test_compare_reports_every_policy_and_tuned_queue(profile_path, tmp_path, capsys):
    rc = main(["compare", "--trace", "spike,diurnal", "--duration-s", "240", "--trace-param", "peak_rps=200",
               "--profile", profile_path, "--json", "--plot", str(tmp_path / "c.png")])
    out = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and [t["trace"] for t in out["traces"]] == ["spike", "diurnal"]
    for t in out["traces"]:
        assert [r["policy"] for r in t["results"]] == ["adaptive", "queue", "target-tracking", "slo", "predictive"]
        assert t["tuned_queue"]["policy"] == "queue (tuned)" and t["best_policy"] in {
            "adaptive", "queue", "target-tracking", "slo", "predictive"}
        assert len(t["queue_sweep"]) >= 2 and t["references"]["verdict"].endswith(".")
        assert all(p["vs_tuned_queue"] > 0 and p["vs_bound"] >= 1.0 for p in t["policies"])
    assert out["replica_start_s"] == 5.0
    assert {w["policy"] for w in out["worst_case"]} == {"adaptive", "queue", "target-tracking", "slo", "predictive"}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_table_prints_worst_case_start_time_and_html(profile_path, tmp_path, capsys):
    html = tmp_path / "c.html"
    rc = main(["compare", "--trace", "bursty,csv:" + str(_rates_csv(tmp_path)), "--duration-s", "240",
               "--policies", "adaptive,slo", "--profile", profile_path, "--plot", str(html)])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert "worst case across 2 traces" in out and "assumed replica start time: 5 s" in out
    assert "reachable:" in out and "x queue tuned" in out
    text = html.read_text()
    assert "Worst case across traces" in text and "<h2>replay</h2>" in text


def _rates_csv(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text("rps\n" + "\n".join(str(20 + (i % 60 > 40) * 100) for i in range(240)) + "\n")
    return path


def test_profile_command(tiny_onnx, tmp_path):
    out = tmp_path / "p.json"
    assert main(["profile", str(tiny_onnx), "--out", str(out), "--batch-sizes", "1,8", "--repeats", "2"]) == 0
    assert sorted(ModelProfile.load(out).batch_latency_ms) == [1, 8]


@pytest.mark.parametrize("argv", [
    ["simulate", "--trace", "nope", "--duration-s", "10"],
    ["simulate", "--trace", "step", "--trace-param", "peak_rps=abc"],
    ["compare", "--policies", "queue,bogus"],
    ["simulate", "--profile", "/does/not/exist.json"],
    ["simulate", "--trace", "csv:/does/not/exist.csv"],
    ["simulate", "--trace", "csv:x.csv", "--trace-param", "rps=3"],
])
def test_user_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
