"""STAR backbone (pre-norm residual stack of LIVs built from a genome) and the byte-level
STAR language model with its explicit decode state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from staredge.errors import ConfigError
from staredge.models.star import choices as C
from staredge.models.star.config import (
    LIVConfig,
    check_int,
    check_model_args,
    check_parameter_budget,
    normalize_configs,
)
from staredge.models.star.genome import Genome, parse_genome
from staredge.models.star.liv import LIV, RMSNorm, operator_type

Tensor = torch.Tensor

#: Version tag of :meth:`STARLanguageModel.config_dict` documents.
CONFIG_FORMAT = "staredge.star_lm/1"


def check_eps(value) -> float:
    """A norm epsilon: a finite float in (0, 1); :class:`ConfigError` otherwise."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 < value < 1:
        raise ConfigError(f"norm_eps must be a number in (0, 1), got {value!r}")
    return float(value)


class STARBackbone(nn.Module):
    """A stack of LIVs described by a backbone genome: ``y = u + LIV(RMSNorm(u))`` per LIV,
    where ``u`` is the previous output (plus an earlier output for residual groups, A.7).

    ``genome`` may be shorter than ``depth`` if its length divides ``depth`` (it is tiled).
    ``configs`` maps LIV class ids to :class:`LIVConfig`. Featurizer sharing makes LIVs hold
    the same featurizer module; feature-group sharing makes a consumer read its producer's
    feature groups (and, when decoding, its cache) instead of computing its own.
    """

    def __init__(self, dim: int, depth: int, genome, configs=None, max_seq_len: int = C.MAX_SEQ_LEN,
                 repair: bool = False, norm_eps: float = C.NORM_EPS) -> None:
        super().__init__()
        norm_eps = check_eps(norm_eps)
        # types and limits before anything is allocated (shape-only builds on the meta device
        # may use any context length: the analysis of long-context caches needs that)
        dim, depth = check_model_args(dim, depth)[:2]
        max_seq_len = check_int("max_seq_len", max_seq_len, 1)
        if not isinstance(repair, bool):
            raise ConfigError(f"repair must be True or False, got {type(repair).__name__} {repair!r}")
        self.dim, self.depth, self.max_seq_len = dim, depth, max_seq_len
        self.genome: Genome = parse_genome(genome, depth=depth, repair=repair)
        self.configs = normalize_configs(configs)
        g = self.genome
        self.feature_producers = [g.feature_producer(i) for i in range(depth)]
        self.residual_sources = [g.residual_source(i) for i in range(depth)]
        self._export_needed = {p for p in self.feature_producers if p is not None}
        self._keep_output = {s for s in self.residual_sources if s is not None}

        # Featurizers: one per featurizer-sharing root, holding every group its users compute.
        roots = [g.featurizer_producer(i) if g.featurizer_producer(i) is not None else i for i in range(depth)]
        needed: dict[int, set[str]] = {}
        reads_input = []
        for i, seg in enumerate(g):
            own = set(C.FEATURE_GROUPS[C.family(seg.liv_class)]) - set(g.shared_feature_groups(i))
            needed.setdefault(roots[i], set()).update(own)
            reads_input.append(bool(own))
        featurizers = {}
        for r, groups in needed.items():
            cls = g[r].liv_class
            featurizers[r] = operator_type(cls).make_featurizer(dim, cls, self._cfg(cls), groups)
        self.livs = nn.ModuleList(
            operator_type(seg.liv_class)(dim, seg.liv_class, self._cfg(seg.liv_class), i, featurizers[roots[i]],
                                         g.shared_feature_groups(i), self.max_seq_len)
            for i, seg in enumerate(g)
        )
        # A consumer that takes every input-dependent group from its producer (GConv strategy
        # 4, GMemless strategy 3) never reads its own input: it gets no pre-norm (no dead weights).
        self.norm_eps = norm_eps
        self.norms = nn.ModuleList(RMSNorm(dim, norm_eps) if reads_input[i] else nn.Identity() for i in range(depth))

    def _cfg(self, liv_class: int) -> LIVConfig:
        return self.configs.get(liv_class, LIVConfig())

    def _inputs(self, i: int, prev: Tensor, outputs: dict, exports: dict) -> tuple[Tensor, dict]:
        src = self.residual_sources[i]
        u = prev if src is None else prev + outputs[src]
        p = self.feature_producers[i]
        return u, ({} if p is None else exports[p])

    def forward(self, x: Tensor) -> Tensor:
        """Parallel form: ``x`` [B, T, dim] -> [B, T, dim]."""
        outputs, exports = {}, {}
        for i, liv in enumerate(self.livs):
            u, shared = self._inputs(i, x, outputs, exports)
            y, ex = liv(self.norms[i](u), shared)
            x = u + y
            if i in self._export_needed:
                exports[i] = ex
            if i in self._keep_output:
                outputs[i] = x
        return x

    def init_state(self, batch_size: int = 1, device=None, dtype=None) -> tuple[dict[str, Tensor], ...]:
        """Empty per-LIV caches (one dict per LIV; GMemless and full consumers have {})."""
        if device is None or dtype is None:
            ref = next(self.parameters())
            device, dtype = device or ref.device, dtype or ref.dtype
        return tuple(liv.init_state(batch_size, device, dtype) for liv in self.livs)

    def step(self, x: Tensor, caches, pos: int) -> tuple[Tensor, tuple[dict[str, Tensor], ...]]:
        """Step form: ``x`` [B, T_new, dim] at positions pos.. with per-LIV caches."""
        if len(caches) != len(self.livs):
            raise ConfigError(f"state has {len(caches)} LIV caches, the backbone has {len(self.livs)} LIVs")
        outputs, exports, new = {}, {}, []
        for i, liv in enumerate(self.livs):
            u, shared = self._inputs(i, x, outputs, exports)
            y, st, ex = liv.step(self.norms[i](u), caches[i], pos, shared)
            new.append(st)
            x = u + y
            if i in self._export_needed:
                exports[i] = ex
            if i in self._keep_output:
                outputs[i] = x
        return x, tuple(new)


