"""Static analysis of a STAR genome: parameters and decode-cache size per LIV.

Conventions (as in the STAR paper's figures): parameters exclude the token embedding and
the (tied) LM head but include the final norm; cache is the decode state of batch 1 after
``seq_len`` tokens, at ``bytes_per_element`` bytes (2 = fp16/bf16), MB = 10^6 bytes.

The cache is computed analytically from the operator sizes (no tensors are created);
tests check it against the tensors that ``init_state`` + ``step`` actually hold. Parameters
are counted on a model built on the ``meta`` device (no memory), so they are exact and
count a shared featurizer once (at the first LIV that uses it).
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
    from staredge.errors import require

    require("torch", "torch", "counting a genome's parameters")  # a clear error where torch is not installed
    import torch  # parameters are counted on a shape-only (meta) backbone: the genome is checked first

    from staredge.models.star.backbone import STARBackbone

    with torch.device("meta"):
        backbone = STARBackbone(dim, len(g), g, cfgs, max_seq_len=max(seq_len, 1))
    report = GenomeAnalysis(str(g), dim, seq_len, bytes_per_element, final_norm_params=dim)
    seen: set[int] = set()
    for i, seg in enumerate(g):
        params = 0
        for p in list(backbone.livs[i].parameters()) + list(backbone.norms[i].parameters()):
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
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
