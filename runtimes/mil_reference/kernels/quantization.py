"""Weight decompression kernels: the ``constexpr_*`` ops coremltools' optimize API writes
(linear quantisation and palettisation), evaluated once when a package is loaded.

* ``constexpr_affine_dequantize`` (iOS16): ``(quantized_data - zero_point) * scale``, with
  ``zero_point``/``scale`` a scalar or one value per index of ``axis``;
* ``constexpr_blockwise_shift_scale`` (iOS18): ``scale * (data - offset)``, ``scale`` and
  ``offset`` of the same rank as ``data`` with one value per block (each dimension of
  ``data`` a multiple of ``scale``'s);
* ``constexpr_lut_to_dense`` (iOS16: ``lut`` of 2**nbits values, ``indices`` packed
  little-endian into uint8, ``shape``; iOS18: unpacked ``indices`` and a per-block ``lut``
  of shape ``(*blocks, 2**nbits, vector_size)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import UnsupportedOpError
from staredge.runtimes.mil_reference.kernels.base import REQUIRED, Args, kernel


def _out_dtype(*arrays: Any) -> Any:
    """fp16 when the scale / table is fp16 (the program declares the output so), else fp32."""
    return np.float16 if any(np.asarray(a).dtype == np.float16 for a in arrays if a is not None) else np.float32


def _along(v: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A scalar or 1-D per-``axis`` vector shaped to broadcast against a rank-``rank`` tensor."""
    v = np.asarray(v, dtype=np.float32)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


@kernel("constexpr_affine_dequantize")
def _affine_dequantize(a: Args) -> list[Any]:
    q = np.asarray(a.raw("quantized_data", REQUIRED))
    scale = a.raw("scale", REQUIRED)
    zero = a.raw("zero_point", REQUIRED)
    axis = int(a.scalar("axis", 0)) % max(q.ndim, 1)
    out = (q.astype(np.float32) - _along(zero, axis, q.ndim)) * _along(scale, axis, q.ndim)
    return [out.astype(_out_dtype(scale))]


def _expand_blocks(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat a per-block tensor along every axis up to ``shape``."""
    v = np.asarray(v, dtype=np.float32)
    if v.ndim != len(shape):
        raise UnsupportedOpError(f"block tensor of rank {v.ndim} for data of rank {len(shape)}")
    for ax, (n, b) in enumerate(zip(shape, v.shape)):
        if n % b:
            raise UnsupportedOpError(f"data size {n} on axis {ax} is not a multiple of {b} blocks")
        if b != n:
            v = np.repeat(v, n // b, axis=ax)
    return v


@kernel("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: Args) -> list[Any]:
    data = np.asarray(a.raw("data", REQUIRED))
    scale = a.raw("scale", REQUIRED)
    offset = a.raw("offset")
    x = data.astype(np.float32)
    if offset is not None:
        x = x - _expand_blocks(offset, data.shape)
    out = x * _expand_blocks(scale, data.shape)
    return [out.astype(_out_dtype(scale))]


def unpack_indices(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """``count`` ``nbits``-bit indices from a little-endian bit-packed uint8 array."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.int64)
    return (bits << np.arange(nbits, dtype=np.int64)).sum(axis=1)


@kernel("constexpr_lut_to_dense")
def _lut_to_dense(a: Args) -> list[Any]:
    lut = np.asarray(a.raw("lut", REQUIRED))
    indices = np.asarray(a.raw("indices", REQUIRED))
    if a.has("shape"):  # iOS16: one flat table, packed indices
        shape = a.ints("shape")
        nbits = int(np.log2(lut.size))
        if 2**nbits != lut.size or lut.ndim != 1:
            raise UnsupportedOpError(f"op '{a.op_name}': a lookup table of {lut.size} entries is not 2**nbits")
        idx = unpack_indices(indices, nbits, int(np.prod(shape)))
        return [lut[idx].reshape(shape)]
    # iOS18: indices hold one palette entry per element; lut = (*blocks, palette, vector)
    if lut.shape[-1] != 1:
        raise UnsupportedOpError(f"op '{a.op_name}': vector palettisation (vector size {lut.shape[-1]}) is not supported")
    shape = indices.shape
    table = lut[..., 0]  # (*blocks, palette)
    blocks = table.shape[:-1]
    idx = indices.astype(np.int64)
    # the block each element belongs to, per axis
    grids = np.meshgrid(*[np.arange(n) // (n // b) for n, b in zip(shape, blocks)], indexing="ij")
    return [table[(*grids, idx)]]
