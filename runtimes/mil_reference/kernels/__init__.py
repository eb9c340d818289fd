"""One numpy kernel per MIL op, registered with ``@kernel`` (:mod:`.base`).

Adding ops: write them with ``@kernel("op_type")`` in a module of this package and add the
module's name to :data:`KERNEL_MODULES`; :data:`SUPPORTED_OPS` follows.
"""

from __future__ import annotations

import importlib

from staredge.runtimes.mil_reference.kernels.base import KERNELS, REQUIRED, Args, f32, kernel

#: The modules whose ``@kernel`` functions make up the executor's op set.
KERNEL_MODULES = ("elementwise", "nn", "tensor", "lm", "quantization")

for _module in KERNEL_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

#: Op types the reference executor implements (``const`` is evaluated at load time).
SUPPORTED_OPS = frozenset(KERNELS) | {"const"}

__all__ = ["KERNELS", "KERNEL_MODULES", "REQUIRED", "SUPPORTED_OPS", "Args", "f32", "kernel"]
