"""Neural-network kernels: normalisation, linear / matmul, convolution, pooling, resampling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import MILProgramError, UnsupportedOpError
from staredge.runtimes.mil_reference.kernels.base import REQUIRED, Args, f32, kernel


@kernel("layer_norm")
def _layer_norm(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    axes = a.ints("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(ax % x.ndim for ax in axes)
    eps = np.float32(a.scalar("epsilon", 1e-5))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    # gamma/beta have the shape of the normalised axes: place them on those axes.
    param_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    gamma, beta = a.tensor("gamma"), a.tensor("beta")
    if gamma is not None:
        y = y * f32(gamma).reshape(param_shape)
    if beta is not None:
        y = y + f32(beta).reshape(param_shape)
    return [y]


@kernel("batch_norm")
def _batch_norm(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    shape = [1, -1] + [1] * (x.ndim - 2)
    mean = f32(a.tensor("mean", REQUIRED)).reshape(shape)
    var = f32(a.tensor("variance", REQUIRED)).reshape(shape)
    eps = np.float32(a.scalar("epsilon", 1e-5))
    y = (x - mean) / np.sqrt(var + eps)
    if a.tensor("gamma") is not None:
        y = y * f32(a.tensor("gamma")).reshape(shape)
    if a.tensor("beta") is not None:
        y = y + f32(a.tensor("beta")).reshape(shape)
    return [y]


@kernel("linear")
def _linear(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    w = f32(a.tensor("weight", REQUIRED))
    # one 2-D GEMM: numpy's stacked matmul on a strided (transposed) 4-D input is ~50x slower
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y = (flat @ w.T).reshape(*x.shape[:-1], w.shape[0])
    b = a.tensor("bias")
    if b is not None:
        y = y + f32(b)
    return [y]


@kernel("matmul")
def _matmul(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    y = f32(a.tensor("y", REQUIRED))
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return [np.matmul(x, y)]


def _spatial_pads(a: Args, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis for MIL's pad_type/pad convention."""
    pad_type = str(a.scalar("pad_type", "valid")).lower()
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        pad = a.ints("pad") or [0] * (2 * n)
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise UnsupportedOpError(f"op '{a.op_name}' ({a.op_type}): pad_type {pad_type!r} is not supported")


