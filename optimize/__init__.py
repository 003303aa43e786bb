"""Post-training optimization: PyTorch model -> verified, measured ONNX variants."""

from optiserve.errors import UserError

__all__ = ["UserError"]
