"""ONNX graph -> torch.fx GraphModule with real nn layers, so Torch-Pruning can prune an `.onnx` model.

`onnx2torch` would do this but needs torchvision; the operators exported MLPs and CNNs use are few. Layers
whose weights are initializers become modules (Gemm / MatMul(+Add) -> nn.Linear, Conv -> nn.ConvNd,
BatchNormalization -> nn.BatchNormNd) named after the original PyTorch module where the file says it
(`net.0.weight` -> `net.0`, or the legacy exporter's node name `/features/features.0/Conv`); everything else
becomes an fx call_function node. A Reshape to (batch, C*H*W) becomes `torch.flatten(x, 1)` so it follows
pruned channels. A graph with an operator outside this set is refused, naming the operator and the node.
`verify` checks the converted module against onnxruntime before anything is pruned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from optiserve.errors import UserError

# Accepted when |torch - onnxruntime| <= ATOL + RTOL * max|onnxruntime| (as optimize.export checks exports).
ATOL, RTOL = 1e-4, 1e-4
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCHNORM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_UNARY: dict[str, Callable] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Exp": torch.exp,
    "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Log": torch.log, "Reciprocal": torch.reciprocal,
}
_BINARY: dict[str, Callable] = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
                                "Pow": torch.pow}


def _flatten2d(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: always 2-D, (prod(dims[:axis]), prod(dims[axis:]))."""
    if axis == 1:
        return torch.flatten(x, 1)
    return x.reshape(math.prod(x.shape[:axis]), -1) if axis else x.reshape(1, -1)


