"""BatchNorm folding (the ``fuse_batchnorm`` pass) and the family folds that run with it.

Generic folds, for any module: Conv2d → BatchNorm2d pairs that are adjacent children of a
Sequential, and any other pair where the BatchNorm reads exactly the conv's output (found
with forward hooks on an example input). Family folds, from the model's
``inference_folds()`` hook (:mod:`staredge.models.folds`): the conv/BN pairs the family
lists, layer scales (:mod:`staredge.exporters.passes.layer_scale`), a BatchNorm before
global pooling folded into the classifier head(s), and averaged heads merged into one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn

from staredge.exporters.passes.common import (
    Change,
    apply_verified,
    close,
    count_batchnorm,
    example_input,
    fold_bn_into_conv,
    fold_bn_into_linear,
    has_module,
    run,
    swap,
)
from staredge.exporters.passes.layer_scale import layer_scale_folds
from staredge.models.folds import InferenceFolds, inference_folds


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


def _foldable_pair(model: nn.Module, conv_name: str, bn_name: str) -> bool:
    if not (has_module(model, conv_name) and has_module(model, bn_name)):
        return False
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    return (
        isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training
        and bn.running_mean is not None and bn.num_features == conv.out_channels
    )


def _pair_folds(model: nn.Module, pairs) -> list[Change]:
    return [
        swap(model, {c: fold_bn_into_conv(model.get_submodule(c), model.get_submodule(b)), b: nn.Identity()})
        for c, b in pairs
        if _foldable_pair(model, c, b)
    ]


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


def _discovered_conv_bn(model: nn.Module, x: torch.Tensor) -> list[Change]:
    """Folds for the conv/BN pairs a forward pass finds (only if BatchNorms are left)."""
    if count_batchnorm(model) == 0:
        return []
    return _pair_folds(model, _conv_bn_candidates(model, x))


def _heads(model: nn.Module, folds: InferenceFolds) -> list[str]:
    return [h for h in folds.heads if has_module(model, h) and isinstance(model.get_submodule(h), nn.Linear)]


def _pooled_norm_fold(model: nn.Module, folds: InferenceFolds) -> list[Change]:
    """The change that folds the family's pre-pooling BatchNorm2d into its head(s)."""
    name = folds.pooled_norm
    if name is None or not has_module(model, name):
        return []
    norm, heads = model.get_submodule(name), _heads(model, folds)
    if not isinstance(norm, nn.BatchNorm2d) or norm.training or not heads:
        return []
    if any(model.get_submodule(h).in_features != norm.num_features for h in heads):
        return []
    new: dict[str, nn.Module | None] = {h: fold_bn_into_linear(model.get_submodule(h), norm) for h in heads}
    new[name] = nn.Identity()
    return [swap(model, new)]


def _merge_averaged_heads(model: nn.Module, folds: InferenceFolds) -> list[Change]:
    """Replace heads whose outputs the forward averages by one Linear (the others set to None).

    The merged head has the mean weight and the mean bias; the family's forward treats a
    head set to None as absent (see :class:`InferenceFolds`).
    """
    names = [h for h in folds.averaged_heads if has_module(model, h)]
    heads = [model.get_submodule(h) for h in names]
    if len(heads) < 2 or not all(isinstance(h, nn.Linear) for h in heads):
        return []
    if len({tuple(h.weight.shape) for h in heads}) != 1:
        return []
    first = heads[0]
    merged = nn.Linear(first.in_features, first.out_features, bias=True)
    with torch.no_grad():
        merged.weight.copy_((sum(h.weight.double() for h in heads) / len(heads)).to(first.weight.dtype))
        biases = [h.bias.double() if h.bias is not None else torch.zeros(h.out_features, dtype=torch.float64) for h in heads]
        merged.bias.copy_((sum(biases) / len(heads)).to(first.weight.dtype))
    merged = merged.to(first.weight.device)
    return [swap(model, {names[0]: merged, **{n: None for n in names[1:]}})]


def fuse_batchnorm(module: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A deep copy of ``module`` with every inference BatchNorm folded away.

    * Conv2d → BatchNorm2d (plain, depthwise, grouped) in Sequentials such as StarNet's
      ``ConvBN``, the pairs the family lists (EfficientFormerV2's ``conv_bn_pairs()``), and
      anywhere else the BN reads exactly the conv's output (found with forward hooks on
      ``example_input``, each fold checked numerically).
    * The family's folds (``inference_folds()``, :mod:`staredge.models.folds`): layer scales
      folded into the conv that ends the scaled branch, a BatchNorm2d before global pooling
      folded into the head(s), averaged heads (EfficientFormerV2's ``head`` and
      ``dist_head``) merged into one Linear. Each is checked numerically and undone if the
      output moves.

    The input module is not modified. The result is in eval mode.
    """
    model = copy.deepcopy(module).eval()
    folds = inference_folds(model)
    _fuse_in_sequentials(model)
    if count_batchnorm(model) == 0 and not (folds.layer_scales or folds.averaged_heads):
        return model  # nothing left to fold
    x = example_input if example_input is not None else _example(model)
    reference = run(model, x)
    # Fast path: apply every fold, verify once. Each later step needs the earlier folds in
    # place (a layer scale's branch ends in a conv only once its BN is gone).
    steps: list[Callable[[], list[Change]]] = [
        lambda: _pair_folds(model, folds.conv_bn),
        lambda: _discovered_conv_bn(model, x),
        lambda: layer_scale_folds(model, folds.layer_scales),
        lambda: _pooled_norm_fold(model, folds),
        lambda: _merge_averaged_heads(model, folds),
    ]
    groups: list[list[Change]] = []
    for step in steps:
        changes = step()
        for do, _ in changes:
            do()
        groups.append(changes)
    if close(run(model, x), reference):
        return model
    # Slow path: undo everything and keep only the folds that verify one group at a time.
    for changes in reversed(groups):
        for _, undo in reversed(changes):
            undo()
    for step in steps:
        apply_verified(model, step(), x, reference)
    return model


def _example(model: nn.Module) -> torch.Tensor:
    return example_input(model, batch=1)


__all__ = ["fuse_batchnorm"]
