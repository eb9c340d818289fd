"""The timing loop: one cold inference, warm-up, then timed inferences, each synchronised.

The loop knows nothing about runtimes: it calls ``infer()`` (one batch-1 inference on a
fixed input) and, where the work is asynchronous (CUDA), ``sync()`` before reading the
clock, so that a timing covers the work and not just its launch. Clocks are injectable so
the statistics can be tested with a fake clock; the real ones are
``time.perf_counter_ns`` (monotonic, highest resolution) and ``time.process_time_ns``
(CPU time of this process, all threads, for the observed parallelism).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from staredge.bench.stats import RunStats

Clock = Callable[[], int]

_NS_PER_MS = 1e6


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived during a run; ``stats`` holds the inferences timed before it (or None).

    It is a ``KeyboardInterrupt``, so code that does not know about partial runs still
    stops as the user asked. Callers that run several runs add the finished ones to
    ``runs`` (partial run last) and the runner they used to ``runner``.
    """

    def __init__(self, stats: RunStats | None, runs: list[RunStats] | None = None, runner: Any = None) -> None:
        super().__init__("interrupted during a measurement run")
        self.stats = stats
        self.runs = list(runs) if runs is not None else ([stats] if stats is not None else [])
        self.runner = runner


def time_run(
    infer: Callable[[], Any],
    warmup: int,
    iters: int,
    *,
    sync: Callable[[], None] | None = None,
    trim: tuple[int, int] | None = None,
    clock: Clock = time.perf_counter_ns,
    cpu_clock: Clock | None = time.process_time_ns,
    keep_samples: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Time one run and summarise it.

    The first call of ``infer`` is timed on its own (``first_ms``), then ``warmup`` calls
    are made untimed, then ``iters`` calls are timed one by one with ``clock``.
    ``on_progress(k)`` is called after every timed inference with the count so far; it
    runs outside the timed interval. On Ctrl-C during the timed loop, raises
    :class:`RunInterrupted` carrying the statistics of what was timed.
    """
    sync = sync or _no_sync
    t0 = clock()
    infer()
    sync()
    first_ms = (clock() - t0) / _NS_PER_MS
    for _ in range(warmup):
        infer()
        sync()
    samples: list[float] = []
    cpu0 = cpu_clock() if cpu_clock else None
    wall0 = clock()
    try:
        for i in range(iters):
            t0 = clock()
            infer()
            sync()
            t1 = clock()
            samples.append((t1 - t0) / _NS_PER_MS)
            if on_progress is not None:
                on_progress(i + 1)
    except KeyboardInterrupt:
        partial = None
        if samples:
            can_trim = trim is not None and trim[0] + trim[1] < len(samples)
            partial = RunStats.from_samples(
                samples, first_ms, trim=trim if can_trim else None, warmup=warmup,
                interrupted=True, keep_samples=keep_samples,
            )
        raise RunInterrupted(partial) from None
    wall = clock() - wall0
    utilisation = None
    if cpu_clock is not None and wall > 0:
        utilisation = round((cpu_clock() - cpu0) / wall, 3)
    return RunStats.from_samples(
        samples, first_ms, trim=trim, warmup=warmup, cpu_utilisation=utilisation, keep_samples=keep_samples
    )


def _no_sync() -> None:
    """CPU runtimes return finished results: nothing to wait for."""