#: ``special_ids`` of a byte-level model: empty (the byte vocabulary's ids). A model with its
#: own ids always has all three keys (:func:`check_special_ids` fills the missing ones with
#: None), so an empty dict means the defaults however the model was copied or loaded.
DEFAULT_SPECIAL_IDS: dict = {}
SPECIAL_ID_KEYS = ("bos_id", "eos_id", "pad_id")


def check_special_ids(special_ids, vocab_size: int) -> dict:
    """``{"bos_id": int|None, "eos_id": ..., "pad_id": ...}`` checked against the vocabulary,
    every key present (a missing one is None: the model has no such token); None gives an
    empty dict (:data:`DEFAULT_SPECIAL_IDS`: the byte vocabulary's ids)."""
    if special_ids is None:
        return dict(DEFAULT_SPECIAL_IDS)
    if not isinstance(special_ids, dict):
        raise ConfigError(f"special_ids must be a dict like {{'bos_id': 1, 'eos_id': 2}}, got {type(special_ids).__name__}")
    out = dict.fromkeys(SPECIAL_ID_KEYS)
    for key, value in special_ids.items():
        if key not in SPECIAL_ID_KEYS:
            raise ConfigError(f"special_ids has unknown key {key!r}; known: bos_id, eos_id, pad_id")
        out[key] = None if value is None else check_int(f"special_ids[{key!r}]", value, 0, vocab_size - 1)
    return out


