"""Choosing the next token from a row of logits (core layer: numpy and the standard library).

:class:`SamplingConfig` (repetition penalty, temperature, top-k, top-p) and
:func:`sample_next_token`, drawing from a private ``numpy.random.Generator``
(:func:`make_generator`) so that a seed fixes the result on every runtime whose
probabilities agree; temperature 0 is greedy. ``staredge.generation`` re-exports every name.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from staredge.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen from the logits.

    ``temperature`` 0 means greedy (argmax; the generator is not used). ``top_k`` 0 or None
    and ``top_p`` 1.0 switch those filters off; ``repetition_penalty`` 1.0 switches the
    penalty off. The order is the usual one: penalty, temperature, top-k, top-p.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ConfigError(f"top_k must be a non-negative integer (0 or None = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            raise ConfigError(f"repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty!r}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0


def _to_numpy_row(logits: Any) -> tuple[np.ndarray, Any]:
    """``logits`` as a 1-D numpy row, and a function that turns a numpy result back into the
    caller's kind (a torch tensor in gives a torch tensor out; torch is never imported here)."""
    if isinstance(logits, np.ndarray):
        return logits.reshape(-1), lambda a: a
    if hasattr(logits, "detach") and hasattr(logits, "numpy"):  # a torch tensor
        like = logits
        row = logits.detach().float().cpu().numpy().reshape(-1)

        def back(a: np.ndarray) -> Any:
            import torch

            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=like.dtype, device=like.device)

        return row, back
    return np.asarray(logits, dtype=np.float32).reshape(-1), lambda a: a


def _penalise(row: np.ndarray, previous_ids: Iterable[int], penalty: float) -> np.ndarray:
    if penalty == 1.0:
        return row
    seen = sorted({int(i) for i in previous_ids if 0 <= int(i) < row.shape[-1]})
    if not seen:
        return row
    out = row.copy()
    idx = np.asarray(seen, dtype=np.int64)
    vals = out[idx]
    out[idx] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def _top_k(row: np.ndarray, k: int | None) -> np.ndarray:
    if not k or k >= row.shape[-1]:
        return row
    kth = np.partition(row, row.shape[-1] - k)[row.shape[-1] - k]
    return np.where(row < kth, -np.inf, row).astype(row.dtype, copy=False)


#: Rounding allowance of the nucleus test: probabilities computed from float32 logits are
#: exact to about 1e-7, so "the tokens above already hold p" is decided to within 1e-6.
TOP_P_TOLERANCE = 1e-6


def _softmax64(row: np.ndarray) -> np.ndarray:
    z = row.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _top_p(row: np.ndarray, p: float) -> np.ndarray:
    if p >= 1.0:
        return row
    order = np.argsort(-row, kind="stable")
    probs = _softmax64(row[order])
    mass_before = np.cumsum(probs) - probs
    drop_sorted = mass_before >= p - TOP_P_TOLERANCE
    drop_sorted[0] = False
    drop = np.empty_like(drop_sorted)
    drop[order] = drop_sorted
    return np.where(drop, -np.inf, row).astype(row.dtype, copy=False)


def apply_repetition_penalty(logits: Any, previous_ids: Iterable[int], penalty: float) -> Any:
    """Make every token already seen less likely (the CTRL rule, as in Hugging Face).

    A seen token's positive logit is divided by ``penalty`` and its negative logit multiplied
    by it, so ``penalty > 1`` always lowers it. Each seen token is penalised once, however
    often it occurred. Returns a new row (numpy in, numpy out; a torch tensor in gives a
    torch tensor out); ``logits`` is a 1-D row and is not modified.
    """
    if penalty == 1.0:
        return logits
    row, back = _to_numpy_row(logits)
    out = _penalise(row, previous_ids, penalty)
    return logits if out is row else back(out)


def filter_top_k(logits: Any, k: int | None) -> Any:
    """Keep the ``k`` highest logits (ties with the k-th are kept too); the rest become -inf."""
    row, back = _to_numpy_row(logits)
    if not k or k >= row.shape[-1]:
        return logits
    return back(_top_k(row, k))


def filter_top_p(logits: Any, p: float) -> Any:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    A token is dropped when the tokens ranked above it already hold probability >= ``p``
    (to within :data:`TOP_P_TOLERANCE`); the most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    row, back = _to_numpy_row(logits)
    return back(_top_p(row, p))


def _distribution(row: np.ndarray, config: SamplingConfig, previous_ids: Sequence[int]) -> np.ndarray:
    row = _penalise(row.astype(np.float32, copy=False), previous_ids, config.repetition_penalty)
    if config.greedy:
        out = np.zeros(row.shape[-1], dtype=np.float64)
        out[int(np.argmax(row))] = 1.0
        return out
    row = (row.astype(np.float64) / config.temperature)
    row = _top_k(row, config.top_k)
    row = _top_p(row, config.top_p)
    return _softmax64(row)


def next_token_distribution(logits: Any, config: SamplingConfig, previous_ids: Sequence[int] = ()) -> Any:
    """Probabilities the sampler draws from, after penalty, temperature, top-k and top-p.

    With ``temperature == 0`` this is one-hot on the argmax of the penalised logits. numpy in,
    numpy out (float64); a torch tensor in gives a tensor of its dtype out.
    """
    row, back = _to_numpy_row(logits)
    probs = _distribution(row, config, previous_ids)
    return back(probs) if not isinstance(logits, np.ndarray) else probs


def _uniform(generator: Any) -> float:
    """One draw in [0, 1) from a numpy Generator (or a torch.Generator, for callers that pass one)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    if generator is not None and hasattr(generator, "manual_seed"):
        import torch

        return float(torch.rand((), generator=generator, dtype=torch.float64))
    return float(make_generator(None).random())


def sample_next_token(logits: Any, config: SamplingConfig, generator: Any = None,
                      previous_ids: Sequence[int] = ()) -> int:
    """One token id drawn from ``logits`` (shape [V], numpy or torch) with ``config``.

    Greedy (temperature 0) takes the argmax (the first one on ties) and draws nothing.
    Otherwise one uniform number is drawn from ``generator`` (a ``numpy.random.Generator``
    from :func:`make_generator`; None draws a fresh OS seed) and mapped through the
    cumulative distribution, so the same generator state gives the same token on every
    runtime whose probabilities agree.
    """
    row, _ = _to_numpy_row(logits)
    if config.greedy:
        row = _penalise(row, previous_ids, config.repetition_penalty)
        return int(np.argmax(row))
    probs = _distribution(row, config, previous_ids)
    cdf = np.cumsum(probs)
    u = _uniform(generator) * cdf[-1]
    idx = int(np.searchsorted(cdf, u, side="right"))
    idx = min(idx, probs.shape[-1] - 1)
    while probs[idx] == 0 and idx > 0:  # float rounding at the very top of the cdf
        idx -= 1
    return idx


def make_generator(seed: int | None) -> np.random.Generator:
    """A private numpy generator for one stream: seeded from ``seed``, or from the OS when it
    is None (never from numpy's or torch's global state)."""
    return np.random.Generator(np.random.PCG64(int(seed) if seed is not None else secrets.randbits(63)))


__all__ = ["SamplingConfig", "TOP_P_TOLERANCE", "apply_repetition_penalty", "filter_top_k", "filter_top_p",
           "make_generator", "next_token_distribution", "sample_next_token"]
