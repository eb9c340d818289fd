"""Whether a measured latency can be trusted: spread of its timings and load on the machine.

A latency measured on a shared, busy machine, or with more threads than cores, can be
several times the quiet figure, and a mean over a heavy tail says more about the other
processes than about the model. :func:`assess` looks at what every result already
records (the run statistics, the thread counts, the load averages) and returns the
reasons, if any, not to read the figure as a result. Everything here is arithmetic on
recorded numbers, so it is tested with synthetic runs.

The thresholds are deliberately loose: a flagged figure is clearly off, not merely a few
per cent noisy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from staredge.bench.stats import RunStats

#: p99 / median above this: a heavy tail (a few inferences several times slower).
MAX_TAIL_RATIO = 2.0
#: standard deviation / mean above this: the timings are spread too widely.
MAX_CV = 0.30
#: Load from other processes, per usable core, above this: the machine was busy.
MAX_OTHER_LOAD_PER_CORE = 0.5
#: Spread is judged only on runs with at least this many timed inferences.
MIN_SAMPLES_FOR_SPREAD = 10

#: The marker tables put after an unreliable figure, and the caption that explains it.
MARKER = "!"
CAPTION = (
    "! = unreliable: heavy tail (p99 > 2× median), wide spread (std > 30% of mean), "
    "more threads than cores, or a busy machine (other load > 0.5 per core); rerun on a quiet "
    "machine (or with --interleave --repeats 3) before reading it as a result"
)


@dataclass
class Reliability:
    """The verdict on one result: ``flagged`` when any ``reasons``; the figures judged."""

    flagged: bool = False
    reasons: list[str] = field(default_factory=list)
    tail_ratio: float | None = None
    cv: float | None = None
    other_load_per_core: float | None = None
    threads_per_core: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (the ``reliability`` field of a result)."""
        return asdict(self)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def assess(
    runs: Sequence[RunStats],
    *,
    cores: int | None,
    threads: int | None = None,
    load_start: Sequence[float] | None = None,
    load_after: Sequence[float] | None = None,
    own_busy: float | None = None,
) -> Reliability:
    """Judge one result's runs.

    ``cores`` is the number of cores this process may use; ``threads`` the thread count
    in effect; ``load_start`` the machine's load averages before the benchmark started and
    ``load_after`` those right after this result's runs (1/5/15 min; only the first is
    used). The 1-minute load after a run includes the run itself, so ``own_busy`` (cores
    this process kept busy, observed as CPU utilisation; ``threads`` when unknown) is
    subtracted from it to estimate the load of other processes.
    """
    out = Reliability()
    timed = [r for r in runs if r.n >= MIN_SAMPLES_FOR_SPREAD]
    if timed:
        tails = [r.p99_ms / r.median_ms for r in timed if r.median_ms > 0]
        cvs = [r.std_ms / r.mean_ms for r in timed if r.mean_ms > 0]
        out.tail_ratio = _round(max(tails)) if tails else None
        out.cv = _round(max(cvs)) if cvs else None
        if out.tail_ratio is not None and out.tail_ratio > MAX_TAIL_RATIO:
            out.reasons.append(f"heavy tail: p99 is {out.tail_ratio:.1f}× the median")
        if out.cv is not None and out.cv > MAX_CV:
            out.reasons.append(f"wide spread: std is {out.cv:.0%} of the mean")
    if cores:
        if threads:
            out.threads_per_core = _round(threads / cores)
            if threads > cores:
                out.reasons.append(f"{threads} threads on {cores} cores: the threads compete for the cores")
        others = []
        if load_start:
            others.append(float(load_start[0]))
        if load_after:
            busy = own_busy if own_busy is not None else float(threads or 1)
            others.append(max(0.0, float(load_after[0]) - busy))
        if others:
            out.other_load_per_core = _round(max(others) / cores)
            if out.other_load_per_core > MAX_OTHER_LOAD_PER_CORE:
                out.reasons.append(
                    f"busy machine: other processes' load {max(others):.1f} on {cores} cores"
                )
    out.flagged = bool(out.reasons)
    return out


def machine_cores(machine: dict[str, Any]) -> int | None:
    """The cores a result's machine record says this process could use."""
    for key in ("usable_cpus", "logical_cpus", "physical_cores"):
        value = machine.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def assess_result(result: Any, machine: dict[str, Any]) -> Reliability:
    """:func:`assess` for a :class:`~staredge.bench.results.BenchResult` and its machine record.

    Used for documents written before results carried a ``reliability`` field (and by the
    harness, which records it).
    """
    busy = None
    utils = [r.cpu_utilisation for r in result.runs if r.cpu_utilisation is not None]
    if utils:
        busy = max(utils)
    return assess(
        result.runs,
        cores=machine_cores(machine),
        threads=result.threads_in_effect or result.threads_requested,
        load_start=machine.get("load_average"),
        load_after=getattr(result, "load_average", None),
        own_busy=busy,
    )
