"""MIL data types and tensor types as numpy sees them, and the model's declared inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: MIL DataType enum names → numpy dtypes (strings are kept as Python objects).
MIL_DTYPES: dict[str, Any] = {
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
CAST_DTYPES = {
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


def tensor_shape(tensor_type) -> tuple[int, ...] | None:
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
