"""Output shards without Ray: a whole file scored into its shard (row numbering, atomic commit with marker,
rejects and --max-rejects, nothing left on failure), and merged rejects."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optiserve.errors import UserError
from serve.batch._plan import InputFile, describe, read_marker, shard_paths
from serve.batch._predict import Binding, TensorIO
from serve.batch._shards import ShardWriter, merge_rejects, score_file


def _rows(source, ids, reasons=None):
    n = len(ids)
    return pa.table({"source": [source] * n, "id": ids, "logits": np.arange(n, dtype=np.float32),
                     "prediction": np.zeros(n, np.int64), "_reject": reasons or [""] * n})


def _file(tmp_path, name="a.csv"):
    path = tmp_path / name
    path.write_text("x")
    return InputFile(str(path), "csv", 1, 1, name.replace(".", "_"))


LINEAR = Binding(inputs=(TensorIO("input", (2,)),), outputs=(TensorIO("logits", (2,)),), key_columns=("id",))


def _csv(tmp_path, rows):
    path = tmp_path / "a.csv"
    path.write_text("id,f0,f1\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in enumerate(rows)))
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    return describe(path), out


def test_score_file_scores_every_row_once_in_order_and_commits(tmp_path):
    file, out = _csv(tmp_path, [(1, 2), (3, "nan"), (5, 6), (7, 8), (9, 10)])
    seen = []
    marker = score_file(file, out, "sha", LINEAR, lambda feeds: [feeds["input"] * 2], batch_rows=2,
                        max_rejects=1, after_batch=seen.append)
    assert seen == [2, 4, 5]  # rows so far, after each batch of at most 2
    assert (marker.rows, marker.output_rows, marker.rejected) == (5, 4, 1) and "NaN" in marker.reasons[0]
    assert read_marker(out, file.shard_id) == marker
    table = pq.read_table(shard_paths(out, file.shard_id)["data"])
    assert table.column("row").to_pylist() == [0, 2, 3, 4] and table.column("id").to_pylist() == [0, 2, 3, 4]
    assert table.column("logits").to_pylist()[1] == [10, 12]


def test_score_file_past_max_rejects_or_failing_leaves_only_nothing(tmp_path):
    file, out = _csv(tmp_path, [(1, "nan"), (3, "nan"), (5, 6)])
    with pytest.raises(UserError, match=r"2 rows were rejected, more than --max-rejects 1 \(first reasons: NaN"):
        score_file(file, out, "sha", LINEAR, lambda feeds: [feeds["input"]], batch_rows=8, max_rejects=1)

    def broken(feeds):
        raise KeyboardInterrupt  # a cancel midway

    with pytest.raises(KeyboardInterrupt):
        score_file(file, out, "sha", LINEAR, broken, batch_rows=1, max_rejects=5)
    assert not list((out / "shards").iterdir())


def test_writer_numbers_rows_splits_rejects_and_commits_atomically(tmp_path):
    file = _file(tmp_path)
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    writer = ShardWriter(out, file, "sha", ("logits",))
    writer.write(_rows(file.path, [10, 11, 12], ["", "NaN in input", ""]))
    writer.write(_rows(file.path, [13, 14]))
    paths = shard_paths(out, file.shard_id)
    assert not paths["data"].exists() and not paths["marker"].exists()  # nothing final before commit
    marker = writer.commit()
    assert (marker.rows, marker.output_rows, marker.rejected) == (5, 4, 1)
    assert read_marker(out, file.shard_id) == marker
    table = pq.read_table(paths["data"])
    assert table.column_names == ["source", "row", "id", "logits", "prediction"]
    assert table.column("row").to_pylist() == [0, 2, 3, 4] and table.column("id").to_pylist() == [10, 12, 13, 14]
    rejects = [json.loads(line) for line in paths["rejects"].read_text().splitlines()]
    assert rejects == [{"source": file.path, "row": 1, "id": 11, "reason": "NaN in input"}]
    assert not list((out / "shards").glob("*.tmp"))


def test_abort_leaves_nothing_and_empty_inputs_still_get_a_shard(tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    file = _file(tmp_path)
    writer = ShardWriter(out, file, "sha")
    writer.write(_rows(file.path, [1, 2], ["bad", ""]))
    writer.abort()
    assert not list((out / "shards").iterdir())
    marker = ShardWriter(out, file, "sha").commit()
    assert marker.rows == 0 and pq.read_table(shard_paths(out, file.shard_id)["data"]).num_rows == 0


def test_merge_rejects_in_input_order(tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    files = [_file(tmp_path, "b.csv"), _file(tmp_path, "a.csv")]
    for file in files:
        writer = ShardWriter(out, file, "sha")
        writer.write(_rows(file.path, [1], ["why"]))
        writer.commit()
    assert merge_rejects(out, files) == 2
    lines = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [x["source"] for x in lines] == [f.path for f in files]


def test_shards_are_written_in_large_row_groups_with_dictionaries_for_text_only(tmp_path, monkeypatch):
    monkeypatch.setattr("serve.batch._shards.ROW_GROUP_ROWS", 100)
    file = _file(tmp_path)
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path, file, "sha")
    for start in (0, 60, 120):  # three model calls of 60 rows: a group once 100 are buffered, the rest at commit
        writer.write(_rows("a.csv", list(range(start, start + 60))))
    writer.commit()
    meta = pq.ParquetFile(shard_paths(tmp_path, file.shard_id)["data"]).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [120, 60]
    encodings = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j).encodings
                 for j in range(meta.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["source"])
    assert not any("DICTIONARY" in e for e in encodings["logits"] + encodings["id"])
    assert pq.read_table(shard_paths(tmp_path, file.shard_id)["data"]).column("id").to_pylist() == list(range(180))
