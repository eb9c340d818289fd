"""STAR backbone genomes: parsing, validation and repair (paper section 4.2, Appendix A.6/A.7).

A backbone genome has one segment per LIV: ``(class, featurizer group, featurizer strategy,
feature group, feature-group strategy[, residual group])``. Written forms accepted by
:func:`parse_genome`:

- ``"11111-91111-12121"`` (separators ``-``, ``_``, ``|``, ``,`` or whitespace), or the same
  digits without separators (split into 5-digit segments; 6-digit segments when the length
  is only divisible by 6);
- class-only segments ``"1-9-7-9"``: every LIV gets its own groups and no sharing;
- dotted segments for values above 9: ``"10.1.1.1.1"``;
- lists: ``[[1, 1, 1, 1, 1], [9, 1, 1, 1, 1]]``, ``["11111", "91111"]``, or a :class:`Genome`.

Sharing semantics (our reading of sections 3.1 and A.6.1, also in docs/star-lm.md): group
values are numbered per class, 1..N for the N LIVs of a class ("if none share, each LIV is
assigned a unique integer from 1 to N"), so a link only ever joins LIVs of the same class.
A LIV whose strategy gene is above 1 links to the *earliest* LIV of its class with the same
group value (its producer); the earliest LIV of a group is never a consumer, whatever its
strategy. A group value outside 1..N cannot name a group of that class: it is an invalid
link (rules ``featurizer-link`` / ``feature-link``), which repair removes by moving the LIV
to the smallest group value no other LIV of its class uses. Invalid class or strategy
values are re-sampled uniformly from the valid set (seeded ``random.Random``).
The residual group (6th gene, Appendix A.7, 0 = none): LIV n whose value ``g >= 1`` matches
an earlier LIV m (the nearest one) receives ``u = y[n-1] + y[m]`` as its input stream.
"""

from __future__ import annotations

import numbers
import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from staredge.errors import ConfigError, LimitError
from staredge.models.star import choices as C
from staredge.models.star.config import MAX_DEPTH, check_int

#: Largest absolute value of one gene. Real genes are single digits or small group numbers;
#: the bound keeps hostile values (a 5000-digit class) out of arithmetic and messages.
MAX_GENE_VALUE = 10**6
#: Longest genome text :func:`parse_genome` reads (characters).
MAX_GENOME_CHARS = 64 * MAX_DEPTH


class GenomeError(ConfigError):
    """A genome cannot be parsed or breaks a validation rule; the message names each
    offending segment (1-based) and rule. Pass ``repair=True`` to fix what can be fixed."""


@dataclass(frozen=True)
class Segment:
    """One LIV of a backbone genome (five genes plus the optional residual group)."""

    liv_class: int
    featurizer_group: int
    featurizer_strategy: int
    feature_group: int
    feature_strategy: int
    residual_group: int = 0

    def as_tuple(self, with_residual: bool = False) -> tuple[int, ...]:
        """The genes as a tuple (5 values, or 6 with the residual group)."""
        t = (self.liv_class, self.featurizer_group, self.featurizer_strategy, self.feature_group, self.feature_strategy)
        return t + (self.residual_group,) if with_residual else t

    def text(self, with_residual: bool = False) -> str:
        """Canonical text: digits when every value is below 10, dotted otherwise."""
        vals = self.as_tuple(with_residual)
        if all(0 <= v <= 9 for v in vals):
            return "".join(map(str, vals))
        return ".".join(map(str, vals))

    @property
    def name(self) -> str:
        """Human name of the class (``SA-1``, ``GMemless``...), or ``class N`` if unknown."""
        return C.CLASS_NAMES.get(self.liv_class, f"class {self.liv_class}")


@dataclass(frozen=True)
class GenomeIssue:
    """One broken rule: which segment (0-based index), which gene, which rule and why."""

    index: int
    segment: Segment
    rule: str
    message: str

    def __str__(self) -> str:
        seg = self.segment.text(self.segment.residual_group != 0)
        return f"segment {self.index + 1} ({seg}, {self.segment.name}): [{self.rule}] {self.message}"


