"""The kernel registry: every MIL op the reference executor runs is one function
registered with :func:`kernel` (``@kernel("op_type")``), taking the op's resolved inputs
(:class:`Args`) and returning its outputs as a list, in the order the op declares them.

To add ops, write them in a module of this package with ``@kernel`` and list that module in
``staredge/runtimes/mil_reference/kernels/__init__.py`` (``KERNEL_MODULES``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.errors import MILProgramError

#: Marks a required input: ``a.tensor("x", REQUIRED)`` raises if the op lacks ``x``.
REQUIRED = object()

class Args:
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
            if default is REQUIRED:
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


#: op type → kernel.
KERNELS: dict[str, Callable[[Args], list[Any]]] = {}


def kernel(*names: str):
    """Register the decorated function as the kernel of the MIL op type(s) ``names``."""

    def register(fn):
        for n in names:
            if n in KERNELS:
                raise ValueError(f"MIL op '{n}' already has a kernel ({KERNELS[n].__module__}.{KERNELS[n].__name__})")
            KERNELS[n] = fn
        return fn

    return register


def f32(x: Any) -> np.ndarray:
    """``x`` as a float32 array (ops compute in float32)."""
    return np.asarray(x, dtype=np.float32)
