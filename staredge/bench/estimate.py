"""How long a benchmark will take, said before it starts.

The estimate is the protocol counts (cold + warm-up + timed inferences, per run, per
backend) times a short probe: a few PyTorch eager inferences of each model at the
protocol's thread count. Runtimes differ from PyTorch by a small factor either way, and
exporting the artifacts comes on top, so the figure is a rough guide ("about 20 min"),
printed only when the run is long enough to matter.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

from staredge.bench.protocols import Protocol

#: Runs with fewer planned inferences than this start without an estimate.
LONG_RUN_INFERENCES = 2000


def inferences_per_measurement(protocol: Protocol) -> int:
    """Inferences one backend runs under ``protocol``: (cold + warm-up + timed) × runs."""
    return (1 + protocol.warmup + protocol.iters) * protocol.repeats


def planned_inferences(n_models: int, n_backends: int, protocols: Sequence[Protocol]) -> int:
    """All inferences of a run over ``n_models`` model variants and ``n_backends`` backends."""
    return n_models * n_backends * sum(inferences_per_measurement(p) for p in protocols)


def estimate_seconds(
    probe_ms: Mapping[str, float], n_backends: int, protocols: Sequence[Protocol], variants: int = 1
) -> float:
    """Seconds of inference for every model in ``probe_ms`` (ms per inference) on ``n_backends``."""
    per_model = n_backends * sum(inferences_per_measurement(p) for p in protocols) * variants
    return sum(ms * per_model for ms in probe_ms.values()) / 1000.0


def format_duration(seconds: float) -> str:
    """``about 40 s``, ``about 12 min``, ``about 1.5 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def probe_model(name: str, threads: int | None, n: int = 3, build: Callable[[str], object] | None = None) -> float:
    """Median ms of ``n`` PyTorch eager inferences of model ``name`` (after one untimed call)."""
    import torch

    from staredge.bench.harness import build_model

    model = (build or build_model)(name)
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    x = torch.zeros((1, *size))
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(n):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    times.sort()
    return times[len(times) // 2]


def describe_estimate(
    models: Sequence[str],
    n_backends: int,
    protocols: Sequence[Protocol],
    *,
    variants: int = 1,
    probe: Callable[[str, int | None], float] | None = None,
    quick: Protocol | None = None,
) -> str | None:
    """The line printed before a long run, or None for a short one.

    ``probe(model, threads)`` gives ms per inference (default :func:`probe_model`);
    ``quick`` adds what the ``quick`` preset would take instead.
    """
    if planned_inferences(len(models) * variants, n_backends, protocols) < LONG_RUN_INFERENCES:
        return None
    probe = probe or probe_model
    threads = protocols[0].threads
    probes = {m: probe(m, threads) for m in models}
    seconds = estimate_seconds(probes, n_backends, protocols, variants)
    text = (
        f"Estimated time: {format_duration(seconds)} of inference "
        f"({planned_inferences(len(models) * variants, n_backends, protocols):,} inferences on {n_backends} "
        f"backend(s) at PyTorch eager's speed, probed: {', '.join(f'{m} {ms:.1f} ms' for m, ms in probes.items())}; "
        "exported runtimes are usually faster, exports not included)."
    )
    if quick is not None and quick not in protocols:
        fast = estimate_seconds(probes, n_backends, [quick] * len(protocols), variants)
        text += f" For a first look, --protocol quick takes {format_duration(fast)}."
    text += " " + idle_machine_note()
    return text


def idle_machine_note() -> str:
    """What every time estimate assumes, with this machine's load now (an estimate is longer
    on a busy machine)."""
    import os

    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return "Estimates assume an idle machine."
    cores = os.cpu_count() or 1
    busy = " (busy: expect longer)" if load > 0.5 * cores else ""
    return f"Estimates assume an idle machine; load average now {load:.1f} on {cores} cores{busy}."
