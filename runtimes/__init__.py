"""Runtimes: an exported artifact (or a PyTorch module) in, numpy outputs out.

:func:`load_backend` picks the runtime from the artifact through :data:`BACKENDS_BY_FORMAT`
(the format comes from the suffix, or a directory's contents, via
:func:`staredge.metadata.detect_format`); ``backend=`` forces one. Each runtime lives in
its own module and is imported only when used, so a missing optional runtime costs
nothing until it is asked for, and then raises :class:`MissingDependencyError` naming the
pip extra. Runtimes never import exporters.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from staredge.errors import ConfigError, MissingDependencyError
from staredge.metadata import MetadataError, detect_format
from staredge.runtimes.base import ArtifactError, Backend, DeviceError, InputShapeError

#: backend name → (module, class name, pip extra, formats it runs). Import happens on use.
BACKENDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "onnxruntime": ("staredge.runtimes.onnxruntime", "OnnxRuntimeBackend", "onnx", ("onnx",)),
    "openvino": ("staredge.runtimes.openvino", "OpenVinoBackend", "openvino", ("openvino",)),
    "litert": ("staredge.runtimes.litert", "LiteRtBackend", "tflite", ("tflite",)),
    "coreml": ("staredge.runtimes.coreml", "CoreMLBackend", "coreml", ("coreml",)),
    "pytorch": ("staredge.runtimes.pytorch", "PyTorchBackend", "all", ("pytorch",)),
}

#: artifact format → backend that runs it by default.
BACKENDS_BY_FORMAT: dict[str, str] = {
    fmt: name for name, (_, _, _, formats) in BACKENDS.items() for fmt in formats
}

#: Other spellings users type for backends.
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "tflite": "litert",
            "tflite_runtime": "litert", "torch": "pytorch", "mlpackage": "coreml"}


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered as ``name`` (or an alias such as "ort", "ov", "tflite")."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    mod, cls, _, _ = BACKENDS[key]
    return getattr(importlib.import_module(mod), cls)


def available_backends() -> list[str]:
    """Names of the backends whose runtime package is installed here."""
    return [name for name in BACKENDS if backend_class(name).is_available()]


def select_backend(path: str | os.PathLike, backend: str | None = None) -> str:
    """The backend name for the artifact at ``path`` (``backend`` forces one)."""
    if backend is not None:
        return backend_class(backend).name
    try:
        fmt = detect_format(path)
    except MetadataError as exc:
        raise ArtifactError(str(exc)) from exc
    return BACKENDS_BY_FORMAT[fmt]


def _is_torch_module(obj: Any) -> bool:
    """True for an ``nn.Module``, without importing torch when it is not loaded yet."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def load_backend(
    path_or_module: Any,
    backend: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    **options: Any,
) -> Backend:
    """Load an artifact (or wrap a PyTorch module) on the right runtime.

    ``backend`` forces a runtime by name; ``device`` is "auto", "cpu", "cuda" or "gpu";
    ``threads`` sets the runtime's intra-op threads. Other keyword options go to the
    backend (e.g. ``precision="bf16"`` for OpenVINO, ``compute_units="cpuOnly"`` for CoreML,
    ``channels_last=True`` for PyTorch). Raises :class:`ArtifactError` for missing, unknown
    or corrupt artifacts and :class:`MissingDependencyError` when the runtime is not installed.
    """
    if _is_torch_module(path_or_module):
        if backend not in (None, "pytorch", "torch"):
            raise ConfigError(f"a PyTorch module runs on the pytorch backend, not {backend!r}; export it first")
        name = "pytorch"
    else:
        if not isinstance(path_or_module, (str, os.PathLike)):
            raise ConfigError(
                f"load_backend needs an artifact path or an nn.Module, got {type(path_or_module).__name__}"
            )
        name = select_backend(path_or_module, backend)
    cls = backend_class(name)
    if not cls.is_available():
        raise MissingDependencyError(
            f"the {name} backend needs the Python package '{cls.module}', which is not installed. "
            f"Install it with: pip install -c constraints.txt 'staredge[{cls.extra}]'"
        )
    return cls(path_or_module, device=device, threads=threads, **options)


__all__ = [
    "ArtifactError",
    "BACKENDS",
    "BACKENDS_BY_FORMAT",
    "Backend",
    "DeviceError",
    "InputShapeError",
    "available_backends",
    "backend_class",
    "load_backend",
    "select_backend",
]
