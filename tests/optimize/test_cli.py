import json
import subprocess
import sys

import pytest

from optimize.cli import main


def test_help_shows_examples(capsys):
    for argv in (["--help"], ["quantize", "--help"], ["example", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_usage_errors_are_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["quantize"])  # argparse: missing arguments
    assert exc.value.code == 2


def test_quantize_and_publish_end_to_end(examples_dir, tmp_path):
    """The real console script, as a user runs it: table printed, files written, version published."""
    mlp = examples_dir / "mlp"
    cmd = [sys.executable, "-m", "optimize", "quantize", str(mlp / "model.pt"), "--method", "dynamic",
           "--eval-data", str(mlp / "eval.npz"), "--out", str(tmp_path / "q"), "--repeats", "10",
           "--publish", str(tmp_path / "repo"), "--name", "digits-mlp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dynamic-int8 *" in proc.stdout and "published digits-mlp version 1" in proc.stdout
    manifest = json.loads((tmp_path / "repo/digits-mlp/1/manifest.json").read_text())
    assert manifest["report"]["chosen"] == "dynamic-int8" and manifest["inputs"][0]["shape"] == [-1, 64]


def test_batch_size_flag_reaches_the_choice(examples_dir, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    assert main(["quantize", str(mlp / "model.pt2"), "--batch-size", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    code = main(["quantize", str(mlp / "model.pt2"), "--method", "dynamic", "--batch-size", "1", "--eval-data",
                 str(mlp / "eval.npz"), "--repeats", "5", "--out", str(tmp_path / "q")])
    choice = _report(tmp_path / "q")["choice"]
    assert code in (0, 1) and choice["batch_size"] == 1 and choice["guard_batch_sizes"] == [32]


def test_exit_1_when_no_variant_meets_the_budget(examples_dir, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    code = main(["quantize", str(mlp / "model.pt"), "--method", "fp16", "--input-shape", "1,64",
                 "--max-accuracy-drop", "0", "--repeats", "10", "--out", str(tmp_path / "q")])
    assert code == 1
    assert "model.onnx is the fp32 export" in capsys.readouterr().out


# --- data files as users keep them (issue 13): x/y .npz, CSV, Parquet, --inputs/--labels ---

def test_quantize_help_shows_a_csv_example(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "--calibration-data train.csv" in out and "--label-column" in out and "--inputs INPUT=ARRAY" in out


@pytest.fixture(scope="module")
def user_data(examples_dir, tmp_path_factory):
    """The example's data saved the ways users save theirs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("user-data")
    calib, evald = (np.load(examples_dir / "mlp" / f) for f in ("calibration.npz", "eval.npz"))
    np.savez(out / "calib.npz", X=calib["inputs"], y=calib["labels"])
    np.savez(out / "eval.npz", x=evald["inputs"], y=evald["labels"])
    np.savez(out / "odd.npz", pixels=evald["inputs"], extra=evald["inputs"][:, :3], truth=evald["labels"])
    for name, data in (("calib", calib), ("eval", evald)):
        table = pa.table({f"pixel{i}": data["inputs"][:, i] for i in range(64)} | {"digit": data["labels"]})
        pcsv.write_csv(table, out / f"{name}.csv")
        pq.write_table(table, out / f"{name}.parquet")
    return out


def _report(folder):
    return json.loads((folder / "report.json").read_text())


def test_quantize_reads_x_y_npz(examples_dir, user_data, tmp_path):
    out = tmp_path / "q"
    code = main(["quantize", str(examples_dir / "mlp/model.pt"), "--method", "static", "--calibration-method",
                 "minmax", "--calibration-data", str(user_data / "calib.npz"), "--eval-data",
                 str(user_data / "eval.npz"), "--repeats", "5", "--out", str(out)])
    report = _report(out)
    assert code in (0, 1) and report["accuracy_measured"] and report["eval_samples"] == 450
    assert [v["name"] for v in report["variants"] if v["name"] == "static-int8-minmax" and not v["error"]]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_quantize_reads_tabular_files(examples_dir, user_data, tmp_path, suffix):
    out = tmp_path / "q"
    code = main(["quantize", str(examples_dir / "mlp/model.pt2"), "--method", "dynamic",
                 "--calibration-data", str(user_data / f"calib{suffix}"), "--eval-data",
                 str(user_data / f"eval{suffix}"), "--label-column", "digit", "--repeats", "5", "--out", str(out)])
    report = _report(out)
    assert code in (0, 1) and report["accuracy_measured"] and report["eval_samples"] == 450
    assert report["inputs"][0]["shape"] == [64]


def test_quantize_says_what_does_not_match_then_takes_inputs_and_labels(examples_dir, user_data, tmp_path, capsys):
    model, odd = str(examples_dir / "mlp/model.pt2"), str(user_data / "odd.npz")
    assert main(["quantize", model, "--eval-data", odd, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evaluation data file ") and err.count("\n") == 1
    for part in ("pixels (450, 64), extra (450, 3)", "no labels", "input 'x' of shape (64,)", "--inputs"):
        assert part in err
    out = tmp_path / "b"
    code = main(["quantize", model, "--method", "dynamic", "--eval-data", odd, "--inputs", "x=pixels", "--labels",
                 "truth", "--repeats", "5", "--out", str(out)])
    assert code in (0, 1) and _report(out)["accuracy_measured"]


def test_prune_and_sweep_read_the_same_layouts(examples_dir, user_data, tmp_path):
    model = str(examples_dir / "mlp/model.pt2")
    code = main(["prune", model, "--ratio", "0.25", "--eval-data", str(user_data / "eval.csv"), "--label-column",
                 "digit", "--finetune-data", str(user_data / "calib.csv"), "--epochs", "1", "--repeats", "5",
                 "--out", str(tmp_path / "p")])
    report = _report(tmp_path / "p")
    assert code in (0, 1) and report["accuracy_measured"] and report["finetune"]["samples"] == 256
    code = main(["sweep", model, "--executor", "serial", "--quantization", "none,dynamic", "--prune-ratios", "0",
                 "--eval-data", str(user_data / "eval.npz"), "--calibration-data", str(user_data / "calib.npz"),
                 "--repeats", "5", "--out", str(tmp_path / "s")])
    report = _report(tmp_path / "s")
    assert code in (0, 1) and report["accuracy_measured"] and report["eval_samples"] == 450
