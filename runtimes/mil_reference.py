"""A numpy reference executor for the CoreML ML Programs StarEdge exports.

Apple's CoreML runtime exists only on Apple platforms and no public engine executes an
``.mlpackage`` anywhere else, yet users need to know that an exported package computes
the right numbers before it reaches a Mac or an iPhone. :class:`MILExecutor` reads the
package itself and runs its MIL program with numpy:

* ``Manifest.json`` names the root model file (``Data/com.apple.CoreML/model.mlmodel``), a
  ``CoreML.Specification.Model`` protobuf (parsed with the message classes that ship with
  coremltools, loaded without importing the rest of coremltools, which drags in torch);
* weights stored outside the spec (``blobFileValue``) are read from the MIL blob storage
  file (``weights/weight.bin``) by our own reader (:class:`BlobFile`);
* the ``main`` function's operations run in program order, each with numpy.

Precision: each op computes in float32 (fp16 inputs are widened) and its results are
stored in the dtype the program declares for them. An fp16 program therefore rounds every
intermediate tensor to fp16, like a device that stores activations in fp16, while the
arithmetic inside one op accumulates in fp32 (Apple's GPU/ANE kernels may accumulate in
fp16, so expect fp16 programs to differ from a device by about fp16 resolution).

The executor covers the ops our exporters emit for StarNet, DemoNet and EfficientFormerV2
plus their close relatives (:data:`SUPPORTED_OPS`). A program holding any other op is
refused when it is loaded, with :class:`UnsupportedOpError` naming the op(s) and the model;
nothing is approximated silently. It exists for validation, not speed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import struct
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from staredge.errors import MissingDependencyError, StarEdgeError

__all__ = [
    "MILExecutor",
    "MILProgramError",
    "UnsupportedOpError",
    "MILInputError",
    "BlobFile",
    "SUPPORTED_OPS",
    "load_model_spec",
]


class MILProgramError(StarEdgeError):
    """An .mlpackage cannot be read or its MIL program cannot be executed by the reference executor."""


class UnsupportedOpError(MILProgramError):
    """The MIL program holds an op the reference executor does not implement."""


class MILInputError(StarEdgeError, ValueError):
    """An input given to :meth:`MILExecutor.predict` is missing or has the wrong shape or type."""


# --------------------------------------------------------------------------- protobuf


def _proto_modules():
    """(Model_pb2, MIL_pb2) from coremltools' generated protobuf code.

    Importing ``coremltools`` itself takes tens of seconds (it imports torch and its
    converters); the generated ``*_pb2`` modules need none of that, so they are loaded as
    a private package straight from coremltools' ``proto`` folder. If coremltools is
    already imported, its own modules are reused.
    """
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto.Model_pb2"], sys.modules["coremltools.proto.MIL_pb2"]
    private = "_staredge_coremltools_proto"
    if private not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(
                "reading a CoreML .mlpackage needs the Python package 'coremltools', which is not "
                "installed. Install it with: pip install -c constraints.txt 'staredge[coreml]'"
            )
        proto_dir = Path(list(spec.submodule_search_locations)[0]) / "proto"
        pkg_spec = importlib.util.spec_from_file_location(
            private, proto_dir / "__init__.py", submodule_search_locations=[str(proto_dir)]
        )
        package = importlib.util.module_from_spec(pkg_spec)
        sys.modules[private] = package
        try:
            pkg_spec.loader.exec_module(package)
        except Exception:
            del sys.modules[private]
            raise
    return importlib.import_module(private + ".Model_pb2"), importlib.import_module(private + ".MIL_pb2")


def model_spec_path(package: str | Path) -> Path:
    """The root model spec file inside an ``.mlpackage`` (as named by its ``Manifest.json``)."""
    pkg = Path(package)
    manifest_path = pkg / "Manifest.json"
    if not manifest_path.is_file():
        raise MILProgramError(f"{pkg} is not an .mlpackage: it has no Manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        spec_path = pkg / "Data" / root["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MILProgramError(f"{manifest_path} is damaged ({exc}); re-export the model") from exc
    if not spec_path.is_file():
        raise MILProgramError(f"{pkg}: the model spec {spec_path} named by Manifest.json is missing; re-export it")
    return spec_path


def load_model_spec(package: str | Path):
    """The ``CoreML.Specification.Model`` protobuf of an ``.mlpackage``."""
    model_pb2, _ = _proto_modules()
    spec_path = model_spec_path(package)
    spec = model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise MILProgramError(f"{spec_path} is not a readable CoreML model spec ({exc}); re-export it") from exc
    return spec


# --------------------------------------------------------------------------- weights


#: MIL blob storage data types (``BlobDataType`` in the storage format) → numpy dtypes.
_BLOB_DTYPES: dict[int, Any] = {
    1: np.float16,
    2: np.float32,
    3: np.uint8,
    4: np.int8,
    5: "bfloat16",
    6: np.int16,
    7: np.uint16,
    14: np.int32,
    15: np.uint32,
}
_BLOB_SENTINEL = 0xDEADBEEF


class BlobFile:
    """Reader of a MIL blob storage file (``weights/weight.bin``).

    Layout (little-endian): a 64-byte file header (``uint32`` blob count, ``uint32``
    format version, padding), then per blob a 64-byte metadata record (``uint32`` sentinel
    0xDEADBEEF, ``uint32`` data type, ``uint64`` size in bytes, ``uint64`` absolute offset
    of the data, reserved bytes) followed by the data, each aligned to 64 bytes. A const's
    ``blobFileValue.offset`` points at its metadata record; its shape comes from the
    const's declared type.
    """

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        self.path = Path(path)
        #: BLAS threads while predicting (None: numpy's default). One thread is the default
        #: because the executor's GEMMs are small: on a busy machine multi-threaded OpenBLAS
        #: spends most of its time waiting (measured 30x slower on a loaded 2-core box).
        self.threads = threads
        try:
            self._data = self.path.read_bytes()
        except OSError as exc:
            raise MILProgramError(f"cannot read the weight file {self.path} ({exc}); re-export the model") from exc
        if len(self._data) < 64:
            raise MILProgramError(f"{self.path} is too short to be a MIL weight file")
        self.count, self.version = struct.unpack_from("<II", self._data, 0)
        if self.version != 2:
            raise MILProgramError(f"{self.path}: MIL blob storage version {self.version} is not supported (expected 2)")

    def read(self, offset: int, shape: tuple[int, ...], expected: Any | None = None) -> np.ndarray:
        """The array whose metadata record starts at ``offset``, reshaped to ``shape``."""
        if offset < 64 or offset + 64 > len(self._data):
            raise MILProgramError(f"{self.path}: blob offset {offset} is outside the file")
        sentinel, dtype_code, size, data_offset = struct.unpack_from("<IIQQ", self._data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise MILProgramError(f"{self.path}: no blob record at offset {offset} (bad sentinel); the file is damaged")
        dtype = _BLOB_DTYPES.get(dtype_code)
        if dtype is None:
            raise UnsupportedOpError(
                f"{self.path}: blob data type code {dtype_code} (sub-byte or 8-bit float palettes/quantised "
                f"weights) is not supported by the reference executor"
            )
        if data_offset + size > len(self._data):
            raise MILProgramError(f"{self.path}: blob at {offset} runs past the end of the file; the file is truncated")
        raw = self._data[data_offset : data_offset + size]
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dtype)
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise MILProgramError(
                f"{self.path}: blob at {offset} holds {arr.size} values but its const declares shape {shape}"
            )
        if expected is not None and arr.dtype != np.dtype(expected):
            arr = arr.astype(expected)
        return arr.reshape(shape).copy()


# --------------------------------------------------------------------------- values

#: MIL DataType enum names → numpy dtypes (strings are kept as Python objects).
_MIL_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "STRING": object,
    "FLOAT16": np.float16,
    "FLOAT32": np.float32,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
#: ``cast`` dtype strings → numpy dtypes.
_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


def _tensor_shape(tensor_type) -> tuple[int, ...] | None:
    """Static shape of a MIL tensor type; None when a dimension is not a constant."""
    dims = []
    for d in tensor_type.dimensions:
        if d.WhichOneof("dimension") != "constant":
            return None
        dims.append(int(d.constant.size))
    return tuple(dims)


@dataclass
class FeatureInfo:
    """One model input as the model description declares it.

    ``kind`` is "image" (``color_space`` "RGB", "BGR" or "GRAYSCALE"; ``shape`` is the
    program's (1, C, H, W) tensor) or "tensor" (``shape`` and ``dtype`` of the array).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: Any = np.float32
    color_space: str | None = None


# --------------------------------------------------------------------------- op kernels


class _Args:
    """The resolved inputs of one op, with defaults and float widening."""

    def __init__(self, op_type: str, op_name: str, values: dict[str, list[Any]]) -> None:
        self.op_type = op_type
        self.op_name = op_name
        self._values = values

    def has(self, key: str) -> bool:
        return key in self._values

    def raw(self, key: str, default: Any = None) -> Any:
        vals = self._values.get(key)
        if vals is None:
            if default is _REQUIRED:
                raise MILProgramError(f"op '{self.op_name}' ({self.op_type}) lacks its required input '{key}'")
            return default
        return vals[0]

    def tensor(self, key: str, default: Any = None) -> Any:
        """A numeric input as an array; fp16 is widened to fp32 (ops compute in fp32)."""
        v = self.raw(key, default)
        if isinstance(v, np.ndarray) and v.dtype == np.float16:
            return v.astype(np.float32)
        return v

    def ints(self, key: str, default: Any = None) -> list[int] | None:
        v = self.raw(key, default)
        return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]

    def scalar(self, key: str, default: Any = None) -> Any:
        v = self.raw(key, default)
        if isinstance(v, np.ndarray):
            v = v.reshape(-1)[0] if v.size == 1 else v
            return v.item() if isinstance(v, np.generic) else v
        return v

    def many(self, key: str) -> list[Any]:
        """Every argument bound to a variadic input (``concat``'s ``values``), fp16 widened."""
        out = []
        for v in self._values.get(key, []):
            out.append(v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float16 else v)
        return out


