"""Summary statistics of one measurement run (a list of per-inference latencies).

Everything here is pure arithmetic on numbers already measured, so it can be tested with
synthetic timings. Latencies are in milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from staredge.errors import ConfigError


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    This is the same definition as ``numpy.percentile(..., method="linear")``: the value
    at fractional rank ``(n - 1) * q / 100`` of the sorted data.
    """
    if not values:
        raise ConfigError("percentile of an empty list of timings")
    if not 0.0 <= q <= 100.0:
        raise ConfigError(f"percentile q must be within [0, 100], got {q}")
    data = sorted(values)
    rank = (len(data) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    frac = rank - lo
    return data[lo] + (data[hi] - data[lo]) * frac


def trimmed(values: Sequence[float], drop_low: int, drop_high: int) -> list[float]:
    """``values`` sorted, without the ``drop_low`` smallest and ``drop_high`` largest.

    MobileOne's ModelBench app drops the 10 lowest and 10 highest of 50 inferences per
    round; asking to drop as many values as there are (or more) is an error rather than an
    empty mean.
    """
    if drop_low < 0 or drop_high < 0:
        raise ConfigError(f"trim counts must be >= 0, got low={drop_low}, high={drop_high}")
    if drop_low + drop_high >= len(values):
        raise ConfigError(
            f"cannot drop {drop_low} lowest and {drop_high} highest of {len(values)} timings: "
            "raise --iters or lower the trim counts"
        )
    data = sorted(values)
    return data[drop_low : len(data) - drop_high]


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean."""
    if not values:
        raise ConfigError("mean of an empty list of timings")
    return math.fsum(values) / len(values)


def std(values: Sequence[float]) -> float:
    """Population standard deviation (0 for a single value)."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def _ns(ms: float) -> float:
    """Milliseconds rounded to the nanosecond: the clock's resolution, no false digits."""
    return round(ms, 6)


@dataclass
class RunStats:
    """Statistics of one measurement run: warm-up, then ``n`` timed inferences.

    ``first_ms`` is the very first inference of the run (before warm-up: it includes lazy
    initialisation, which is what a user waits for on a cold start). ``trimmed_mean_ms`` is
    set when the protocol trims (ModelBench). ``interrupted`` marks a run cut short by
    Ctrl-C: its statistics cover only the inferences timed before that.
    ``cpu_utilisation`` is process CPU time / wall time over the timed inferences, i.e. how
    many cores were busy on average: the thread count actually in effect, as observed.
    """

    n: int
    first_ms: float | None
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    trimmed_mean_ms: float | None = None
    trim: tuple[int, int] | None = None
    warmup: int = 0
    cpu_utilisation: float | None = None
    interrupted: bool = False
    samples_ms: list[float] | None = None

    @classmethod
    def from_samples(
        cls,
        samples_ms: Sequence[float],
        first_ms: float | None = None,
        *,
        trim: tuple[int, int] | None = None,
        warmup: int = 0,
        cpu_utilisation: float | None = None,
        interrupted: bool = False,
        keep_samples: bool = False,
    ) -> "RunStats":
        """Summarise timed latencies (ms). ``trim=(low, high)`` adds a trimmed mean."""
        if not samples_ms:
            raise ConfigError("a run needs at least one timed inference")
        trimmed_mean = None
        if trim is not None and (trim[0] or trim[1]):
            trimmed_mean = _ns(mean(trimmed(samples_ms, trim[0], trim[1])))
        return cls(
            n=len(samples_ms),
            first_ms=None if first_ms is None else _ns(first_ms),
            mean_ms=_ns(mean(samples_ms)),
            median_ms=_ns(percentile(samples_ms, 50)),
            p90_ms=_ns(percentile(samples_ms, 90)),
            p99_ms=_ns(percentile(samples_ms, 99)),
            std_ms=_ns(std(samples_ms)),
            min_ms=_ns(min(samples_ms)),
            max_ms=_ns(max(samples_ms)),
            trimmed_mean_ms=trimmed_mean,
            trim=tuple(trim) if trim else None,
            warmup=warmup,
            cpu_utilisation=cpu_utilisation,
            interrupted=interrupted,
            samples_ms=list(samples_ms) if keep_samples else None,
        )

    def statistic(self, name: str) -> float:
        """One statistic by name: mean, median, p90, p99, min or trimmed_mean.

        ``trimmed_mean`` falls back to the plain mean for a run that was not trimmed.
        """
        if name == "trimmed_mean":
            return self.trimmed_mean_ms if self.trimmed_mean_ms is not None else self.mean_ms
        try:
            return float(getattr(self, f"{name}_ms"))
        except AttributeError:
            raise ConfigError(
                f"unknown statistic '{name}': use one of mean, median, p90, p99, min, trimmed_mean"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (``samples_ms`` omitted when not kept)."""
        d = asdict(self)
        d["trim"] = list(self.trim) if self.trim else None
        if d["samples_ms"] is None:
            del d["samples_ms"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunStats":
        """Inverse of :meth:`to_dict` (unknown keys ignored, for newer writers)."""
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("trim") is not None:
            kwargs["trim"] = tuple(kwargs["trim"])
        return cls(**kwargs)
