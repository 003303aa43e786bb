import numpy as np
import torch

from optimize.examples import build_example


def test_examples_are_accurate_and_complete(examples_dir):
    for name, shape in (("mlp", (64,)), ("cnn", (1, 8, 8))):
        folder = examples_dir / name
        for f in ("model.pt", "model.pt2", "calibration.npz", "eval.npz"):
            assert (folder / f).is_file(), f
        data = np.load(folder / "eval.npz")
        assert data["inputs"].shape[1:] == shape and len(data["labels"]) == len(data["inputs"])
        model = torch.jit.load(str(folder / "model.pt"))
        acc = (model(torch.from_numpy(data["inputs"])).argmax(1).numpy() == data["labels"]).mean()
        assert acc > 0.95


def test_examples_are_deterministic(tmp_path):
    a = build_example("mlp", tmp_path / "a", epochs=1)
    b = build_example("mlp", tmp_path / "b", epochs=1)
    assert a == b
    wa = torch.jit.load(str(tmp_path / "a/mlp/model.pt")).state_dict()
    wb = torch.jit.load(str(tmp_path / "b/mlp/model.pt")).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ca, cb = np.load(tmp_path / "a/mlp/calibration.npz"), np.load(tmp_path / "b/mlp/calibration.npz")
    assert np.array_equal(ca["inputs"], cb["inputs"])
