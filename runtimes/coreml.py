"""CoreML backend: Apple's runtime on macOS; the MIL reference executor everywhere else.

On macOS an ``.mlpackage`` runs through ``coremltools.models.MLModel`` with selectable
compute units (``all``, ``cpuAndGPU``, ``cpuOnly``, ``cpuAndNeuralEngine``). Off Apple
platforms ``MLModel.predict`` is unavailable and no public engine executes an
.mlpackage, so the program is run by StarEdge's numpy reference executor
(:mod:`staredge.runtimes.mil_reference`): it proves the artifact computes the right
numbers, but it is for validation, not speed; a one-time notice says so.
"""

from __future__ import annotations

import os
import platform
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, DeviceError, StarEdgeError, require
from staredge.runtimes.base import ArtifactError, Backend, Engine, TensorInfo, check_artifact_file
from staredge.threads import check_threads

#: StarEdge names of CoreML compute units → coremltools ``ComputeUnit`` member names.
COMPUTE_UNITS = {
    "all": "ALL",
    "cpuAndGPU": "CPU_AND_GPU",
    "cpuOnly": "CPU_ONLY",
    "cpuAndNeuralEngine": "CPU_AND_NE",
}

REFERENCE_NOTICE = (
    "CoreML: Apple's runtime runs only on macOS; this .mlpackage is executed by StarEdge's numpy "
    "MIL reference executor, which checks that the artifact computes the right numbers. It is for "
    "validation, not speed: do not use its timings."
)
_notice_lock = threading.Lock()
_notice_shown = False


def _notify_reference_once() -> None:
    global _notice_shown
    with _notice_lock:
        if _notice_shown:
            return
        _notice_shown = True
    warnings.warn(REFERENCE_NOTICE, UserWarning, stacklevel=4)


def _one_sample(value: Any) -> np.ndarray:
    """One sample's output without its batch axis of 1 (the engines return (1, K) or (K,))."""
    arr = np.asarray(value, dtype=np.float32)
    return arr[0] if arr.ndim > 1 and arr.shape[0] == 1 else arr


def on_macos() -> bool:
    """True on macOS, where Apple's CoreML runtime exists."""
    return platform.system() == "Darwin"


