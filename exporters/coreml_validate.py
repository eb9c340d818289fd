"""Validation runner for CoreML packages: the MIL reference executor, plus Apple's runtime on macOS.

:func:`make_runner` gives :mod:`staredge.exporters.validate` a callable that takes the
same normalised float batches (N, C, H, W) every other format takes and returns logits.
An image-input package takes pixels, so the normalisation is undone first
(``pixel = (x * std + mean) * 255``, kept in float: the reference executor accepts the
program's float pixel tensor, so random inputs outside [0, 255] stay exact).

On macOS the runner also runs Apple's runtime (CPU only, so that fp32 stays fp32) on the
inputs that are real images (pixels within [0, 255], rounded to uint8, which Apple's
image inputs require) and checks it against the reference executor on the same pixels;
a disagreement beyond the precision's tolerance raises :class:`ValidationError`. That path
is written for macOS and cannot run on Linux (no CoreML runtime there).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from staredge.exporters.validate import TOLERANCES, ArtifactRunner, ValidationError
from staredge.metadata import read_metadata
from staredge.runtimes.mil_reference import MILExecutor


class CoreMLReferenceRunner(ArtifactRunner):
    """Runs a CoreML package sample by sample with :class:`MILExecutor` (batch 1 only)."""

    def __init__(self, path: Path, export_batch: int = 1, dynamic_batch: bool = False) -> None:
        super().__init__(path, 1, False)
        self.metadata = read_metadata(path)
        self.executor = MILExecutor(path)
        (self.input_name, self.input_info), = self.executor.inputs.items()
        self.output_name = self.metadata.output_names[0]
        if self.output_name not in self.executor.output_names:
            raise ValidationError(
                f"{path}: metadata names output '{self.output_name}' but the program outputs "
                f"{self.executor.output_names}; re-export it"
            )
        self.image_input = self.input_info.kind == "image"
        channels = int(self.metadata.input_size[0])
        pre = self.metadata.preprocessing
        self.mean = np.asarray(pre.get("mean", [0.0] * channels), np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(pre.get("std", [1.0] * channels), np.float32).reshape(-1, 1, 1)
        self.apple = _apple_model(path) if platform.system() == "Darwin" else None
        #: Worst |Δ| of logits between Apple's runtime and the reference executor (macOS only).
        self.apple_max_abs_diff: float | None = None

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """A normalised (C, H, W) sample → the package's float pixel tensor (C, H, W), 0-255 scale."""
        return (x * self.std + self.mean) * np.float32(255.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for sample in np.asarray(x, dtype=np.float32):
            value = self.to_pixels(sample) if self.image_input else sample[None]
            result = self.executor.predict({self.input_name: value})
            outs.append(np.asarray(result[self.output_name], dtype=np.float32).reshape(-1))
            if self.apple is not None and self.image_input:  # pragma: no cover - macOS only
                self._check_apple(value)
        return np.stack(outs)

    def _check_apple(self, pixels: np.ndarray) -> None:  # pragma: no cover - macOS only
        if pixels.min() < 0 or pixels.max() > 255:
            return  # not an image; Apple's image input cannot take it
        from PIL import Image

        hwc = np.round(pixels).astype(np.uint8).transpose(1, 2, 0)
        image = Image.fromarray(hwc if hwc.shape[2] == 3 else hwc[:, :, 0])
        ours = np.asarray(self.executor.predict({self.input_name: image})[self.output_name], np.float64)
        theirs = np.asarray(self.apple.predict({self.input_name: image})[self.output_name], np.float64)
        diff = float(np.max(np.abs(ours.reshape(-1) - theirs.reshape(-1))))
        self.apple_max_abs_diff = max(self.apple_max_abs_diff or 0.0, diff)
        scale = max(float(np.max(np.abs(ours))), 1e-12)
        tol = TOLERANCES.get(self.metadata.precision, {})
        limit = tol.get("max_abs_diff") if self.metadata.precision == "fp32" else tol.get("rel_error", 1e-2) * scale
        if limit is not None and diff > 10 * limit:
            raise ValidationError(
                f"{self.path}: Apple's CoreML runtime and the MIL reference executor disagree by {diff:.3g} "
                f"(limit {10 * limit:.3g}); the package may use an op whose semantics differ on device"
            )


def _apple_model(path: Path):  # pragma: no cover - macOS only
    """Apple's runtime on CPU only (fp32 programs then run in fp32), or None if unavailable."""
    try:
        import coremltools as ct

        return ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    except Exception:  # noqa: BLE001 - no runtime (e.g. an unsupported macOS): reference only
        return None


def make_runner(path, export_batch: int = 1, dynamic_batch: bool = False) -> CoreMLReferenceRunner:
    """The validation runner for the CoreML package at ``path`` (see module docstring)."""
    return CoreMLReferenceRunner(Path(path), export_batch, dynamic_batch)
