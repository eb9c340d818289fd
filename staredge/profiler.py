"""Parameter and MAC counting.

Convention (stated with every result): **MACs** are multiply-accumulates of convolutions,
linear layers and matrix multiplications (attention's ``q·k`` and ``attn·v`` included),
counted by PyTorch's ``FlopCounterMode`` on one forward pass at batch 1 and halved
(one MAC = 2 FLOPs). Bias adds, normalisation, activations, element-wise products,
pooling and resizes are not counted. **Params** are all trainable parameters of the model
as built (BatchNorm affine parameters included, buffers excluded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

MAC_CONVENTION = (
    "MACs = multiply-accumulates of conv, linear and matmul ops (attention matmuls included) "
    "at batch 1; bias adds, norms, activations, element-wise ops and pooling not counted. "
    "Params = all trainable parameters (BN affine included)."
)


@dataclass(frozen=True)
class ProfileResult:
    """Parameters and MACs of a model at one input size."""

    name: str
    params: int
    macs: int
    input_size: tuple[int, ...]
    params_no_bn: int | None = None
    convention: str = MAC_CONVENTION

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def macs_m(self) -> float:
        """MACs in millions."""
        return self.macs / 1e6

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return asdict(self)


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def count_params(model: nn.Module, *, include_batchnorm: bool = True) -> int:
    """Number of trainable parameters (shared tensors counted once).

    ``include_batchnorm=False`` leaves out BatchNorm affine parameters, the convention of
    papers that count the inference graph after BN fusing (EfficientFormerV2).
    """
    skip: set[int] = set()
    if not include_batchnorm:
        skip = {id(p) for m in model.modules() if isinstance(m, _BN_TYPES) for p in m.parameters(recurse=False)}
    seen: set[int] = set(skip)
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of one forward pass on ``example`` (see :data:`MAC_CONVENTION`)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def profile(model_or_name: nn.Module | str, input_size: tuple[int, ...] | int | None = None) -> ProfileResult:
    """Count parameters and MACs of a model (an ``nn.Module`` or a registered name).

    ``input_size`` is (C, H, W), a single int H (square, 3 channels), or None for the
    model's default config. Returns a :class:`ProfileResult` whose ``convention`` says what
    was counted.
    """
    from staredge.models import create

    if isinstance(model_or_name, str):
        model = create(model_or_name)
        name = model.staredge_name
    else:
        model = model_or_name
        name = getattr(model, "staredge_name", type(model).__name__)
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        input_size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    elif isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    input_size = tuple(int(s) for s in input_size)
    example = torch.zeros((1, *input_size))
    if input_size[1:] == (1, 1) and input_size[0] == 2:  # point models (DemoNet2D)
        example = torch.zeros((1, 2))
    return ProfileResult(
        name=name,
        params=count_params(model),
        macs=count_macs(model, example),
        input_size=input_size,
        params_no_bn=count_params(model, include_batchnorm=False),
    )