def _reshape(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """ONNX Reshape with a constant shape: 0 copies the input's dimension."""
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


def _softmax_coerced(x: torch.Tensor, axis: int, log: bool) -> torch.Tensor:
    """Softmax before opset 13: over all dimensions from `axis` on, as one."""
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    out = torch.log_softmax(flat, -1) if log else torch.softmax(flat, -1)
    return out.reshape(x.shape)


def _pool(kind: str, x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
          dilation: tuple[int, ...], ceil_mode: bool, count_include_pad: bool) -> torch.Tensor:
    fn = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d, ("max", 3): F.max_pool3d,
          ("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d, ("avg", 3): F.avg_pool3d}[kind, len(kernel)]
    if kind == "max":
        return fn(x, kernel, stride, padding, dilation, ceil_mode)
    return fn(x, kernel, stride, padding, ceil_mode, count_include_pad)


# fx targets whose shapes are constants of the graph: the layers feeding them cannot be pruned
FIXED_SHAPE_OPS = (_reshape,)


class _Unsupported(Exception):
    """The node cannot be converted; the message says why."""


class _Converter:
    def __init__(self, model, name: str) -> None:
        import onnx

        self.name = name
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # shapes only refine the conversion (ranks, flatten detection); not required
            pass
        self.model = model
        self.consts: dict[str, np.ndarray] = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        self.shapes: dict[str, tuple] = {}
        self.params: dict[str, tuple] = {}  # symbolic dimension names ('batch') where the size is not fixed
        self.dims: dict[str, list] = {}  # shape computations (x.size(0), -1) whose entries are not all known
        for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
                self.params[value.name] = tuple(d.dim_param or None for d in dims)
        self.uses: dict[str, int] = {}
        for node in model.graph.node:
            for i in node.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        for out in model.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[str, fx.Node] = {}
        self.names: set[str] = set()
        self.scalars: set[str] = set()  # shape computations that are 0-d (a Gather of one index)
        self.skip: set[int] = set()  # nodes absorbed into an earlier layer (Add after MatMul)

    # ---- values -------------------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def value(self, name: str):
        """The fx node for a tensor, a Python number for a scalar constant, or a buffer for a constant array."""
        if name in self.env:
            return self.env[name]
        if name in self.dims:
            raise _Unsupported("takes a shape computed at run time (only Reshape can use one)")
        array = self.consts.get(name)
        if array is None:
            raise _Unsupported(f"its input {name!r} is produced by no node")
        if array.ndim == 0 and array.dtype.kind == "f":
            return float(array)
        target = self.unique("const_" + _ident(name))
        self.root.register_buffer(target, torch.from_numpy(np.array(array)))
        self.env[name] = self.graph.get_attr(target)
        return self.env[name]

    def rank(self, name: str) -> int | None:
        if name in self.consts:
            return self.consts[name].ndim
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def layer_name(self, node, weight: str) -> str:
        """`net.0` from `net.0.weight`; `features.0` from the legacy exporter's `/features/features.0/Conv`."""
        if weight.endswith(".weight") and not weight.startswith("onnx::"):
            base = weight[: -len(".weight")]
        elif node.name.startswith("/") and node.name.count("/") >= 2:
            scopes = node.name.strip("/").split("/")[:-1]  # newer: /features/0/Conv, older: /features/features.0/Conv
            base = scopes[-1] if "." in scopes[-1] else ".".join(scopes)
        else:
            base = node.name or f"{node.op_type.lower()}"
        base = ".".join(re.sub(r"\W", "_", part) for part in base.split(".") if part) or node.op_type.lower()
        name = self.unique(base)
        while _taken(self.root, name):
            name = self.unique(base + "_")
        return name

    def add_layer(self, node, weight: str, layer: nn.Module, x) -> fx.Node:
        name = _set_module(self.root, self.layer_name(node, weight), layer)
        return self.graph.call_module(name, (x,))

    # ---- conversion ---------------------------------------------------------------------------------
    def run(self) -> fx.GraphModule:
        graph = self.model.graph
        for value in graph.input:
            if value.name in self.consts:
                continue
            node = self.graph.placeholder(self.unique(_ident(value.name)))
            self.env[value.name] = node
        for index, node in enumerate(graph.node):
            if index in self.skip:
                continue
            try:
                outs = self.convert(index, node)
            except _Unsupported as exc:
                raise UserError(f"{self.name} cannot be made prunable: operator {node.op_type} "
                                f"(node {node.name or index!r}) {exc}") from None
            for out_name, out in zip(node.output, outs, strict=False):
                if out_name:
                    self.env[out_name] = out
        outputs = [self.value(o.name) for o in graph.output]
        self.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        return fx.GraphModule(self.root, self.graph).eval()

    def call(self, fn, *args, **kwargs) -> fx.Node:
        return self.graph.call_function(fn, args, kwargs)

    def convert(self, index: int, node) -> list:
        op, ins = node.op_type, list(node.input)
        a = _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"is from the custom domain {node.domain!r}")
        if op in ("Identity", "Dropout"):
            if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
                raise _Unsupported("has its dropout mask used")
            if ins[0] in self.consts:  # the legacy exporter passes shared weights through Identity
                self.consts[node.output[0]] = self.consts[ins[0]]
                return []
            return [self.value(ins[0])]
        if op in ("Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Squeeze") and self.shape_math(node, ins, a):
            return []
        if op == "Constant":
            if "value" not in a:
                raise _Unsupported("holds something other than a tensor 'value'")
            self.consts[node.output[0]] = a["value"]
            return []
        if op in _UNARY:
            return [self.call(_UNARY[op], self.value(ins[0]))]
        if op in _BINARY:
            return [self.call(_BINARY[op], self.value(ins[0]), self.value(ins[1]))]
        if op == "Gemm":
            return [self.gemm(node, ins, a)]
        if op == "MatMul":
            return [self.matmul(index, node, ins)]
        if op == "Conv":
            return [self.conv(node, ins, a)]
        if op == "BatchNormalization":
            return [self.batchnorm(node, ins, a)]
        if op == "Cast":
            import onnx

            dtype = torch.from_numpy(np.zeros(0, onnx.helper.tensor_dtype_to_np_dtype(a["to"]))).dtype
            return [self.call(torch.Tensor.to, self.value(ins[0]), dtype)]
        if op == "Gelu":
            return [self.call(F.gelu, self.value(ins[0]), approximate=a.get("approximate", "none"))]
        if op == "LeakyRelu":
            return [self.call(F.leaky_relu, self.value(ins[0]), a.get("alpha", 0.01))]
        if op == "Elu":
            return [self.call(F.elu, self.value(ins[0]), a.get("alpha", 1.0))]
        if op == "Clip":
            low = self.const(ins[1]) if len(ins) > 1 and ins[1] else a.get("min")
            high = self.const(ins[2]) if len(ins) > 2 and ins[2] else a.get("max")
            if (len(ins) > 1 and ins[1] and low is None) or (len(ins) > 2 and ins[2] and high is None):
                raise _Unsupported("has computed bounds")
            return [self.call(torch.clamp, self.value(ins[0]), None if low is None else float(low),
                              None if high is None else float(high))]
        if op in ("Softmax", "LogSoftmax"):
            return [self.softmax(op, ins, a)]
        if op == "Flatten":
            return [self.call(_flatten2d, self.value(ins[0]), _axis(a.get("axis", 1), self.rank(ins[0])))]
        if op == "Reshape":
            return [self.reshape(ins, a)]
        if op == "Transpose":
            rank = self.rank(ins[0])
            perm = a.get("perm") or (list(reversed(range(rank))) if rank is not None else None)
            if perm is None:
                raise _Unsupported("has no perm and an unknown input rank")
            return [self.call(torch.permute, self.value(ins[0]), tuple(perm))]
        if op == "Concat":
            return [self.call(torch.cat, [self.value(i) for i in ins], a["axis"])]
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes") if self.opset < 13 else (self.const(ins[1]) if len(ins) > 1 else None)
            if len(ins) > 1 and axes is None:
                raise _Unsupported("has computed axes")
            x = self.value(ins[0])
            if op == "Squeeze":
                return [self.call(torch.squeeze, x, tuple(int(v) for v in axes)) if axes is not None
                        else self.call(torch.squeeze, x)]
            for axis in sorted(int(v) for v in axes):
                x = self.call(torch.unsqueeze, x, axis)
            return [x]
        if op in ("MaxPool", "AveragePool"):
            return [self.pool(node, ins, a)]
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            rank = self.rank(ins[0])
            if rank is None:
                raise _Unsupported("has an input of unknown rank")
            fn = torch.mean if op == "GlobalAveragePool" else torch.amax
            return [self.call(fn, self.value(ins[0]), tuple(range(2, rank)), keepdim=True)]
        if op in ("ReduceMean", "ReduceSum", "ReduceMax"):
            return [self.reduce(op, ins, a)]
        raise _Unsupported(
            "is not supported by the ONNX -> torch converter (it knows Gemm, MatMul, Conv, BatchNormalization, "
            "activations, Add/Sub/Mul/Div, Flatten/Reshape, pooling, Transpose, Concat, Squeeze/Unsqueeze, Cast, "
            "ReduceMean/Sum/Max); give the TorchScript .pt or torch.export .pt2 of the model instead")

    def gemm(self, node, ins, a) -> fx.Node:
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        trans_a, trans_b = a.get("transA", 0), a.get("transB", 0)
        w, c = self.const(ins[1]), self.const(ins[2]) if len(ins) > 2 else None
        if w is not None and w.ndim == 2 and not trans_a and (
                len(ins) < 3 or not ins[2] or (c is not None and c.size in (1, w.shape[0 if trans_b else 1]))):
            weight = (w if trans_b else w.T) * alpha
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=c is not None)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, np.float32)))
                if c is not None:
                    layer.bias.copy_(torch.from_numpy(np.broadcast_to((c * beta).reshape(-1), (weight.shape[0],))
                                                     .astype(np.float32)))
            return self.add_layer(node, ins[1], layer, self.value(ins[0]))
        x, y = self.value(ins[0]), self.value(ins[1])
        x = self.call(torch.t, x) if trans_a else x
        y = self.call(torch.t, y) if trans_b else y
        out = self.call(torch.mul, self.call(torch.matmul, x, y), alpha)
        if len(ins) > 2 and ins[2]:
            out = self.call(torch.add, out, self.call(torch.mul, self.value(ins[2]), beta))
        return out

    def matmul(self, index: int, node, ins) -> fx.Node:
        w = self.const(ins[1])
        if w is None or w.ndim != 2:
            return self.call(torch.matmul, self.value(ins[0]), self.value(ins[1]))
        bias = None
        follower = self._only_consumer(index, node.output[0])
        if follower is not None and follower[1].op_type == "Add":
            other = [i for i in follower[1].input if i != node.output[0]]
            b = self.const(other[0]) if len(other) == 1 else None
            if b is not None and b.shape == (w.shape[1],):
                bias = b
                self.skip.add(follower[0])
        layer = nn.Linear(w.shape[0], w.shape[1], bias=bias is not None)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, np.float32)))
            if bias is not None:
                layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
        out = self.add_layer(node, ins[1], layer, self.value(ins[0]))
        if bias is not None:
            self.env[follower[1].output[0]] = out
        return out

    def _only_consumer(self, index: int, name: str):
        if self.uses.get(name) != 1:
            return None
        for j, other in enumerate(self.model.graph.node[index + 1:], index + 1):
            if name in other.input:
                return j, other
        return None

    def conv(self, node, ins, a) -> fx.Node:
        w = self.const(ins[1])
        rank = len(w.shape) - 2 if w is not None else (self.rank(ins[1]) or 0) - 2
        if rank not in _CONV:
            raise _Unsupported(f"is a {rank}-d convolution")
        groups = a.get("group", 1)
        stride, dilation = tuple(a.get("strides", [1] * rank)), tuple(a.get("dilations", [1] * rank))
        kernel = tuple(w.shape[2:]) if w is not None else tuple(a.get("kernel_shape", ()))
        pads = self._pads(ins[0], a, kernel, stride, dilation)
        x = self.value(ins[0])
        symmetric = pads[:rank] == pads[rank:]
        if not symmetric:  # asymmetric padding: pad explicitly, then convolve unpadded
            x = self.call(F.pad, x, _torch_pad(pads))
        padding = tuple(pads[:rank]) if symmetric else (0,) * rank
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] else None
        if w is None or (len(ins) > 2 and ins[2] and b is None):
            fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
            bias = self.value(ins[2]) if len(ins) > 2 and ins[2] else None
            return self.call(fn, x, self.value(ins[1]), bias, stride, padding, dilation, groups)
        layer = _CONV[rank](w.shape[1] * groups, w.shape[0], kernel, stride=stride, padding=padding,
                            dilation=dilation, groups=groups, bias=b is not None)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            if b is not None:
                layer.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        return self.add_layer(node, ins[1], layer, x)

    def _pads(self, x: str, a, kernel, stride, dilation) -> list[int]:
        rank = len(kernel)
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            return list(a.get("pads", [0] * (2 * rank)))
        if auto == "VALID":
            return [0] * (2 * rank)
        shape = self.shapes.get(x)
        if shape is None or any(d is None for d in shape[2:]):
            raise _Unsupported(f"uses auto_pad {auto} on an input of unknown spatial size")
        begins, ends = [], []
        for size, k, s, d in zip(shape[2:], kernel, stride, dilation, strict=True):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return begins + ends

    def batchnorm(self, node, ins, a) -> fx.Node:
        if a.get("training_mode", 0):
            raise _Unsupported("is in training mode")
        scale, bias, mean, var = (self.const(i) for i in ins[1:5])
        rank = self.rank(ins[0]) or 4
        if any(t is None for t in (scale, bias, mean, var)) or rank not in _BATCHNORM:
            raise _Unsupported("has computed statistics or an input of unsupported rank")
        layer = _BATCHNORM[rank](mean.shape[0], eps=a.get("epsilon", 1e-5), momentum=1 - a.get("momentum", 0.9))
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(scale.astype(np.float32)))
            layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
            layer.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            layer.running_var.copy_(torch.from_numpy(var.astype(np.float32)))
        return self.add_layer(node, ins[1], layer, self.value(ins[0]))

    def softmax(self, op, ins, a) -> fx.Node:
        rank = self.rank(ins[0])
        axis = a.get("axis", -1 if self.opset >= 13 else 1)
        fn = torch.log_softmax if op == "LogSoftmax" else torch.softmax
        if self.opset >= 13 or (rank is not None and _axis(axis, rank) == rank - 1):
            return self.call(fn, self.value(ins[0]), axis)
        if rank is None:
            raise _Unsupported("(before opset 13) has an input of unknown rank")
        return self.call(_softmax_coerced, self.value(ins[0]), _axis(axis, rank), op == "LogSoftmax")

    def reshape(self, ins, a) -> fx.Node:
        shape = self.const(ins[1])
        if shape is None and ins[1] in self.dims:
            shape = self.copied_dims(ins[0], self.dims[ins[1]])
        if shape is None:
            raise _Unsupported("has a shape computed at run time (only constant shapes and the input's own "
                               "dimensions are supported)")
        shape = tuple(int(d) for d in shape)
        if a.get("allowzero", 0) and 0 in shape:
            raise _Unsupported("uses allowzero")
        x = self.value(ins[0])
        known = self.shapes.get(ins[0])
        if known and shape and known[0] is not None and shape[0] == known[0]:
            shape = (0, *shape[1:])  # a batch fixed at export time: keep the model's batch instead
        # (batch, everything else): a flatten, which must keep following the channel count once it is pruned
        if known and len(shape) == 2 and len(known) >= 2 and shape[0] in (0, -1) and (
                shape[1] == -1 or (all(known[1:]) and shape[1] == math.prod(known[1:]))):
            return self.call(torch.flatten, x, 1)
        if known and shape == tuple(0 if i == 0 else d for i, d in enumerate(known)):
            return x
        return self.call(_reshape, x, shape)

    def shape_math(self, node, ins, a) -> bool:
        """Follow `x.view(x.size(0), -1)` as the legacy exporter writes it (Shape, Gather, Unsqueeze, Concat):
        entries are ints or (tensor, axis) for a size known only at run time. False: not a shape computation."""
        op = node.op_type
        known = [i for i in ins if i]
        if op == "Shape":
            shape = self.shapes.get(ins[0])
            if shape is None:
                return False
            start, end = a.get("start", 0), a.get("end", len(shape))
            dims = [d if d is not None else (ins[0], i) for i, d in enumerate(shape)][start:end]
        elif not all(i in self.dims or (i in self.consts and self.consts[i].dtype.kind == "i") for i in known) or \
                not any(i in self.dims for i in known):
            return False
        elif op == "Gather" and a.get("axis", 0) == 0 and ins[1] in self.consts:
            picked = self.consts[ins[1]]
            dims = [self.dims[ins[0]][int(i)] for i in np.atleast_1d(picked)]
            if picked.ndim == 0:
                self.dims[node.output[0]] = dims
                self.scalars.add(node.output[0])
                return self._fold(node.output[0])
        elif op in ("Unsqueeze", "Squeeze", "Cast"):
            dims = list(self.dims[ins[0]])
        elif op == "Concat" and a.get("axis") == 0:
            dims = [d for i in ins for d in (self.dims[i] if i in self.dims else
                                             [int(v) for v in np.atleast_1d(self.consts[i])])]
        else:
            return False
        self.dims[node.output[0]] = dims
        return self._fold(node.output[0])

    def _fold(self, name: str) -> bool:
        dims = self.dims[name]
        if all(isinstance(d, int) for d in dims):  # every size is known: a plain constant
            del self.dims[name]
            self.consts[name] = np.array(dims[0] if name in self.scalars else dims, np.int64)
        return True

    def copied_dims(self, x: str, dims: list) -> list[int] | None:
        """A computed shape as Reshape's constants: a run-time size equal to x's own size at that axis is 0."""
        params = self.params.get(x, ())
        out = []
        for i, d in enumerate(dims):
            if isinstance(d, int):
                out.append(d)
                continue
            source, axis = d
            same = (source == x and axis == i) or (i < len(params) and params[i] is not None
                                                   and self.params.get(source, ())[axis:axis + 1] == (params[i],))
            if not same:
                return None
            out.append(0)
        return out

    def pool(self, node, ins, a) -> fx.Node:
        kernel = tuple(a["kernel_shape"])
        rank = len(kernel)
        if rank not in (1, 2, 3):
            raise _Unsupported(f"is a {rank}-d pool")
        stride, dilation = tuple(a.get("strides", [1] * rank)), tuple(a.get("dilations", [1] * rank))
        pads = self._pads(ins[0], a, kernel, stride, dilation)
        if len(node.output) > 1 and node.output[1]:
            raise _Unsupported("returns indices")
        kind = "max" if node.op_type == "MaxPool" else "avg"
        x = self.value(ins[0])
        count_include_pad = bool(a.get("count_include_pad", 0))
        if pads[:rank] != pads[rank:] or any(2 * p > k for p, k in zip(pads, kernel * 2, strict=True)):
            if kind == "avg" and not count_include_pad and any(pads):
                raise _Unsupported("pads asymmetrically without counting the padding")
            x = self.call(F.pad, x, _torch_pad(pads), "constant", -math.inf if kind == "max" else 0.0)
            pads = [0] * (2 * rank)
        if kind == "avg" and any(d != 1 for d in dilation):
            raise _Unsupported("is a dilated average pool")
        return self.call(_pool, kind, x, kernel, stride, tuple(pads[:rank]), dilation,
                         bool(a.get("ceil_mode", 0)), count_include_pad)

    def reduce(self, op, ins, a) -> fx.Node:
        from_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
        axes = (self.const(ins[1]) if len(ins) > 1 and ins[1] else None) if from_input else a.get("axes")
        if from_input and len(ins) > 1 and ins[1] and axes is None:
            raise _Unsupported("has computed axes")
        keep = bool(a.get("keepdims", 1))
        rank = self.rank(ins[0])
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0):
                return self.value(ins[0])
            if rank is None:
                raise _Unsupported("reduces all axes of an input of unknown rank")
            axes = range(rank)
        fn = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax}[op]
        return self.call(fn, self.value(ins[0]), tuple(int(v) for v in axes), keepdim=keep)


