import numpy as np
import pytest

from loadtests.bodies import bodies_from_repository, load_samples, make_bodies
from optiserve.errors import UserError


def test_random_bodies_follow_the_manifest_shapes_and_types():
    specs = [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}, {"name": "ids", "datatype": "INT64",
                                                                     "shape": [-1, 3]}]
    b = make_bodies(specs, n=3, seed=1)
    assert len(b) == 3
    x, ids = b[0]["inputs"]
    assert (x["name"], x["shape"], x["datatype"], len(x["data"])) == ("x", [1, 64], "FP32", 64)
    assert ids["shape"] == [1, 3] and all(isinstance(v, int) for v in ids["data"])
    assert make_bodies(specs, n=3, seed=1) == b  # deterministic per seed


def test_sample_rows_are_used_and_reshaped():
    samples = np.arange(5 * 64, dtype=np.float32).reshape(5, 8, 8)  # images flattened by the model's 64 input
    b = make_bodies([{"name": "x", "datatype": "FP32", "shape": [-1, 64]}], n=10, samples=samples, batch_size=2)
    for body in b:
        t = body["inputs"][0]
        assert t["shape"] == [2, 64]
        rows = np.asarray(t["data"]).reshape(2, 64)
        assert all(r[0] % 64 == 0 and r[0] / 64 < 5 for r in rows)  # real sample rows


def test_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        make_bodies([], n=1)
    with pytest.raises(UserError):
        make_bodies([{"name": "s", "datatype": "BYTES", "shape": [-1]}])
    with pytest.raises(UserError):
        load_samples(tmp_path / "missing.npz")
    with pytest.raises(UserError):
        bodies_from_repository(tmp_path, "nothing")


def test_npz_key_inputs(tmp_path):
    np.savez(tmp_path / "e.npz", inputs=np.ones((4, 64), np.float32), labels=np.zeros(4))
    assert load_samples(tmp_path / "e.npz").shape == (4, 64)
