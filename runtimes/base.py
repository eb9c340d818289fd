"""The common base of every runtime backend: load an artifact, run float32 arrays through it.

A backend is built with ``Backend(path, device=..., threads=..., **options)``, which loads
the artifact at once (``load()``) and reads its embedded :class:`ArtifactMetadata`. After
that, :meth:`Backend.forward` takes an NCHW float32 array and returns the outputs as a list
of numpy arrays. Only what every runtime has lives here; anything one runtime needs
(providers, compute units, compiled requests) lives in that runtime's module.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from staredge.errors import ArtifactError, ConfigError, DeviceError, StarEdgeError  # noqa: F401 - re-exported
from staredge.metadata import ArtifactMetadata, read_metadata


class InputShapeError(StarEdgeError, ValueError):
    """An array passed to ``forward``/``predict`` has the wrong shape or dtype for the artifact."""


#: Devices a caller may ask for.
DEVICES = ("auto", "cpu", "cuda", "gpu")


class Engine(ABC):
    """One loaded graph on one runtime: the ONLY place a runtime's session is constructed.

    Each runtime module has one subclass (``OnnxRuntimeEngine`` in ``runtimes/onnxruntime.py``,
    ``OpenVinoEngine``, ``LiteRtEngine``, ``CoreMLEngine``, ``PyTorchEngine``); the image
    backend and the language-model steppers of that runtime both build it, so device,
    threads, precision hints and error wrapping are the same for every task.
    ``tests/test_engine_construction.py`` fails if a session, compiled model, interpreter,
    ``MLModel`` or MIL executor is constructed anywhere else.

    What every engine owns:

    * ``device``: the StarEdge device in use ("cpu", "cuda", "gpu", "apple");
    * threads: :func:`staredge.threads.resolve_threads` (``None`` means the physical cores
      this process may use, for every runtime and task), reported by
      :meth:`threads_in_effect` as the runtime applied it;
    * errors: a failure while loading is an :class:`ArtifactError`, while running an
      :class:`~staredge.errors.InferenceError`, both naming the runtime and the file;
    * :attr:`capabilities`: which of :data:`CAPABILITIES` it has (IO binding, stateful
      variables, signatures, reset);
    * :meth:`inputs` / :meth:`outputs`: the graph's own tensors (name, shape with None for
      dynamic axes, numpy dtype name), which load-time metadata checks compare against;
    * :meth:`op_histogram`: op type → count of the loaded graph.
    """

    runtime: ClassVar[str] = ""
    #: Capabilities an engine may declare.
    CAPABILITIES: ClassVar[tuple[str, ...]] = ("named_feeds", "io_binding", "stateful", "signatures", "reset")
    capabilities: frozenset[str] = frozenset({"named_feeds"})

    path: Path | None = None
    device: str = "cpu"

    @abstractmethod
    def threads_in_effect(self) -> int | None:
        """Intra-op threads the runtime is running with (read back from it where it can
        tell; None only where a runtime has no thread setting, e.g. Apple's CoreML)."""

    @abstractmethod
    def op_histogram(self) -> dict[str, int]:
        """Op type → number of ops in the loaded graph (what the runtime runs, where it can tell)."""

    def run_feeds(self, feeds: dict[str, Any], signature: str | None = None) -> dict[str, np.ndarray]:
        """One call with inputs by name; every output by name as numpy arrays (copies).
        ``signature`` picks a signature (LiteRT) or function (CoreML) where the graph has several."""
        raise ConfigError(f"the {self.runtime} engine does not run named feeds")

    def inputs(self) -> list["TensorInfo"]:
        """The graph's inputs (empty where the runtime cannot tell)."""
        return []

    def outputs(self) -> list["TensorInfo"]:
        """The graph's outputs (empty where the runtime cannot tell)."""
        return []

    def run_failed(self, exc: BaseException) -> "StarEdgeError":
        """``exc`` (raised by the runtime during a call) as an InferenceError naming this engine."""
        from staredge.errors import InferenceError

        text = str(exc).strip().splitlines()
        return InferenceError(f"{self.runtime} failed running {self.path}: {type(exc).__name__}: "
                              f"{(text[0] if text else '')[:300]}")

    def close(self) -> None:
        """Release the session (the default drops nothing; the garbage collector does it)."""


class TensorInfo(tuple):
    """(name, shape, dtype) of one graph input or output; a dynamic axis is None and
    ``dtype`` a numpy dtype name ("float32", "int64", ...)."""

    __slots__ = ()

    def __new__(cls, name: str, shape: tuple[int | None, ...] | None, dtype: str | None):
        return super().__new__(cls, (name, None if shape is None else tuple(shape), dtype))

    @property
    def name(self) -> str:
        """Tensor name."""
        return self[0]

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        """Declared shape (None for an unknown rank, None entries for dynamic axes)."""
        return self[1]

    @property
    def dtype(self) -> str | None:
        """numpy dtype name, or None when unknown."""
        return self[2]


class Backend(ABC):
    """One loaded artifact on one runtime.

    ``name`` is the runtime's name in :data:`staredge.formats.RUNTIMES`, which says what
    the runtime is (formats it runs, packages, pip extra); ``spec`` returns that entry.
    ``thread_safe`` says whether ``forward`` may be called from several threads at once;
    the Predictor takes a lock around backends where it is False. ``OPTIONS`` lists the
    runtime-specific keyword options; every backend also takes ``batch`` (a fixed batch
    size to compile or resize a static artifact for) and ``metadata`` (used when the
    artifact carries none, e.g. a plain ``torch.onnx.export``). Anything else is a
    :class:`ConfigError`.
    """

    name: ClassVar[str] = ""
    thread_safe: ClassVar[bool] = False
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    COMMON_OPTIONS: ClassVar[tuple[str, ...]] = ("batch", "metadata")

    def __init__(self, path: str | os.PathLike | None, device: str = "auto", threads: int | None = None, **options: Any):
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        from staredge.threads import check_threads

        check_threads(threads)
        unknown = sorted(set(options) - set(self.OPTIONS) - set(self.COMMON_OPTIONS))
        if unknown:
            valid = ", ".join((*self.OPTIONS, *self.COMMON_OPTIONS))
            raise ConfigError(f"unknown option(s) {unknown} for the {self.name} backend; valid: {valid}")
        batch = options.get("batch")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ConfigError(f"batch must be a positive integer or None, got {batch!r}")
        meta = options.get("metadata")
        if meta is not None and not isinstance(meta, ArtifactMetadata):
            raise ConfigError(f"metadata must be an ArtifactMetadata, got {type(meta).__name__}")
        self.path = Path(path) if path is not None else None
        self.requested_device = device
        self.threads = threads
        self.options = options
        self.device = "cpu"
        self._metadata: ArtifactMetadata | None = None
        self.load()
        self.check_graph_input()

    @classmethod
    def spec(cls):
        """This runtime's :class:`staredge.formats.RuntimeSpec`."""
        from staredge.formats import RUNTIMES

        return RUNTIMES[cls.name]

    # -- what each runtime implements -------------------------------------------------

    @classmethod
    def is_available(cls) -> bool:
        """True when this runtime's Python package can be imported."""
        return cls.spec().available()

    @abstractmethod
    def load(self) -> None:
        """Load the artifact; set ``self.device`` and ``self._metadata``."""

    @abstractmethod
    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one validated, contiguous float32 NCHW batch."""

    def graph_input_shape(self) -> tuple[int | None, ...] | None:
        """The input shape the loaded graph itself declares (None for a dynamic axis), or
        None when the runtime cannot tell. Backends that can tell override this."""
        return None

    # -- shared behaviour -------------------------------------------------------------

    def check_graph_input(self) -> None:
        """Raise :class:`ArtifactError` at load time when the metadata's ``input_size`` is not
        the graph's own input shape (metadata that lies, or was copied from another model),
        and :class:`MetadataError` when an image classifier's graph takes more than one input
        (a language model whose metadata claims an image task), instead of a runtime's raw
        error at the first call."""
        if self.metadata.task != "image-classification":
            return
        engine = getattr(self, "engine", None)
        inputs = [t.name for t in engine.inputs()] if isinstance(engine, Engine) else []
        if len(inputs) > 1:  # e.g. a language model (ids, position, states) whose metadata claims an image task
            from staredge.errors import MetadataError

            raise MetadataError(f"{self.path}: metadata task is {self.metadata.task!r} but the graph takes "
                                f"{len(inputs)} inputs ({', '.join(inputs)[:200]}), not one image batch; the "
                                "metadata was edited or belongs to another model: re-export it")
        graph = self.graph_input_shape()
        if graph is None:
            return
        dims = list(graph)
        if self.metadata.input_layout.upper() == "NHWC" and len(dims) == 4:
            dims = [dims[0], dims[3], dims[1], dims[2]]
        want = [int(v) for v in self.metadata.input_size]
        if len(dims) != len(want) + 1 or any(d is not None and d != w for d, w in zip(dims[1:], want)):
            shown = "(" + ", ".join("?" if d is None else str(d) for d in graph) + ")"
            raise ArtifactError(
                f"{self.path}: its metadata says input_size {want} but the graph takes input shape {shown}; "
                f"the metadata was edited or belongs to another model. Re-export it with `staredge export`")

    def threads_in_effect(self) -> int | None:
        """Intra-op threads the runtime runs with: its engine's answer (None without one)."""
        engine = getattr(self, "engine", None)
        return engine.threads_in_effect() if isinstance(engine, Engine) else None

    def op_histogram(self) -> dict[str, int]:
        """Op type → count of the loaded graph (its engine's answer)."""
        engine = getattr(self, "engine", None)
        if not isinstance(engine, Engine):
            raise ConfigError(f"the {self.name} backend has no engine to count ops of")
        return engine.op_histogram()

    def read_artifact_metadata(self, path: Path) -> ArtifactMetadata:
        """The artifact's embedded metadata, through the one set of readers in
        :mod:`staredge.metadata`, read as the artifact's own format (detected from the path,
        :func:`staredge.formats.detect_format`); the ``metadata`` option stands in for a file
        that has none. An artifact of a format this runtime does not run is an
        :class:`ArtifactError` naming both."""
        from staredge.formats import detect_format

        override = self.options.get("metadata")
        if override is not None:
            return override
        fmt = detect_format(path)
        runs = self.spec().formats
        if fmt.name not in runs and not self._runs_for(fmt):
            raise ArtifactError(f"{path} is a {fmt.title} artifact, and the {self.name} backend runs "
                                f"{', '.join(runs)} artifacts only; load it with the backend of its format "
                                f"({fmt.runtime}) or leave backend= out")
        return read_metadata(path, fmt.name)

    @classmethod
    def _runs_for(cls, fmt) -> bool:
        """True when ``fmt``'s own runtime entry names this class as its backend (a runtime
        entry added to the table that reuses an existing backend class for a new format)."""
        from staredge.formats import RUNTIMES

        spec = RUNTIMES.get(fmt.runtime)
        if spec is None:
            return False
        names = {spec.backend, spec.text_backend}
        return f"{cls.__module__}:{cls.__qualname__}" in names

    def prepare(self, x: np.ndarray):
        """A zero-argument callable that runs ``x`` once, for timing loops.

        The input is checked once here, not in every call. Runtimes that can bind inputs
        and outputs to a device (ONNX Runtime's IO binding) override this; the returned
        callable then has a ``sync()`` attribute that waits for the device.
        """
        x = self.check_input(x)
        return lambda: self._run(x)

    def close(self) -> None:
        """Release what the backend holds (sessions, interpreters); the default does nothing."""

    @property
    def metadata(self) -> ArtifactMetadata:
        """The artifact's embedded metadata (labels, input size, preprocessing ...)."""
        assert self._metadata is not None, "load() must set the metadata"
        return self._metadata

    @property
    def supports_batch(self) -> bool:
        """True when one call may carry more than one image (the artifact has a dynamic batch)."""
        return bool(self.metadata.dynamic_batch)

    @property
    def fixed_batch(self) -> int:
        """The batch size a static artifact runs: the ``batch`` option it was loaded with, else
        the graph's own static batch (``staredge export --batch N``), else 1."""
        cached = self.__dict__.get("_fixed_batch")
        if cached is not None:  # read on every call (check_input): asked of the graph once
            return cached
        if self.options.get("batch"):
            value = int(self.options["batch"])
        else:
            graph = self.graph_input_shape() if not self.supports_batch else None
            value = int(graph[0]) if graph and isinstance(graph[0], int) and graph[0] > 0 else 1
        self.__dict__["_fixed_batch"] = value
        return value

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Expected input shape (N, C, H, W) with N = :attr:`fixed_batch`."""
        return (self.fixed_batch, *(int(v) for v in self.metadata.input_size))

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Run a float32 array (N, C, H, W) and return the outputs as numpy arrays.

        Raises :class:`InputShapeError` (saying what shape/dtype is expected) before
        anything reaches the runtime.
        """
        x = self.check_input(x)
        return [np.asarray(o) for o in self._run(x)]

    def check_input(self, x: Any) -> np.ndarray:
        """``x`` as a contiguous float32 array of an acceptable shape, or InputShapeError."""
        if not isinstance(x, np.ndarray):
            raise InputShapeError(
                f"expected a numpy float32 array of shape {self._shape_text()}, got {type(x).__name__}; "
                f"use Predictor.classify() for images"
            )
        if x.dtype != np.float32:
            hint = " (images: use Predictor.classify(), which preprocesses)" if x.dtype == np.uint8 else ""
            raise InputShapeError(
                f"expected dtype float32, got {x.dtype}{hint}; convert with x.astype(np.float32)"
            )
        want = self.input_shape
        if x.ndim != len(want) or tuple(x.shape[1:]) != want[1:] or x.shape[0] < 1:
            raise InputShapeError(
                f"expected an array of shape {self._shape_text()}, got {tuple(x.shape)}"
                + ("; add a batch axis with x[None]" if x.ndim == len(want) - 1 else "")
            )
        if x.shape[0] != self.fixed_batch and not self.supports_batch:
            raise InputShapeError(
                f"this artifact was loaded with a fixed batch of {self.fixed_batch}, got a batch of {x.shape[0]}; "
                + ("pass one image at a time, or re-export with dynamic_batch=True" if self.fixed_batch == 1
                   else f"pass {self.fixed_batch} images at a time")
            )
        return np.ascontiguousarray(x)

    def _shape_text(self) -> str:
        n = "N" if self.supports_batch else str(self.fixed_batch)
        return "(" + ", ".join([n, *map(str, self.input_shape[1:])]) + ")"

    def describe(self) -> dict[str, Any]:
        """Runtime facts for ``Predictor.info()``: backend, device, threads, batching."""
        in_effect = self.threads_in_effect()
        return {
            "backend": self.name,
            "device": self.device,
            "threads": in_effect if in_effect is not None else self.threads,
            "threads_requested": self.threads,
            "supports_batch": self.supports_batch,
            "thread_safe": self.thread_safe,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, device={self.device!r}, threads={self.threads})"


# ----------------------------------------------------------------------------- helpers


def check_artifact_file(path: Path, fmt: str) -> None:
    """Raise ArtifactError for a missing or empty artifact file, with what to do."""
    if not path.exists():
        raise ArtifactError(f"{fmt} artifact not found: {path}; check the path or re-run `staredge export`")
    if path.is_file() and path.stat().st_size == 0:
        raise ArtifactError(f"{fmt} artifact is empty (0 bytes): {path}; the export was interrupted, re-export it")



