"""Runtimes: an exported artifact (or a PyTorch module) in, numpy outputs out.

:func:`load_backend` picks the runtime from the artifact through the format table
(:mod:`staredge.formats`: the format comes from the suffix, or a directory's contents, and
names its default runtime); ``backend=`` forces one. Each runtime lives in
its own module and is imported only when used, so a missing optional runtime costs
nothing until it is asked for, and then raises :class:`MissingDependencyError` naming the
pip extra. Runtimes never import exporters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from staredge.errors import ConfigError, MissingDependencyError
from staredge.formats import EAGER_RUNTIME, RUNTIMES, TEXT_GENERATION, detect_format, get_runtime
from staredge.metadata import MetadataError
from staredge.runtimes.base import ArtifactError, Backend, DeviceError, InputShapeError

#: backend name → (module, class name, pip extra, formats it runs), derived from
#: :data:`staredge.formats.RUNTIMES`. Import happens on use.
BACKENDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    name: (*spec.backend.split(":"), spec.extra, spec.formats) for name, spec in RUNTIMES.items()
}

#: artifact format → backend that runs it by default.
BACKENDS_BY_FORMAT: dict[str, str] = {
    fmt: name for name, spec in RUNTIMES.items() for fmt in spec.formats
}


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered as ``name`` (or an alias such as "ort", "ov", "tflite")."""
    return get_runtime(name).backend_class()


def available_backends() -> list[str]:
    """Names of the backends whose runtime package is installed here."""
    return [name for name, spec in RUNTIMES.items() if spec.available()]


def select_backend(path: str | os.PathLike, backend: str | None = None) -> str:
    """The backend name for the artifact at ``path`` (``backend`` forces one)."""
    if backend is not None:
        return get_runtime(backend).name
    try:
        spec = detect_format(path)
    except MetadataError as exc:
        raise ArtifactError(str(exc)) from exc
    return spec.runtime


def _is_torch_module(obj: Any) -> bool:
    """True for an ``nn.Module``, without importing torch when it is not loaded yet."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_text_generation(path_or_module: Any, runtime: str, metadata: Any = None) -> bool:
    """Whether the artifact (or module) is a language model (metadata ``task ==
    "text-generation"``, a ``save_lm`` pair, or a module with the step contract). Unreadable
    metadata says no: the image backend then reports what is wrong with the file."""
    if metadata is not None:
        return getattr(metadata, "task", None) == TEXT_GENERATION
    if not isinstance(path_or_module, (str, os.PathLike)):
        from staredge.runtimes.text import is_text_module

        return is_text_module(path_or_module)
    if runtime == EAGER_RUNTIME:  # a save_lm .safetensors/.json pair
        from staredge.runtimes.text import _lm_pair_config

        if _lm_pair_config(Path(path_or_module)) is not None:
            return True
    from staredge.errors import StarEdgeError
    from staredge.metadata import read_metadata

    try:
        return read_metadata(path_or_module).task == TEXT_GENERATION
    except (StarEdgeError, OSError, ValueError):
        return False


def load_backend(
    path_or_module: Any,
    backend: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    **options: Any,
) -> Backend:
    """Load an artifact (or wrap a PyTorch module) on the right runtime.

    This is the one way StarEdge runs an artifact: the Predictor, export validation, the
    benchmark and the demo all come through here. ``backend`` forces a runtime by name;
    ``device`` is "auto", "cpu", "cuda" or "gpu"; ``threads`` sets the runtime's intra-op
    threads (None: the physical cores this process may use, for every runtime and task;
    :mod:`staredge.threads`; ``backend.threads_in_effect()`` says what the runtime
    applied). Other keyword options go to the backend; every backend takes ``batch``
    (compile or resize a static artifact for that batch size) and ``metadata`` (an
    :class:`~staredge.metadata.ArtifactMetadata` for a file that carries none, e.g. a plain
    ``torch.onnx.export``). Runtime-specific ones: ``precision="bf16"`` (OpenVINO),
    ``compute_units="cpuOnly"`` (CoreML), ``accelerator="tensorrt"`` / ``io_binding=True`` /
    ``graph_optimization`` (ONNX Runtime), ``channels_last=True`` (PyTorch). Raises
    :class:`ArtifactError` for missing, unknown or corrupt artifacts and
    :class:`MissingDependencyError` when the runtime is not installed.

    A language model (metadata ``task == "text-generation"``, a ``save_lm`` pair, or a STAR
    LM module) gets the runtime's text-generation backend instead
    (:attr:`~staredge.formats.RuntimeSpec.text_backend`, :mod:`staredge.runtimes.text`):
    ``open_session()`` streams, ``describe()`` shows the state spec.
    """
    if _is_torch_module(path_or_module):
        if backend is not None and get_runtime(backend).name != EAGER_RUNTIME:
            raise ConfigError(f"a PyTorch module runs on the {EAGER_RUNTIME} backend, not {backend!r}; export it first")
        name = EAGER_RUNTIME
    else:
        if not isinstance(path_or_module, (str, os.PathLike)):
            raise ConfigError(
                f"load_backend needs an artifact path or an nn.Module, got {type(path_or_module).__name__}"
            )
        name = select_backend(path_or_module, backend)
    # issue 23 (H6): weights checked against the digest recorded at export, before any runtime reads
    # them (staredge.integrity; verify_integrity=False or STAREDGE_SKIP_INTEGRITY=1 skip it)
    from staredge.integrity import verify

    verify(path_or_module, None, options.get("metadata"), enabled=options.pop("verify_integrity", True))
    spec = RUNTIMES[name]
    if spec.text_backend is not None and _is_text_generation(path_or_module, name, options.get("metadata")):
        cls = spec.text_backend_class()  # a language model: the runtime's text-generation backend
    else:
        cls = spec.backend_class()  # backend modules import their runtime package only in load()
    if not cls.is_available():
        raise MissingDependencyError(f"the {name} backend: {spec.install_hint()}")
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