def _windows(xp: np.ndarray, kernel, strides, dilations, out_sizes):
    """Yield ((i, j), view) for each kernel tap: the strided input view it multiplies."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilations, out_sizes
    for i in range(kh):
        for j in range(kw):
            yield (i, j), xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]


def _as_2d_spatial(x: np.ndarray, op: str, name: str) -> tuple[np.ndarray, bool]:
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:  # 1-D spatial: add a unit height
        return x[:, :, None, :], True
    raise UnsupportedOpError(f"op '{name}' ({op}) on a rank-{x.ndim} input: only 1-D and 2-D spatial ops are supported")


@kernel("conv")
def _conv(a: Args) -> list[Any]:
    x, was_1d = _as_2d_spatial(f32(a.tensor("x", REQUIRED)), a.op_type, a.op_name)
    w = f32(a.tensor("weight", REQUIRED))
    if was_1d:
        w = w[:, :, None, :]
    groups = int(a.scalar("groups", 1))
    nsp = 2
    strides = (a.ints("strides") or [1] * nsp)[-nsp:] if not was_1d else [1] + (a.ints("strides") or [1])
    dilations = (a.ints("dilations") or [1] * nsp)[-nsp:] if not was_1d else [1] + (a.ints("dilations") or [1])
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups:
        raise MILProgramError(
            f"op '{a.op_name}' (conv): {c} input channels do not match weight {w.shape} with groups={groups}"
        )
    if was_1d:
        pads1 = _spatial_pads(a, (wd,), (kw,), strides[1:], dilations[1:])
        pads = [(0, 0)] + pads1
    else:
        pads = _spatial_pads(a, (h, wd), (kh, kw), strides, dilations)
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1])) if any(p != (0, 0) for p in pads) else x
    ho = (xp.shape[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if groups == c and cg == 1 and o == c:
        # depthwise: one multiply-add of a strided view per kernel tap
        out = np.zeros((n, o, ho, wo), dtype=np.float32)
        for (i, j), view in _windows(xp, (kh, kw), strides, dilations, (ho, wo)):
            out += view * w[:, 0, i, j][None, :, None, None]
    else:
        og = o // groups
        out = np.empty((n, o, ho, wo), dtype=np.float32)
        for g in range(groups):
            xg = xp[:, g * cg : (g + 1) * cg]
            wg = w[g * og : (g + 1) * og].reshape(og, cg * kh * kw)
            if kh == kw == 1 and strides == [1, 1]:
                cols = xg.reshape(n, cg, ho * wo)
            else:
                taps = [view for _, view in _windows(xg, (kh, kw), strides, dilations, (ho, wo))]
                cols = np.stack(taps, axis=2).reshape(n, cg * kh * kw, ho * wo)
            out[:, g * og : (g + 1) * og] = np.matmul(wg, cols).reshape(n, og, ho, wo)
    b = a.tensor("bias")
    if b is not None:
        out += f32(b).reshape(1, -1, 1, 1)
    return [out[:, :, 0, :] if was_1d else out]


def _pool(kind: str):
    def run(a: Args) -> list[Any]:
        x, was_1d = _as_2d_spatial(f32(a.tensor("x", REQUIRED)), a.op_type, a.op_name)
        k = a.ints("kernel_sizes", REQUIRED)
        s = a.ints("strides") or [1] * len(k)
        if was_1d:
            k, s = [1] + k, [1] + s
        if a.scalar("ceil_mode", False):
            raise UnsupportedOpError(f"op '{a.op_name}' ({a.op_type}): ceil_mode=True is not supported")
        n, c, h, w = x.shape
        pads = _spatial_pads(a, (h, w), k, s, (1, 1))
        fill = -np.inf if kind == "max" else 0.0
        xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=fill)
        ho = (xp.shape[2] - k[0]) // s[0] + 1
        wo = (xp.shape[3] - k[1]) // s[1] + 1
        views = [v for _, v in _windows(xp, k, s, (1, 1), (ho, wo))]
        if kind == "max":
            out = np.maximum.reduce(views)
        else:
            out = np.add.reduce(views)
            if a.scalar("exclude_padding_from_average", False) and any(p != (0, 0) for p in pads):
                ones = np.pad(np.ones((1, 1, h, w), np.float32), ((0, 0), (0, 0), pads[0], pads[1]))
                count = np.add.reduce([v for _, v in _windows(ones, k, s, (1, 1), (ho, wo))])
                out = out / count
            else:
                out = out / np.float32(k[0] * k[1])
        return [out[:, :, 0, :] if was_1d else out]

    return run


kernel("avg_pool")(_pool("avg"))
kernel("max_pool")(_pool("max"))


def _resample_axis(x: np.ndarray, axis: int, out_size: int, src: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at source coordinates ``src``."""
    size = x.shape[axis]
    src = np.clip(src, 0, size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    frac = (src - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = out_size
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _source_coords(in_size: int, out_size: int, scale: float, align_corners: bool, half_pixel: bool) -> np.ndarray:
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        return dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    if half_pixel:
        return (dst + 0.5) / scale - 0.5
    return dst / scale


@kernel("upsample_bilinear")
def _upsample_bilinear(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    sh = float(a.scalar("scale_factor_height", 1.0))
    sw = float(a.scalar("scale_factor_width", 1.0))
    align = bool(a.scalar("align_corners", False))
    half = a.scalar("half_pixel_centers", None)
    half = (not align) if half is None else bool(half)
    ho, wo = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    y = _resample_axis(x, x.ndim - 2, ho, _source_coords(x.shape[-2], ho, sh, align, half))
    y = _resample_axis(y, y.ndim - 1, wo, _source_coords(x.shape[-1], wo, sw, align, half))
    return [y]


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(a: Args) -> list[Any]:
    x = np.asarray(a.tensor("x", REQUIRED))
    sh = float(a.scalar("scale_factor_height", 1))
    sw = float(a.scalar("scale_factor_width", 1))
    ho, wo = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    rows = np.minimum(np.floor(np.arange(ho) / sh).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(wo) / sw).astype(np.int64), x.shape[-1] - 1)
    return [np.take(np.take(x, rows, axis=-2), cols, axis=-1)]
