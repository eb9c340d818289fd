"""Pointwise conv → Linear (the ``pointwise_conv_to_linear`` pass) and permute simplification.

Every 1x1, stride-1, ungrouped conv becomes ``permute → Linear → permute`` (the rewrite the
StarNet authors used for their GPU latency figures: StarNet paper, supplementary Section
A.3); back-to-back permutes then cancel and permutes sink through element-wise ops, so that
a run of pointwise ops (StarNet's ``f1``/``f2``/act/star/``g``) stays channels-last (NHWC).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.exporters.passes.common import set_submodule

_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


def is_pointwise_conv(m: nn.Module) -> bool:
    """True for a 1x1, stride-1, unpadded, undilated, ungrouped 2-D convolution."""
    return (
        isinstance(m, nn.Conv2d)
        and tuple(m.kernel_size) == (1, 1)
        and tuple(m.stride) == (1, 1)
        and tuple(m.dilation) == (1, 1)
        and m.groups == 1
        and (m.padding == "valid" or tuple(m.padding) == (0, 0))
    )


def count_pointwise_convs(model: nn.Module) -> int:
    """Number of convolutions :func:`pointwise_conv_to_linear` would rewrite."""
    return sum(is_pointwise_conv(m) for m in model.modules())


class PointwiseLinear(nn.Module):
    """``permute → Linear → permute``: a 1x1 conv on NCHW computed as a Linear on NHWC.

    Used where the surrounding code cannot be traced; inside traced code the permutes are
    separate graph nodes so that neighbouring ones cancel.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.permute(*_NCHW_TO_NHWC)).permute(*_NHWC_TO_NCHW)


def conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    """The Linear with the same weights as a pointwise conv (acting on the channel axis)."""
    lin = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(conv.weight[:, :, 0, 0])
        if conv.bias is not None:
            lin.bias.copy_(conv.bias)
    return lin.to(device=conv.weight.device, dtype=conv.weight.dtype)


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.LeakyReLU, nn.Mish,
)
_ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.mul, operator.sub, operator.truediv, operator.iadd, operator.imul,
    torch.add, torch.mul, torch.sub, torch.relu, torch.sigmoid, torch.tanh,
    F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.hardtanh, F.leaky_relu,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "mul", "add", "sub", "div"}


def _permute_dims(node) -> tuple[int, ...] | None:
    """The dims of a ``permute`` node with constant int dims, else None."""
    is_method = node.op == "call_method" and node.target == "permute"
    is_func = node.op == "call_function" and node.target is torch.permute
    if not (is_method or is_func) or node.kwargs:
        return None
    dims = node.args[1:]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return tuple(dims) if dims and all(isinstance(d, int) for d in dims) else None


def _is_elementwise(gm, node) -> bool:
    if node.kwargs and not (node.op == "call_function" and set(node.kwargs) <= {"inplace", "approximate"}):
        return False
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return isinstance(mod, _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS
    return False


def _simplify_permutes(gm) -> None:
    """Cancel inverse permutes, merge duplicates and sink permutes through element-wise ops."""
    import torch.fx as fx

    graph = gm.graph
    changed = True
    while changed:
        changed = False
        seen: dict[tuple, fx.Node] = {}
        for node in list(graph.nodes):
            dims = _permute_dims(node)
            if dims is None:
                # sink: op(P(a), P(b), scalar) → P(op(a, b, scalar))
                if not _is_elementwise(gm, node):
                    continue
                tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
                if not tensor_args or any(isinstance(a, (list, tuple, dict)) for a in node.args):
                    continue
                arg_dims = {_permute_dims(a) for a in tensor_args}
                if len(arg_dims) != 1 or None in arg_dims:
                    continue
                (pdims,) = arg_dims
                new_args = tuple(a.args[0] if isinstance(a, fx.Node) else a for a in node.args)
                with graph.inserting_before(node):
                    inner = graph.create_node(node.op, node.target, new_args, dict(node.kwargs))
                    outer = graph.call_method("permute", (inner, *pdims))
                node.replace_all_uses_with(outer)
                graph.erase_node(node)
                changed = True
                continue
            src = node.args[0]
            # cancel or compose: P2(P1(x)) → x or P(x)
            if isinstance(src, fx.Node):
                inner_dims = _permute_dims(src)
                if inner_dims is not None and len(inner_dims) == len(dims):
                    composed = tuple(inner_dims[d] for d in dims)
                    if composed == tuple(range(len(dims))):
                        node.replace_all_uses_with(src.args[0])
                    else:
                        with graph.inserting_before(node):
                            single = graph.call_method("permute", (src.args[0], *composed))
                        node.replace_all_uses_with(single)
                    graph.erase_node(node)
                    changed = True
                    continue
            key = (src, dims)
            if key in seen:  # same permute of the same tensor twice
                node.replace_all_uses_with(seen[key])
                graph.erase_node(node)
                changed = True
                continue
            seen[key] = node
        graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()


def _rewrite_graph_module(gm) -> int:
    """Replace pointwise conv nodes of a traced module by permute → Linear → permute."""
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or node.kwargs or len(node.args) != 1:
            continue
        conv = gm.get_submodule(node.target)
        if not is_pointwise_conv(conv):
            continue
        set_submodule(gm, node.target, conv1x1_to_linear(conv))
        with graph.inserting_before(node):
            to_nhwc = graph.call_method("permute", (node.args[0], *_NCHW_TO_NHWC))
        with graph.inserting_after(node):
            to_nchw = graph.call_method("permute", (node, *_NHWC_TO_NCHW))
        node.replace_all_uses_with(to_nchw, delete_user_cb=lambda user: user is not to_nchw)
        node.args = (to_nhwc,)
        count += 1
    if count:
        _simplify_permutes(gm)
    return count


def _try_trace(module: nn.Module):
    import torch.fx as fx

    try:
        return fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "recurse into children"
        return None


def _rewrite_children(parent: nn.Module) -> None:
    for name, child in list(parent.named_children()):
        if child is None or count_pointwise_convs(child) == 0:
            continue
        if is_pointwise_conv(child):
            setattr(parent, name, PointwiseLinear(conv1x1_to_linear(child)))
            continue
        gm = _try_trace(child) if not isinstance(child, (nn.ModuleList, nn.ModuleDict)) else None
        if gm is not None:
            _rewrite_graph_module(gm)
            if count_pointwise_convs(gm) == 0:
                setattr(parent, name, gm)
                continue
        _rewrite_children(child)


def pointwise_conv_to_linear(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` where every pointwise conv is a Linear between permutes.

    Each direct child that contains pointwise convs is traced with ``torch.fx``; in the
    traced graph the convs become ``permute(0,2,3,1) → Linear → permute(0,3,1,2)``, inverse
    permutes cancel and permutes sink through element-wise ops, so a run of pointwise ops
    stays channels-last. Children that cannot be traced are searched recursively, and a
    conv reached that way becomes a :class:`PointwiseLinear`. The root keeps its class and
    attributes (``pretrained_cfg`` etc.). Numerically identical up to float rounding.
    """
    model = copy.deepcopy(module).eval()
    if is_pointwise_conv(model):
        return PointwiseLinear(conv1x1_to_linear(model))
    _rewrite_children(model)
    return model


__all__ = [
    "PointwiseLinear",
    "conv1x1_to_linear",
    "count_pointwise_convs",
    "is_pointwise_conv",
    "pointwise_conv_to_linear",
]
