"""Latency protocols: the papers' measurement settings as named, overridable presets.

A :class:`Protocol` says how one (model, runtime) pair is timed: threads, device, warm-up
and timed inferences per run, how many runs, which runs and statistic are reported, and
which rewrites the exported artifact gets. Every knob is recorded in the results, because
the published figures differ mostly in these knobs (the official StarNet ONNX script uses
50/400 and one thread; the paper's numbers use 50/500 and four).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from staredge.errors import ConfigError

#: What ``reduce`` may be: report the last run, or the mean over all runs.
REDUCTIONS = ("last", "mean")
#: Statistics a protocol may report (see :meth:`RunStats.statistic`).
STATISTICS = ("mean", "median", "p90", "p99", "min", "trimmed_mean")
#: Devices a protocol may ask for.
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured. Batch size is always 1 and the input is one fixed tensor.

    Each of ``repeats`` runs is: one first (cold) inference, ``warmup`` untimed inferences,
    then ``iters`` timed inferences. ``trim_low``/``trim_high`` drop that many fastest and
    slowest timings of each run before averaging (``statistic="trimmed_mean"``).
    ``reduce="last"`` reports the last run (all runs are still recorded and shown);
    ``"mean"`` reports the mean of the per-run statistic. ``recreate_per_run`` rebuilds the
    runtime session before every run, as ModelBench re-creates the model each round.
    ``rewrite`` is what the exporter applies to every exported artifact ("auto", "none" or
    a comma-separated list of pass names); the two baselines never get rewrites.
    ``imitates`` names the device whose published practice the preset copies when it is
    not the device the benchmark runs on (the iPhone presets time this host's CPU with
    the phone's counts); it is printed as a notice and recorded in the results.
    """

    name: str
    description: str
    backends: tuple[str, ...] = ("all",)
    device: str = "cpu"
    threads: int | None = 4
    warmup: int = 50
    iters: int = 500
    repeats: int = 1
    reduce: str = "last"
    statistic: str = "mean"
    trim_low: int = 0
    trim_high: int = 0
    recreate_per_run: bool = False
    rewrite: str = "auto"
    source: str = ""
    imitates: str = ""
    overrides: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ConfigError(f"warm-up must be >= 0, got {self.warmup}")
        if self.iters < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iters}")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {self.repeats}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or None for the runtime's default), got {self.threads}")
        if self.reduce not in REDUCTIONS:
            raise ConfigError(f"reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        if self.statistic not in STATISTICS:
            raise ConfigError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.trim_low < 0 or self.trim_high < 0 or self.trim_low + self.trim_high >= self.iters:
            raise ConfigError(
                f"cannot drop {self.trim_low} lowest and {self.trim_high} highest of {self.iters} "
                "timed inferences per run: raise --iters or lower the trim"
            )

    @property
    def trim(self) -> tuple[int, int] | None:
        """(low, high) counts dropped per run, or None when nothing is dropped."""
        return (self.trim_low, self.trim_high) if (self.trim_low or self.trim_high) else None

    def with_overrides(self, **changes: Any) -> "Protocol":
        """A copy with the non-None ``changes`` applied; they are listed in ``overrides``."""
        real = {k: v for k, v in changes.items() if v is not None}
        unknown = set(real) - {f.name for f in dataclasses.fields(self)} - {"overrides"}
        if unknown:
            raise ConfigError(f"unknown protocol settings {sorted(unknown)}")
        # A value equal to the preset's is not an override (keeps ids like "paper-cpu" short).
        real = {k: v for k, v in real.items() if getattr(self, k) != v}
        if not real:
            return self
        # The trim is never adjusted silently to fit fewer iterations: __post_init__ reports it.
        names = tuple(sorted(set(self.overrides) | set(real)))
        return dataclasses.replace(self, **real, overrides=names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["backends"] = list(self.backends)
        d["overrides"] = list(self.overrides)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Protocol":
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        for key in ("backends", "overrides"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


def _on_host(name: str, counts: str, source: str, device: str, **settings: Any) -> Protocol:
    """A preset that repeats a phone app's counts (all backends, 4 threads) on this host's CPU."""
    return Protocol(
        name=name, description=f"{counts} timed on this host's CPU, not on an iPhone", backends=("all",),
        device="cpu", threads=4, source=source,
        imitates=f"{device}; real iPhone figures come from the ios_bench/ app, merged with --merge", **settings,
    )


PRESETS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="paper-cpu",
            description="StarNet paper CPU: ONNX Runtime, 4 threads, 50 warm-up, mean of 500",
            backends=("onnxruntime",),
            device="cpu",
            threads=4,
            warmup=50,
            iters=500,
            source="StarNet paper, Table 6 and supplementary Section A.3",
        ),
        Protocol(
            name="paper-gpu",
            description="StarNet paper GPU: pointwise conv -> Linear rewrite, ONNX Runtime CUDA, 50 warm-up, mean of 500",
            backends=("onnxruntime:cuda",),
            device="cuda",
            threads=None,
            warmup=50,
            iters=500,
            rewrite="fuse_batchnorm,pointwise_conv_to_linear",
            source="StarNet paper, supplementary Section A.3",
        ),
        _on_host(
            "ios-settings-on-host", "the StarNet iOS practice's counts (whole run three times, last reported)",
            "StarNet paper, supplementary Section A.3", "iPhone (CoreML)",
            warmup=50, iters=500, repeats=3, reduce="last",
        ),
        _on_host(
            "modelbench-settings-on-host",
            "MobileOne ModelBench's counts (20 rounds x 50, 1 warm-up per round, 10 lowest and 10 highest dropped)",
            "MobileOne ModelBench iOS app defaults (apple/ml-mobileone)", "iPhone (CoreML, ModelBench app)",
            warmup=1, iters=50, repeats=20, reduce="mean", statistic="trimmed_mean", trim_low=10, trim_high=10,
            recreate_per_run=True,
        ),
        Protocol(
            name="quick",
            description="a first look: 5 warm-up, median of 30 timed, one run (seconds per backend, not a paper protocol)",
            backends=("onnxruntime",),
            device="cpu",
            threads=4,
            warmup=5,
            iters=30,
            statistic="median",
            source="StarEdge (not from a paper): enough to rank runtimes, not to quote",
        ),
    )
}