@dataclass(frozen=True)
class STARState:
    """Decode state of a :class:`STARLanguageModel`: the next position and one cache dict per
    LIV. Immutable in practice: ``step`` returns a new state and never edits tensors in place,
    so a state can be kept (e.g. after a shared prompt) and continued more than once."""

    pos: int
    caches: tuple[dict[str, Tensor], ...]
    batch_size: int

    def num_elements(self) -> int:
        """Total number of cached elements."""
        return sum(t.numel() for c in self.caches for t in c.values())

    def nbytes(self, bytes_per_element: int | None = None) -> int:
        """Cache size in bytes (at the tensors' dtype, or at ``bytes_per_element``)."""
        if bytes_per_element is not None:
            return self.num_elements() * int(bytes_per_element)
        return sum(t.numel() * t.element_size() for c in self.caches for t in c.values())

    def named_tensors(self) -> dict[str, Tensor]:
        """Flat names following the decode-graph convention: ``past_key_values.{i}.key|value``,
        ``past_conv.{i}[.q|.k|.v]``, ``past_ssm.{i}``, ``past_longconv.{i}`` (differential
        copies get a ``.a`` / ``.b`` suffix); i is the LIV index."""
        out = {}
        for i, cache in enumerate(self.caches):
            for key, t in cache.items():
                copy, _, name = key.rpartition(".")
                suffix = f".{copy}" if copy else ""
                if name in ("key", "value"):
                    out[f"past_key_values.{i}.{name}{suffix}"] = t
                elif name.startswith("conv"):
                    g = name[5:]
                    out[f"past_conv.{i}{'.' + g if g else ''}{suffix}"] = t
                elif name == "ssm":
                    out[f"past_ssm.{i}{suffix}"] = t
                else:
                    out[f"past_{name}.{i}{suffix}"] = t
        return out


