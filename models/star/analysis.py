"""Static analysis of a STAR genome: parameters and decode-cache size per LIV.

Conventions (as in the STAR paper's figures): parameters exclude the token embedding and
the (tied) LM head but include the final norm; cache is the decode state of batch 1 after
``seq_len`` tokens, at ``bytes_per_element`` bytes (2 = fp16/bf16), MB = 10^6 bytes.

Both are computed analytically from the operator sizes, without torch (``staredge genome``
needs none): tests check the cache against the tensors that ``init_state`` + ``step``
actually hold and the parameters against the modules :class:`STARBackbone` builds (a
shared featurizer is counted once, at the first LIV that uses it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from staredge.errors import ConfigError
from staredge.models.star import choices as C
from staredge.models.star.config import (
    LIVConfig,
    attention_shape,
    normalize_configs,
    recurrence_sizes,
    short_kernel,
    swiglu_hidden,
)
from staredge.models.star.genome import BASELINES, Genome, parse_genome

MB = 10**6


def cache_elements(liv_class: int, dim: int, seq_len: int, cfg: LIVConfig | None = None,
                   shared_groups: tuple[str, ...] = ()) -> int:
    """Decode-state elements (batch 1) of one LIV after ``seq_len`` tokens.

    Consumers of feature-group sharing hold nothing for the groups they share.
    """
    cfg = cfg or LIVConfig()
    fam, base = C.family(liv_class), C.base_class(liv_class)
    if fam == "attention":
        s = attention_shape(liv_class, dim, cfg)
        kv = s.kv_heads * s.head_dim
        n = sum(kv * seq_len for g in ("k", "v") if g not in shared_groups)
        if base == 2:  # SA-2 conv rings on q, k, v
            k = short_kernel(liv_class, cfg)
            n += (k - 1) * s.heads * s.head_dim
            n += sum((k - 1) * kv for g in ("k", "v") if g not in shared_groups)
        return n
    copies = 2 if C.is_differential(liv_class) else 1
    if fam == "recurrence":
        d_inner, state, kernel, _ = recurrence_sizes(liv_class, dim, cfg)
        n = d_inner * state + (0 if "x" in shared_groups else (kernel - 1) * d_inner)
        return copies * n
    if fam == "gconv":
        if "x" in shared_groups:  # the conv input u = B*x is read from the producer
            return 0
        n = (short_kernel(liv_class, cfg) - 1) * dim if base == 7 else dim * seq_len
        return copies * n
    return 0  # GMemless: token-wise


def _branches(liv_class: int) -> tuple[int, int]:
    """(copies, operator class): differential non-attention classes hold two copies of their
    base operator; attention classes (differential too) are one operator of their own class."""
    if C.is_differential(liv_class) and C.family(liv_class) != "attention":
        return 2, C.base_class(liv_class)
    return 1, liv_class


def featurizer_params(liv_class: int, dim: int, cfg: LIVConfig | None, groups) -> int:
    """Parameters of the featurizer of ``liv_class`` computing ``groups`` (both copies of a
    differential one), as :mod:`staredge.models.star.liv` builds it."""
    cfg = cfg or LIVConfig()
    copies, cls = _branches(liv_class)
    fam = C.family(cls)
    if fam == "attention":
        s = attention_shape(cls, dim, cfg)
        width = {"q": s.heads * s.head_dim, "k": s.kv_heads * s.head_dim, "v": s.kv_heads * s.head_dim}
        kernel = short_kernel(cls, cfg) if C.base_class(cls) == 2 else 0
        per = {g: dim * w + w * kernel for g, w in width.items()}
    elif fam == "recurrence":
        d_inner, state, kernel, rank = recurrence_sizes(cls, dim, cfg)
        per = {"x": dim * d_inner + d_inner * kernel, "z": dim * d_inner, "dt": 2 * d_inner * rank + d_inner,
               "B": d_inner * state, "C": d_inner * state}
    elif fam == "gconv":
        bias = dim if cfg.bias and C.base_class(cls) == 7 else 0
        per = dict.fromkeys(("B", "x", "C"), dim * dim + bias)
    else:
        per = dict.fromkeys(("gate", "up"), dim * swiglu_hidden(dim, cfg))
    return copies * sum(per[g] for g in groups)


def operator_params(liv_class: int, dim: int, cfg: LIVConfig | None = None) -> int:
    """Parameters a LIV of ``liv_class`` holds besides its featurizer and its pre-norm."""
    cfg = cfg or LIVConfig()
    copies, cls = _branches(liv_class)
    fam, base = C.family(cls), C.base_class(cls)
    if fam == "attention":
        s = attention_shape(cls, dim, cfg)
        n = s.heads * s.head_dim * dim  # output projection
        if C.is_differential(cls):
            n += 4 * (s.head_dim // 2) + s.head_dim  # λ vectors and the per-head sub-norm
        return n + (2 * s.head_dim if cfg.qk_norm else 0)
    if fam == "recurrence":
        d_inner, state, _, _ = recurrence_sizes(cls, dim, cfg)
        one = d_inner * state + d_inner + d_inner * dim  # A_log, D, output projection
    elif base == 7:
        bias = dim if cfg.bias else 0
        one = dim * short_kernel(cls, cfg) + bias + dim * dim + bias  # filter (+ bias), output (+ bias)
    elif base == 8:
        hidden = C.LONGCONV_MLP_HIDDEN
        one = (1 + 2 * C.LONGCONV_EMB_FREQS) * hidden + hidden * dim + dim * dim  # filter MLP, output
    else:
        one = swiglu_hidden(dim, cfg) * dim  # down projection
    return copies * one + (4 * C.DIFF_LAMBDA_DIM if copies == 2 else 0)


def liv_params(g: Genome, dim: int, configs: dict) -> list[int]:
    """Parameters per LIV of ``g``: its operator, its pre-norm (absent when it computes no
    feature group of its own) and its featurizer, a shared one counted at its first user."""
    roots = [g.featurizer_producer(i) if g.featurizer_producer(i) is not None else i for i in range(len(g))]
    needed: dict[int, set[str]] = {}
    own = []
    for i, seg in enumerate(g):
        own.append(set(C.FEATURE_GROUPS[C.family(seg.liv_class)]) - set(g.shared_feature_groups(i)))
        needed.setdefault(roots[i], set()).update(own[i])
    first_user = {r: roots.index(r) for r in needed}
    out = []
    for i, seg in enumerate(g):
        n = operator_params(seg.liv_class, dim, configs.get(seg.liv_class)) + (dim if own[i] else 0)
        if first_user[roots[i]] == i:
            root_class = g[roots[i]].liv_class
            n += featurizer_params(root_class, dim, configs.get(root_class), sorted(needed[roots[i]]))
        out.append(n)
    return out


@dataclass
class LIVReport:
    """One row of the analysis: a LIV, its parameters and its cache."""

    index: int
    segment: str
    name: str
    params: int
    cache_elements: int
    cache_bytes: int
    sharing: str = ""


@dataclass
class GenomeAnalysis:
    """Per-LIV rows and totals for one genome at one width and sequence length."""

    genome: str
    dim: int
    seq_len: int
    bytes_per_element: int
    rows: list[LIVReport] = field(default_factory=list)
    final_norm_params: int = 0

    @property
    def total_params(self) -> int:
        """Parameters without embedding and tied head (final norm included)."""
        return sum(r.params for r in self.rows) + self.final_norm_params

    @property
    def total_cache_bytes(self) -> int:
        """Decode cache in bytes after ``seq_len`` tokens, batch 1."""
        return sum(r.cache_bytes for r in self.rows)

    @property
    def total_cache_mb(self) -> float:
        """Decode cache in MB (10^6 bytes)."""
        return self.total_cache_bytes / MB

    def to_dict(self) -> dict:
        """JSON-able form, totals included."""
        d = asdict(self)
        d.update(total_params=self.total_params, total_cache_bytes=self.total_cache_bytes,
                 total_cache_mb=self.total_cache_mb, conventions=(
                     "params exclude embedding and tied LM head; cache = decode state of batch 1 after "
                     f"seq_len tokens at {self.bytes_per_element} bytes/element; MB = 10^6 bytes"))
        return d


def resolve_genome(genome, dim: int, depth: int | None = None, repair: bool = False) -> Genome:
    """A Genome from a genome string/list or a baseline name (``transformer_pp``,
    ``striped_mamba``; ``depth`` LIVs, default 24), tiled to ``depth`` when given."""
    if isinstance(genome, str) and genome.strip().lower() in BASELINES:
        return BASELINES[genome.strip().lower()](dim, 24 if depth is None else depth)
    return parse_genome(genome, depth=depth, repair=repair)


def analyze_genome(genome, dim: int, seq_len: int, bytes_per_element: int = 2, depth: int | None = None,
                   configs=None, repair: bool = False) -> GenomeAnalysis:
    """Parameters and cache per LIV of ``genome`` at width ``dim`` after ``seq_len`` tokens
    (``repair=True`` analyses the repaired genome instead of rejecting an invalid one)."""
    from staredge.models.star.config import MAX_DIM, check_int

    # types and limits first: dim='16' or dim=16.5 used to fail inside the comparison or torch
    check_int("dim", dim, 1, MAX_DIM, "MAX_DIM")
    check_int("seq_len", seq_len, 0)
    check_int("bytes_per_element", bytes_per_element, 1)
    g = resolve_genome(genome, dim, depth, repair)
    cfgs = normalize_configs(configs)
    report = GenomeAnalysis(str(g), dim, seq_len, bytes_per_element, final_norm_params=dim)
    for i, (seg, params) in enumerate(zip(g, liv_params(g, dim, cfgs))):
        shared = g.shared_feature_groups(i)
        n = cache_elements(seg.liv_class, dim, seq_len, cfgs.get(seg.liv_class), shared)
        notes = []
        fp, gp, rs = g.featurizer_producer(i), g.feature_producer(i), g.residual_source(i)
        if fp is not None:
            notes.append(f"featurizer of #{fp + 1}")
        if gp is not None:
            notes.append(f"{','.join(shared)} of #{gp + 1}")
        if rs is not None:
            notes.append(f"residual from #{rs + 1}")
        report.rows.append(LIVReport(i + 1, seg.text(g.has_residual_groups), seg.name, params, n,
                                     n * bytes_per_element, "; ".join(notes)))
    return report
