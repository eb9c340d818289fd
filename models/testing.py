"""Weights for checking conversions of models that have no checkpoint.

A freshly initialised zoo model is a poor test subject: BatchNorm layers hold mean 0 / var 1
/ weight 1 / bias 0 (so folding them is nearly a no-op) and the heads give logits of ~1e-3
(so a 1e-4 tolerance means nothing). :func:`realistic_weights` gives every BatchNorm a real
affine map, layer scales non-trivial values and the heads O(1) logits, deterministically.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def realistic_weights(model: nn.Module, seed: int = 0, head_std: float | None = None) -> nn.Module:
    """Seeded BN statistics/affine, layer scales in [0.5, 1.5) and O(1) logits; returns ``model`` in eval.

    Head weights (modules named ``head``/``dist_head``) are drawn with standard deviation
    ``head_std``, or ``1/sqrt(fan_in)`` when None. The model is changed in place.
    """
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, _BN):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            if mod.affine:
                mod.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
    for name, p in model.named_parameters():
        if "layer_scale" in name:
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        if name.split(".")[0] in ("head", "dist_head") and name.endswith("weight"):
            std = head_std if head_std is not None else p.shape[1] ** -0.5
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    after = getattr(model, "after_load", None)
    if callable(after):  # e.g. EfficientFormerV2 refreshes its attention-bias cache
        after()
    return model.eval()
