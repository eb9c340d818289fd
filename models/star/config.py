"""Per-class operator configuration: the ``LIVConfig`` / structure enums users know from the
``star-backbone`` package README (the STAR reference implementation), checked against the paper's operator genomes and
resolved into concrete sizes (heads, state size, kernel lengths) for one model width."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from enum import IntEnum

from staredge.errors import ConfigError, LimitError
from staredge.models.star import choices as C

# --- Limits on sizes users and files control (docs/security.md) -------------------------------
#: Most LIVs a genome or backbone may have (the paper's models have 24-48). Checked before
#: a genome is tiled or a module allocated.
MAX_DEPTH = 1024
#: Widest model (``dim``) a STAR backbone may have.
MAX_DIM = 16384
#: Longest context (``max_seq_len``) and largest vocabulary a STAR LM may have.
MAX_CONTEXT = 1 << 20
MAX_VOCAB = 1 << 20
#: Upper bound on the parameters of a STAR LM built on a real device (~17 GB in fp32),
#: estimated from dim, depth and vocabulary before anything is allocated. Models built
#: under ``with torch.device("meta")`` (shape-only analysis) are not limited.
MAX_PARAMETERS = 1 << 32
#: Largest LIVConfig size fields (expansion_factor, repeat_factor, head_dim, kernel_size).
MAX_LIV_FACTOR = {"expansion_factor": 64, "repeat_factor": 1024, "head_dim": MAX_DIM, "kernel_size": 4096,
                  "hidden_dim": 64 * MAX_DIM}


def check_int(name: str, value, low: int = 1, high: int | None = None, limit_name: str | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool, float or string) in [low, high].

    Raises :class:`ConfigError` for a wrong type or a value below ``low`` and
    :class:`LimitError` (naming ``limit_name``) for a value above ``high``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            hint = f"; pass the integer {int(value)}"
        elif isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
            hint = f"; pass the integer {int(value.strip())}, not a string"
        shown = repr(value) if len(repr(value)) < 60 else f"{repr(value)[:50]}..."
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {shown}{hint}")
    value = int(value)
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        shown = str(value) if value < 10**30 else f"a {len(str(value))}-digit number" if value < 10**4000 else "a huge number"
        raise LimitError(f"{name} is {shown}, over the limit of {high:,} ({limit_name or name}); use a smaller value")
    return value


def check_model_args(dim, depth, vocab_size=C.VOCAB_SIZE, max_seq_len=C.MAX_SEQ_LEN) -> tuple[int, int, int, int]:
    """Checked (dim, depth, vocab_size, max_seq_len) of a STAR model: integers within
    :data:`MAX_DIM`, :data:`MAX_DEPTH`, :data:`MAX_VOCAB` and :data:`MAX_CONTEXT`, and, on a real
    device, an estimated parameter count within :data:`MAX_PARAMETERS`; all before allocation."""
    dim = check_int("dim", dim, 1, MAX_DIM, "MAX_DIM")
    if depth is not None and not isinstance(depth, bool) and isinstance(depth, numbers.Integral) and depth < 1:
        raise ConfigError(f"depth must be a positive number of LIVs, got {int(depth)}")
    depth = check_int("depth", depth, 1, MAX_DEPTH, "MAX_DEPTH")
    vocab_size = check_int("vocab_size", vocab_size, 1, MAX_VOCAB, "MAX_VOCAB")
    max_seq_len = check_int("max_seq_len", max_seq_len, 1, MAX_CONTEXT, "MAX_CONTEXT")
    return dim, depth, vocab_size, max_seq_len


def check_parameter_budget(dim: int, depth: int, vocab_size: int, configs=None) -> None:
    """Raise :class:`LimitError` when a model of this size would exceed :data:`MAX_PARAMETERS`
    on a real device (the bound: 16 dim^2 per LIV, scaled by a large expansion_factor, plus
    two embedding tables). Shape-only models on the meta device are not limited."""
    import torch

    if torch.get_default_device().type == "meta":
        return
    scale = 1.0
    for cfg in (configs or {}).values():
        ef = getattr(cfg, "expansion_factor", None) or 0
        scale = max(scale, ef / 4.0)
    estimate = int(depth * 16 * dim * dim * scale + 2 * vocab_size * dim)
    if estimate > MAX_PARAMETERS:
        raise LimitError(
            f"a STAR model with dim={dim}, depth={depth} would have up to ~{estimate:,} parameters, over the limit "
            f"of {MAX_PARAMETERS:,} (MAX_PARAMETERS); use a smaller dim or depth, or build it under "
            f"`with torch.device('meta'):` to analyse its shapes without allocating")


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

    Options that imported models (e.g. LFM2, :mod:`staredge.models.star.lfm2`) need; left
    at None they change nothing:

    - ``hidden_dim``: GMemless hidden width, exactly (wins over ``expansion_factor``).
    - ``qk_norm``: attention applies a per-head RMSNorm (learned scale) to q and k before
      the rotary embedding.
    - ``norm_eps``: epsilon of the operator's internal norms (q/k norm); default ``NORM_EPS``.
    - ``rope_base``: rotary base (default ``ROPE_BASE``); ``rope_factor``: linear position
      scaling (positions are divided by it).
    - ``bias``: GConv-1 has biases on its B/C/x projections, its filter and its output.
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
    hidden_dim: int | None = None
    qk_norm: bool | None = None
    norm_eps: float | None = None
    rope_base: float | None = None
    rope_factor: float | None = None
    bias: bool | None = None

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
        real = ("expansion_factor", "norm_eps", "rope_base", "rope_factor")
        for field in ("expansion_factor", "repeat_factor", "head_dim", "kernel_size", "hidden_dim", "norm_eps",
                      "rope_base", "rope_factor"):
            v = getattr(self, field)
            if v is None:
                continue
            is_number = isinstance(v, (numbers.Integral, float) if field in real else numbers.Integral)
            if isinstance(v, bool) or not is_number or (isinstance(v, float) and not math.isfinite(v)):
                raise ConfigError(f"LIVConfig for class {liv_class} ({name}): {field} must be a "
                                  f"{'finite number' if field in real else 'integer'}, got {v!r}")
            if not v > 0:
                raise ConfigError(f"LIVConfig for class {liv_class} ({name}): {field} must be positive, got {v}")
            if v > MAX_LIV_FACTOR.get(field, math.inf):
                raise LimitError(f"LIVConfig for class {liv_class} ({name}): {field}={v} is over the limit of "
                                 f"{MAX_LIV_FACTOR[field]} (MAX_LIV_FACTOR['{field}'])")
        for field in ("qk_norm", "bias"):
            v = getattr(self, field)
            if v is not None and not isinstance(v, bool):
                raise ConfigError(f"LIVConfig for class {liv_class} ({name}): {field} must be True or False, got {v!r}")
        fam = C.family(liv_class)
        allowed = {"hidden_dim": ("memless",), "qk_norm": ("attention",), "norm_eps": ("attention",),
                   "rope_base": ("attention",), "rope_factor": ("attention",), "bias": ("gconv",)}
        for field, families in allowed.items():
            if getattr(self, field) not in (None, False) and (fam not in families or C.base_class(liv_class) == 8
                                                           or C.is_differential(liv_class)):
                raise ConfigError(f"LIVConfig for class {liv_class} ({name}): {field} applies to non-differential "
                                  f"{'GConv-1' if field == 'bias' else ' / '.join(families)} operators only")
        return self

    def to_dict(self) -> dict:
        """JSON-able dict (enums as ints); None fields left out."""
        d = {k: (int(v) if isinstance(v, IntEnum) else v) for k, v in asdict(self).items() if v is not None}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LIVConfig":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a LIVConfig dict was expected, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown LIVConfig fields {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        try:
            if "token_mixing" in d:
                d["token_mixing"] = TokenMixingStructure(d["token_mixing"])
            if "channel_mixing" in d:
                d["channel_mixing"] = ChannelMixingStructure(d["channel_mixing"])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"LIVConfig: {exc}; token_mixing is 1..4 and channel_mixing 1..3") from exc
        return cls(**d)


def normalize_configs(configs) -> dict[int, LIVConfig]:
    """``{class_id: LIVConfig}`` with keys as ints, each checked against its class."""
    out: dict[int, LIVConfig] = {}
    if configs is not None and not hasattr(configs, "items"):
        raise ConfigError(f"configs must be a dict {{class_id: LIVConfig}}, got {type(configs).__name__}")
    for k, v in (configs or {}).items():
        if isinstance(k, str) and k.strip().isdigit() and len(k) < 10:
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ConfigError(f"configs keys must be LIV class ids (integers 1..{C.NUM_CLASSES}), got {k!r}")
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
    """SwiGLU hidden width: ceil(8/3 * dim / 256) * 256, or expansion_factor * dim, or
    exactly ``hidden_dim``."""
    if cfg.hidden_dim:
        return int(cfg.hidden_dim)
    if cfg.expansion_factor:
        return max(1, int(round(cfg.expansion_factor * dim)))
    return int(math.ceil(C.SWIGLU_MULT * dim / C.SWIGLU_MULTIPLE) * C.SWIGLU_MULTIPLE)


def short_kernel(liv_class: int, cfg: LIVConfig) -> int:
    """Short convolution length of SA-2 (featurizer) or GConv-1 (filter)."""
    default = C.SA2_CONV_KERNEL if C.family(liv_class) == "attention" else C.GCONV_KERNEL
    return int(cfg.kernel_size or default)
