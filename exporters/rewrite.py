"""Graph rewrites applied before export. Every pass is pure: module in, new module out.

* :func:`fuse_batchnorm` folds every inference-mode BatchNorm into the layer before it
  (conv+BN, depthwise included), folds a BatchNorm that feeds global average pooling into
  the classifier head (pooling is linear, so the affine BN commutes with it), merges
  EfficientFormerV2's two classifier heads into one Linear and folds its layer scales into
  the conv that produces the scaled branch.
* :func:`pointwise_conv_to_linear` turns every 1x1, stride-1, ungrouped conv into
  ``permute → Linear → permute`` (the rewrite the StarNet authors used on GPU, seed 000
  A.3) and then removes back-to-back permutes and sinks permutes through element-wise ops,
  so that a run of pointwise ops (StarNet's ``f1``/``f2``/act/star/``g``) stays in NHWC.

Both passes keep the numerics: each structural change that cannot be proven safe from the
module tree alone is checked against the unmodified model on a random input and undone if
the outputs move (see ``_VERIFY_RTOL``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.errors import ConfigError

#: Pass names in the order "auto" applies them.
PASS_NAMES = ("fuse_batchnorm", "pointwise_conv_to_linear")

#: A fused model may differ from the original by float rounding only; anything above this
#: (relative to the output scale) means a fold was structurally wrong and is undone.
_VERIFY_RTOL = 1e-4

_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


# --------------------------------------------------------------------------- helpers


def _example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A seeded random input of the model's expected shape (from ``pretrained_cfg``)."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(getattr(cfg, "input_size", (3, 224, 224)))
    gen = torch.Generator().manual_seed(0)
    if len(size) == 3 and size[1:] == (1, 1):  # point models (DemoNet2D) take (B, C)
        return torch.randn((batch, size[0]), generator=gen)
    return torch.randn((batch, *size), generator=gen)


def _first_output(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


@torch.no_grad()
def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _first_output(model(x)).detach().clone()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = max(1.0, float(b.abs().max()))
    return bool((a - b).abs().max() <= _VERIFY_RTOL * scale)


def _set_submodule(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, child = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) such that ``bn(x) == x * scale + shift`` per channel, in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(f"{bn} has no running statistics; it cannot be folded for inference")
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d computing ``bn(conv(x))`` in eval mode (depthwise and grouped too)."""
    if bn.num_features != conv.out_channels:
        raise ConfigError(f"cannot fold {bn} into {conv}: channel counts differ")
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    )
    w = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    b = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    with torch.no_grad():
        fused.weight.copy_(w.to(conv.weight.dtype))
        fused.bias.copy_((b * scale + shift).to(conv.weight.dtype))
    return fused.to(conv.weight.device)


