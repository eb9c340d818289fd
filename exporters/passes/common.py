"""Helpers shared by the rewrite passes: example inputs, numeric verification of folds,
module surgery and the BatchNorm arithmetic.

A *change* is a ``(do, undo)`` pair of callables that edit a model in place; a pass
collects changes, applies them and keeps only those that leave the output unchanged
(:func:`apply_verified`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from staredge.errors import ConfigError

#: A fused model may differ from the original by float rounding only; anything above this
#: (relative to the output scale) means a fold was structurally wrong and is undone.
VERIFY_RTOL = 1e-4

#: ``(do, undo)``: an in-place edit of a model and its inverse.
Change = tuple[Callable[[], None], Callable[[], None]]


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A seeded random input of the model's expected shape (from ``pretrained_cfg``)."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(getattr(cfg, "input_size", (3, 224, 224)))
    gen = torch.Generator().manual_seed(0)
    if len(size) == 3 and size[1:] == (1, 1):  # point models (DemoNet2D) take (B, C)
        return torch.randn((batch, size[0]), generator=gen)
    return torch.randn((batch, *size), generator=gen)


def first_output(out) -> torch.Tensor:
    """The first tensor of a model output (models may return a tuple)."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


@torch.no_grad()
def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's (first) output on ``x``, detached."""
    return first_output(model(x)).detach().clone()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` equals the reference ``b`` up to :data:`VERIFY_RTOL` of its scale."""
    scale = max(1.0, float(b.abs().max()))
    return bool((a - b).abs().max() <= VERIFY_RTOL * scale)


def has_module(root: nn.Module, qualname: str) -> bool:
    """Whether ``root`` has a submodule (not None) called ``qualname``."""
    try:
        return root.get_submodule(qualname) is not None
    except AttributeError:
        return False


def set_submodule(root: nn.Module, qualname: str, new: nn.Module | None) -> None:
    """Replace the submodule called ``qualname`` (``None`` removes it, as a family may allow)."""
    parent_name, _, child = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def swap(model: nn.Module, replacements: dict[str, nn.Module | None]) -> Change:
    """The change that replaces the named submodules (and puts the old ones back)."""
    old = {name: model.get_submodule(name) for name in replacements}

    def do():
        for name, new in replacements.items():
            set_submodule(model, name, new)

    def undo():
        for name, prev in old.items():
            set_submodule(model, name, prev)

    return do, undo


def apply_verified(model: nn.Module, changes: Sequence[Change], x: torch.Tensor, reference: torch.Tensor) -> int:
    """Apply (do, undo) changes; keep those that leave the output unchanged. Returns count kept."""
    if not changes:
        return 0
    for do, _ in changes:
        do()
    if close(run(model, x), reference):
        return len(changes)
    for _, undo in reversed(changes):
        undo()
    kept = 0
    for do, undo in changes:  # one at a time to find the ones that are safe
        do()
        if close(run(model, x), reference):
            kept += 1
        else:
            undo()
    return kept


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
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
    scale, shift = bn_scale_shift(bn)
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


def fold_bn_into_linear(linear: nn.Linear, bn: nn.BatchNorm2d) -> nn.Linear:
    """A new Linear computing ``linear(pool(bn(x)))`` given ``linear(pool(x))`` (pool linear)."""
    scale, shift = bn_scale_shift(bn)
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


__all__ = [
    "Change",
    "VERIFY_RTOL",
    "apply_verified",
    "bn_scale_shift",
    "close",
    "count_batchnorm",
    "example_input",
    "first_output",
    "fold_bn_into_conv",
    "fold_bn_into_linear",
    "has_module",
    "run",
    "set_submodule",
    "swap",
]
