"""The one check of each number a user gives (threads, warm-up calls, timed calls, runs).

The CLI's shared argument module (:mod:`staredge.commands._args`) and the Python API
(``tune()``, the benchmark) call these, so ``--threads 1000000000`` and
``tune(..., threads=10**9)`` fail the same way, before any work, with a message that names
the flag (or the argument). Standard library only: a core module.
"""

from __future__ import annotations

import numbers
import os

from staredge.errors import ConfigError, LimitError

#: Hard ceiling on intra-op threads, whatever the machine.
THREADS_CEILING = 1024


def max_threads() -> int:
    """The most intra-op threads StarEdge accepts here: 4x this machine's logical cores
    (oversubscription beyond that only slows a run down), at most :data:`THREADS_CEILING`."""
    return min(THREADS_CEILING, 4 * (os.cpu_count() or 1))


def _as_int(value, name: str) -> int:
    """``value`` as an int: an integer, or a string of one (the CLI's text); else ConfigError."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
    shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
    raise ConfigError(f"{name} must be an integer, got {shown}")


def check_count(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; ConfigError (LimitError above ``maximum``)
    naming ``name`` (a CLI flag such as ``--iters`` or an argument such as ``iters``)."""
    n = _as_int(value, name)
    if n < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {n}")
    if maximum is not None and n > maximum:
        shown = str(n) if n < 10**15 else f"a {len(str(n))}-digit number"
        raise LimitError(f"{name} is {shown}, over the limit of {maximum:,}; use a smaller value")
    return n


def check_threads(value, name: str = "--threads") -> int:
    """Intra-op threads: a positive integer up to :func:`max_threads`, else ConfigError naming ``name``."""
    n = _as_int(value, name)
    cap = max_threads()
    if n < 1 or n > cap:
        shown = str(n) if abs(n) < 10**15 else f"a {len(str(abs(n)))}-digit number"
        err = ConfigError if n < 1 else LimitError
        raise err(f"{name} must be a positive integer of at most {cap} (4x this machine's "
                  f"{os.cpu_count() or 1} logical cores), got {shown}")
    return n


def check_warmup(value, name: str = "--warmup") -> int:
    """Untimed calls before timing: an integer >= 0."""
    return check_count(value, name, 0, 10**7)


def check_iters(value, name: str = "--iters") -> int:
    """Timed calls per run: an integer >= 1."""
    return check_count(value, name, 1, 10**7)


def check_repeats(value, name: str = "--repeats") -> int:
    """Runs (rounds) per backend: an integer >= 1."""
    return check_count(value, name, 1, 10**5)
