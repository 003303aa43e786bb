"""Loading the user's model safely: TorchScript `.pt`, torch.export `.pt2` or `.onnx`.

Pickles execute code when loaded, so a pickled `nn.Module` or a bare state dict is refused unless the
user passes `--allow-pickle`; the message says how to save the model in a safe format instead.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from optiserve.data import InputSpec
from optiserve.errors import UserError
from optiserve.hashing import sha256_file

Kind = Literal["torchscript", "exported", "onnx", "pickle"]

HOW_TO_SAVE = (
    "save it as TorchScript (torch.jit.save(torch.jit.trace(model, example), 'model.pt')) or with torch.export "
    "(torch.export.save(torch.export.export(model, (example,)), 'model.pt2'))"
)


@dataclass
class SourceModel:
    path: Path
    kind: Kind
    sha256: str
    module: object | None = None  # a callable torch module (None for ONNX input)
    program: object | None = None  # the torch.export ExportedProgram for .pt2
    input_names: list[str] = field(default_factory=list)
    input_specs: list[InputSpec] | None = None  # known only when the file records shapes

    def run_torch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Eager PyTorch forward pass on numpy inputs (first output)."""
        import torch

        with torch.no_grad():  # not inference_mode: its tensors break a later TorchScript export
            out = self.module(*(torch.from_numpy(inputs[n]) for n in self.input_names))
        out = out[0] if isinstance(out, tuple | list) else out
        return out.detach().numpy()


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except zipfile.BadZipFile:
        return []


def load_model(path: Path, allow_pickle: bool = False) -> SourceModel:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path)
    names = _zip_names(path)
    if suffix == ".pt2" or any(n.endswith("serialized_exported_program.json") for n in names):
        return _load_exported(path)
    if any("/code/" in n for n in names):
        return _load_torchscript(path)
    if suffix not in (".pt", ".pth", ".bin", ".pkl"):
        raise UserError(f"{path} has an unsupported format; give a TorchScript .pt, a torch.export .pt2 or a .onnx")
    return _load_pickle(path, allow_pickle)


def _load_onnx(path: Path) -> SourceModel:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UserError(f"{path} is not a valid ONNX model ({str(exc).splitlines()[0]})") from None
    init = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        specs.append(InputSpec(value.name, tuple(dims[1:]), str(dtype)))
    known = all(d > 0 for s in specs for d in s.shape)
    return SourceModel(path, "onnx", sha256_file(path), input_names=[s.name for s in specs],
                       input_specs=specs if known else None)


def _load_exported(path: Path) -> SourceModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a readable torch.export .pt2 file ({str(exc).splitlines()[0]})") from None
    names = list(program.graph_signature.user_inputs)
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in names:
        val = placeholders[name].meta.get("val")
        if val is None:
            specs = None
            break
        dims = tuple(int(d) if isinstance(d, int) else -1 for d in val.shape[1:])
        specs.append(InputSpec(name, dims, str(val.dtype).removeprefix("torch.")))
    if specs and any(d < 0 for s in specs for d in s.shape):
        specs = None
    return SourceModel(path, "exported", sha256_file(path), module=program.module(), program=program,
                       input_names=names, input_specs=specs)


def _load_torchscript(path: Path) -> SourceModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise UserError(f"{path} is not a readable TorchScript file ({str(exc).splitlines()[0]})") from None
    names = [a.name.split(".")[0] for a in module.forward.schema.arguments[1:]]
    return SourceModel(path, "torchscript", sha256_file(path), module=module, input_names=names)


def _load_pickle(path: Path, allow_pickle: bool) -> SourceModel:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)  # safe: tensors and containers only
        raise UserError(
            f"{path} holds a state dict ({type(obj).__name__}), not a model: weights alone cannot be run; "
            f"load them into your model class and {HOW_TO_SAVE}"
        )
    except UserError:
        raise
    except Exception:
        pass  # not a plain state dict: a pickled object that needs code execution to load
    if not allow_pickle:
        raise UserError(
            f"{path} is a pickled Python object; loading it would run arbitrary code. Either {HOW_TO_SAVE}, "
            "or pass --allow-pickle if you trust the file"
        )
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{path} could not be unpickled ({str(exc).splitlines()[0]})") from None
    if not isinstance(module, torch.nn.Module):
        raise UserError(f"{path} unpickles to a {type(module).__name__}, not a torch.nn.Module")
    import inspect

    names = [p for p in inspect.signature(module.forward).parameters if p != "self"]
    return SourceModel(path, "pickle", sha256_file(path), module=module.eval(), input_names=names)
