"""BatchSummary: totals from completion markers, JSON round trip, one-line rendering."""

from serve.batch import BatchSummary
from serve.batch._plan import Marker
from serve.batch.summary import build


def test_build_from_markers_round_trip_and_line():
    markers = [Marker("a", "/a", 1, 1, "s", 10, 9, 1), Marker("b", "/b", 1, 1, "s", 5, 5, 0)]
    summary = build(model="m", version="2", model_sha256="s", output="out", shards=3, markers=markers, skipped=1,
                    written=1, rows_this_run=5, elapsed_s=2.0, failures=[], config={"batch_size": 8},
                    cluster={"nodes": 2})
    assert (summary.rows, summary.output_rows, summary.rejected, summary.rows_per_s) == (15, 14, 1, 2.5)
    assert not summary.complete  # 3 shards, 2 done
    assert BatchSummary.from_json(summary.to_json()) == summary
    assert "INCOMPLETE" in summary.line() and "15 rows" in summary.line()
    done = build(model="m", version="2", model_sha256="s", output="out", shards=2, markers=markers, skipped=1,
                 written=1, rows_this_run=5, elapsed_s=0.0, failures=[], config={}, cluster={})
    assert done.complete and done.rows_per_s == 0.0
