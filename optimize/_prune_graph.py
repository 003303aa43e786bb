"""Turn the user's model into an `nn.Module` that Torch-Pruning can analyse.

Torch-Pruning's DependencyGraph finds prunable layers by module type (nn.Linear, nn.Conv2d, BatchNorm, ...).
A torch.export program's `module()` has none: its graph calls `aten.linear(x, weight, bias)` on bare
parameters, and `torch.export.unflatten` only gives InterpreterModules. So we rebuild real layers from the
exported graph ("modulize"): every `aten.linear` / `aten.convNd` / `aten.batch_norm` / `aten.layer_norm` whose
weights are graph attributes becomes a call to an nn.Linear / nn.ConvNd / nn.BatchNormNd / nn.LayerNorm named
after the original PyTorch module (`features.0`), holding the same tensors. Everything else in the graph
(residual adds, flatten, pooling, activations) stays as it is, and Torch-Pruning follows it through autograd.
A TorchScript module is first traced into the same kind of aten graph (`trace_script`); an ONNX file is
converted into such a module by `optimize._onnx_to_torch` (already made of nn layers, so not modulized).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from optimize.loading import SourceModel
from optiserve.errors import UserError

_aten = torch.ops.aten
_CONVS = {_aten.conv1d.default: nn.Conv1d, _aten.conv2d.default: nn.Conv2d, _aten.conv3d.default: nn.Conv3d}
_BATCHNORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_module(source: SourceModel, example: tuple[torch.Tensor, ...] | None = None) -> nn.Module:
    """A fresh, independent nn.Module for `source` that Torch-Pruning can prune (refusing what it cannot).
    A TorchScript module is traced on `example` first (without it, only whether it can be pruned is checked)."""
    if source.kind == "exported":
        return modulize(source.program.module())
    if source.kind == "pickle":
        return copy.deepcopy(source.module).eval()
    if source.kind == "torchscript":
        return modulize(trace_script(source.module, example)) if example is not None else source.module
    if source.kind == "onnx":
        from optimize._onnx_to_torch import onnx_to_torch

        module = onnx_to_torch(source.path)  # refuses, naming the operator, a graph it cannot convert
        if not any(isinstance(m, PRUNABLE) for m in module.modules()):
            raise UserError(f"found no Gemm/MatMul/Conv layer with stored weights to prune in {source.path.name}")
        return module
    raise UserError(f"{source.path.name}: models of kind {source.kind!r} cannot be pruned")


def trace_script(module: torch.jit.ScriptModule, example: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """The aten graph a TorchScript module runs on `example` (make_fx traces through the TorchScript interpreter),
    with its weights renamed after the module's own parameters (`features.0.weight`), so `modulize` can rebuild
    layers named like the original ones."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        gm = make_fx(lambda *xs: module(*xs), pre_dispatch=True)(*example)  # keeps aten.linear, not addmm
    names: dict[int, str] = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        names.setdefault(tensor.data_ptr(), name)
    arg_names = iter(a.name for a in module.forward.schema.arguments[1:])  # after self: the model's input names
    root = nn.Module()
    for node in gm.graph.nodes:
        if node.op == "placeholder":  # make_fx calls them arg0_1, ...; exports and data go by the real names
            node.target = node.name = next(arg_names, node.target)
        elif node.op == "get_attr":
            value = getattr(gm, node.target)
            node.target = names.get(value.data_ptr(), node.target)
            if not _has(root, node.target):
                _set(root, node.target, value)
    return fx.GraphModule(root, gm.graph)


def _tensor(gm: nn.Module, node: fx.Node | None) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise _Keep()
    return gm.get_parameter(node.target) if _is_param(gm, node.target) else gm.get_buffer(node.target)


