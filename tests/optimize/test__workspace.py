"""Private working folders: concurrent builds from one input never share a file, failures leave OUT intact."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from optimize._workspace import build_privately, staged
from optimize.cpu import choose_format, detect_cpu
from optimize.variants import VariantSpec, build, preprocess


def test_each_build_sees_its_own_copy_of_the_input(tmp_path):
    src = tmp_path / "pre.onnx"
    src.write_bytes(b"model")
    seen: list[Path] = []

    def fake_quantizer(private_src: Path, private_out: Path) -> None:
        # onnxruntime writes `<input>-inferred.onnx` beside its input: it must land in a private folder
        assert private_src != src and private_src.read_bytes() == b"model"
        (private_src.parent / f"{private_src.stem}-inferred.onnx").write_bytes(b"scratch")
        seen.append(private_src.parent)
        private_out.write_bytes(b"quantized")

    outs = [build_privately(src, tmp_path / f"v{i}.onnx", fake_quantizer) for i in range(3)]
    assert len(set(seen)) == 3 and all(not d.exists() for d in seen)  # private, and cleaned up
    assert [o.read_bytes() for o in outs] == [b"quantized"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre.onnx", "v0.onnx", "v1.onnx", "v2.onnx"]


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    src = tmp_path / "pre.onnx"
    src.write_bytes(b"model")

    def broken(_src, _out):
        raise RuntimeError("calibration failed")

    with pytest.raises(RuntimeError):
        build_privately(src, tmp_path / "v.onnx", broken)
    assert [p.name for p in tmp_path.iterdir()] == ["pre.onnx"]


def test_concurrent_real_builds_from_one_preprocessed_model(examples_dir, tmp_path):
    """What `optimize sweep` does on Ray: several quantizations of one pre-processed file at the same time (they
    used to race on onnxruntime's `<input>-inferred.onnx`)."""
    import numpy as np
    import onnx
    import torch

    from optiserve.data import Dataset

    module = torch.jit.load(str(examples_dir / "mlp/model.pt"))
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(module, (torch.zeros(1, 64),), str(fp32), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}})
    pre = preprocess(fp32, tmp_path / "pre.onnx")
    with np.load(examples_dir / "mlp/calibration.npz") as npz:
        calib = Dataset({"x": next(a for a in npz.values() if a.ndim == 2).astype(np.float32)})
    fmt = choose_format(detect_cpu())
    specs = [VariantSpec(f"d{i}", "dynamic", per_channel=i % 2 == 0) for i in range(4)] + \
        [VariantSpec(f"s{m}", "static", m, True) for m in ("minmax", "entropy")]
    with ThreadPoolExecutor(len(specs)) as pool:
        outs = list(pool.map(lambda s: build(s, pre, tmp_path / f"{s.name}.onnx", fmt, calib), specs))
    for out in outs:
        onnx.checker.check_model(str(out))
    assert not list(tmp_path.glob("*inferred*")) and not list(tmp_path.glob(".*"))


def test_staged_outputs_replace_the_old_ones_only_on_success(tmp_path):
    out = tmp_path / "out"
    (out / "variants").mkdir(parents=True)
    (out / "variants" / "old.onnx").write_bytes(b"old")
    (out / "report.json").write_text("old")
    with pytest.raises(RuntimeError), staged(out) as stage:
        (stage / "report.json").write_text("half")
        raise RuntimeError("the run failed midway")
    assert (out / "report.json").read_text() == "old" and (out / "variants" / "old.onnx").exists()
    with staged(out) as stage:
        (stage / "variants").mkdir()
        (stage / "variants" / "new.onnx").write_bytes(b"new")
        (stage / "report.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "variants"]
    assert [p.name for p in (out / "variants").iterdir()] == ["new.onnx"]
    assert (out / "report.json").read_text() == "new"


def test_two_runs_staging_into_one_folder_do_not_collide(tmp_path):
    out = tmp_path / "out"
    with staged(out) as a, staged(out) as b:
        assert a != b and a.parent == b.parent == out
        (a / "report.json").write_text("a")
        (b / "report.json").write_text("b")
    assert (out / "report.json").read_text() == "a"  # the run that finished last wins, whole