def _attrs(node) -> dict:
    import onnx

    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == onnx.AttributeProto.TENSOR:
            value = onnx.numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        out[attr.name] = value
    return out


def _axis(axis: int, rank: int | None) -> int:
    if axis >= 0:
        return axis
    if rank is None:
        raise _Unsupported("has a negative axis on an input of unknown rank")
    return axis + rank


def _torch_pad(pads: list[int]) -> tuple[int, ...]:
    """ONNX [b1, b2, ..., e1, e2, ...] -> F.pad's (b_last, e_last, ..., b_first, e_first)."""
    rank = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(rank)):
        out += [pads[i], pads[i + rank]]
    return tuple(out)


def _ident(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else f"v_{name}"


def _taken(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
        return True
    except AttributeError:
        return False


def _set_module(root: nn.Module, name: str, layer: nn.Module) -> str:
    """Add `layer` at the dotted `name` (containers made on the way); returns the name it got."""
    *parents, leaf = name.split(".")
    mod = root
    for part in parents:
        if not hasattr(mod, part):
            mod.add_module(part, nn.Module())
        mod = getattr(mod, part)
        if type(mod) is not nn.Module:  # `net` is already a layer: keep the name flat instead
            flat = name.replace(".", "_")
            while _taken(root, flat):
                flat += "_"
            root.add_module(flat, layer)
            return flat
    mod.add_module(leaf, layer)
    return name


def onnx_to_torch(path: Path) -> fx.GraphModule:
    """Convert the ONNX file at `path` to an fx GraphModule (inputs named after the graph's inputs)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]})") from None
    return _Converter(model, Path(path).name).run()


def verify(module: nn.Module, path: Path, inputs: dict[str, np.ndarray], names: list[str]) -> float:
    """Max |torch - onnxruntime| of the converted module on `inputs`; refuses a conversion that disagrees."""
    from optimize.export import session

    sess = session(Path(path))
    expected = sess.run(None, {n: inputs[n] for n in names})
    with torch.no_grad():
        got = module(*(torch.from_numpy(inputs[n]) for n in names))
    got = list(got) if isinstance(got, tuple | list) else [got]
    worst, tolerance = 0.0, 0.0
    for g, e in zip(got, expected, strict=True):
        g = g.numpy()
        if g.shape != e.shape:
            raise UserError(f"the torch conversion of {Path(path).name} returns shape {g.shape} where onnxruntime "
                            f"returns {e.shape}")
        worst = max(worst, float(np.max(np.abs(g - e))) if g.size else 0.0)
        tolerance = max(tolerance, ATOL + RTOL * (float(np.max(np.abs(e))) if e.size else 0.0))
    if not worst <= tolerance:
        raise UserError(f"the torch conversion of {Path(path).name} disagrees with onnxruntime: max abs difference "
                        f"{worst:.3g} exceeds {tolerance:.3g}")
    return worst
