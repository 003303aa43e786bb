import hashlib

import pytest

from optiserve.errors import UserError
from serve.config import ServeConfig, load_config


def write(tmp_path, text):
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return path


def test_defaults_and_per_model_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "defaults: {max_batch_size: 8, cpus: 2}\nmodels:\n  mlp: {version: '3'}\n"))
    mlp, other = cfg.for_model("mlp"), cfg.for_model("cnn")
    assert (mlp.max_batch_size, mlp.version, mlp.intra_op_threads) == (8, "3", 2)
    assert other.version is None and load_config(None) == ServeConfig()
    assert ServeConfig.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize("text, fragment", [
    ("defaults: {max_batch_size: 0}", "max_batch_size"),
    ("defaults: {bogus: 1}", "bogus"),
    ("models: {mlp: {device: cuda}}", "gpus > 0"),
    ("models: {mlp: {gpus: 1}}", "device: cuda"),
    ("models: {'../x': {}}", "invalid"),
    ("models: {mlp: {version: '../1'}}", "invalid"),
    ("[1, 2]", "mapping"),
    ("a: [", "YAML"),
])
def test_mistakes_are_one_sentence_user_errors(tmp_path, text, fragment):
    with pytest.raises(UserError, match="config") as exc:
        load_config(write(tmp_path, text))
    assert fragment in str(exc.value)


def test_token_from_env_or_file_only_its_hash_travels(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_TOKEN", "s3cret")
    cfg = ServeConfig(auth_token_env="MS_TOKEN")
    assert cfg.token_sha256() == hashlib.sha256(b"s3cret").hexdigest()
    (tmp_path / "tok").write_text("filetoken\n")
    assert ServeConfig(auth_token_file=tmp_path / "tok").token() == "filetoken"
    monkeypatch.delenv("MS_TOKEN")
    with pytest.raises(UserError, match="not set"):
        cfg.token()
    assert ServeConfig().token_sha256() is None