_REQUIRED = object()
_KERNELS: dict[str, Callable[[_Args], list[Any]]] = {}


def _kernel(*names: str):
    def register(fn):
        for n in names:
            _KERNELS[n] = fn
        return fn

    return register


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


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
    def run(a: _Args) -> list[Any]:
        return [fn(np.asarray(a.tensor("x", _REQUIRED)), np.asarray(a.tensor("y", _REQUIRED)))]

    return run


for _name, _fn in _BINARY.items():
    _KERNELS[_name] = _binary_kernel(_fn)


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
    def run(a: _Args) -> list[Any]:
        return [fn(_f32(a.tensor("x", _REQUIRED)), a)]

    return run


_UNARY: dict[str, Callable[[np.ndarray, _Args], np.ndarray]] = {
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
    "clip": lambda x, a: np.clip(x, np.float32(a.scalar("alpha", _REQUIRED)), np.float32(a.scalar("beta", _REQUIRED))),
}
for _name, _fn in _UNARY.items():
    _KERNELS[_name] = _unary(_fn)


@_kernel("identity")
def _identity(a: _Args) -> list[Any]:
    return [a.raw("x", _REQUIRED)]


@_kernel("gelu")
def _gelu(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    mode = a.scalar("mode", "EXACT")
    if mode == "EXACT":
        return [(0.5 * x.astype(np.float64) * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)]
    if mode == "TANH_APPROXIMATION":
        c = math.sqrt(2.0 / math.pi)
        return [0.5 * x * (1.0 + np.tanh(np.float32(c) * (x + np.float32(0.044715) * x**3)))]
    if mode == "SIGMOID_APPROXIMATION":
        return [x / (1.0 + np.exp(np.float32(-1.702) * x))]
    raise UnsupportedOpError(f"op '{a.op_name}': gelu mode {mode!r} is not supported by the reference executor")


@_kernel("softmax")
def _softmax(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    axis = int(a.scalar("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


def _reduce(fn):
    def run(a: _Args) -> list[Any]:
        x = np.asarray(a.tensor("x", _REQUIRED))
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
    _KERNELS[_name] = _reduce(_fn)


@_kernel("layer_norm")
def _layer_norm(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
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
        y = y * _f32(gamma).reshape(param_shape)
    if beta is not None:
        y = y + _f32(beta).reshape(param_shape)
    return [y]


@_kernel("batch_norm")
def _batch_norm(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    shape = [1, -1] + [1] * (x.ndim - 2)
    mean = _f32(a.tensor("mean", _REQUIRED)).reshape(shape)
    var = _f32(a.tensor("variance", _REQUIRED)).reshape(shape)
    eps = np.float32(a.scalar("epsilon", 1e-5))
    y = (x - mean) / np.sqrt(var + eps)
    if a.tensor("gamma") is not None:
        y = y * _f32(a.tensor("gamma")).reshape(shape)
    if a.tensor("beta") is not None:
        y = y + _f32(a.tensor("beta")).reshape(shape)
    return [y]


@_kernel("linear")
def _linear(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    w = _f32(a.tensor("weight", _REQUIRED))
    # one 2-D GEMM: numpy's stacked matmul on a strided (transposed) 4-D input is ~50x slower
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y = (flat @ w.T).reshape(*x.shape[:-1], w.shape[0])
    b = a.tensor("bias")
    if b is not None:
        y = y + _f32(b)
    return [y]


@_kernel("matmul")
def _matmul(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    y = _f32(a.tensor("y", _REQUIRED))
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return [np.matmul(x, y)]


def _spatial_pads(a: _Args, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
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


@_kernel("conv")
def _conv(a: _Args) -> list[Any]:
    x, was_1d = _as_2d_spatial(_f32(a.tensor("x", _REQUIRED)), a.op_type, a.op_name)
    w = _f32(a.tensor("weight", _REQUIRED))
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
        out += _f32(b).reshape(1, -1, 1, 1)
    return [out[:, :, 0, :] if was_1d else out]


def _pool(kind: str):
    def run(a: _Args) -> list[Any]:
        x, was_1d = _as_2d_spatial(_f32(a.tensor("x", _REQUIRED)), a.op_type, a.op_name)
        k = a.ints("kernel_sizes", _REQUIRED)
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


_KERNELS["avg_pool"] = _pool("avg")
_KERNELS["max_pool"] = _pool("max")


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


@_kernel("upsample_bilinear")
def _upsample_bilinear(a: _Args) -> list[Any]:
    x = _f32(a.tensor("x", _REQUIRED))
    sh = float(a.scalar("scale_factor_height", 1.0))
    sw = float(a.scalar("scale_factor_width", 1.0))
    align = bool(a.scalar("align_corners", False))
    half = a.scalar("half_pixel_centers", None)
    half = (not align) if half is None else bool(half)
    ho, wo = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    y = _resample_axis(x, x.ndim - 2, ho, _source_coords(x.shape[-2], ho, sh, align, half))
    y = _resample_axis(y, y.ndim - 1, wo, _source_coords(x.shape[-1], wo, sw, align, half))
    return [y]


@_kernel("upsample_nearest_neighbor")
def _upsample_nearest(a: _Args) -> list[Any]:
    x = np.asarray(a.tensor("x", _REQUIRED))
    sh = float(a.scalar("scale_factor_height", 1))
    sw = float(a.scalar("scale_factor_width", 1))
    ho, wo = int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw))
    rows = np.minimum(np.floor(np.arange(ho) / sh).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(wo) / sw).astype(np.int64), x.shape[-1] - 1)
    return [np.take(np.take(x, rows, axis=-2), cols, axis=-1)]


@_kernel("reshape")
def _reshape(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    shape = a.ints("shape", _REQUIRED)
    # a 0 keeps the input's size on that axis (MIL reshape semantics)
    shape = [x.shape[i] if s == 0 and i < x.ndim else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@_kernel("transpose")
def _transpose(a: _Args) -> list[Any]:
    return [np.transpose(np.asarray(a.raw("x", _REQUIRED)), a.ints("perm", _REQUIRED))]


@_kernel("concat")
def _concat(a: _Args) -> list[Any]:
    values = [np.asarray(v) for v in a._values.get("values", [])]
    if a.scalar("interleave", False):
        raise UnsupportedOpError(f"op '{a.op_name}' (concat): interleave=True is not supported")
    axis = int(a.scalar("axis", _REQUIRED))
    dtype = np.result_type(*values)
    return [np.concatenate([v.astype(dtype) for v in values], axis=axis)]


@_kernel("split")
def _split(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    axis = int(a.scalar("axis", _REQUIRED))
    sizes = a.ints("split_sizes")
    if sizes is None:
        parts = int(a.scalar("num_splits", _REQUIRED))
        return list(np.array_split(x, parts, axis=axis))
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@_kernel("slice_by_index")
def _slice_by_index(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    rank = x.ndim
    begin = a.ints("begin", _REQUIRED)
    end = a.ints("end", _REQUIRED)
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


@_kernel("slice_by_size")
def _slice_by_size(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    begin = a.ints("begin", _REQUIRED)
    size = a.ints("size", _REQUIRED)
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))
    return [x[index]]


@_kernel("squeeze")
def _squeeze(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    axes = a.ints("axes")
    return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))]


@_kernel("expand_dims")
def _expand_dims(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    axes = a.ints("axes", _REQUIRED)
    out_rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(ax % out_rank for ax in axes))]


@_kernel("flatten2d")
def _flatten2d(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    axis = int(a.scalar("axis", 1)) % max(x.ndim, 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@_kernel("tile")
def _tile(a: _Args) -> list[Any]:
    return [np.tile(np.asarray(a.raw("x", _REQUIRED)), a.ints("reps", _REQUIRED))]


@_kernel("gather")
def _gather(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    idx = np.asarray(a.raw("indices", _REQUIRED)).astype(np.int64)
    axis = int(a.scalar("axis", 0))
    if int(a.scalar("batch_dims", 0)) != 0:
        raise UnsupportedOpError(f"op '{a.op_name}' (gather): batch_dims != 0 is not supported")
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take(x, idx, axis=axis)]


@_kernel("pad")
def _pad(a: _Args) -> list[Any]:
    x = np.asarray(a.tensor("x", _REQUIRED))
    pad = a.ints("pad", _REQUIRED)
    mode = str(a.scalar("mode", "constant"))
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return [np.pad(x, widths, constant_values=a.scalar("constant_val", 0.0))]
    if mode in ("reflect", "replicate"):
        return [np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")]
    raise UnsupportedOpError(f"op '{a.op_name}' (pad): mode {mode!r} is not supported")


@_kernel("cast")
def _cast(a: _Args) -> list[Any]:
    x = np.asarray(a.raw("x", _REQUIRED))
    dtype = str(a.scalar("dtype", _REQUIRED))
    if dtype not in _CAST_DTYPES:
        raise UnsupportedOpError(f"op '{a.op_name}' (cast): target dtype {dtype!r} is not supported")
    target = _CAST_DTYPES[dtype]
    if np.issubdtype(target, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)  # MIL casts float → int by truncation toward zero
    return [x.astype(target)]


@_kernel("shape")
def _shape(a: _Args) -> list[Any]:
    return [np.asarray(np.asarray(a.raw("x", _REQUIRED)).shape, dtype=np.int32)]


@_kernel("classify")
def _classify(a: _Args) -> list[Any]:
    probs = np.asarray(a.tensor("probabilities", _REQUIRED), dtype=np.float32).reshape(-1)
    classes = a.raw("classes", _REQUIRED)
    classes = list(classes) if not isinstance(classes, np.ndarray) else classes.reshape(-1).tolist()
    if len(classes) != probs.size:
        raise MILProgramError(f"op '{a.op_name}' (classify): {len(classes)} classes for {probs.size} probabilities")
    label = classes[int(np.argmax(probs))]
    return [np.asarray(label), probs]


#: Op types the reference executor implements (``const`` is evaluated at load time).
SUPPORTED_OPS = frozenset(_KERNELS) | {"const"}


# --------------------------------------------------------------------------- executor


def _blas_threads(threads: int | None):
    """A context limiting BLAS threads (threadpoolctl, when installed), else a no-op."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


class MILExecutor:
    """Runs an ``.mlpackage``'s ML Program with numpy (validation, not speed).

    ``MILExecutor(path).predict({name: value})`` returns every output of the program by
    name. Image inputs accept a PIL image, an ``(H, W, C)`` / ``(H, W)`` uint8 array, or a
    float array ``(1, C, H, W)`` / ``(C, H, W)`` of pixel values in [0, 255] (the tensor the
    image becomes inside CoreML, channels in the declared colour order). The image's size
    must match the declared one (CoreML does not resize either). Multi-array inputs take
    an array of the declared shape.

    Classifier programs return the predicted label under the predicted-feature name (a
    0-d string array) and the probabilities, in :attr:`class_labels` order, as a float
    array under the probabilities name (Apple's runtime returns a label → probability
    dict there). Other outputs (e.g. ``logits``) are arrays in the program's declared dtype.

    Loading refuses a program that holds any op outside :data:`SUPPORTED_OPS` with
    :class:`UnsupportedOpError`. ``threads`` caps BLAS threads while predicting (default 1;
    None leaves numpy's setting).
    """

    def __init__(self, path: str | Path, threads: int | None = 1) -> None:
        self.path = Path(path)
        #: BLAS threads while predicting (None: numpy's default). One thread is the default
        #: because the executor's GEMMs are small: on a busy machine multi-threaded OpenBLAS
        #: spends most of its time waiting (measured 30x slower on a loaded 2-core box).
        self.threads = threads
        _, mil_pb2 = _proto_modules()
        self._mil_pb2 = mil_pb2
        self.spec = load_model_spec(self.path)
        kind = self.spec.WhichOneof("Type")
        self.user_metadata: dict[str, str] = dict(self.spec.description.metadata.userDefined)
        self.model_name = self._model_name()
        if kind != "mlProgram":
            raise MILProgramError(
                f"{self.path} ({self.model_name}) is a CoreML '{kind}' model; the reference executor runs "
                f"ML Programs (convert_to='mlprogram') only"
            )
        program = self.spec.mlProgram
        if "main" not in program.functions:
            raise MILProgramError(f"{self.path} ({self.model_name}): the ML Program has no 'main' function")
        func = program.functions["main"]
        self.opset = func.opset
        if func.opset not in func.block_specializations:
            raise MILProgramError(f"{self.path}: main has no block for its opset {func.opset!r}")
        block = func.block_specializations[func.opset]
        self._ops = list(block.operations)
        self.output_names: list[str] = list(block.outputs)
        self.op_counts: Counter = Counter(op.type for op in self._ops)
        self._check_supported()
        self._spec_dir = model_spec_path(self.path).parent
        self._blobs: dict[str, BlobFile] = {}
        self._program_inputs = {nv.name: nv.type for nv in func.inputs}
        self.inputs: dict[str, FeatureInfo] = self._describe_inputs()
        self.class_labels: list[Any] | None = None
        self._consts: dict[str, Any] = {}
        for op in self._ops:
            if op.type == "const":
                self._consts[op.outputs[0].name] = self._const_value(op)
            elif op.type == "classify":
                classes = op.inputs["classes"].arguments[0]
                if classes.WhichOneof("binding") == "name":
                    value = self._consts.get(classes.name)
                else:
                    value = self._value(classes.value)
                self.class_labels = list(np.asarray(value, dtype=object).reshape(-1)) if value is not None else None
        self._plan = [(op, self._bindings(op)) for op in self._ops if op.type != "const"]
        self.predicted_feature_name = self.spec.description.predictedFeatureName or None
        self.probabilities_name = self.spec.description.predictedProbabilitiesName or None

    # ------------------------------------------------------------------ loading

    def _model_name(self) -> str:
        text = self.user_metadata.get("staredge")
        if text:
            try:
                return str(json.loads(text).get("model", self.path.name))
            except (ValueError, AttributeError):
                pass
        return self.path.name

    def _check_supported(self) -> None:
        nested = [op for op in self._ops if len(op.blocks)]
        missing = sorted({op.type for op in self._ops} - SUPPORTED_OPS)
        if nested:
            missing = sorted(set(missing) | {op.type for op in nested})
        if missing:
            detail = ", ".join(f"{t} (x{self.op_counts[t]})" for t in missing)
            raise UnsupportedOpError(
                f"the MIL reference executor cannot run {self.path.name} (model '{self.model_name}'): it holds "
                f"op(s) it does not implement: {detail}. Supported ops: {', '.join(sorted(SUPPORTED_OPS))}. "
                f"Validate this package on macOS with Apple's runtime, or export a model whose ops are covered."
            )

    def _describe_inputs(self) -> dict[str, FeatureInfo]:
        from_description = {f.name: f for f in self.spec.description.input}
        infos = {}
        for name, vtype in self._program_inputs.items():
            if vtype.WhichOneof("type") != "tensorType":
                raise MILProgramError(f"{self.path}: program input '{name}' is not a tensor")
            shape = _tensor_shape(vtype.tensorType)
            if shape is None:
                raise UnsupportedOpError(
                    f"{self.path} ({self.model_name}): input '{name}' has a flexible shape; the reference "
                    f"executor runs fixed-shape programs only"
                )
            dtype = self._np_dtype(vtype.tensorType.dataType, name)
            feat = from_description.get(name)
            if feat is not None and feat.type.WhichOneof("Type") == "imageType":
                space = type(feat.type.imageType).ColorSpace.Name(feat.type.imageType.colorSpace)
                if space not in ("RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16"):
                    raise MILProgramError(f"{self.path}: image input '{name}' has colour space {space}")
                infos[name] = FeatureInfo(name, "image", shape, dtype, space)
            else:
                infos[name] = FeatureInfo(name, "tensor", shape, dtype)
        return infos

    def _np_dtype(self, code: int, what: str) -> Any:
        name = self._mil_pb2.DataType.Name(code)
        if name not in _MIL_DTYPES:
            raise UnsupportedOpError(
                f"{self.path}: '{what}' has data type {name}, which the reference executor does not support"
            )
        return _MIL_DTYPES[name]

    def _blob(self, file_name: str) -> BlobFile:
        if file_name not in self._blobs:
            rel = file_name.replace("@model_path/", "", 1) if file_name.startswith("@model_path/") else file_name
            self._blobs[file_name] = BlobFile(self._spec_dir / rel)
        return self._blobs[file_name]

    def _const_value(self, op) -> Any:
        if "val" not in op.attributes:
            raise MILProgramError(f"{self.path}: const '{op.outputs[0].name}' has no value")
        return self._value(op.attributes["val"])

    def _value(self, value) -> Any:
        """A MIL ``Value`` (immediate or stored in a blob file) as numpy / Python data."""
        which = value.WhichOneof("value")
        vtype = value.type
        if which == "blobFileValue":
            tt = vtype.tensorType
            shape = _tensor_shape(tt)
            if shape is None:
                raise MILProgramError(f"{self.path}: a weight blob has no static shape")
            dtype = self._np_dtype(tt.dataType, "weight blob")
            return self._blob(value.blobFileValue.fileName).read(int(value.blobFileValue.offset), shape, dtype)
        if which != "immediateValue":
            raise MILProgramError(f"{self.path}: a value of kind {which!r} cannot be read")
        imm = value.immediateValue
        kind = imm.WhichOneof("value")
        if kind == "list":
            return [self._value(v) for v in imm.list.values]
        if kind == "tuple":
            return tuple(self._value(v) for v in imm.tuple.values)
        if kind != "tensor" or vtype.WhichOneof("type") != "tensorType":
            raise MILProgramError(f"{self.path}: immediate values of kind {kind!r} are not supported")
        tt = vtype.tensorType
        shape = _tensor_shape(tt)
        dtype = self._np_dtype(tt.dataType, "constant")
        tensor = imm.tensor
        field = tensor.WhichOneof("value")
        if field is None:
            data: Any = np.zeros(0, dtype=dtype if dtype is not object else np.float32)
        elif field == "bytes":
            data = np.frombuffer(tensor.bytes.values, dtype=dtype)
        elif field == "strings":
            data = np.asarray(list(tensor.strings.values), dtype=object)
        else:
            data = np.asarray(list(getattr(tensor, field).values))
            data = data.astype(dtype) if dtype is not object else data
        if shape is not None:
            count = int(np.prod(shape)) if shape else 1
            if data.size == count:
                data = data.reshape(shape)
            elif data.size == 1:  # a splat constant stores one value for the whole shape
                data = np.full(shape, data.reshape(-1)[0], dtype=data.dtype)
        if shape == () and dtype is object:
            return str(data.reshape(-1)[0])
        return data.copy() if isinstance(data, np.ndarray) else data

    # ------------------------------------------------------------------ running

    def _input_array(self, info: FeatureInfo, value: Any) -> np.ndarray:
        if info.kind == "image":
            return self._image_array(info, value)
        arr = np.asarray(value)
        if arr.shape != info.shape:
            if arr.size == int(np.prod(info.shape)) and arr.ndim == len(info.shape) - 1:
                arr = arr.reshape(info.shape)
            else:
                raise MILInputError(f"input '{info.name}' must have shape {info.shape}, got {arr.shape}")
        return arr.astype(info.dtype)

    def _image_array(self, info: FeatureInfo, value: Any) -> np.ndarray:
        _, c, h, w = info.shape
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a core dependency
            Image = None
        gray = info.color_space in ("GRAYSCALE", "GRAYSCALE_FLOAT16")
        if Image is not None and isinstance(value, Image.Image):
            value = np.asarray(value.convert("L" if gray else "RGB"))
        arr = np.asarray(value)
        if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[0] == c and arr.shape[-1] not in (1, 3, 4)):
            # already the program's (1, C, H, W) pixel tensor (values in [0, 255])
            chw = arr.reshape(arr.shape[-3:]) if arr.ndim == 4 and arr.shape[0] == 1 else arr
            if chw.ndim != 3:
                raise MILInputError(f"image input '{info.name}' takes one image (batch 1), got shape {arr.shape}")
            planar = chw.astype(np.float32)
        else:
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.ndim != 3:
                raise MILInputError(
                    f"image input '{info.name}' takes a PIL image or an (H, W, C) uint8 array, got shape {arr.shape}"
                )
            if arr.shape[2] == 4:  # drop alpha, as CoreML does for RGBA pixel buffers
                arr = arr[:, :, :3]
            if gray and arr.shape[2] == 3:
                arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("L"))[:, :, None]
            if not gray and arr.shape[2] == 1:
                arr = np.repeat(arr, 3, axis=2)
            if info.color_space == "BGR":
                arr = arr[:, :, ::-1]
            planar = arr.transpose(2, 0, 1).astype(np.float32)
        if planar.shape != (c, h, w):
            raise MILInputError(
                f"image input '{info.name}' must be {w}x{h} pixels with {c} channel(s), got {planar.shape[2]}x"
                f"{planar.shape[1]} with {planar.shape[0]}; resize and centre-crop first (Predictor.classify does)"
            )
        return planar[None].astype(info.dtype)

    def predict(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run the program on ``inputs`` (name → image or array); every program output by name."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise MILInputError(
                f"missing input(s) {sorted(missing)} for {self.path.name}; it takes {sorted(self.inputs)}"
            )
        extra = set(inputs) - set(self.inputs)
        if extra:
            raise MILInputError(f"unknown input(s) {sorted(extra)} for {self.path.name}; it takes {sorted(self.inputs)}")
        env: dict[str, Any] = {name: self._input_array(info, inputs[name]) for name, info in self.inputs.items()}
        env.update(self._consts)
        with _blas_threads(self.threads):
            for op, bindings in self._plan:
                self._run_op(op, bindings, env)
        out = {}
        for name in self.output_names:
            value = env[name]
            out[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        return out

    def _bindings(self, op) -> dict[str, list[tuple[bool, Any]]]:
        """Per input: (is a variable name, name or decoded immediate value), decoded once at load."""
        out = {}
        for key, arg in op.inputs.items():
            out[key] = [
                (True, b.name) if b.WhichOneof("binding") == "name" else (False, self._value(b.value))
                for b in arg.arguments
            ]
        return out

    def _run_op(self, op, bindings: dict[str, list[tuple[bool, Any]]], env: dict[str, Any]) -> None:
        op_name = op.outputs[0].name if op.outputs else op.type
        values: dict[str, list[Any]] = {}
        for key, bound_args in bindings.items():
            bound = []
            for is_name, item in bound_args:
                if is_name:
                    if item not in env:
                        raise MILProgramError(f"{self.path}: op '{op_name}' ({op.type}) reads '{item}' before it is defined")
                    bound.append(env[item])
                else:
                    bound.append(item)
            values[key] = bound
        try:
            results = _KERNELS[op.type](_Args(op.type, op_name, values))
        except StarEdgeError:
            raise
        except Exception as exc:
            raise MILProgramError(
                f"{self.path.name} (model '{self.model_name}'): op '{op_name}' ({op.type}) failed in the "
                f"reference executor: {type(exc).__name__}: {exc}"
            ) from exc
        if len(results) != len(op.outputs):
            raise MILProgramError(
                f"op '{op_name}' ({op.type}) produced {len(results)} outputs, the program declares {len(op.outputs)}"
            )
        for spec_out, result in zip(op.outputs, results):
            env[spec_out.name] = self._store(spec_out, result)

    def _store(self, spec_out, result: Any) -> Any:
        """Cast a result to the dtype the program declares for it (fp16 programs round here)."""
        if spec_out.type.WhichOneof("type") != "tensorType":
            return result
        code = spec_out.type.tensorType.dataType
        name = self._mil_pb2.DataType.Name(code)
        dtype = _MIL_DTYPES.get(name)
        if dtype is None or dtype is object:
            return result
        return np.asarray(result).astype(dtype, copy=False)

    def describe(self) -> dict[str, Any]:
        """What the program is: model name, opset, inputs, outputs and op counts."""
        return {
            "path": str(self.path),
            "model": self.model_name,
            "opset": self.opset,
            "inputs": {
                n: {"kind": i.kind, "shape": list(i.shape), "color_space": i.color_space} for n, i in self.inputs.items()
            },
            "outputs": list(self.output_names),
            "ops": dict(self.op_counts),
        }