def _fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm2d) -> nn.Linear:
    """A new Linear computing ``linear(pool(bn(x)))`` given ``linear(pool(x))`` (pool linear)."""
    scale, shift = _bn_scale_shift(bn)
    w = linear.weight.double()
    b = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    new = nn.Linear(linear.in_features, linear.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_((w * scale.reshape(1, -1)).to(linear.weight.dtype))
        new.bias.copy_((b + w @ shift).to(linear.weight.dtype))
    return new.to(linear.weight.device)


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers (1d/2d/3d) in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


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


# --------------------------------------------------------------------------- fuse_batchnorm


def _fuse_in_sequentials(model: nn.Module) -> int:
    """Fold Conv2d → BatchNorm2d pairs that are adjacent children of a Sequential."""
    fused = 0
    for seq in list(model.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        # A Sequential subclass with its own forward may name its children; keep the slot.
        plain_forward = type(seq).forward is nn.Sequential.forward
        for first, second in zip(keys, keys[1:]):
            conv, bn = seq._modules.get(first), seq._modules.get(second)
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.training or bn.running_mean is None or bn.num_features != conv.out_channels:
                continue
            seq._modules[first] = fold_bn_into_conv(conv, bn)
            if plain_forward:
                del seq._modules[second]
            else:
                seq._modules[second] = nn.Identity()
            fused += 1
    return fused


def _conv_bn_candidates(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN's input tensor is exactly the conv's output.

    Found by running the model once with hooks; whether the conv output has other
    consumers cannot be seen this way, so callers verify each fold numerically.
    """
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def conv_hook(name):
        def hook(_m, _inp, out):
            produced[id(out)] = (name, out)  # keep a reference so the id stays unique

        return hook

    def bn_hook(name):
        def hook(_m, inp):
            hit = produced.get(id(inp[0]))
            if hit is not None and hit[1] is inp[0] and (hit[0], name) not in pairs:
                pairs.append((hit[0], name))

        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.BatchNorm2d) and not m.training:
            handles.append(m.register_forward_pre_hook(bn_hook(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    # A module called twice (shared weights) would need both call sites to agree; skip it.
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]
    return [(c, b) for c, b in pairs if convs.count(c) == 1 and bns.count(b) == 1]


def _apply_verified(
    model: nn.Module,
    changes: Sequence[tuple[Callable[[], None], Callable[[], None]]],
    x: torch.Tensor,
    reference: torch.Tensor,
) -> int:
    """Apply (do, undo) changes; keep those that leave the output unchanged. Returns count kept."""
    if not changes:
        return 0
    for do, _ in changes:
        do()
    if _close(_run(model, x), reference):
        return len(changes)
    for _, undo in reversed(changes):
        undo()
    kept = 0
    for do, undo in changes:  # one at a time to find the ones that are safe
        do()
        if _close(_run(model, x), reference):
            kept += 1
        else:
            undo()
    return kept


def _swap(model: nn.Module, replacements: dict[str, nn.Module]) -> tuple[Callable[[], None], Callable[[], None]]:
    old = {name: model.get_submodule(name) for name in replacements}

    def do():
        for name, new in replacements.items():
            _set_submodule(model, name, new)

    def undo():
        for name, prev in old.items():
            _set_submodule(model, name, prev)

    return do, undo


def _heads(model: nn.Module) -> list[str]:
    """Names of classifier heads that read the pooled features (main and distillation)."""
    names = list(getattr(model, "head_names", ()) or ()) or ["head", "dist_head", "head_dist"]
    return [n for n in names if isinstance(getattr(model, n, None), nn.Linear)]


def _fold_final_norm(model: nn.Module) -> list[tuple[Callable[[], None], Callable[[], None]]]:
    """The change that folds a final ``norm`` BatchNorm2d (before global pooling) into the heads."""
    norm = getattr(model, "norm", None)
    heads = _heads(model)
    if not isinstance(norm, nn.BatchNorm2d) or norm.training or not heads:
        return []
    if any(getattr(model, h).in_features != norm.num_features for h in heads):
        return []
    new = {h: _fold_bn_into_linear(getattr(model, h), norm) for h in heads}
    new["norm"] = nn.Identity()
    return [_swap(model, new)]


def _merge_distillation_heads(model: nn.Module) -> list[tuple[Callable[[], None], Callable[[], None]]]:
    """Replace EfficientFormerV2's ``(head(x) + dist_head(x)) / 2`` by one Linear.

    The merged head has weight (W1+W2)/2 and bias (b1+b2)/2. The family's forward must
    accept a missing distillation head (``dist_head = None`` or ``distillation = False``);
    the result is checked numerically by the caller and undone otherwise.
    """
    heads = _heads(model)
    dist = [h for h in heads if h != "head"]
    if "head" not in heads or len(dist) != 1:
        return []
    h1, h2 = model.head, getattr(model, dist[0])
    if h1.weight.shape != h2.weight.shape:
        return []
    merged = nn.Linear(h1.in_features, h1.out_features, bias=True)
    with torch.no_grad():
        merged.weight.copy_((h1.weight.double() + h2.weight.double()).div(2).to(h1.weight.dtype))
        b1 = h1.bias.double() if h1.bias is not None else 0.0
        b2 = h2.bias.double() if h2.bias is not None else 0.0
        merged.bias.copy_(((b1 + b2) / 2).to(h1.weight.dtype))
    old_head, old_dist = h1, h2
    flag = "distillation" if hasattr(model, "distillation") else ("dist" if hasattr(model, "dist") else None)
    old_flag = getattr(model, flag) if flag else None

    old_names = getattr(model, "head_names", None)

    def do():
        model.head = merged
        setattr(model, dist[0], None)
        if old_names is not None:
            model.head_names = ("head",)
        if flag:
            setattr(model, flag, False)

    def undo():
        model.head = old_head
        setattr(model, dist[0], old_dist)
        if old_names is not None:
            model.head_names = old_names
        if flag:
            setattr(model, flag, old_flag)

    return [(do, undo)]


def _shallow_trace(block: nn.Module):
    """``torch.fx`` trace of ``block`` treating every submodule as a leaf, or None."""
    import torch.fx as fx

    class _Shallow(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return True

    try:
        graph = _Shallow().trace(block)
    except Exception:  # noqa: BLE001 - untraceable blocks keep their layer scales
        return None
    return fx.GraphModule(block, graph, class_name=type(block).__name__ + "Folded")


def _branch_output_convs(model: nn.Module, branches: list[nn.Module], x: torch.Tensor) -> dict[int, str]:
    """For each branch module, the name of the conv (inside it) whose output it returns."""
    names = {id(m): n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[int, str] = {}
    handles = []
    for branch in branches:
        for cname, conv in branch.named_modules():
            if isinstance(conv, nn.Conv2d):
                full = names[id(conv)]
                handles.append(conv.register_forward_hook(lambda _m, _i, out, full=full: produced.__setitem__(id(out), (full, out))))

        def on_branch(m, _i, out):
            hit = produced.get(id(out))
            if hit is not None and hit[1] is out:
                found[id(m)] = hit[0]

        handles.append(branch.register_forward_hook(on_branch))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _layer_scale_folds(model: nn.Module, x: torch.Tensor) -> list[tuple[Callable[[], None], Callable[[], None]]]:
    """Fold ``scale * branch(x)`` layer scales into the conv that ends the branch.

    Each block holding a per-channel parameter is traced shallowly (submodules as leaves);
    a ``mul`` of that parameter with a submodule's output whose last op is a Conv2d is
    removed from the graph and the conv's weight and bias are scaled instead. Exact up to
    rounding; the caller verifies numerically and undoes on mismatch.
    """
    import torch.fx as fx

    candidates = []  # (parent name, child name, block, traced, [(mul node, param, branch node)])
    for qual, block in model.named_modules():
        if not qual or type(block).__module__.startswith("torch."):
            continue
        if not any(p.ndim in (1, 3) for p in block.parameters(recurse=False)):
            continue
        gm = _shallow_trace(block)
        if gm is None:
            continue
        muls = []
        for node in gm.graph.nodes:
            if node.op != "call_function" or node.target not in (operator.mul, torch.mul) or len(node.args) != 2:
                continue
            a, b = node.args
            if isinstance(b, fx.Node) and b.op == "get_attr":
                a, b = b, a
            if not (isinstance(a, fx.Node) and a.op == "get_attr" and isinstance(b, fx.Node) and b.op == "call_module"):
                continue
            param = getattr(block, a.target, None)
            if isinstance(param, nn.Parameter) and len(b.users) == 1:
                muls.append((node, a.target, b))
        if muls:
            candidates.append((qual, block, gm, muls))
    if not candidates:
        return []
    branches = [blk.get_submodule(bnode.target) for _, blk, _, muls in candidates for _, _, bnode in muls]
    ends = _branch_output_convs(model, branches, x)
    changes = []
    for qual, block, gm, muls in candidates:
        new_convs: dict[str, nn.Module] = {}
        for mul, pname, bnode in muls:
            conv_name = ends.get(id(block.get_submodule(bnode.target)))
            gamma = getattr(block, pname).detach().reshape(-1)
            if conv_name is None:
                continue
            conv = model.get_submodule(conv_name)
            if gamma.numel() != conv.out_channels or conv_name in new_convs:
                continue
            scaled = copy.deepcopy(conv)
            with torch.no_grad():
                scaled.weight.mul_(gamma.reshape(-1, 1, 1, 1).to(scaled.weight.dtype))
                if scaled.bias is not None:
                    scaled.bias.mul_(gamma.to(scaled.bias.dtype))
            new_convs[conv_name] = scaled
            mul.replace_all_uses_with(bnode)
            gm.graph.erase_node(mul)
        if not new_convs:
            continue
        gm.graph.eliminate_dead_code()
        gm.recompile()
        for pname in {p for _, p, _ in muls}:  # drop scale parameters the graph no longer reads
            if not any(n.op == "get_attr" and n.target == pname for n in gm.graph.nodes) and hasattr(gm, pname):
                delattr(gm, pname)
        changes.append(_swap(model, {**new_convs, qual: gm}))
    return changes


def _has_scale_params(model: nn.Module) -> bool:
    """Whether a non-torch module holds a per-channel parameter directly (a layer scale)."""
    return any(
        not type(m).__module__.startswith("torch.") and any(p.ndim in (1, 3) for p in m.parameters(recurse=False))
        for m in model.modules()
    )


def fuse_batchnorm(module: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A deep copy of ``module`` with every inference BatchNorm folded away.

    * Conv2d → BatchNorm2d (plain, depthwise, grouped) in Sequentials such as StarNet's
      ``ConvBN``, and anywhere else the BN reads exactly the conv's output (found with
      forward hooks on ``example_input``, each fold checked numerically).
    * A final ``norm`` BatchNorm2d before global pooling folded into the head(s).
    * Layer scales (``x + gamma * branch(x)`` where the branch ends in a conv) folded into
      that conv, and two classifier heads (``head`` + ``dist_head``) merged into one
      Linear; both checked numerically and undone if the family's forward does not allow
      them.

    The input module is not modified. The result is in eval mode.
    """
    model = copy.deepcopy(module).eval()
    _fuse_in_sequentials(model)
    if count_batchnorm(model) == 0 and len(_heads(model)) < 2 and not _has_scale_params(model):
        return model  # nothing a forward pass could find
    x = example_input if example_input is not None else _example_input(model, batch=1)
    reference = _run(model, x)
    # Fast path: apply every fold, verify once. Each later step needs the earlier folds in
    # place (a layer scale's branch ends in a conv only once its BN is gone).
    groups: list[list[tuple[Callable[[], None], Callable[[], None]]]] = []
    steps = [
        lambda: [
            _swap(model, {c: fold_bn_into_conv(model.get_submodule(c), model.get_submodule(b)), b: nn.Identity()})
            for c, b in _conv_bn_candidates(model, x)
        ],
        lambda: _layer_scale_folds(model, x),
        lambda: _fold_final_norm(model),
        lambda: _merge_distillation_heads(model),
    ]
    for step in steps:
        changes = step()
        for do, _ in changes:
            do()
        groups.append(changes)
    if _close(_run(model, x), reference):
        return model
    # Slow path: undo everything and keep only the folds that verify one group at a time.
    for changes in reversed(groups):
        for _, undo in reversed(changes):
            undo()
    for step in steps:
        _apply_verified(model, step(), x, reference)
    return model


# --------------------------------------------------------------------------- pointwise → linear


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
        _set_submodule(gm, node.target, conv1x1_to_linear(conv))
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


# --------------------------------------------------------------------------- pass selection

#: Whether ``pointwise_conv_to_linear`` makes the exported artifact faster, per format.
#: StarNet-S1, fp32, batch 1, 2 threads, fuse_batchnorm vs. fuse + linear, on the shared
#: 2-core EPYC under heavy load (load average ~13), two runs (docs/exports.md, "Rewrites
#: and latency"; run 1: medians; run 2: best round and median), plus the operators each
#: runtime executes (load-independent):
#:   onnx     0.88x | 0.90x, 0.89x   +30 Transpose; 45 MatMul + 45 Add replace 45 Conv
#:   openvino 0.89x | 1.22x, 1.07x   +30 Reorder after CPU compilation
#:   tflite   1.26x | 0.99x, 0.68x   same op count: litert-torch already runs NHWC, 45
#:                                   CONV_2D become FULLY_CONNECTED (one GEMM either way)
#:   coreml   not measured (no Apple device here); convs are what the ANE is built for
#: No format was faster in every run, so "auto" means fuse_batchnorm only on these CPU
#: targets. (The paper used the rewrite on GPU, seed 000 A.3; it stays available by name.)
#: Re-measured on the quiet machine (15:56 UTC, load ~0.1, 6 interleaved rounds, medians;
#: docs/benchmarks.md "--rewrite auto"), fuse / fuse+linear for StarNet-S1 and EffFormerV2-S0:
#:   onnx 0.85x, 0.75x (slower: keep off); openvino 1.03x, 0.99x and tflite 1.03x, 1.02x
#:   (within +-3%, not faster in every round: keep off).
POINTWISE_LINEAR_HELPS: dict[str, bool] = {
    "onnx": False,
    "openvino": False,
    "tflite": False,
    "coreml": False,
}

PASSES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "fuse_batchnorm": fuse_batchnorm,
    "pointwise_conv_to_linear": pointwise_conv_to_linear,
}


def resolve_passes(rewrite: str | Iterable[str] | None, fmt: str) -> list[str]:
    """The pass names to apply for export format ``fmt``.

    ``"auto"``: ``fuse_batchnorm`` always, ``pointwise_conv_to_linear`` only where
    :data:`POINTWISE_LINEAR_HELPS` says it was measured to
    help that format. ``"none"``/None: nothing. Otherwise a comma-separated string or a
    list of pass names, applied in the order given.
    """
    if rewrite is None:
        return []
    if isinstance(rewrite, str):
        key = rewrite.strip().lower()
        if key == "none" or key == "":
            return []
        if key == "auto":
            passes = ["fuse_batchnorm"]
            if POINTWISE_LINEAR_HELPS.get(fmt, False):
                passes.append("pointwise_conv_to_linear")
            return passes
        names = [p.strip() for p in key.split(",") if p.strip()]
    else:
        names = [str(p).strip() for p in rewrite]
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ConfigError(
            f"unknown rewrite pass(es) {unknown}; use 'auto', 'none' or a comma-separated list of {list(PASSES)}"
        )
    return list(dict.fromkeys(names))


def apply_passes(model: nn.Module, passes: Sequence[str]) -> nn.Module:
    """Apply the named passes in order (each is pure, so ``model`` is left untouched)."""
    out = model
    for name in passes:
        out = PASSES[name](out)
    return out
