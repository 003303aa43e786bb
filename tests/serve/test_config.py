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
    ("models: {mlp: {batch_buckets: [1, 8, 16]}}", "ending at max_batch_size (32)"),
    ("models: {mlp: {batch_buckets: [8, 4, 32]}}", "strictly increasing"),
    ("models: {mlp: {batch_buckets: [0, 32]}}", "strictly increasing positive"),
    ("models: {mlp: {batch_buckets: []}}", "strictly increasing"),
    ("models: {mlp: {batch_buckets: on}}", '"auto", "off" or a list'),  # YAML: on is true
    ("models: {mlp: {batch_buckets: [1, x]}}", '"auto", "off" or a list'),
    ("models: {mlp: {cudnn_conv_algo_search: FAST}}", "HEURISTIC"),
    ("models: {mlp: {device: cuda, gpus: 1, arena_extend_strategy: grow}}", "kSameAsRequested"),
    ("models: {mlp: {device: cuda, gpus: 1, gpu_mem_limit: 100}}", "gpu_mem_limit"),
    ("models: {mlp: {tensorrt: true}}", "tensorrt: true needs device: cuda"),
    ("models: {mlp: {device: cuda, gpus: 0.5, device_id: 1}}", "only the 1 GPU(s) it reserved"),
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


def test_batch_buckets_auto_on_cuda_off_on_cpu_or_listed():
    from serve.config import ModelConfig

    assert ModelConfig().buckets == ()  # cpu: no per-shape cost, padding would only waste compute
    assert ModelConfig(device="cuda", gpus=0.5).buckets == (1, 2, 4, 8, 16, 32)
    assert ModelConfig(device="cuda", gpus=0.5, max_batch_size=24).buckets == (1, 2, 4, 8, 16, 24)
    assert ModelConfig(device="cuda", gpus=0.5, batch_buckets="off").buckets == ()
    assert ModelConfig(batch_buckets=[8, 32]).buckets == (8, 32)  # listed: used on any device


def test_gpu_fields_from_yaml(tmp_path):
    cfg = load_config(write(tmp_path, (
        "defaults: {max_batch_size: 64}\n"
        "models:\n"
        "  cnn: {device: cuda, gpus: 2, device_id: 1, batch_buckets: [4, 16, 64], cudnn_conv_algo_search: EXHAUSTIVE,\n"
        "        arena_extend_strategy: kSameAsRequested, gpu_mem_limit: 4294967296, tensorrt: true,\n"
        f"        tensorrt_cache: {tmp_path / 'engines'}}}\n"
        "  mlp: {batch_buckets: off}\n"
    )))
    cnn, mlp = cfg.for_model("cnn"), cfg.for_model("mlp")
    assert cnn.buckets == (4, 16, 64) and mlp.buckets == () and mlp.batch_buckets == "off"
    assert (cnn.cudnn_conv_algo_search, cnn.arena_extend_strategy, cnn.gpu_mem_limit, cnn.device_id) == (
        "EXHAUSTIVE", "kSameAsRequested", 4 << 30, 1)
    assert cnn.tensorrt and cnn.tensorrt_cache == tmp_path / "engines"
    defaults = cfg.for_model("other")
    assert (defaults.cudnn_conv_algo_search, defaults.gpu_mem_limit, defaults.tensorrt) == ("HEURISTIC", None, False)
