"""Per-class operator configuration: the ``LIVConfig`` / structure enums users know from the
``star-backbone`` README (seed 003), checked against the paper's operator genomes and
resolved into concrete sizes (heads, state size, kernel lengths) for one model width."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import IntEnum

from staredge.errors import ConfigError
from staredge.models.star import choices as C


class TokenMixingStructure(IntEnum):
    """Linear token-mixing structure of a LIV (operator genome gene 2)."""

    DIAGONAL = 1
    LOW_RANK = 2
    SCALED_TOEPLITZ = 3
    SEQUENTIAL_SEMI_SEPARABLE = 4


class ChannelMixingStructure(IntEnum):
    """Channel-mixing structure of a LIV (operator genome gene 5)."""

    DIAGONAL = 1
    DENSE = 2
    GROUPED = 3


#: Nonlinearity names -> operator genome gene 4 values ("silu" is swish).
NONLINEARITIES = {"none": 1, "softmax": 2, "relu": 3, "swish": 4, "silu": 4}


@dataclass
class LIVConfig:
    """Options for one LIV class, given as ``configs={class_id: LIVConfig(...)}``.

    The structural fields (``featurizer_class``, ``token_mixing``, ``sparsity_mask``,
    ``nonlinearity``, ``channel_mixing``) describe the operator; when given they must match
    the paper's operator genome of the class (e.g. SA-1 is 1-2-1-2-3), because the class id
    already fixes the operator. The size fields override our defaults in
    :mod:`staredge.models.star.choices`:

    - ``expansion_factor``: Rec-1/2 state size N (the paper's B/C expansion factor);
      GMemless hidden width as a multiple of ``dim`` (no rounding when given).
    - ``repeat_factor``: attention query heads per K/V head (GQA).
    - ``head_dim``: attention head size.
    - ``kernel_size``: short convolution length (SA-2 featurizer, Rec conv, GConv-1 filter).
    """

    featurizer_class: int | None = None
    token_mixing: TokenMixingStructure | None = None
    sparsity_mask: bool | None = None
    nonlinearity: str | None = None
    channel_mixing: ChannelMixingStructure | None = None
    expansion_factor: float | None = None
    repeat_factor: int | None = None
    head_dim: int | None = None
    kernel_size: int | None = None

    def check(self, liv_class: int) -> "LIVConfig":
        """Raise ConfigError if a structural field contradicts the class's operator genome."""
        if not 1 <= liv_class <= C.NUM_CLASSES:
            raise ConfigError(f"configs has key {liv_class}, which is not a LIV class (1..{C.NUM_CLASSES})")
        op = C.OPERATOR_GENOMES[C.base_class(liv_class)]
        name = C.CLASS_NAMES[liv_class]
        given = {
            "featurizer_class": (self.featurizer_class, op[0]),
            "token_mixing": (None if self.token_mixing is None else int(self.token_mixing), op[1]),
            "sparsity_mask": (None if self.sparsity_mask is None else 2 if self.sparsity_mask else 1, op[2]),
            "nonlinearity": (None if self.nonlinearity is None else NONLINEARITIES.get(str(self.nonlinearity).lower(), -1), op[3]),
            "channel_mixing": (None if self.channel_mixing is None else int(self.channel_mixing), op[4]),
        }
        for field, (value, expected) in given.items():
            if value is not None and value != expected:
                raise ConfigError(
                    f"LIVConfig for class {liv_class} ({name}): {field}={getattr(self, field)!r} contradicts its "
                    f"operator genome {''.join(map(str, op))} (expects value {expected}); choose another LIV class instead")
        for field in ("expansion_factor", "repeat_factor", "head_dim", "kernel_size"):
            v = getattr(self, field)
            if v is not None and not v > 0:
                raise ConfigError(f"LIVConfig for class {liv_class} ({name}): {field} must be positive, got {v}")
        return self

    def to_dict(self) -> dict:
        """JSON-able dict (enums as ints); None fields left out."""
        d = {k: (int(v) if isinstance(v, IntEnum) else v) for k, v in asdict(self).items() if v is not None}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LIVConfig":
        """Inverse of :meth:`to_dict`."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown LIVConfig fields {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "token_mixing" in d:
            d["token_mixing"] = TokenMixingStructure(d["token_mixing"])
        if "channel_mixing" in d:
            d["channel_mixing"] = ChannelMixingStructure(d["channel_mixing"])
        return cls(**d)


def normalize_configs(configs) -> dict[int, LIVConfig]:
    """``{class_id: LIVConfig}`` with keys as ints, each checked against its class."""
    out: dict[int, LIVConfig] = {}
    for k, v in (configs or {}).items():
        cls = int(k)
        cfg = LIVConfig.from_dict(v) if isinstance(v, dict) else v
        if not isinstance(cfg, LIVConfig):
            raise ConfigError(f"configs[{k}] must be a LIVConfig or dict, got {type(v).__name__}")
        out[cls] = cfg.check(cls)
    return out


@dataclass(frozen=True)
class AttentionShape:
    """Concrete attention sizes for one class at one width."""

    heads: int
    kv_heads: int
    head_dim: int


def attention_shape(liv_class: int, dim: int, cfg: LIVConfig) -> AttentionShape:
    """Heads = dim // head_dim (at least 1), K/V heads = heads // repeat (at least 1)."""
    hd = cfg.head_dim or C.HEAD_DIM
    heads = max(1, dim // hd)
    if dim % heads:
        raise ConfigError(f"dim {dim} is not divisible into {heads} attention heads; pick head_dim dividing dim")
    hd = dim // heads
    repeat = cfg.repeat_factor or C.GQA_REPEAT[C.base_class(liv_class)]
    kv = max(1, heads // int(repeat))
    if heads % kv:
        raise ConfigError(f"{heads} attention heads cannot be grouped into {kv} K/V heads (repeat {repeat})")
    if C.is_differential(liv_class) and hd % 2:
        raise ConfigError(f"differential attention splits heads in two halves; head_dim {hd} must be even")
    if hd % 2:
        raise ConfigError(f"rotary embeddings need an even head_dim, got {hd}")
    return AttentionShape(heads, kv, hd)


def recurrence_sizes(liv_class: int, dim: int, cfg: LIVConfig) -> tuple[int, int, int, int]:
    """(d_inner, state size N, conv kernel, Δ rank) of a recurrence class."""
    n = int(cfg.expansion_factor or C.REC_STATE[C.base_class(liv_class)])
    k = int(cfg.kernel_size or C.REC_CONV_KERNEL)
    return C.REC_EXPAND * dim, n, k, math.ceil(dim / C.REC_DT_RANK_DIVISOR)


def swiglu_hidden(dim: int, cfg: LIVConfig) -> int:
    """SwiGLU hidden width: ceil(8/3 * dim / 256) * 256, or expansion_factor * dim."""
    if cfg.expansion_factor:
        return max(1, int(round(cfg.expansion_factor * dim)))
    return int(math.ceil(C.SWIGLU_MULT * dim / C.SWIGLU_MULTIPLE) * C.SWIGLU_MULTIPLE)


def short_kernel(liv_class: int, cfg: LIVConfig) -> int:
    """Short convolution length of SA-2 (featurizer) or GConv-1 (filter)."""
    default = C.SA2_CONV_KERNEL if C.family(liv_class) == "attention" else C.GCONV_KERNEL
    return int(cfg.kernel_size or default)