class Genome:
    """An immutable backbone genome. ``str(genome)`` is its canonical text."""

    def __init__(self, segments: Iterable[Segment]) -> None:
        self.segments: tuple[Segment, ...] = tuple(segments)
        if not self.segments:
            raise GenomeError("a genome needs at least one segment (one LIV)")
        if len(self.segments) > MAX_DEPTH:
            raise LimitError(f"the genome has {len(self.segments):,} segments, over the limit of {MAX_DEPTH} LIVs "
                             f"(MAX_DEPTH); give a shorter genome")

    # -- container protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self):
        return iter(self.segments)

    def __getitem__(self, i: int) -> Segment:
        return self.segments[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Genome) and self.segments == other.segments

    def __hash__(self) -> int:
        return hash(self.segments)

    @property
    def has_residual_groups(self) -> bool:
        """Whether any segment uses the 6th gene (residual group)."""
        return any(s.residual_group for s in self.segments)

    def __str__(self) -> str:
        r = self.has_residual_groups
        return "-".join(s.text(r) for s in self.segments)

    def __repr__(self) -> str:
        return f"Genome('{self}')"

    def as_lists(self) -> list[list[int]]:
        """Segments as lists of ints (6 per segment when residual groups are used)."""
        r = self.has_residual_groups
        return [list(s.as_tuple(r)) for s in self.segments]

    # -- construction ---------------------------------------------------------------------
    def tiled(self, depth: int) -> "Genome":
        """This genome repeated to ``depth`` LIVs (motif stacking). Group values repeat as
        written, so sharing links may span motif copies."""
        n = len(self)
        depth = check_depth(depth)
        if depth == n:
            return self
        if depth % n:
            raise GenomeError(
                f"the genome has {n} segments, which does not divide depth {depth}; give {depth} "
                f"segments or a motif whose length divides {depth}"
            )
        return Genome(self.segments * (depth // n))

    # -- links ----------------------------------------------------------------------------
    def featurizer_producer(self, i: int) -> int | None:
        """Index of the LIV whose featurizer LIV ``i`` uses, or None if it has its own."""
        s = self.segments[i]
        if s.featurizer_strategy != 2:
            return None
        j = _earliest(self.segments, i, lambda t: t.liv_class == s.liv_class and t.featurizer_group == s.featurizer_group)
        return None if j == i else j

    def feature_producer(self, i: int) -> int | None:
        """Index of the LIV whose feature groups LIV ``i`` reuses, or None."""
        s = self.segments[i]
        if s.feature_strategy <= 1:
            return None
        j = _earliest(self.segments, i, lambda t: t.liv_class == s.liv_class and t.feature_group == s.feature_group)
        return None if j == i else j

    def shared_feature_groups(self, i: int) -> tuple[str, ...]:
        """Names of the feature groups LIV ``i`` takes from its producer (empty if none)."""
        if self.feature_producer(i) is None:
            return ()
        s = self.segments[i]
        return C.SHARING_STRATEGIES[C.family(s.liv_class)][s.feature_strategy]

    def class_counts(self) -> dict[int, int]:
        """Number of LIVs per class."""
        counts: dict[int, int] = {}
        for s in self.segments:
            counts[s.liv_class] = counts.get(s.liv_class, 0) + 1
        return counts

    def residual_source(self, i: int) -> int | None:
        """The nearest earlier LIV in the same residual group (Appendix A.7), or None."""
        g = self.segments[i].residual_group
        if g <= 0:
            return None
        for j in range(i - 1, -1, -1):
            if self.segments[j].residual_group == g:
                return j
        return None

    # -- validation and repair ------------------------------------------------------------
    def issues(self) -> list[GenomeIssue]:
        """Every broken rule, in segment order (empty when the genome is valid)."""
        out: list[GenomeIssue] = []
        for i, s in enumerate(self.segments):
            if not 1 <= s.liv_class <= C.NUM_CLASSES:
                out.append(GenomeIssue(i, s, "class", f"LIV class {s.liv_class} is not one of 1..{C.NUM_CLASSES}"))
                continue  # the other rules depend on the class
            if s.featurizer_strategy not in C.FEATURIZER_STRATEGIES:
                out.append(GenomeIssue(i, s, "featurizer-strategy",
                                       f"featurizer sharing strategy {s.featurizer_strategy} is not one of 1 (none), 2 (all weights)"))
            valid = C.valid_feature_strategies(s.liv_class)
            if s.feature_strategy not in valid:
                out.append(GenomeIssue(i, s, "feature-strategy",
                                       f"feature-group sharing strategy {s.feature_strategy} is not valid for {s.name}; valid: {list(valid)}"))
            if s.residual_group < 0:
                out.append(GenomeIssue(i, s, "residual-group", f"residual group {s.residual_group} must be >= 0 (0 = none)"))
        if any(x.rule == "class" for x in out):
            return out
        counts = self.class_counts()
        for i, s in enumerate(self.segments):
            n = counts[s.liv_class]
            for gene, value in (("featurizer", s.featurizer_group), ("feature", s.feature_group)):
                if not 1 <= value <= n:
                    out.append(GenomeIssue(
                        i, s, f"{gene}-link",
                        f"{gene} sharing group {value} cannot name a group of {s.name}: groups are numbered per "
                        f"class, 1..{n} for the {n} {s.name} LIV(s), and only LIVs of the same class can share"))
        out.sort(key=lambda x: x.index)
        return out

    def validate(self) -> "Genome":
        """Return self if valid, else raise :class:`GenomeError` listing every issue."""
        issues = self.issues()
        if issues:
            lines = "\n  ".join(map(str, issues))
            raise GenomeError(f"invalid STAR genome '{self}':\n  {lines}\n(repair it with repair=True, or --repair on the command line)")
        return self

    def repaired(self, seed: int = 0) -> "Genome":
        """A valid genome: bad classes and strategies re-sampled from the valid set
        (``random.Random(seed)``), invalid links removed by moving the LIV to a free group of its class."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ConfigError(f"the repair seed must be an integer, got {type(seed).__name__} {seed!r}")
        rng = random.Random(seed)
        segs = [list(s.as_tuple(True)) for s in self.segments]
        for v in segs:
            if not 1 <= v[0] <= C.NUM_CLASSES:
                v[0] = rng.randint(1, C.NUM_CLASSES)
            if v[2] not in C.FEATURIZER_STRATEGIES:
                v[2] = rng.choice(list(C.FEATURIZER_STRATEGIES))
            if v[4] not in C.valid_feature_strategies(v[0]):
                v[4] = rng.choice(C.valid_feature_strategies(v[0]))
            v[5] = max(v[5], 0)
        counts: dict[int, int] = {}
        for v in segs:
            counts[v[0]] = counts.get(v[0], 0) + 1
        for k in (1, 3):  # group genes; class counts are final now
            # Values in 1..n already used per class. A bad value is outside 1..n, so moving a
            # LIV frees nothing: the smallest free value per class only grows (linear time).
            used: dict[int, set[int]] = {}
            for v in segs:
                if 1 <= v[k] <= counts[v[0]]:
                    used.setdefault(v[0], set()).add(v[k])
            free = {c: 1 for c in counts}
            for v in segs:
                n = counts[v[0]]
                if not 1 <= v[k] <= n:
                    # Pigeonhole: at most n-1 other LIVs of the class, so a value in 1..n is free.
                    taken = used.setdefault(v[0], set())
                    x = free[v[0]]
                    while x in taken:
                        x += 1
                    v[k], free[v[0]] = x, x
                    taken.add(x)
        return Genome(Segment(*v) for v in segs)


def _earliest(segments: Sequence[Segment], i: int, same) -> int:
    for j in range(i + 1):
        if same(segments[j]):
            return j
    return i


# -- parsing ------------------------------------------------------------------------------

_UNSET = -(10**9)  # marks the groups of a class-only segment until they are numbered
_SEPARATORS = re.compile(r"[\s,_|\-]+")


def check_depth(depth) -> int:
    """``depth`` as an int: a positive integer number of LIVs, at most :data:`MAX_DEPTH`."""
    if not isinstance(depth, bool) and isinstance(depth, numbers.Integral) and depth < 1:
        raise GenomeError(f"depth must be a positive number of LIVs, got {int(depth)}")
    return check_int("depth", depth, 1, MAX_DEPTH, "MAX_DEPTH")


def _show(v, limit: int = 40) -> str:
    """``repr(v)`` cut to ``limit`` characters; safe for ints over Python's int-string limit."""
    try:
        text = repr(v)
    except ValueError:
        return f"<a {type(v).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "..."


def _gene(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        shown = _show(v)
        raise GenomeError(f"{where}: genes must be integers, got {type(v).__name__} {shown}")
    if not -MAX_GENE_VALUE <= v <= MAX_GENE_VALUE:
        raise GenomeError(f"{where}: a gene value is over the limit of {MAX_GENE_VALUE:,} (MAX_GENE_VALUE); "
                          "classes are 1..17 and groups count LIVs")
    return int(v)


def _segment_from_ints(vals: Sequence[int], where: str) -> list[int]:
    if not isinstance(vals, (list, tuple)):
        raise GenomeError(f"{where}: a segment is a list of integers, got {type(vals).__name__}")
    if len(vals) not in (1, 5, 6):
        raise GenomeError(f"{where}: a segment has 1 (class only), 5 or 6 integers, got {len(vals)}")
    vals = [_gene(v, where) for v in vals]
    if len(vals) == 1:
        return [vals[0], _UNSET, 1, _UNSET, 1, 0]  # class only; groups filled in by _fill_class_only
    if len(vals) == 5:
        return vals + [0]
    if len(vals) == 6:
        return vals
    raise GenomeError(f"{where}: a segment has 1 (class only), 5 or 6 integers, got {len(vals)}: {vals}")


def _split_text(text: str) -> list[list[int]]:
    if len(text) > MAX_GENOME_CHARS:
        raise LimitError(f"the genome text is {len(text):,} characters, over the limit of {MAX_GENOME_CHARS:,} "
                         f"(MAX_GENOME_CHARS); give a motif and a depth instead")
    t = text.strip()
    if not t:
        raise GenomeError("empty genome string")
    if not re.fullmatch(r"[0-9.\s,_|\-]+", t, flags=re.ASCII):
        shown = t if len(t) <= 60 else t[:60] + "..."
        raise GenomeError(f"genome {shown!r} has characters other than digits, '.', and separators (- _ | , space)")
    longest = max((len(m) for m in re.findall(r"[0-9]+", t)), default=0)
    parts = [p for p in _SEPARATORS.split(t) if p]
    if "." in t and longest > 7:
        raise GenomeError(f"genome has a {longest}-digit gene value, over the limit of {MAX_GENE_VALUE:,} "
                          "(MAX_GENE_VALUE); classes are 1..17 and groups count LIVs")
    if len(parts) == 1 and "." not in parts[0] and len(parts[0]) > 2:
        digits = parts[0]
        n = 5 if len(digits) % 5 == 0 else 6 if len(digits) % 6 == 0 else 0
        if not n:
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise GenomeError(
                f"genome '{shown}' without separators must have a multiple of 5 (or 6) digits, got {len(digits)}; "
                "separate segments with '-'")
        parts = [digits[k:k + n] for k in range(0, len(digits), n)]
    if len(parts) > MAX_DEPTH:
        raise LimitError(f"the genome has {len(parts):,} segments, over the limit of {MAX_DEPTH} LIVs (MAX_DEPTH)")
    out = []
    for k, p in enumerate(parts):
        where = f"segment {k + 1} ('{p if len(p) <= 40 else p[:40] + '...'}')"
        if "." not in p and len(p) > 6 and len(parts) > 1:
            raise GenomeError(f"{where}: a segment has 5 or 6 digits (or dots between values above 9), "
                              f"got {len(p)} digits")
        if "." in p:
            vals = [int(x) for x in p.split(".") if x != ""]
        elif len(p) <= 2:
            vals = [int(p)]
        else:
            vals = [int(ch) for ch in p]
        out.append(_segment_from_ints(vals, where))
    return out


def _fill_class_only(rows: list[list[int]]) -> list[list[int]]:
    """Class-only segments (groups 0) get per-class occurrence numbers as group values and
    strategy 1, as in the paper's examples (``11111 91111 12121 92121``): no sharing."""
    per_class: dict[int, int] = {}
    for r in rows:
        if r[1] == _UNSET:
            per_class[r[0]] = per_class.get(r[0], 0) + 1
            r[1] = r[3] = per_class[r[0]]
    return rows


def parse_genome(genome, depth: int | None = None, repair: bool = False, seed: int = 0) -> Genome:
    """Parse, tile to ``depth`` (when given), then validate (or repair) a backbone genome.

    Accepts the string and list forms described in the module docstring, or a Genome.
    Raises :class:`GenomeError` naming the segment and rule when the genome is invalid and
    ``repair`` is False, :class:`~staredge.errors.ConfigError` for arguments of the wrong type
    and :class:`~staredge.errors.LimitError` for a depth, segment count or text length over
    :data:`MAX_DEPTH` / :data:`MAX_GENOME_CHARS` (checked before anything is tiled).
    """
    if depth is not None:
        depth = check_depth(depth)
    if not isinstance(repair, bool):
        raise ConfigError(f"repair must be True or False, got {type(repair).__name__} {repair!r}")
    if isinstance(genome, Genome):
        g = genome
    else:
        if isinstance(genome, str):
            rows = _split_text(genome)
        elif isinstance(genome, (list, tuple)):
            if not genome:
                raise GenomeError("empty genome list")
            if len(genome) > MAX_DEPTH:
                raise LimitError(f"the genome list has {len(genome):,} segments, over the limit of {MAX_DEPTH} "
                                 "LIVs (MAX_DEPTH); give a motif and a depth instead")
            if all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in genome):
                # a flat list of ints is a list of class ids (one LIV each)
                rows = [_segment_from_ints([v], f"segment {k + 1}") for k, v in enumerate(genome)]
            else:
                rows = []
                for k, item in enumerate(genome):
                    if isinstance(item, str):
                        sub = _split_text(item)
                        if len(sub) != 1:
                            raise GenomeError(f"segment {k + 1} ('{item}') holds {len(sub)} segments; give one per list item")
                        rows.append(sub[0])
                    elif isinstance(item, Segment):
                        rows.append(list(item.as_tuple(True)))
                    elif isinstance(item, (list, tuple)):
                        rows.append(_segment_from_ints(item, f"segment {k + 1} ({_show(list(item))})"))
                    else:
                        raise GenomeError(f"segment {k + 1}: expected a list of ints or a string, got {type(item).__name__}")
        else:
            raise GenomeError(f"a genome is a string, a list or a Genome, got {type(genome).__name__}")
        g = Genome(Segment(*r) for r in _fill_class_only(rows))
    if depth is not None:
        g = g.tiled(depth)
    return g.repaired(seed) if repair else g.validate()


# -- baselines and random genomes -----------------------------------------------------------

def transformer_pp(dim: int = 768, n_liv: int = 24) -> Genome:
    """Transformer++ as a genome: SA-1 and SwiGLU alternating, no sharing (``n_liv`` even).

    ``dim`` is accepted for symmetry with model constructors; the genome does not depend on it.
    """
    n_liv = check_int("n_liv (depth)", n_liv, 0, MAX_DEPTH, "MAX_DEPTH")
    if n_liv < 2 or n_liv % 2:
        raise GenomeError(f"Transformer++ needs an even number of LIVs (attention + SwiGLU pairs), got {n_liv}")
    segs = []
    for k in range(n_liv // 2):
        segs += [Segment(1, k + 1, 1, k + 1, 1), Segment(9, k + 1, 1, k + 1, 1)]
    return Genome(segs)


def striped_mamba(dim: int = 768, n_liv: int = 24) -> Genome:
    """StripedMamba as a genome: SwiGLU at odd positions (0-based), SA-1 at the even
    positions nearest n/4 and 3n/4 (6 and 18 for 24 LIVs), Rec-1 (Mamba) elsewhere."""
    n_liv = check_int("n_liv (depth)", n_liv, 0, MAX_DEPTH, "MAX_DEPTH")
    if n_liv < 2 or n_liv % 2:
        raise GenomeError(f"StripedMamba needs an even number of LIVs, got {n_liv}")
    attn = {min(2 * round(n_liv / 8), n_liv - 2), min(2 * round(3 * n_liv / 8), n_liv - 2)}
    segs, count = [], {}
    for i in range(n_liv):
        cls = 9 if i % 2 else (1 if i in attn else 5)
        count[cls] = count.get(cls, 0) + 1
        segs.append(Segment(cls, count[cls], 1, count[cls], 1))
    return Genome(segs)


BASELINES = {"transformer_pp": transformer_pp, "striped_mamba": striped_mamba}


def random_genome(n_liv: int, seed: int = 0, classes: Sequence[int] | None = None,
                  share_prob: float = 0.5, residual_prob: float = 0.0) -> Genome:
    """A random *valid* genome (used by tests and for evolution's initial population).

    Each LIV takes a class from ``classes`` (default all 17); with probability ``share_prob``
    it joins an earlier same-class LIV's featurizer group and/or feature group with a random
    strategy; with ``residual_prob`` it joins an earlier LIV's residual group.
    """
    n_liv = check_int("n_liv", n_liv, 1, MAX_DEPTH, "MAX_DEPTH")
    rng = random.Random(seed)
    pool = list(classes or range(1, C.NUM_CLASSES + 1))
    segs: list[Segment] = []
    for i in range(n_liv):
        cls = pool[i] if classes is not None and len(pool) == n_liv else rng.choice(pool)
        same = [s for s in segs if s.liv_class == cls]
        own = len(same) + 1  # per-class numbering: the k-th LIV of a class owns group k
        fg, fs, gg, gs = own, 1, own, 1
        if same and rng.random() < share_prob:
            fg, fs = rng.choice(same).featurizer_group, rng.choice((1, 2))
        if same and rng.random() < share_prob:
            gg = rng.choice(same).feature_group
            gs = rng.choice(C.valid_feature_strategies(cls)[1:])
        rg = 0
        if residual_prob and i > 0 and rng.random() < residual_prob:
            rg = rng.randint(1, 3)
        segs.append(Segment(cls, fg, fs, gg, gs, rg))
    return Genome(segs).validate()
