import pytest


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """A small MLP exported to ONNX with a dynamic batch axis."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    torch.onnx.export(model, (torch.zeros(1, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return path
