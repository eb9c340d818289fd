"""Calibration data and labelled evaluation sets for low-precision (int8) artifacts.

int8 export needs calibration inputs: real images that show the quantiser the range of
every activation. They come from

* ``--calibration DIR``: image files under a folder, prepared by
  :func:`staredge.preprocess.preprocess` with the model's own preprocessing (exactly what the
  Predictor does to a photo), or an ``(N, C, H, W)`` float32 array of prepared inputs;
* for the trained digits model (``starnet_digits``), its own training split: the scikit-learn
  digits that are not in the shipped held-out split (:func:`digits_training_inputs`).

Asking for int8 without either is a :class:`CalibrationError` (a ``ConfigError``) that says
how to give some. :func:`labelled_set` returns the held-out set a model is scored on (450
digit scans for the digits model, None for zoo models), so that validation can report
accuracy next to fp32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError

#: Calibration samples used when no count is given.
DEFAULT_CALIBRATION_SAMPLES = 128
#: Image suffixes read from a calibration folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
#: Registry name of the trained digits model (it calibrates on its own training split).
DIGITS_MODEL = "starnet_digits"


class CalibrationError(ConfigError):
    """int8 was asked for without usable calibration data (or the data is unusable)."""


def model_preprocess_config(model: Any):
    """The :class:`~staredge.preprocess.PreprocessConfig` of a model's ``pretrained_cfg``."""
    from staredge.exporters.validate import preprocess_config

    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise CalibrationError(
            f"{type(model).__name__} has no pretrained_cfg (input size, mean/std), so calibration images cannot "
            f"be prepared for it; pass the calibration inputs as an (N, C, H, W) float32 array instead")
    return preprocess_config(cfg)


def images_in(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted by path)."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"calibration folder {root} does not exist or is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def calibration_from_folder(folder: str | os.PathLike, config: Any, samples: int) -> np.ndarray:
    """Up to ``samples`` images from ``folder`` prepared by the Predictor's preprocessing.

    When the folder holds more images than ``samples``, an evenly spaced subset is taken (the
    same files every time). Raises :class:`CalibrationError` when no image can be read.
    """
    from staredge.preprocess import ImageInputError, preprocess

    files = images_in(folder)
    if not files:
        raise CalibrationError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); put a few hundred "
            f"representative photos there")
    if len(files) > samples:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, samples)]
    arrays, bad = [], []
    for f in files:
        try:
            arrays.append(preprocess(str(f), config))
        except ImageInputError as exc:
            bad.append(f"{f.name} ({exc})")
    if not arrays:
        raise CalibrationError(f"no image in {folder} could be read: {'; '.join(bad[:3])}")
    return np.stack(arrays).astype(np.float32)


def _digits_split() -> tuple[np.ndarray, np.ndarray, list[int]]:
    from staredge.models.digits import digits_images, heldout_indices

    images, targets = digits_images()
    return images, targets, heldout_indices()


def _prepare_digits(images: np.ndarray, config: Any) -> np.ndarray:
    from staredge.preprocess import preprocess

    return np.stack([preprocess(im, config) for im in images]).astype(np.float32)


def digits_training_inputs(config: Any, samples: int) -> np.ndarray:
    """``samples`` digits from the training split (never the held-out scans), evenly spaced,
    prepared as the Predictor prepares a scan."""
    images, _, held = _digits_split()
    train = np.setdiff1d(np.arange(len(images)), np.asarray(held, dtype=np.int64))
    pick = train[np.linspace(0, len(train) - 1, min(samples, len(train))).astype(np.int64)]
    return _prepare_digits(images[pick], config)


def labelled_set(model: Any) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(inputs, labels, name) of the labelled held-out set a model is scored on, or None.

    Only the digits model has one here (its 450 held-out scans); zoo models are compared
    with fp32 PyTorch on photos instead.
    """
    if getattr(model, "staredge_name", None) != DIGITS_MODEL:
        return None
    images, targets, held = _digits_split()
    idx = np.asarray(held, dtype=np.int64)
    return _prepare_digits(images[idx], model_preprocess_config(model)), targets[idx], "digits held-out"


def resolve_calibration(model: Any, calibration: Any, samples: int | None = None) -> np.ndarray:
    """The calibration inputs for an int8 export of ``model`` as an (N, C, H, W) float32 array.

    ``calibration``: a folder of images, an array of prepared inputs, or None (then only the
    digits model has data: its training split). Raises :class:`CalibrationError` when there
    is none, naming ``--calibration DIR``.
    """
    n = DEFAULT_CALIBRATION_SAMPLES if samples is None else samples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CalibrationError(f"the calibration sample count must be a positive integer, got {samples!r}")
    n = int(n)
    if calibration is None:
        if getattr(model, "staredge_name", None) == DIGITS_MODEL:
            return digits_training_inputs(model_preprocess_config(model), n)
        name = getattr(model, "staredge_name", type(model).__name__)
        raise CalibrationError(
            f"int8 export of {name} needs calibration data: representative images that set the activation "
            f"ranges. Pass --calibration DIR (a folder of images, e.g. a few hundred from your own data; "
            f"calibration= in Python) and optionally --calibration-samples N (default {DEFAULT_CALIBRATION_SAMPLES})")
    if isinstance(calibration, np.ndarray):
        x = np.asarray(calibration, dtype=np.float32)
        if x.ndim < 2 or len(x) == 0:
            raise CalibrationError(f"calibration inputs must be a non-empty (N, ...) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise CalibrationError("calibration inputs hold NaN or infinite values")
        return np.ascontiguousarray(x[:n])
    if isinstance(calibration, (str, os.PathLike)):
        return calibration_from_folder(calibration, model_preprocess_config(model), n)
    raise CalibrationError(
        f"calibration must be a folder of images or an (N, C, H, W) array, got {type(calibration).__name__}")


def batches(calibration: np.ndarray, batch: int = 1) -> list[np.ndarray]:
    """The calibration inputs cut into arrays of ``batch`` samples (the export batch)."""
    return [calibration[i : i + batch] for i in range(0, len(calibration) - batch + 1, batch)]


#: scikit-image photos for calibrating when no data is given to a benchmark or a measuring
#: script (none of them is among the validation photos, ``staredge.exporters.validate.PHOTOS``).
CALIBRATION_PHOTOS = ("cat", "coins", "moon", "page", "retina", "text", "clock", "grass", "gravel", "brick")


def photo_calibration(model: Any, samples: int | None = None) -> np.ndarray:
    """Calibration inputs from :data:`CALIBRATION_PHOTOS` and their mirror images, prepared with
    the model's preprocessing (up to ``samples``). For timing int8 artifacts of models without
    data of their own (``staredge bench``); real deployments calibrate on their own images.
    Raises :class:`CalibrationError` when scikit-image (the ``dev`` extra) is not installed.
    """
    from staredge.exporters.validate import photo_inputs

    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        model_preprocess_config(model)  # raises the CalibrationError that explains it
    photos, _ = photo_inputs(cfg, CALIBRATION_PHOTOS)
    if len(photos) == 0:
        raise CalibrationError(
            "no calibration data: the fallback photos need scikit-image (pip install staredge[dev]); pass "
            "--calibration DIR (a folder of images)")
    x = np.concatenate([photos, photos[..., ::-1]]).astype(np.float32)
    return np.ascontiguousarray(x if samples is None else x[: max(1, int(samples))])
