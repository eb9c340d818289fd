"""Element-wise kernels (binary, unary, activations, softmax) and reductions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import UnsupportedOpError
from staredge.runtimes.mil_reference.kernels.base import REQUIRED, Args, f32, kernel

# elementwise binary ops (numpy broadcasting matches MIL's)
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "floor_div": np.floor_divide,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}


def _binary_kernel(fn):
    def run(a: Args) -> list[Any]:
        return [fn(np.asarray(a.tensor("x", REQUIRED)), np.asarray(a.tensor("y", REQUIRED)))]

    return run


for _name, _fn in _BINARY.items():
    kernel(_name)(_binary_kernel(_fn))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64: scipy's when scipy is installed (the dev extra brings it), else :func:`_erf_numpy`."""
    try:
        from scipy.special import erf
    except ImportError:
        return _erf_numpy(x)
    return erf(np.asarray(x, dtype=np.float64))


def _erf_numpy(x: np.ndarray) -> np.ndarray:
    """erf in float64 with numpy alone (numpy has no erf; math.erf is exact but scalar).

    For |x| < 3 the Maclaurin series (60 terms: error < 1e-13 there); beyond, 1 - erfc with
    erfc from its continued fraction (60 levels: error < 1e-13 for |x| >= 3).
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < 3.0
    xs = x[small]
    term = xs.copy()
    total = xs.copy()
    x2 = xs * xs
    for n in range(1, 60):
        term = term * (-x2) / n
        total = total + term / (2 * n + 1)
    out[small] = total * (2.0 / math.sqrt(math.pi))
    xl = x[~small]
    ax = np.abs(xl)
    # continued fraction for erfc(ax) = exp(-ax^2)/sqrt(pi) * 1/(ax + 1/2/(ax + 1/(ax + 3/2/(ax + ...))))
    frac = np.zeros_like(ax)
    for k in range(60, 0, -1):
        frac = (k / 2.0) / (ax + frac)
    erfc = np.exp(-ax * ax) / math.sqrt(math.pi) / (ax + frac)
    out[~small] = np.sign(xl) * (1.0 - erfc)
    return out


def _unary(fn):
    def run(a: Args) -> list[Any]:
        return [fn(f32(a.tensor("x", REQUIRED)), a)]

    return run


_UNARY: dict[str, Callable[[np.ndarray, Args], np.ndarray]] = {
    "relu": lambda x, a: np.maximum(x, 0),
    "relu6": lambda x, a: np.clip(x, 0, 6),
    "sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda x, a: np.tanh(x),
    "silu": lambda x, a: x / (1.0 + np.exp(-x)),
    "exp": lambda x, a: np.exp(x),
    "sqrt": lambda x, a: np.sqrt(x),
    "rsqrt": lambda x, a: 1.0 / np.sqrt(x + np.float32(a.scalar("epsilon", 1e-12))),
    "square": lambda x, a: x * x,
    "abs": lambda x, a: np.abs(x),
    "erf": lambda x, a: _erf(x).astype(np.float32),
    "log": lambda x, a: np.log(x + np.float32(a.scalar("epsilon", 1e-45))),
    "inverse": lambda x, a: 1.0 / (x + np.float32(a.scalar("epsilon", 1e-4))),
    "floor": lambda x, a: np.floor(x),
    "ceil": lambda x, a: np.ceil(x),
    "round": lambda x, a: np.round(x),
    "sign": lambda x, a: np.sign(x),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, np.float32(a.scalar("alpha", 0.01)) * x),
    "softplus": lambda x, a: np.logaddexp(0, x),
    "elu": lambda x, a: np.where(x > 0, x, np.float32(a.scalar("alpha", 1.0)) * np.expm1(x)),
    "sigmoid_hard": lambda x, a: np.clip(np.float32(a.scalar("alpha", 0.2)) * x + np.float32(a.scalar("beta", 0.5)), 0, 1),
    "clip": lambda x, a: np.clip(x, np.float32(a.scalar("alpha", REQUIRED)), np.float32(a.scalar("beta", REQUIRED))),
}
for _name, _fn in _UNARY.items():
    kernel(_name)(_unary(_fn))


@kernel("identity")
def _identity(a: Args) -> list[Any]:
    return [a.raw("x", REQUIRED)]


@kernel("gelu")
def _gelu(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    mode = a.scalar("mode", "EXACT")
    if mode == "EXACT":
        return [(0.5 * x.astype(np.float64) * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)]
    if mode == "TANH_APPROXIMATION":
        c = math.sqrt(2.0 / math.pi)
        return [0.5 * x * (1.0 + np.tanh(np.float32(c) * (x + np.float32(0.044715) * x**3)))]
    if mode == "SIGMOID_APPROXIMATION":
        return [x / (1.0 + np.exp(np.float32(-1.702) * x))]
    raise UnsupportedOpError(f"op '{a.op_name}': gelu mode {mode!r} is not supported by the reference executor")


@kernel("softmax")
def _softmax(a: Args) -> list[Any]:
    x = f32(a.tensor("x", REQUIRED))
    axis = int(a.scalar("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


def _reduce(fn):
    def run(a: Args) -> list[Any]:
        x = np.asarray(a.tensor("x", REQUIRED))
        axes = a.ints("axes")
        keep = bool(a.scalar("keep_dims", False))
        axis = None if axes is None else tuple(axes)
        return [fn(x, axis=axis, keepdims=keep)]

    return run


for _name, _fn in {
    "reduce_mean": np.mean,
    "reduce_sum": np.sum,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
}.items():
    kernel(_name)(_reduce(_fn))
