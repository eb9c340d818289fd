"""StarNet (Ma et al., "Rewrite the Stars", CVPR 2024) with the official key layout.

The structure mirrors the official implementation so that the released checkpoints
(``starnet_s{1,2,3,4}.pth.tar``) and timm's ``starnet_*`` weights load with strict key
matching: ``stem.0.{conv,bn}``, ``stages.{i}.0`` (downsampler ConvBN), ``stages.{i}.{j>0}``
(blocks with ``dwconv``, ``f1``, ``f2``, ``g``, ``dwconv2``), ``norm`` (BatchNorm2d before
global average pooling) and ``head`` (Linear).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from staredge.models.folds import InferenceFolds
from staredge.models.layers import DropPath
from staredge.models.registry import ModelEntry, PaperFigures, PretrainedConfig, register


class ConvBN(nn.Sequential):
    """Conv2d (with bias, as in the official code) optionally followed by BatchNorm2d."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        with_bn: bool = True,
    ) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, dilation, groups))
        if with_bn:
            self.add_module("bn", nn.BatchNorm2d(out_planes))
            nn.init.constant_(self.bn.weight, 1)
            nn.init.constant_(self.bn.bias, 0)


class Block(nn.Module):
    """StarNet block: dwconv → star(f1, f2) → g → dwconv2, with a residual.

    ``mode="sum"`` replaces the star with a sum (the paper's Table 8 ablation); it keeps the
    same parameters and key names.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4, drop_path: float = 0.0, mode: str = "star") -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = ConvBN(dim, dim, 7, 1, 3, groups=dim, with_bn=True)
        self.f1 = ConvBN(dim, hidden, 1, with_bn=False)
        self.f2 = ConvBN(dim, hidden, 1, with_bn=False)
        self.g = ConvBN(hidden, dim, 1, with_bn=True)
        self.dwconv2 = ConvBN(dim, dim, 7, 1, 3, groups=dim, with_bn=False)
        self.act = nn.ReLU6()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if mode not in ("star", "sum"):
            raise ValueError(f"mode must be 'star' or 'sum', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        if self.mode == "star":
            x = self.act(self.f1(x)) * self.f2(x)
        else:
            x = self.act(self.f1(x)) + self.f2(x)
        x = self.dwconv2(self.g(x))
        return shortcut + self.drop_path(x)


class StarNet(nn.Module):
    """Four-stage StarNet; stage ``i`` has width ``base_dim * 2**i`` and ``depths[i]`` blocks."""

    def __init__(
        self,
        base_dim: int = 32,
        depths: tuple[int, ...] = (3, 3, 12, 5),
        mlp_ratio: float = 4,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        mode: str = "star",
        in_chans: int = 3,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channel = 32  # stem width is 32 for every official variant
        self.stem = nn.Sequential(
            ConvBN(in_chans, self.in_channel, kernel_size=3, stride=stem_stride, padding=1), nn.ReLU6()
        )
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.stages = nn.ModuleList()
        cur = 0
        for i, depth in enumerate(depths):
            embed_dim = base_dim * 2**i
            down_sampler = ConvBN(self.in_channel, embed_dim, 3, 2, 1)
            self.in_channel = embed_dim
            blocks = [Block(embed_dim, mlp_ratio, dpr[cur + j], mode=mode) for j in range(depth)]
            cur += depth
            self.stages.append(nn.Sequential(down_sampler, *blocks))
        self.num_features = self.in_channel
        self.norm = nn.BatchNorm2d(self.in_channel)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.in_channel, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the last stage (before ``norm``)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.avgpool(self.norm(x)), 1)
        return self.head(x)

    def inference_folds(self) -> InferenceFolds:
        """What the export passes may fold for inference (see :mod:`staredge.models.folds`):
        the conv+BN of every :class:`ConvBN`, and the final ``norm``, which is only
        average-pooled into ``head``. StarNet has no layer scales (StarNet paper,
        supplementary Section A.2)."""
        pairs = tuple(
            (f"{name}.conv", f"{name}.bn")
            for name, module in self.named_modules()
            if isinstance(module, ConvBN) and "bn" in module._modules
        )
        return InferenceFolds(conv_bn=pairs, pooled_norm="norm", heads=("head",))


# name, base width, depths, mlp ratio, paper figures (StarNet paper, Tables 5/6; its supplementary
# material, Tables 13/14)
_VARIANTS = {
    "starnet_s1": (24, (2, 2, 8, 3), 4, PaperFigures(2.9, 425, 73.5, "StarNet Table 5/6")),
    "starnet_s2": (32, (1, 2, 6, 2), 4, PaperFigures(3.7, 547, 74.8, "StarNet Table 5/6")),
    "starnet_s3": (32, (2, 2, 8, 4), 4, PaperFigures(5.8, 757, 77.3, "StarNet Table 5/6")),
    "starnet_s4": (
        32,
        (3, 3, 12, 5),
        4,
        PaperFigures(
            7.5, 1075, 78.4, "StarNet Table 5/6",
            note="outlier: paper 1075M is 2.4% above our count (the other variants are within 1.6%)",
        ),
    ),
    "starnet_s050": (16, (1, 1, 3, 1), 3, PaperFigures(0.54, 92.8, 55.7, "StarNet supp. Table 13/14")),
    "starnet_s100": (20, (1, 2, 4, 1), 4, PaperFigures(1.04, 187.1, 64.3, "StarNet supp. Table 13/14")),
    "starnet_s150": (24, (1, 2, 4, 2), 3, PaperFigures(1.56, 229.0, 68.0, "StarNet supp. Table 13/14")),
}

for _name, (_dim, _depths, _ratio, _paper) in _VARIANTS.items():
    register(
        ModelEntry(
            name=_name,
            family="starnet",
            builder=StarNet,
            kwargs={"base_dim": _dim, "depths": _depths, "mlp_ratio": _ratio},
            cfg=PretrainedConfig(),
            paper=_paper,
            description=f"StarNet width {_dim}, depths {list(_depths)}, MLP ratio {_ratio}",
        )
    )
