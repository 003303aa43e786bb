"""`modelserve batch` argument handling and its one-sentence errors (exit 2), without starting Ray."""

import pytest

from serve.cli import build_parser, main


def test_flags_parse_into_a_config_shape():
    args = build_parser().parse_args(["batch", "--repository", "r", "--model", "m", "--input", "a.parquet", "b",
                                      "--input", "c.csv", "--output", "o", "--key-columns", "id,ts",
                                      "--inputs", "input=f0,f1", "--nan", "zero", "--gpus-per-actor", "0.5"])
    assert args.input == ["a.parquet", "b", "c.csv"] and args.key_columns == "id,ts" and args.nan == "zero"
    assert args.inputs == ["input=f0,f1"] and args.gpus_per_actor == 0.5 and args.out is None


@pytest.mark.parametrize("extra, words", [
    ([], "give --output DIR"),
    (["--output", "o", "--model", "nope"], "model 'nope' is not in repository"),
    (["--output", "o", "--version", "9"], "has no version 9"),
    (["--output", "o", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--output", "o", "--inputs", "input"], "--inputs 'input' is not understood"),
])
def test_mistakes_exit_2_with_one_sentence(batch_repo, tmp_path, capsys, extra, words):
    repo, _, _ = batch_repo
    (tmp_path / "d.npy").write_bytes(b"")
    argv = ["batch", "--repository", str(repo), "--model", "lin", "--input", str(tmp_path / "d.npy"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
