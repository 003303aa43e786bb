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


def test_exit_1_when_no_variant_meets_the_budget(examples_dir, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    code = main(["quantize", str(mlp / "model.pt"), "--method", "fp16", "--input-shape", "1,64",
                 "--max-accuracy-drop", "0", "--repeats", "10", "--out", str(tmp_path / "q")])
    assert code == 1
    assert "model.onnx is the fp32 export" in capsys.readouterr().out
