import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from optiserve.data import (
    DataOptions,
    InputSpec,
    bind,
    generated,
    load_dataset,
    load_npz,
    parse_input_shape,
    specs_from_data,
)
from optiserve.errors import UserError


def test_load_and_bind_single_input(tmp_path):
    np.savez(tmp_path / "d.npz", whatever=np.zeros((5, 64)), labels=np.arange(5))
    data = bind(load_npz(tmp_path / "d.npz"), [InputSpec("x", (64,))])
    assert list(data.inputs) == ["x"] and data.inputs["x"].dtype == np.float32 and len(data) == 5


@pytest.mark.parametrize(
    "arrays, message",
    [({"inputs": np.zeros((0, 64))}, "empty"), ({"labels": np.arange(3)}, "no input arrays"),
     ({"inputs": np.zeros((4, 64)), "labels": np.arange(3)}, "different numbers")],
)
def test_bad_npz_files_are_explained(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_npz(tmp_path / "d.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(UserError, match="not a readable"):
        load_npz(tmp_path / "d.npz")


def test_shape_mismatch_names_both_shapes(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 1, 8, 8)))
    with pytest.raises(UserError, match=r"\(1, 8, 8\).*\(64,\)"):
        bind(load_npz(tmp_path / "d.npz"), [InputSpec("x", (64,))])


def test_parse_input_shape():
    assert parse_input_shape("1,64") == InputSpec("input", (64,))
    assert parse_input_shape("x=8x1x8x8") == InputSpec("x", (1, 8, 8))
    for bad in ("64", "a,b", ""):
        with pytest.raises(UserError):
            parse_input_shape(bad)


def test_generated_is_seeded():
    a, b = generated([InputSpec("x", (3,))], 4), generated([InputSpec("x", (3,))], 4)
    assert np.array_equal(a.inputs["x"], b.inputs["x"]) and a.inputs["x"].shape == (4, 3)


# --- naming conventions, overrides, tabular files, messages (issue 13) ---

X = np.arange(5 * 4, dtype=np.float64).reshape(5, 4)
Y = np.array([0, 1, 2, 1, 0])
SPEC = [InputSpec("input", (4,))]


@pytest.mark.parametrize("label", ["y", "Y", "label", "labels", "LABELS", "target", "Targets", "class", "Class"])
@pytest.mark.parametrize("name", ["x", "X", "features", "inputs", "pixels"])
def test_npz_label_names_and_any_single_input_name(tmp_path, name, label):
    np.savez(tmp_path / "d.npz", **{name: X, label: Y})
    data = bind(load_dataset(tmp_path / "d.npz", "eval data"), SPEC)
    assert list(data.inputs) == ["input"] and data.inputs["input"].dtype == np.float32
    assert np.array_equal(data.inputs["input"], X) and np.array_equal(data.labels, Y) and data.labels.dtype == np.int64


def test_npz_without_labels_and_label_shapes(tmp_path):
    np.savez(tmp_path / "a.npz", X=X)
    assert load_dataset(tmp_path / "a.npz").labels is None
    np.savez(tmp_path / "b.npz", X=X, y=Y.reshape(5, 1).astype(np.float32))  # column vector of floats
    assert load_dataset(tmp_path / "b.npz").labels.tolist() == Y.tolist()
    np.savez(tmp_path / "c.npz", X=X, y=np.eye(3)[Y])  # one-hot rows
    assert load_dataset(tmp_path / "c.npz").labels.tolist() == Y.tolist()