def _is_param(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


class _Keep(Exception):
    """This call cannot become a module (its weights are computed, not stored); leave it functional."""


def _layer(gm: nn.Module, node: fx.Node) -> tuple[nn.Module, fx.Node, list[fx.Node]] | None:
    """(new module, its input node, the get_attr nodes it absorbs) for a call we can turn into a layer."""
    args = list(node.args) + [None] * 9
    target = node.target
    if target == _aten.linear.default:
        w, b = _tensor(gm, args[1]), _tensor(gm, args[2])
        layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    elif target in (_aten._convolution.default, _aten.convolution.default):  # what TorchScript's convs run
        w, b = _tensor(gm, args[1]), _tensor(gm, args[2])
        if args[6] or w.dim() - 2 not in (1, 2, 3):  # transposed
            raise _Keep()
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[w.dim() - 3]
        layer = conv(w.shape[1] * args[8], w.shape[0], tuple(w.shape[2:]), stride=args[3], padding=args[4],
                     dilation=args[5], groups=args[8], bias=b is not None)
    elif target in _CONVS:
        w, b = _tensor(gm, args[1]), _tensor(gm, args[2])
        stride, padding, dilation = (args[i] if args[i] is not None else d for i, d in ((3, 1), (4, 0), (5, 1)))
        groups = args[6] if args[6] is not None else 1
        if isinstance(padding, str):
            raise _Keep()
        layer = _CONVS[target](w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
                               dilation=dilation, groups=groups, bias=b is not None)
    elif target == _aten.batch_norm.default and args[5] is False:
        w, b = _tensor(gm, args[1]), _tensor(gm, args[2])
        mean, var = _tensor(gm, args[3]), _tensor(gm, args[4])
        val = args[0].meta.get("val") if isinstance(args[0], fx.Node) else None
        cls = _BATCHNORMS.get(val.dim() if val is not None else 4, nn.BatchNorm2d)
        layer = cls(mean.shape[0], eps=args[7], momentum=args[6], affine=w is not None)
        layer.running_mean, layer.running_var = mean.detach().clone(), var.detach().clone()
    elif target == _aten.layer_norm.default:
        w, b = _tensor(gm, args[2]), _tensor(gm, args[3])
        layer = nn.LayerNorm(list(args[1]), eps=args[4] if args[4] is not None else 1e-5,
                             elementwise_affine=w is not None, bias=b is not None)
    else:
        return None
    with torch.no_grad():
        if w is not None:
            layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
    absorbed = [a for a in node.args[1:] if isinstance(a, fx.Node) and a.op == "get_attr"]
    return layer, node.args[0], absorbed


def modulize(gm: fx.GraphModule) -> fx.GraphModule:
    """Rebuild an exported program's module with real nn layers (see the module docstring)."""
    graph = fx.Graph()
    output = graph.graph_copy(gm.graph, {})
    graph.output(output)
    graph._codegen = copy.deepcopy(gm.graph._codegen)  # pytree in/out specs: same call signature and outputs
    layers: dict[str, nn.Module] = {}
    uses: dict[str, int] = {}
    for node in graph.nodes:  # weights used by two calls (tied) must stay shared, so stay functional
        if node.op == "get_attr":
            uses[node.target] = len(node.users)
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target.startswith("_guards"):
            graph.erase_node(node)  # export-time input checks; they reference the original shapes
            continue
        if node.op != "call_function":
            continue
        try:
            made = _layer(gm, node)
        except _Keep:
            continue
        if made is None:
            continue
        layer, inp, absorbed = made
        weight_target = absorbed[0].target if absorbed else ""
        name = weight_target.rsplit(".", 1)[0] if "." in weight_target else weight_target or node.name
        if name in layers or any(uses.get(a.target, 0) > 1 for a in absorbed):
            continue
        layers[name] = layer
        with graph.inserting_before(node):
            call = graph.call_module(name, (inp,))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    for node in list(graph.nodes):  # weights now held by the new layers
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    if not layers:
        raise UserError(
            "found no Linear/Conv layers to prune in the exported program (was it decomposed with "
            "run_decompositions?); save the program straight from torch.export.export"
        )
    root = nn.Module()
    for name, layer in layers.items():
        _set(root, name, layer)
    for node in graph.nodes:
        if node.op == "get_attr" and not _has(root, node.target):
            value = gm.get_parameter(node.target) if _is_param(gm, node.target) else gm.get_buffer(node.target)
            _set(root, node.target, nn.Parameter(value.detach().clone(), value.requires_grad)
                 if isinstance(value, nn.Parameter) else value.detach().clone())
    out = fx.GraphModule(root, graph)
    return out.eval()


def _has(root: nn.Module, target: str) -> bool:
    try:
        root.get_submodule(target)
        return True
    except AttributeError:
        pass
    parent, _, leaf = target.rpartition(".")
    try:
        return hasattr(root.get_submodule(parent), leaf)
    except AttributeError:
        return False


def _set(root: nn.Module, target: str, value) -> None:
    parts = target.split(".")
    mod = root
    for part in parts[:-1]:
        if not hasattr(mod, part):
            mod.add_module(part, nn.Module())
        mod = getattr(mod, part)
    if isinstance(value, nn.Module):
        mod.add_module(parts[-1], value)
    elif isinstance(value, nn.Parameter):
        mod.register_parameter(parts[-1], value)
    else:
        mod.register_buffer(parts[-1], value)


def output_layers(model: nn.Module, example: tuple[torch.Tensor, ...]) -> list[str]:
    """Names of prunable layers whose output is (a view of) the model's output: their width is the model's
    output width (classes, regression targets), so they must never be pruned."""
    produced: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: produced.__setitem__(n, o))
             for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    try:
        with torch.no_grad():
            out = model(*example)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    ptrs = {o.untyped_storage().data_ptr() for o in outs if isinstance(o, torch.Tensor)}
    found = [n for n, t in produced.items() if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in ptrs]
    return sorted(set(found) | set(_last_layers(model))) if isinstance(model, fx.GraphModule) else found


def _last_layers(model: fx.GraphModule) -> list[str]:
    """Prunable layers that reach the output through no other prunable layer (through a softmax, a reshape):
    their width is the output's width too, which the storage check above misses."""
    return _feeding(model, [n for n in model.graph.nodes if n.op == "output"])


def fixed_width_layers(model: nn.Module) -> list[str]:
    """Prunable layers whose width the graph fixes: they feed a reshape to constant dimensions, or an op with a
    constant tensor (a per-channel scale buffer), which Torch-Pruning cannot shrink along with them."""
    if not isinstance(model, fx.GraphModule):
        return []
    from optimize._onnx_to_torch import FIXED_SHAPE_OPS

    fixed = []
    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in FIXED_SHAPE_OPS:
            fixed.append(node)
        elif any(a.op == "get_attr" and not _is_param(model, a.target) and model.get_buffer(a.target).numel() > 1
                 for a in node.all_input_nodes):  # (Torch-Pruning does prune a bare nn.Parameter with its layer)
            fixed.append(node)
    return _feeding(model, fixed)


def _feeding(model: fx.GraphModule, starts: list[fx.Node]) -> list[str]:
    """The prunable layers reached walking back from `starts` through nodes that are not prunable layers."""
    found, seen = [], set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        for arg in node.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg.op == "call_module" and isinstance(model.get_submodule(arg.target), PRUNABLE):
                found.append(arg.target)
            else:
                stack.append(arg)
    return found