class CoreMLEngine(Engine):
    """The one place an ``.mlpackage`` is loaded to run: Apple's ``MLModel`` on macOS, the
    numpy MIL reference executor elsewhere (or with ``reference=True``). Image and LM alike.

    ``function`` picks a function of a multifunction package (default ``main``);
    :meth:`for_function` gives an engine of another function sharing this one's weights
    (reference) or loaded with ``function_name`` (Apple). ``stateful=True`` loads the
    executor for iOS 18 programs with state (``new_states()``; Apple: ``make_state()``).
    Threads: Apple's runtime has no thread setting (``threads_in_effect()`` is None); the
    reference executor, a validation tool whose small GEMMs only slow down with more BLAS
    threads, runs 1 BLAS thread unless ``threads`` is given (the one exception to the rule
    of :mod:`staredge.threads`, documented there and in docs/architecture.md).
    """

    runtime = "coreml"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None, *,
                 compute_units: str = "all", reference: bool = False, function: str = "main",
                 stateful: bool = False, extra: str = "coreml", _shared: "CoreMLEngine | None" = None) -> None:
        self.path = Path(path)
        if _shared is None:
            check_artifact_file(self.path, "CoreML")
            if not (self.path / "Manifest.json").is_file():
                raise ArtifactError(
                    f"{self.path} is not a CoreML .mlpackage (no Manifest.json inside); point at the .mlpackage folder")
        if compute_units not in COMPUTE_UNITS:
            raise ConfigError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {compute_units!r}")
        self.compute_units = compute_units
        self.function = function
        self.stateful = bool(stateful)
        self.reference = bool(reference) or not on_macos()
        if device in ("cuda", "gpu") and self.reference:
            raise DeviceError("CoreML runs on Apple hardware only; off macOS use device='cpu' (reference executor)")
        self.threads = check_threads(threads) or 1 if self.reference else None
        self._extra = extra
        if self.reference:
            from staredge.runtimes.mil_reference import MILExecutor
            from staredge.runtimes.mil_reference.stateful import StatefulMILExecutor

            shared = {"_shared": _shared.model} if _shared is not None else {}
            try:
                if self.stateful:
                    self.model = StatefulMILExecutor(self.path, threads=self.threads, function=function, **shared)
                else:
                    self.model = MILExecutor(self.path, threads=self.threads, function=function, **shared)
            except StarEdgeError:
                raise
            except Exception as exc:
                raise ArtifactError(
                    f"the MIL reference executor cannot load {self.path} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); re-export it"
                ) from exc
            self.engine_name = "mil-reference"
            self.device = "cpu"
            self.capabilities = frozenset({"named_feeds", "reset"} | ({"stateful"} if self.stateful else set()))
            _notify_reference_once()
        else:  # pragma: no cover - macOS only
            ct = require("coremltools", extra, "the CoreML backend")
            kwargs = {"function_name": function} if function != "main" else {}
            try:
                self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]),
                                               **kwargs)
            except Exception as exc:
                raise ArtifactError(f"CoreML cannot load {self.path}: {exc}; re-export it") from exc
            self.engine_name = "coreml"
            self.device = "cpu" if compute_units == "cpuOnly" else "apple"
            self.capabilities = frozenset({"named_feeds", "reset"} | ({"stateful"} if self.stateful else set()))

    def for_function(self, function: str) -> "CoreMLEngine":
        """An engine of another function of this package (same settings; shared weights on the reference)."""
        return CoreMLEngine(self.path, self.device if self.device != "apple" else "auto", self.threads,
                            compute_units=self.compute_units, reference=self.reference, function=function,
                            stateful=self.stateful, extra=self._extra, _shared=self if self.reference else None)

    def new_states(self) -> Any:
        """A zero state for one stream: numpy buffers (reference) or an ``MLState`` (Apple)."""
        if self.reference:
            return self.model.new_states()
        return self.model.make_state()  # pragma: no cover - macOS only

    @property
    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """State name → (shape, numpy dtype) of a stateful program (reference executor only)."""
        return dict(getattr(self.model, "state_shapes", {}) or {})

    def predict(self, feed: dict[str, Any], states: Any = None) -> dict[str, Any]:
        """One call; ``states`` (from :meth:`new_states`) are read and updated in place.
        Runtime failures that are not already StarEdge errors become InferenceError."""
        try:
            if states is None:
                return self.model.predict(feed)
            if self.reference:
                return self.model.predict(feed, states)
            return self.model.predict(feed, state=states)  # pragma: no cover - macOS only
        except StarEdgeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.run_failed(exc) from exc

    def run_feeds(self, feeds: dict[str, Any], signature: str | None = None) -> dict[str, np.ndarray]:
        """One call of the function (``signature``: another function of the package) with a
        fresh zero state for a stateful program; every output by name."""
        engine = self if signature in (None, self.function) else self.for_function(signature)
        states = engine.new_states() if engine.stateful else None
        return {k: np.asarray(v) for k, v in engine.predict(feeds, states).items()}

    def inputs(self) -> list[TensorInfo]:
        """The function's tensor inputs (reference executor; Apple: empty)."""
        if not self.reference:
            return []  # pragma: no cover
        out = []
        for name, info in self.model.inputs.items():
            shape = getattr(info, "shape", None)
            dtype = getattr(info, "dtype", None)
            out.append(TensorInfo(name, tuple(shape) if shape is not None else None,
                                  np.dtype(dtype).name if dtype is not None else None))
        return out

    def outputs(self) -> list[TensorInfo]:
        """The model description's outputs with their declared shapes (multi-arrays)."""
        spec = getattr(self.model, "spec", None)
        if spec is None:
            return []  # pragma: no cover - Apple's MLModel: not read here
        out = []
        for feature in spec.description.output:
            kind = feature.type.WhichOneof("Type")
            shape = tuple(int(d) for d in feature.type.multiArrayType.shape) if kind == "multiArrayType" else None
            out.append(TensorInfo(feature.name, shape or None, None))
        if out or not self.reference:
            return out
        # a multifunction package describes its outputs per function: read the program's types
        from staredge.runtimes.mil_reference.dtypes import tensor_shape

        wanted = set(self.model.output_names)
        for op in self.model._ops:  # noqa: SLF001 - the executor's parsed program
            for named in op.outputs:
                if named.name in wanted and named.type.WhichOneof("type") == "tensorType":
                    shape = tensor_shape(named.type.tensorType)  # None: a symbolic dimension
                    out.append(TensorInfo(named.name, shape, None))
        return out

    def threads_in_effect(self) -> int | None:
        """BLAS threads of the reference executor; None for Apple's runtime (no setting)."""
        return self.threads

    def op_histogram(self) -> dict[str, int]:
        """MIL op types of the function (reference executor; Apple's runtime does not list them)."""
        if not self.reference:  # pragma: no cover - macOS only
            raise ConfigError("op counts of a CoreML package come from the reference executor (reference=True)")
        return dict(sorted(self.model.op_counts.items(), key=lambda kv: (-kv[1], kv[0])))


