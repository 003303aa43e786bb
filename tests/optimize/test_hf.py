"""The optimum path on a tiny BERT classifier built from a config and trained here: no hub access at all."""

import numpy as np
import onnx
import pytest
import torch

from optimize.choice import ANCHOR
from optimize.cli import main
from optimize.cpu import CpuInfo
from optimize.hf import is_hf_dir, preset
from optimize.quantize import QuantizeConfig, quantize
from optimize.report import QuantizeReport
from optiserve.errors import UserError

SEQ, VOCAB, MARK = 12, 64, 7


def _task(n: int, seed: int):
    """Label 1 when the marker token appears in the sequence: learnable in seconds by a tiny transformer."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, VOCAB, (n, SEQ))
    labels = rng.integers(0, 2, n)
    pos = rng.integers(1, SEQ, n)
    ids[labels == 1, pos[labels == 1]] = MARK
    ids[:, 0] = 2  # [CLS]
    return ids.astype(np.int64), labels.astype(np.int64)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, monkeypatch_module):
    from transformers import BertConfig, BertForSequenceClassification

    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config)
    ids, labels = _task(1024, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    for _ in range(3):
        for idx in torch.randperm(len(ids)).split(32):
            opt.zero_grad()
            out = model(input_ids=torch.from_numpy(ids[idx]), labels=torch.from_numpy(labels[idx]))
            out.loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("bert")
    model.eval().save_pretrained(folder / "model")
    ev_ids, ev_labels = _task(256, seed=1)
    np.savez(folder / "eval.npz", input_ids=ev_ids, attention_mask=np.ones_like(ev_ids),
             token_type_ids=np.zeros_like(ev_ids), labels=ev_labels)
    with torch.no_grad():
        acc = float((model(input_ids=torch.from_numpy(ev_ids)).logits.argmax(1).numpy() == ev_labels).mean())
    assert acc > 0.9, f"the tiny BERT did not learn the synthetic task ({acc:.2f})"
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def hf_report(bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q-bert")
    report = quantize(bert_dir / "model", out, QuantizeConfig(repeats=5), eval_path=bert_dir / "eval.npz")
    return out, report


def test_optimum_builds_o1_o3_and_int8_variants(hf_report):
    out, report = hf_report
    assert [v.name for v in report.variants] == ["pytorch", "fp32", "optimized-O1", "optimized-O2", "optimized-O3",
                                                 "dynamic-int8", ANCHOR]
    for v in report.variants:
        assert v.error is None and v.latency_b32_p50_ms > 0 and v.accuracy is not None
        if v.kind != "pytorch":
            assert (out / v.path).is_file()
    assert report.source["kind"] == "huggingface" and report.source["task"] == "text-classification"
    assert report.variant("pytorch").max_abs_diff < 1e-3  # optimum's export agrees with transformers
    int8 = report.variant("dynamic-int8")
    assert int8.extra["preset"] in ("avx512_vnni", "avx512", "avx2", "arm64") and int8.quantized_share > 0.5
    assert abs(int8.accuracy_change_pts) <= 2.0 and int8.size_ratio < 0.95  # tiny model: graph overhead dominates
    ops = {n.op_type for n in onnx.load(str(out / report.variant("optimized-O2").path)).graph.node}
    assert ops & {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"}  # O2 fused transformer ops
    assert report.variant("optimized-O1").accuracy_change_pts == pytest.approx(0, abs=0.5)


def test_report_and_chosen_model(hf_report):
    out, report = hf_report
    loaded = QuantizeReport.load(out / "report.json")
    assert loaded.chosen == report.chosen and (out / "report.md").is_file()
    chosen = report.chosen or "fp32"
    assert (out / "model.onnx").read_bytes() == (out / report.variant(chosen).path).read_bytes()
    assert (out / "config.json").is_file()
    assert report.choice["anchor"]["name"] == ANCHOR  # how the choice compares with onnxruntime's one-liner


def test_directory_routing_and_refusals(bert_dir, tmp_path, capsys):
    assert is_hf_dir(bert_dir / "model") and not is_hf_dir(tmp_path)
    with pytest.raises(UserError, match="not offered for Hugging Face"):
        quantize(bert_dir / "model", tmp_path, QuantizeConfig(method="static"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((4, SEQ), np.int64))
    assert main(["quantize", str(bert_dir / "model"), "--eval-data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "lacks arrays" in capsys.readouterr().err


def test_preset_follows_the_cpu():
    assert preset(CpuInfo("x86_64", "", ("avx2", "avx512f", "avx512_vnni"))) == "avx512_vnni"
    assert preset(CpuInfo("x86_64", "", ("avx2", "avx512f"))) == "avx512"
    assert preset(CpuInfo("x86_64", "", ("avx2",))) == "avx2"
    assert preset(CpuInfo("aarch64", "", ("asimd",))) == "arm64"
