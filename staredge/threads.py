"""Threads: the one rule for ``threads=None`` and the one check of a thread count.

Every runtime engine (:mod:`staredge.runtimes`) resolves its ``threads`` argument here, for
every task (image classification and text generation alike):

* ``threads=None`` means :func:`default_threads`: the physical CPU cores this process may
  run on (hyper-threads share a core, and inference threads beyond the physical cores
  mostly wait). The engine passes that number to the runtime explicitly, so
  ``engine.threads_in_effect()`` is a fact, not a guess.
* an integer must be in ``1..staredge.limits.max_threads()`` (:func:`check_threads`, which
  is :func:`staredge.limits.check_threads` for ints); anything else is a
  :class:`~staredge.errors.ConfigError` naming the argument and the limit, raised before
  any runtime sees it (a runtime asked for 10**9 threads tries to allocate their stacks).

The one exception: the CoreML MIL reference executor (a validation tool, never timed) runs
one BLAS thread when ``threads`` is None; Apple's CoreML runtime has no thread setting.

Standard library only (core layer): the CLI validates ``--threads`` with the same function.
"""

from __future__ import annotations

import os
from typing import Any

from staredge.errors import ConfigError

def check_threads(value: Any, name: str = "threads", allow_none: bool = True) -> int | None:
    """``value`` as a thread count: None (when allowed) or an int in 1..
    :func:`staredge.limits.max_threads` (the one check of a thread count, shared with the
    CLI's ``--threads``). Raises :class:`ConfigError` for a wrong type or a value below 1,
    and :class:`LimitError` naming the limit above it."""
    from staredge.limits import check_threads as check

    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                          f"got {type(value).__name__} {value!r}"[:200])
    return check(value, name)


def _usable_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def count_physical_cores(cpuinfo: str, usable: set[int] | None = None) -> int | None:
    """Distinct (physical id, core id) pairs among ``usable`` CPUs in /proc/cpuinfo text
    (hyper-threads share a core); None when the text names no cores (a VM that does not say)."""
    cores: set[tuple[str, str]] = set()
    processor = physical = core = None
    for line in cpuinfo.splitlines() + [""]:
        if not line.strip():
            if processor is not None and core is not None and (usable is None or processor in usable):
                cores.add((physical or "0", core))
            processor = physical = core = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            processor = int(value)
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
    return len(cores) or None


def default_threads() -> int:
    """What ``threads=None`` means for every engine: the physical cores this process may use
    (from ``/proc/cpuinfo`` and the CPU affinity on Linux), else the usable logical CPUs,
    else ``os.cpu_count()``; at least 1."""
    usable = _usable_cpus()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            physical = count_physical_cores(f.read(), usable)
    except OSError:
        physical = None
    if physical:
        return max(1, physical)
    return max(1, len(usable) if usable else (os.cpu_count() or 1))


def resolve_threads(threads: Any, name: str = "threads") -> int:
    """The thread count an engine applies: ``threads`` checked, or :func:`default_threads`."""
    checked = check_threads(threads, name)
    return checked if checked is not None else default_threads()


__all__ = ["check_threads", "default_threads", "resolve_threads"]
