"""Tensor kernels: reshaping, slicing, gathering, padding, casting, and ``classify``."""

from __future__ import annotations

from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.dtypes import CAST_DTYPES
from staredge.runtimes.mil_reference.errors import MILProgramError, UnsupportedOpError
from staredge.runtimes.mil_reference.kernels.base import REQUIRED, Args, kernel


@kernel("reshape")
def _reshape(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    shape = a.ints("shape", REQUIRED)
    # a 0 keeps the input's size on that axis (MIL reshape semantics)
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@kernel("transpose")
def _transpose(a: Args) -> list[Any]:
    return [np.transpose(np.asarray(a.raw("x", REQUIRED)), a.ints("perm", REQUIRED))]


@kernel("concat")
def _concat(a: Args) -> list[Any]:
    values = [np.asarray(v) for v in a._values.get("values", [])]
    if a.scalar("interleave", False):
        raise UnsupportedOpError(f"op '{a.op_name}' (concat): interleave=True is not supported")
    axis = int(a.scalar("axis", REQUIRED))
    dtype = np.result_type(*values)
    return [np.concatenate([v.astype(dtype) for v in values], axis=axis)]


@kernel("split")
def _split(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    axis = int(a.scalar("axis", REQUIRED))
    sizes = a.ints("split_sizes")
    if sizes is None:
        parts = int(a.scalar("num_splits", REQUIRED))
        return list(np.array_split(x, parts, axis=axis))
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@kernel("slice_by_index")
def _slice_by_index(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    rank = x.ndim
    begin = a.ints("begin", REQUIRED)
    end = a.ints("end", REQUIRED)
    stride = a.ints("stride") or [1] * rank
    bmask = [bool(v) for v in (a.ints("begin_mask") or [0] * rank)]
    emask = [bool(v) for v in (a.ints("end_mask") or [0] * rank)]
    smask = [bool(v) for v in (a.ints("squeeze_mask") or [0] * rank)]
    index = []
    for i in range(rank):
        if smask[i]:
            index.append(begin[i])
            continue
        index.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]))
    return [np.asarray(x[tuple(index)])]


@kernel("slice_by_size")
def _slice_by_size(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    begin = a.ints("begin", REQUIRED)
    size = a.ints("size", REQUIRED)
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))
    return [x[index]]


@kernel("squeeze")
def _squeeze(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    axes = a.ints("axes")
    return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))]


@kernel("expand_dims")
def _expand_dims(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    axes = a.ints("axes", REQUIRED)
    out_rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(ax % out_rank for ax in axes))]


@kernel("flatten2d")
def _flatten2d(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    axis = int(a.scalar("axis", 1)) % max(x.ndim, 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@kernel("tile")
def _tile(a: Args) -> list[Any]:
    return [np.tile(np.asarray(a.raw("x", REQUIRED)), a.ints("reps", REQUIRED))]


@kernel("gather")
def _gather(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    idx = np.asarray(a.raw("indices", REQUIRED)).astype(np.int64)
    axis = int(a.scalar("axis", 0))
    if int(a.scalar("batch_dims", 0)) != 0:
        raise UnsupportedOpError(f"op '{a.op_name}' (gather): batch_dims != 0 is not supported")
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take(x, idx, axis=axis)]


@kernel("pad")
def _pad(a: Args) -> list[Any]:
    x = np.asarray(a.tensor("x", REQUIRED))
    pad = a.ints("pad", REQUIRED)
    mode = str(a.scalar("mode", "constant"))
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return [np.pad(x, widths, constant_values=a.scalar("constant_val", 0.0))]
    if mode in ("reflect", "replicate"):
        return [np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")]
    raise UnsupportedOpError(f"op '{a.op_name}' (pad): mode {mode!r} is not supported")


@kernel("cast")
def _cast(a: Args) -> list[Any]:
    x = np.asarray(a.raw("x", REQUIRED))
    dtype = str(a.scalar("dtype", REQUIRED))
    if dtype not in CAST_DTYPES:
        raise UnsupportedOpError(f"op '{a.op_name}' (cast): target dtype {dtype!r} is not supported")
    target = CAST_DTYPES[dtype]
    if np.issubdtype(target, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)  # MIL casts float → int by truncation toward zero
    return [x.astype(target)]


@kernel("shape")
def _shape(a: Args) -> list[Any]:
    return [np.asarray(np.asarray(a.raw("x", REQUIRED)).shape, dtype=np.int32)]


@kernel("classify")
def _classify(a: Args) -> list[Any]:
    probs = np.asarray(a.tensor("probabilities", REQUIRED), dtype=np.float32).reshape(-1)
    classes = a.raw("classes", REQUIRED)
    classes = list(classes) if not isinstance(classes, np.ndarray) else classes.reshape(-1).tolist()
    if len(classes) != probs.size:
        raise MILProgramError(f"op '{a.op_name}' (classify): {len(classes)} classes for {probs.size} probabilities")
    label = classes[int(np.argmax(probs))]
    return [np.asarray(label), probs]
