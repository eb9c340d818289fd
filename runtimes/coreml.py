"""CoreML backend: Apple's runtime on macOS; the MIL reference executor everywhere else.

On macOS an ``.mlpackage`` runs through ``coremltools.models.MLModel`` with selectable
compute units (``all``, ``cpuAndGPU``, ``cpuOnly``, ``cpuAndNeuralEngine``). Off Apple
platforms ``MLModel.predict`` is unavailable and no public engine executes an
.mlpackage, so the program is run by StarEdge's numpy reference executor
(:mod:`staredge.runtimes.mil_reference`): it proves the artifact computes the right
numbers, but it is for validation, not speed; a one-time notice says so.
"""

from __future__ import annotations

import platform
import threading
import warnings
from typing import Any

import numpy as np

from staredge.errors import ConfigError, DeviceError, require
from staredge.runtimes.base import ArtifactError, Backend, check_artifact_file

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
        check_artifact_file(self.path, "CoreML")
        if not (self.path / "Manifest.json").is_file():
            raise ArtifactError(
                f"{self.path} is not a CoreML .mlpackage (no Manifest.json inside); point at the .mlpackage folder"
            )
        units = self.options.get("compute_units", "all")
        if units not in COMPUTE_UNITS:
            raise ConfigError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {units!r}")
        self.compute_units = units
        self._metadata = self.read_artifact_metadata(self.path)
        pre = self._metadata.preprocessing or {}
        channels = int(self._metadata.input_size[0])
        self._mean = np.asarray(pre.get("mean", [0.0] * channels), np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(pre.get("std", [1.0] * channels), np.float32).reshape(-1, 1, 1)
        use_reference = bool(self.options.get("reference", False)) or not on_macos()
        if self.requested_device in ("cuda", "gpu") and use_reference:
            raise DeviceError("CoreML runs on Apple hardware only; off macOS use device='cpu' (reference executor)")
        if use_reference:
            from staredge.runtimes.mil_reference import MILExecutor

            try:
                self.engine = MILExecutor(str(self.path))
            except Exception as exc:
                raise ArtifactError(
                    f"the MIL reference executor cannot load {self.path} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); re-export it"
                ) from exc
            self.engine_name = "mil-reference"
            self.device = "cpu"
            _notify_reference_once()
        else:  # pragma: no cover - macOS only
            ct = require("coremltools", self.spec().extra, "the CoreML backend")
            try:
                self.engine = ct.models.MLModel(
                    str(self.path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[units])
                )
            except Exception as exc:
                raise ArtifactError(f"CoreML cannot load {self.path}: {exc}; re-export it") from exc
            self.engine_name = "coreml"
            self.device = "cpu" if units == "cpuOnly" else "apple"

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
