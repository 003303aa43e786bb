import json

import pytest
import torch

from optimize.examples import DigitsMLP
from optiserve.errors import UserError
from optiserve.repository import Manifest, list_models, list_versions, publish, read_manifest, verify


@pytest.fixture
def onnx_model(tmp_path):
    path = tmp_path / "m.onnx"
    torch.onnx.export(DigitsMLP(8), (torch.zeros(1, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    return path


def test_publish_versions_and_manifest(tmp_path, onnx_model):
    repo = tmp_path / "repo"
    m1 = publish(onnx_model, repo, "digits", source_sha256="abc", report={"chosen": "fp32"})
    m2 = publish(onnx_model, repo, "digits")
    assert (m1.version, m2.version) == ("1", "2")
    assert list_models(repo) == ["digits"] and list_versions(repo, "digits") == ["1", "2"]
    manifest = read_manifest(repo, "digits", "1")
    assert manifest == Manifest.from_json(manifest.to_json())
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("x", "FP32", [-1, 64])]
    assert manifest.outputs[0].shape == [-1, 10] and manifest.report == {"chosen": "fp32"}
    assert verify(repo, "digits", "1").sha256 == manifest.sha256


def test_corruption_is_detected(tmp_path, onnx_model):
    repo = tmp_path / "repo"
    publish(onnx_model, repo, "digits")
    (repo / "digits/1/model.onnx").write_bytes(b"tampered")
    with pytest.raises(UserError, match="sha256"):
        verify(repo, "digits", "1")
    (repo / "digits/1/manifest.json").write_text(json.dumps({"name": "digits"}))
    with pytest.raises(UserError, match="not a valid manifest"):
        read_manifest(repo, "digits", "1")


def test_staging_leftovers_are_not_versions(tmp_path, onnx_model):
    """A crash mid-publish leaves only a hidden staging folder, never a half-written version."""
    repo = tmp_path / "repo"
    (repo / "digits/.staging-crashed").mkdir(parents=True)
    (repo / "digits/.staging-crashed/model.onnx").write_bytes(b"partial")
    assert list_versions(repo, "digits") == []
    assert publish(onnx_model, repo, "digits").version == "1"


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 200])
def test_names_cannot_escape_the_repository(tmp_path, onnx_model, name):
    with pytest.raises(UserError, match="invalid"):
        publish(onnx_model, tmp_path / "repo", name)


def test_versions_must_be_integers(tmp_path):
    with pytest.raises(UserError, match="invalid"):
        read_manifest(tmp_path, "digits", "../1")


def test_not_onnx_cannot_be_published(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable ONNX"):
        publish(tmp_path / "x.onnx", tmp_path / "repo", "digits")
