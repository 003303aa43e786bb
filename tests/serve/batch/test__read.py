"""Reading one file as batches without Ray: every format, batch cuts, CSV without header or gzipped, tensors."""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optiserve.errors import UserError
from serve.batch._plan import describe
from serve.batch._read import read_batches

IDS, X = np.arange(10), np.arange(30, dtype=np.float32).reshape(10, 3)


def _batches(path, rows=4):
    return list(read_batches(describe(path), rows))


def _check(batches, columns, sizes=(4, 4, 2)):
    assert [len(b["path"]) for b in batches] == list(sizes)
    joined = {c: np.concatenate([b[c] for b in batches]) for c in columns}
    assert {str(p) for b in batches for p in b["path"]} == {batches[0]["path"][0]}
    return joined


@pytest.mark.parametrize("name", ["a.parquet", "a.csv", "a.csv.gz"])
def test_tables_in_order_with_at_most_rows_per_batch(tmp_path, name):
    table = pa.table({"id": IDS, **{f"f{j}": X[:, j] for j in range(3)}})
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(table, path, row_group_size=3)  # batches cut across row groups too
    else:
        text = "id,f0,f1,f2\n" + "".join(f"{i},{a},{b},{c}\n" for i, (a, b, c) in zip(IDS, X, strict=True))
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    batches = _batches(path)
    joined = _check(batches, ["id", "f0", "f2"], sizes=[len(b["id"]) for b in batches])
    assert max(len(b["id"]) for b in batches) <= 4 and sum(len(b["id"]) for b in batches) == 10
    assert joined["id"].tolist() == IDS.tolist() and np.allclose(joined["f2"], X[:, 2])
    assert batches[0]["path"][0] == str(path.resolve())


def test_csv_without_header_gets_positional_names(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in X))
    joined = _check(_batches(path, rows=10), ["f0", "f1", "f2"], sizes=(10,))
    assert np.allclose(joined["f1"], X[:, 1])


def test_npy_and_npz_are_sliced_and_tensors_keep_their_shape(tmp_path):
    np.save(tmp_path / "a.npy", X.reshape(10, 3, 1))
    joined = _check(_batches(tmp_path / "a.npy"), ["data"])
    assert joined["data"].shape == (10, 3, 1)
    np.savez(tmp_path / "b.npz", id=IDS, x=X)
    joined = _check(_batches(tmp_path / "b.npz"), ["id", "x"])
    assert joined["x"].tolist() == X.tolist()
    np.savez(tmp_path / "c.npz", id=IDS, x=X[:5])
    with pytest.raises(UserError, match="different numbers of rows"):
        _batches(tmp_path / "c.npz")


def test_list_columns_fixed_size_as_2d_and_ragged_as_objects(tmp_path):
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 3)
    pq.write_table(pa.table({"id": IDS, "x": fixed, "ragged": [list(range(i % 3)) for i in IDS]}),
                   tmp_path / "a.parquet")
    batch = _batches(tmp_path / "a.parquet", rows=10)[0]
    assert batch["x"].shape == (10, 3) and batch["x"].tolist() == X.tolist()
    assert batch["ragged"].dtype == object and [len(r) for r in batch["ragged"]] == [i % 3 for i in IDS]
