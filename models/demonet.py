"""DemoNet and DemoNet2D, the isotropic networks of "Rewrite the Stars" (supp. Algorithms 1, 2).

DemoNet: a patch-16 conv stem, ``depth`` identical blocks
``x + g(act(x1) op x2)`` where ``[x1, x2] = f(dwconv7x7(LayerNorm(x)))`` and ``op`` is ``*``
(star) or ``+`` (sum), then mean pooling, LayerNorm and a Linear head. The activation is
GELU and can be removed (``act=False``, Tables 4, 15, 16).

DemoNet2D: the same block without the depthwise conv (ReLU), on 2-D points (Fig. 2).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.models.registry import ModelEntry, PaperFigures, PretrainedConfig, register

_MODES = ("star", "sum")


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        from staredge.errors import ConfigError

        raise ConfigError(f"DemoNet mode must be one of {_MODES}, got {mode!r}")
    return mode


class DemoBlock(nn.Module):
    """One DemoNet block (channels-last input ``(B, H, W, C)``)."""

    def __init__(self, dim: int, mode: str = "star", act: bool = True, conv: bool = True, act_fn: str = "gelu") -> None:
        super().__init__()
        self.mode = _check_mode(mode)
        self.norm = nn.LayerNorm(dim)
        self.dwconv = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim) if conv else None
        self.f = nn.Linear(dim, 6 * dim)
        self.g = nn.Linear(3 * dim, dim)
        self.act = (nn.GELU() if act_fn == "gelu" else nn.ReLU()) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(x)
        if self.dwconv is not None:
            x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x1, x2 = self.f(x).chunk(2, dim=-1)
        x = self.act(x1) * x2 if self.mode == "star" else self.act(x1) + x2
        return shortcut + self.g(x)


class DemoNet(nn.Module):
    """Isotropic DemoNet of width ``width`` and ``depth`` blocks on 16x16 patches."""

    def __init__(
        self,
        width: int = 192,
        depth: int = 12,
        mode: str = "star",
        act: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mode = _check_mode(mode)
        self.stem = nn.Conv2d(in_chans, width, patch_size, patch_size)
        self.net = nn.Sequential(*[DemoBlock(width, mode, act) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(self.stem(x).permute(0, 2, 3, 1))
        return self.head(self.norm(x.mean((1, 2))))


class DemoNet2D(nn.Module):
    """DemoNet for 2-D points (supp. Algorithm 2): Linear stem, ReLU blocks without conv."""

    def __init__(self, width: int = 100, depth: int = 4, mode: str = "star", act: bool = True, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mode = _check_mode(mode)
        self.stem = nn.Linear(2, width)
        self.net = nn.Sequential(*[DemoBlock(width, mode, act, conv=False, act_fn="relu") for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.net(self.stem(x))))

    @torch.no_grad()
    def decision_function(self, points: torch.Tensor) -> torch.Tensor:
        """Class-1 probability for each point (for plotting decision boundaries)."""
        return F.softmax(self(points), dim=-1)[..., 1]


_PAPER_W96 = PaperFigures(1.26, None, None, "StarNet supp. A.2", note="paper: 'approximately 1.26M'")
_PAPER_W288 = PaperFigures(9.68, None, None, "StarNet supp. A.2", note="paper: 'approximately 9.68M'")

_DEMONETS = {
    # Table 4 / 16 setting: width 192, depth 12
    "demonet": ({"width": 192, "depth": 12, "mode": "star"}, PaperFigures(top1=71.7, source="StarNet Table 4"), "star"),
    "demonet_sum": ({"width": 192, "depth": 12, "mode": "sum"}, PaperFigures(top1=66.2, source="StarNet Table 4"), "sum"),
    "demonet_noact": (
        {"width": 192, "depth": 12, "mode": "star", "act": False},
        PaperFigures(top1=70.5, source="StarNet Table 4"),
        "star, no activation",
    ),
    "demonet_w96": ({"width": 96, "depth": 12, "mode": "star"}, _PAPER_W96, "star"),
    "demonet_w288": ({"width": 288, "depth": 12, "mode": "star"}, _PAPER_W288, "star"),
}

for _name, (_kw, _paper, _desc) in _DEMONETS.items():
    register(
        ModelEntry(
            name=_name,
            family="demonet",
            builder=DemoNet,
            kwargs=_kw,
            cfg=PretrainedConfig(),
            paper=_paper,
            description=f"DemoNet width {_kw['width']}, depth {_kw['depth']}, {_desc}",
        )
    )

register(
    ModelEntry(
        name="demonet2d",
        family="demonet",
        builder=DemoNet2D,
        kwargs={"width": 100, "depth": 4, "mode": "star"},
        cfg=PretrainedConfig(input_size=(2, 1, 1), num_classes=2, labels="none", mean=(0.0, 0.0), std=(1.0, 1.0)),
        description="DemoNet for 2-D points (moons), width 100, depth 4",
    )
)
