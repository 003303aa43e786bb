"""Input discovery and shard planning: formats, folders, stable shard ids, complete vs stale shards."""

import os

import numpy as np
import pytest

from optiserve.errors import UserError
from serve.batch._plan import (
    Marker,
    atomic_write_text,
    discover,
    expected_rows,
    plan,
    prepare,
    shard_id,
    shard_paths,
)


def _data(tmp_path, helpers_write):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    ids, x = np.arange(4), np.ones((4, 64), np.float32)
    for name in ("a.parquet", "sub/b.csv", "c.npz", "d.npy", ".hidden/e.npy", "_f.npy"):
        helpers_write(folder / name, ids, x)
    (folder / "notes.txt").write_text("not data")
    return folder


def _write(path, ids, x):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.name.endswith(".npy"):
        np.save(path, x)
    elif path.name.endswith(".npz"):
        np.savez(path, id=ids, x=x)
    elif path.name.endswith(".parquet"):
        pq.write_table(pa.table({"id": ids, "f0": x[:, 0]}), path)
    else:
        path.write_text("id,f0\n" + "".join(f"{i},{v}\n" for i, v in zip(ids, x[:, 0], strict=True)))
    return path


def test_discover_folders_recursively_skipping_hidden_and_unknown(tmp_path):
    folder = _data(tmp_path, _write)
    files = discover([str(folder)])
    assert [f.name for f in files] == ["a.parquet", "c.npz", "d.npy", "b.csv"]
    assert [f.format for f in files] == ["parquet", "npz", "npy", "csv"]
    assert all(os.path.isabs(f.path) for f in files)
    again = discover([str(folder / "a.parquet"), str(folder)])  # named twice: counted once
    assert len(again) == 4 and again[0].name == "a.parquet"


def test_discover_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no input files found"):
        discover([str(tmp_path / "empty")])
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UserError, match="not a .parquet"):
        discover([str(tmp_path / "x.txt")])


def test_csv_layout_and_expected_rows(tmp_path):
    (tmp_path / "h.csv").write_text("id,a\n1,2\n")
    (tmp_path / "n.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "t.tsv").write_text("a\tb\n1\t2\n")
    by_name = {f.name: f for f in discover([str(tmp_path)])}
    assert by_name["h.csv"].header and not by_name["n.csv"].header and by_name["n.csv"].ncols == 3
    assert by_name["t.tsv"].delimiter == "\t"
    assert expected_rows(by_name["h.csv"]) is None
    _write(tmp_path / "p.parquet", np.arange(5), np.ones((5, 1)))
    np.save(tmp_path / "q.npy", np.ones((7, 3)))
    files = {f.name: f for f in discover([str(tmp_path)])}
    assert expected_rows(files["p.parquet"]) == 5 and expected_rows(files["q.npy"]) == 7


def test_shard_ids_are_stable_and_distinct():
    assert shard_id("/a/b/x.parquet") == shard_id("/a/b/x.parquet")
    assert shard_id("/a/b/x.parquet") != shard_id("/a/c/x.parquet")
    assert shard_id("/a/we ird$name.csv").startswith("we_ird_name.csv-")


def _complete(out, file, sha="m1"):
    paths = shard_paths(out, file.shard_id)
    paths["data"].parent.mkdir(parents=True, exist_ok=True)
    paths["data"].write_bytes(b"x")
    atomic_write_text(paths["marker"], Marker(file.shard_id, file.path, file.size, file.mtime_ns, sha, 4, 4,
                                              0).to_json())


def test_plan_skips_complete_shards_and_redoes_stale_ones(tmp_path):
    folder = _data(tmp_path, _write)
    out = tmp_path / "out"
    files = discover([str(folder)])
    assert plan(files, out, "m1").pending == files
    for f in files[:3]:
        _complete(out, f)
    result = plan(files, out, "m1")
    assert [f for f, _ in result.complete] == files[:3] and result.pending == files[3:]
    assert plan(files, out, "other-model").pending == files  # another model: every shard is redone
    os.utime(files[0].path, ns=(files[0].mtime_ns + 10**9, files[0].mtime_ns + 10**9))
    changed = plan(discover([str(folder)]), out, "m1")
    assert files[0].path in {f.path for f in changed.pending}  # the input changed since its shard was written


def test_prepare_clears_partial_and_stale_outputs_only_of_pending_shards(tmp_path):
    folder = _data(tmp_path, _write)
    out = tmp_path / "out"
    files = discover([str(folder)])
    for f in files:
        _complete(out, f)
    (out / "shards" / "x.parquet.tmp").write_bytes(b"partial")
    prepare(out, files[1:2])
    assert not (out / "shards" / "x.parquet.tmp").exists()
    assert not shard_paths(out, files[1].shard_id)["marker"].exists()
    assert not shard_paths(out, files[1].shard_id)["data"].exists()
    assert shard_paths(out, files[0].shard_id)["marker"].exists()


def test_a_large_parquet_file_is_cut_into_shards_of_whole_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from serve.batch._plan import describe, split
    from serve.batch._read import read_batches

    pq.write_table(pa.table({"id": np.arange(500)}), tmp_path / "big.parquet", row_group_size=100)
    whole = describe(tmp_path / "big.parquet")
    parts = split(whole, part_rows=150)
    assert [(p.row_groups, p.first_row) for p in parts] == [((0, 2), 0), ((2, 4), 200), ((4, 5), 400)]
    assert len({p.shard_id for p in parts}) == 3 and all(p.shard_id.startswith(whole.shard_id) for p in parts)
    assert [expected_rows(p) for p in parts] == [200, 200, 100]
    ids = [b["id"].tolist() for b in read_batches(parts[1], 1000)]
    assert ids == [list(range(200, 400))]
    assert split(whole, part_rows=500) == [whole]  # small enough: one shard
    assert split(describe(_write(tmp_path / "a.csv", np.arange(600), np.ones((600, 1)))), part_rows=10)[0].format \
        == "csv"  # only Parquet is cut


def test_a_file_cut_differently_than_before_leaves_no_old_shard_behind(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(300)}), tmp_path / "big.parquet", row_group_size=100)
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    whole = discover([str(tmp_path / "big.parquet")])
    assert len(whole) == 1
    for name in ("data", "rejects", "marker"):
        shard_paths(out, whole[0].shard_id)[name].write_text("scored whole by an earlier run")
    monkeypatch.setattr("serve.batch._plan.PART_ROWS", 150)
    parts = discover([str(tmp_path / "big.parquet")])
    assert len(parts) == 2
    atomic_write_text(shard_paths(out, parts[0].shard_id)["marker"], "complete part")  # kept: in `keep`
    prepare(out, parts[1:], keep={parts[0].shard_id})
    assert [p.name for p in (out / "shards").iterdir()] == [f"{parts[0].shard_id}.done.json"]
