"""Kernels for the ops CoreML emits for STAR language-model decode graphs
(``staredge.exporters.coreml_lm.export_lm_coreml``): running sums, selects, fills and
logical ops of the masked attention and the closed-form recurrence scan."""

from __future__ import annotations

from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import MILProgramError
from staredge.runtimes.mil_reference.kernels.base import REQUIRED, Args, kernel


@kernel("cumsum")
def _cumsum(a: Args) -> list[Any]:
    x = np.asarray(a.tensor("x", REQUIRED))
    axis = int(a.scalar("axis", 0))
    if a.scalar("reverse", False):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if a.scalar("exclusive", False):
        y = y - x
    if a.scalar("reverse", False):
        y = np.flip(y, axis)
    return [y]


@kernel("select")
def _select(a: Args) -> list[Any]:
    cond = np.asarray(a.raw("cond", REQUIRED)).astype(bool)
    return [np.where(cond, np.asarray(a.tensor("a", REQUIRED)), np.asarray(a.tensor("b", REQUIRED)))]


@kernel("fill_like")
def _fill_like(a: Args) -> list[Any]:
    ref = np.asarray(a.raw("ref_tensor", REQUIRED))
    value = a.scalar("value", 0.0)
    dtype = np.float32 if isinstance(value, float) else np.asarray(value).dtype
    return [np.full(ref.shape, value, dtype=dtype)]


@kernel("fill")
def _fill(a: Args) -> list[Any]:
    shape = a.ints("shape", REQUIRED)
    value = a.scalar("value", 0.0)
    return [np.full(shape, value, dtype=np.float32 if isinstance(value, float) else np.asarray(value).dtype)]


@kernel("range_1d")
def _range(a: Args) -> list[Any]:
    start, end, step = (np.asarray(a.raw(k, REQUIRED)).reshape(-1)[0] for k in ("start", "end", "step"))
    return [np.arange(start, end, step)]


@kernel("logical_and")
def _and(a: Args) -> list[Any]:
    return [np.logical_and(np.asarray(a.raw("x", REQUIRED)), np.asarray(a.raw("y", REQUIRED)))]


@kernel("logical_or")
def _or(a: Args) -> list[Any]:
    return [np.logical_or(np.asarray(a.raw("x", REQUIRED)), np.asarray(a.raw("y", REQUIRED)))]


@kernel("logical_not")
def _not(a: Args) -> list[Any]:
    return [np.logical_not(np.asarray(a.raw("x", REQUIRED)))]


@kernel("read_state")
def _read_state(a: Args) -> list[Any]:
    # a snapshot: a later coreml_update_state writes the state array in place
    return [np.array(a.raw("input", REQUIRED), copy=True)]


def _store(state: Any, value: Any) -> np.ndarray:
    """Write ``value`` into the caller's state array in place (StatefulMILExecutor binds it by
    reference), rounded to the state's dtype."""
    value = np.asarray(value)
    if not isinstance(state, np.ndarray) or state.shape != value.shape:
        raise MILProgramError(f"state of shape {getattr(state, 'shape', None)} cannot take a value of shape {value.shape}")
    state[...] = value.astype(state.dtype)
    return value


@kernel("coreml_update_state")
def _update_state(a: Args) -> list[Any]:
    return [_store(a.raw("state", REQUIRED), a.raw("value", REQUIRED))]


@kernel("write_state")
def _write_state(a: Args) -> list[Any]:
    # the serialised form of coreml_update_state: no outputs, the state array changes in place
    _store(a.raw("input", REQUIRED), a.raw("data", REQUIRED))
    return []