#: Old preset names, still accepted: they time the host CPU, so they were renamed to say so.
ALIASES = {"ios": "ios-settings-on-host", "modelbench": "modelbench-settings-on-host"}


def canonical_protocol_name(name: str) -> str:
    """A preset name, with the old names ``ios`` / ``modelbench`` mapped to their new ones."""
    return ALIASES.get(name, name)


def get_protocol(name: str, **overrides: Any) -> Protocol:
    """The preset ``name`` with any non-None ``overrides`` (warmup, iters, threads, ...).

    ``ios`` and ``modelbench`` are accepted for ``ios-settings-on-host`` and
    ``modelbench-settings-on-host`` (they never ran on a phone).
    """
    try:
        base = PRESETS[canonical_protocol_name(name)]
    except KeyError:
        raise ConfigError(f"unknown protocol '{name}': choose one of {', '.join(PRESETS)}") from None
    return base.with_overrides(**overrides)


def default_threads(protocol: Protocol, physical_cores: int | None) -> int | None:
    """The thread count used when ``--threads`` is not given.

    The machine's physical cores, but no more than the preset's own count (``paper-cpu``
    keeps the paper's 4 threads on a large machine, and runs 2 on a 2-core one instead of
    4 threads competing for 2 cores). A preset without a count (the GPU one) keeps None.
    """
    if protocol.threads is None or not physical_cores:
        return protocol.threads
    return max(1, min(protocol.threads, physical_cores))