class STARLanguageModel(nn.Module):
    """Byte-level STAR language model: embedding -> STAR backbone -> RMSNorm -> LM head.

    Vocabulary: 256 bytes + BOS (256), EOS (257), PAD (258). The head is tied to the
    embedding by default (``tie_embeddings``). Contract:

    - ``forward(input_ids [B, T]) -> logits [B, T, V]`` (parallel form, positions 0..T-1);
    - ``init_state(batch_size) -> STARState`` at position 0;
    - ``step(input_ids [B, T_new], state) -> (logits [B, T_new, V], new_state)`` for prefill
      chunks of any length and single tokens, starting at ``state.pos``;
    - ``config_dict()`` / ``from_config_dict(d)`` rebuild the architecture. Save weights with
      ``safetensors.torch.save_model`` / ``load_model`` (they handle the tied and shared
      tensors that ``save_file`` refuses).
    """

    def __init__(self, dim: int, depth: int, genome, vocab_size: int = C.VOCAB_SIZE,
                 max_seq_len: int = C.MAX_SEQ_LEN, tie_embeddings: bool = True, configs=None,
                 repair: bool = False, norm_eps: float = C.NORM_EPS, special_ids: dict | None = None) -> None:
        super().__init__()
        # every argument checked before anything is allocated (docs/security.md)
        dim, depth, vocab_size, max_seq_len = check_model_args(dim, depth, vocab_size, max_seq_len)
        if not isinstance(tie_embeddings, bool):
            raise ConfigError(f"tie_embeddings must be True or False, got {type(tie_embeddings).__name__} {tie_embeddings!r}")
        check_parameter_budget(dim, depth, vocab_size, normalize_configs(configs))
        norm_eps = check_eps(norm_eps)
        self.special_ids = check_special_ids(special_ids, vocab_size)
        self.vocab_size, self.max_seq_len, self.tie_embeddings = vocab_size, max_seq_len, tie_embeddings
        self.embed = nn.Embedding(self.vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=C.INIT_STD)
        self.backbone = STARBackbone(dim, depth, genome, configs, max_seq_len=self.max_seq_len, repair=repair,
                                     norm_eps=norm_eps)
        self.norm = RMSNorm(dim, norm_eps)
        self.head = nn.Linear(dim, self.vocab_size, bias=False)
        if self.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=C.INIT_STD)

    @property
    def bos_id(self) -> int | None:
        """BOS token id: the byte vocabulary's unless ``special_ids`` says otherwise."""
        return self.special_ids.get("bos_id") if self.special_ids else C.BOS_ID

    @property
    def eos_id(self) -> int | None:
        """EOS token id: the byte vocabulary's unless ``special_ids`` says otherwise."""
        return self.special_ids.get("eos_id") if self.special_ids else C.EOS_ID

    @property
    def pad_id(self) -> int | None:
        """PAD token id: the byte vocabulary's unless ``special_ids`` says otherwise."""
        return self.special_ids.get("pad_id") if self.special_ids else C.PAD_ID

    @property
    def norm_eps(self) -> float:
        """Epsilon of the pre-norms and the final norm."""
        return self.backbone.norm_eps

    @property
    def dim(self) -> int:
        """Model width."""
        return self.backbone.dim

    @property
    def depth(self) -> int:
        """Number of LIVs."""
        return self.backbone.depth

    @property
    def genome(self) -> str:
        """Canonical genome string (full depth, after tiling)."""
        return str(self.backbone.genome)

    def _check_ids(self, input_ids: Tensor, start: int) -> None:
        if input_ids.ndim != 2:
            raise ConfigError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0:
            raise ConfigError("input_ids holds no tokens")
        end = start + input_ids.shape[1]
        if end > self.max_seq_len:
            raise ConfigError(
                f"{end} tokens exceed the model's context of {self.max_seq_len} (max_seq_len); "
                "shorten or truncate the input")

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits [B, T, V] for every position (parallel form)."""
        self._check_ids(input_ids, 0)
        return self.head(self.norm(self.backbone(self.embed(input_ids))))

    def init_state(self, batch_size: int = 1, device=None, dtype=None) -> STARState:
        """Empty decode state at position 0 (caches on the model's device and dtype)."""
        return STARState(0, self.backbone.init_state(batch_size, device, dtype), int(batch_size))

    def step(self, input_ids: Tensor, state: STARState) -> tuple[Tensor, STARState]:
        """Consume ``input_ids`` [B, T_new] at positions state.pos..; returns logits and the new state."""
        self._check_ids(input_ids, state.pos)
        if input_ids.shape[0] != state.batch_size:
            raise ConfigError(f"input_ids has batch {input_ids.shape[0]} but the state was made for batch {state.batch_size}")
        h, caches = self.backbone.step(self.embed(input_ids), state.caches, state.pos)
        return self.head(self.norm(h)), STARState(state.pos + input_ids.shape[1], caches, state.batch_size)

    def num_parameters(self, include_embeddings: bool = False) -> int:
        """Unique parameters; without embeddings (and a tied head) by default."""
        skip = set() if include_embeddings else {id(self.embed.weight), id(self.head.weight)}
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values() if id(p) not in skip)

    def config_dict(self) -> dict:
        """JSON-able architecture description; ``from_config_dict`` inverts it."""
        d = {
            "format": CONFIG_FORMAT,
            "dim": self.dim,
            "depth": self.depth,
            "genome": self.genome,
            "vocab_size": self.vocab_size,
            "max_seq_len": self.max_seq_len,
            "tie_embeddings": self.tie_embeddings,
            "configs": {str(k): v.to_dict() for k, v in sorted(self.backbone.configs.items())},
        }
        # written only when not the defaults, so existing models' configs stay as they were
        if self.norm_eps != C.NORM_EPS:
            d["norm_eps"] = self.norm_eps
        if self.special_ids:
            d["special_ids"] = dict(self.special_ids)
        return d

    @classmethod
    def from_config_dict(cls, d: dict) -> "STARLanguageModel":
        """Build an (untrained) model from :meth:`config_dict` output."""
        fmt = d.get("format", CONFIG_FORMAT)
        if fmt != CONFIG_FORMAT:
            raise ConfigError(f"config format '{fmt}' is not '{CONFIG_FORMAT}'; it was written by another version")
        missing = {"dim", "depth", "genome"} - set(d)
        if missing:
            raise ConfigError(f"STAR LM config lacks {sorted(missing)}")
        # values go in as written: the constructor checks their types (a file saying dim 16.5
        # is refused, not truncated)
        return cls(d["dim"], d["depth"], d["genome"], vocab_size=d.get("vocab_size", C.VOCAB_SIZE),
                   max_seq_len=d.get("max_seq_len", C.MAX_SEQ_LEN), tie_embeddings=d.get("tie_embeddings", True),
                   configs=d.get("configs") or None, norm_eps=d.get("norm_eps", C.NORM_EPS),
                   special_ids=d.get("special_ids"))


__all__ = ["STARBackbone", "STARLanguageModel", "STARState", "LIV", "CONFIG_FORMAT"]
