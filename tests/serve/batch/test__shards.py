"""Output shards without Ray: runs cut by source, row numbering, atomic commit with marker, rejects."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serve.batch._plan import InputFile, read_marker, shard_paths
from serve.batch._shards import ShardWriter, merge_rejects, split_runs


def _rows(source, ids, reasons=None):
    n = len(ids)
    return pa.table({"source": [source] * n, "id": ids, "logits": np.arange(n, dtype=np.float32),
                     "prediction": np.zeros(n, np.int64), "_reject": reasons or [""] * n})


def _file(tmp_path, name="a.csv"):
    path = tmp_path / name
    path.write_text("x")
    return InputFile(str(path), "csv", 1, 1, name.replace(".", "_"))


def test_split_runs_cuts_consecutive_sources():
    table = pa.concat_tables([_rows("a", [1, 2]), _rows("b", [3]), _rows("c", [4, 5, 6])])
    assert [(s, t.num_rows) for s, t in split_runs(table)] == [("a", 2), ("b", 1), ("c", 3)]
    assert split_runs(_rows("a", [])) == []


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