@pytest.mark.parametrize("labels, message", [
    (np.array(["cat", "dog", "cat", "dog", "cat"]), "encode them as integers"),
    (np.array([0.5, 1, 2, 1, 0]), "not whole numbers"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", X=X, y=labels)
    with pytest.raises(UserError, match=message):
        load_dataset(tmp_path / "d.npz")


def test_several_label_like_arrays_need_a_choice(tmp_path):
    np.savez(tmp_path / "d.npz", X=X, y=Y, target=Y)
    with pytest.raises(UserError, match=r"several label-like arrays \['y', 'target'\].*--labels NAME"):
        load_dataset(tmp_path / "d.npz")
    data = load_dataset(tmp_path / "d.npz", options=DataOptions(labels="target"))
    assert list(data.inputs) == ["X", "y"] and np.array_equal(data.labels, Y)  # `y` is then just another array
    np.savez(tmp_path / "e.npz", inputs=X, labels=Y, y=Y)  # the historic `labels` name wins
    assert list(load_dataset(tmp_path / "e.npz").inputs) == ["inputs", "y"]


def test_inputs_and_labels_override_the_guessing(tmp_path):
    np.savez(tmp_path / "d.npz", a=X, b=X * 2, y=Y, truth=Y[::-1])
    options = DataOptions.from_flags(["input=b"], "truth")
    data = bind(load_dataset(tmp_path / "d.npz", options=options), SPEC)
    assert np.array_equal(data.inputs["input"], X * 2) and np.array_equal(data.labels, Y[::-1])
    # an array named like labels is an input when --inputs says so
    data = load_dataset(tmp_path / "d.npz", options=DataOptions.from_flags(["input=y"], "truth"))
    assert np.array_equal(data.inputs["input"], Y)
    # a named label array absent from a file: that file is read as unlabelled (calibration files often are)
    np.savez(tmp_path / "calib.npz", a=X)
    assert load_dataset(tmp_path / "calib.npz", options=DataOptions(labels="truth")).labels is None
    with pytest.raises(UserError, match=r"no array\(s\) \['nope'\] named by --inputs.*arrays a \(5, 4\)"):
        load_dataset(tmp_path / "d.npz", options=DataOptions.from_flags(["input=nope"]))


def test_several_inputs_by_name_any_case(tmp_path):
    np.savez(tmp_path / "d.npz", IDS=X, Mask=X[:, :2], labels=Y)
    data = bind(load_dataset(tmp_path / "d.npz"), [InputSpec("ids", (4,)), InputSpec("mask", (2,))])
    assert list(data.inputs) == ["ids", "mask"] and data.inputs["mask"].shape == (5, 2)


def test_data_options_flags_and_dict():
    assert DataOptions.from_flags(["a=X", " b = c1,c2 "], "y") == DataOptions((("a", "X"), ("b", "c1,c2")), "y")
    assert DataOptions.from_flags(None, None, "f1, f2,") == DataOptions(feature_columns=("f1", "f2"))
    assert DataOptions.from_flags() == DataOptions()
    for bad in (["a"], ["=X"], ["a="]):
        with pytest.raises(UserError, match="INPUT=ARRAY"):
            DataOptions.from_flags(bad)
    with pytest.raises(UserError, match="more than once"):
        DataOptions.from_flags(["a=X", "a=Y"])
    with pytest.raises(UserError, match="only one of them"):
        DataOptions.from_flags(["a=X"], None, "f1")
    assert DataOptions.from_dict({"inputs": {"a": "X"}, "labels": "y"}) == DataOptions((("a", "X"),), "y")
    assert DataOptions.from_dict({"feature_columns": "f1,f2"}) == DataOptions(feature_columns=("f1", "f2"))
    with pytest.raises(UserError, match="unknown"):
        DataOptions.from_dict({"label": "y"})


def _table(**extra) -> pa.Table:
    columns = {"f0": X[:, 0], "f1": X[:, 1], "Target": Y, "f2": X[:, 2], "f3": X[:, 3]}
    return pa.table({**columns, **extra})


def _write(table: pa.Table, path):
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pcsv.write_csv(table, path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tabular_feature_columns_in_file_order(tmp_path, suffix):
    path = _write(_table(), tmp_path / f"d{suffix}")
    data = load_dataset(path, "eval data")
    assert data.tabular and data.inputs["features"].dtype == np.float32
    assert np.array_equal(data.inputs["features"], X) and np.array_equal(data.labels, Y)
    assert "4 feature column(s) f0, f1, f2, f3 and label column 'Target'" in data.found
    assert np.array_equal(bind(data, SPEC).inputs["input"], X)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tabular_feature_and_label_columns_given(tmp_path, suffix):
    path = _write(_table(kind=Y + 10), tmp_path / f"d{suffix}")
    options = DataOptions.from_flags(labels="kind", feature_columns="f3,f0")
    data = load_dataset(path, options=options)
    assert np.array_equal(data.inputs["features"], X[:, [3, 0]]) and np.array_equal(data.labels, Y + 10)
    options = DataOptions.from_flags(["a=f0,f1", "b=Target"], "kind")  # columns split between two inputs
    data = bind(load_dataset(path, options=options), [InputSpec("a", (2,)), InputSpec("b", ())])
    assert data.inputs["a"].shape == (5, 2) and np.array_equal(data.inputs["b"], Y)
    with pytest.raises(UserError, match=r"no column\(s\) \['nope'\].*f0, f1, Target"):
        load_dataset(path, options=DataOptions(feature_columns=("f0", "nope")))


def test_tabular_rows_fill_an_image_input_and_tsv(tmp_path):
    pixels = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    table = pa.table({f"p{i}": pixels[:, i] for i in range(64)} | {"label": [1, 2, 3]})
    pcsv.write_csv(table, tmp_path / "d.tsv", pcsv.WriteOptions(delimiter="\t"))
    data = bind(load_dataset(tmp_path / "d.tsv"), [InputSpec("x", (1, 8, 8))])
    assert np.array_equal(data.inputs["x"], pixels.reshape(3, 1, 8, 8)) and data.labels.tolist() == [1, 2, 3]


def test_csv_without_a_header_row(tmp_path):
    (tmp_path / "d.csv").write_text("0.5,1,2\n1.5,3,0\n")
    data = load_dataset(tmp_path / "d.csv", options=DataOptions(labels="f2"))
    assert data.inputs["features"].tolist() == [[0.5, 1], [1.5, 3]] and data.labels.tolist() == [2, 0]


def test_tabular_problems_are_explained(tmp_path):
    path = _write(_table(name=["a", "b", "c", "d", "e"]), tmp_path / "text.csv")
    with pytest.raises(UserError, match="column 'name' of type string, not numbers; leave it out with "
                                        "--feature-columns"):
        load_dataset(path)
    (tmp_path / "gaps.csv").write_text("f0,f1,y\n1,2,0\n3,,1\n")
    with pytest.raises(UserError, match="1 missing value.*'f1'"):
        load_dataset(tmp_path / "gaps.csv")
    (tmp_path / "two.csv").write_text("f0,label,y\n1,2,0\n")
    with pytest.raises(UserError, match="several label-like columns.*--label-column"):
        load_dataset(tmp_path / "two.csv")
    (tmp_path / "empty.csv").write_text("f0,y\n")
    with pytest.raises(UserError, match="no rows"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="not a readable table"):
        load_dataset(tmp_path / "broken.parquet")


def test_no_match_message_lists_found_and_needed_and_the_flag(tmp_path):
    np.savez(tmp_path / "d.npz", features=X[:, :3], idx=np.arange(5), target=Y)
    specs = [InputSpec("input", (4,))]
    with pytest.raises(UserError) as exc:
        bind(load_dataset(tmp_path / "d.npz", "calibration data"), specs)
    msg = str(exc.value)
    assert msg.startswith("calibration data file ") and msg.count(";") == 1 and "\n" not in msg
    for part in ("arrays features (5, 3), idx (5,)", "labels 'target'", "5 samples",
                 "input 'input' of shape (4,)", "--inputs INPUT=ARRAY", "--labels ARRAY"):
        assert part in msg
    with pytest.raises(UserError, match=r"needs input 'x';.*--inputs"):  # a model that records names only
        specs_from_data(load_dataset(tmp_path / "d.npz"), ["x"])
    path = _write(_table(), tmp_path / "d.csv")
    with pytest.raises(UserError) as exc:
        bind(load_dataset(path, "evaluation data"), [InputSpec("x", (64,))])
    msg = str(exc.value)
    for part in ("4 feature column(s) f0, f1, f2, f3", "label column 'Target'", "input 'x' of shape (64,)",
                 "--feature-columns", "--label-column"):
        assert part in msg


def test_specs_from_data_names_the_single_input(tmp_path):
    np.savez(tmp_path / "d.npz", X=X, y=Y)
    assert specs_from_data(load_dataset(tmp_path / "d.npz"), ["input"]) == [InputSpec("input", (4,))]
    assert specs_from_data(load_dataset(tmp_path / "d.npz")) == [InputSpec("X", (4,))]


def test_unknown_format(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(UserError, match=r"not a readable \.npz of arrays, CSV or Parquet"):
        load_dataset(tmp_path / "d.txt")
