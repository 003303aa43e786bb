"""Post-training optimization: PyTorch model -> verified, measured ONNX variants."""

from optimize._errors import UserError

__all__ = ["UserError"]