class CoreMLBackend(Backend):
    """An ``.mlpackage`` on Apple's runtime (macOS) or the MIL reference executor (elsewhere).

    Options: ``compute_units`` (one of :data:`COMPUTE_UNITS`, default "all"; macOS only),
    ``reference`` (True forces the reference executor, also on macOS). Neither engine is
    documented as thread-safe, so the Predictor locks around this backend.

    Inputs are the same normalised NCHW float32 arrays every backend takes. A package with
    an image input (``metadata.pixels_in_model``) normalises inside itself, so the
    normalisation is undone here (``pixel = (x * std + mean) * 255``): the reference
    executor takes the float pixels as they are, Apple's runtime a uint8 image.
    """

    name = "coreml"
    thread_safe = False
    OPTIONS = ("compute_units", "reference")

    def load(self) -> None:
        assert self.path is not None
        units = self.options.get("compute_units", "all")
        if units not in COMPUTE_UNITS:
            raise ConfigError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {units!r}")
        check_artifact_file(self.path, "CoreML")
        if not (self.path / "Manifest.json").is_file():
            raise ArtifactError(
                f"{self.path} is not a CoreML .mlpackage (no Manifest.json inside); point at the .mlpackage folder"
            )
        self.compute_units = units
        self._metadata = self.read_artifact_metadata(self.path)
        pre = self._metadata.preprocessing or {}
        channels = int(self._metadata.input_size[0])
        self._mean = np.asarray(pre.get("mean", [0.0] * channels), np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(pre.get("std", [1.0] * channels), np.float32).reshape(-1, 1, 1)
        self.engine = CoreMLEngine(self.path, self.requested_device, self.threads, compute_units=units,
                                   reference=bool(self.options.get("reference", False)), extra=self.spec().extra)
        self.engine_name = self.engine.engine_name
        self.device = self.engine.device

    @property
    def supports_batch(self) -> bool:
        """False: CoreML artifacts are exported with a fixed input shape."""
        return False

    def to_pixels(self, sample: np.ndarray) -> np.ndarray:
        """A normalised (C, H, W) sample → the package's float pixel tensor on the 0-255 scale."""
        return (sample * self._std + self._mean) * np.float32(255.0)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        name = self.metadata.input_name
        outs: list[dict[str, Any]] = []
        for sample in x:
            feed: Any = sample[None]
            if self.metadata.pixels_in_model:
                feed = self.to_pixels(sample)
                if self.engine_name == "coreml":  # pragma: no cover - macOS only: a uint8 image
                    from PIL import Image

                    hwc = np.clip(np.rint(feed), 0, 255).astype(np.uint8).transpose(1, 2, 0)
                    feed = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
            outs.append(self.engine.predict({name: feed}))
        names = [n for n in self.metadata.output_names if n in outs[0]] or list(outs[0])
        return [np.stack([_one_sample(o[n]) for o in outs]) for n in names]

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus which engine runs the program and the compute units."""
        d = super().describe()
        d.update(engine=self.engine_name, compute_units=self.compute_units)
        if self.engine_name == "mil-reference":
            d["note"] = "reference executor: for validation, not speed"
        return d
