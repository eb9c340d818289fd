"""Calibration data and labelled evaluation sets for low-precision (int8) artifacts.

int8 export needs calibration inputs: real images that show the quantiser the range of
every activation. They come from

* ``--calibration DIR``: image files under a folder, prepared by
  :func:`staredge.preprocess.preprocess` with the model's own preprocessing (exactly what the
  Predictor does to a photo), or an ``(N, C, H, W)`` float32 array of prepared inputs;
* for the trained digits model (``starnet_digits``), its own training split: the scikit-learn
  digits that are not in the shipped held-out split (:func:`digits_training_inputs`).

Asking for int8 without either is a :class:`CalibrationError` (a ``ConfigError``) that says
how to give some.

Rules for a calibration folder (issue 23; said on the terminal through
:func:`staredge.quiet.notice`, see docs/security.md):

* at most :data:`MAX_CALIBRATION_FILES` folder entries are listed (sorted, folder by folder);
  a larger folder is cut there with a notice;
* the sample count is at most :data:`MAX_CALIBRATION_SAMPLES` (a larger one is capped with a
  notice); from more images than that, an evenly spaced subset is taken (same files every time);
* each image is decoded by :mod:`staredge.preprocess` (the Predictor's own preprocessing, with
  its decompression-bomb and aspect-ratio limits). Images it refuses, and images smaller than
  :data:`MIN_CALIBRATION_SIDE` pixels on a side, are skipped and counted by reason;
  grey, 16-bit, CMYK, palette and transparent images are converted the way the Predictor
  converts them, and counted;
* fewer than ``min(MIN_CALIBRATION_IMAGES, samples)`` usable images is a
  :class:`CalibrationError` listing what was skipped and why. :func:`labelled_set` returns the held-out set a model is scored on (450
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
#: Most calibration samples (a larger request is capped with a notice: quantisers gain nothing
#: from more, and every sample is held in memory as float32).
MAX_CALIBRATION_SAMPLES = 4096
#: Most folder entries listed when looking for calibration images (the listing stops there).
MAX_CALIBRATION_FILES = 10_000
#: Fewest usable images a calibration folder must give (or the sample count, when smaller).
MIN_CALIBRATION_IMAGES = 8
#: Images with a shorter side below this many pixels are skipped (a 1-pixel image says
#: nothing about the activation ranges; the 8x8 digit scans are still taken).
MIN_CALIBRATION_SIDE = 8
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


def list_images(folder: str | os.PathLike) -> tuple[list[Path], bool]:
    """(image files under ``folder``, sorted; whether the listing stopped at
    :data:`MAX_CALIBRATION_FILES` entries). Folders are walked in sorted order, so the same
    files are found every time even when the listing is cut."""
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"calibration folder {root} does not exist or is not a folder")
    found: list[Path] = []
    seen = 0
    stack = [root]
    while stack:
        here = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue  # an unreadable sub-folder holds nothing we can use
        subdirs = []
        for entry in entries:
            seen += 1
            if seen > MAX_CALIBRATION_FILES:
                return sorted(found), True
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(Path(entry.path))
                elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    found.append(Path(entry.path))
            except OSError:
                continue
        stack.extend(reversed(subdirs))
    return sorted(found), False


def images_in(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted by path; at most what
    :data:`MAX_CALIBRATION_FILES` entries hold, see :func:`list_images`)."""
    return list_images(folder)[0]


def calibration_count(samples: Any) -> int:
    """The number of calibration samples to use: ``samples`` (a positive integer; None gives
    :data:`DEFAULT_CALIBRATION_SAMPLES`), capped at :data:`MAX_CALIBRATION_SAMPLES` with a notice."""
    n = DEFAULT_CALIBRATION_SAMPLES if samples is None else samples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CalibrationError(f"the calibration sample count (--calibration-samples) must be a positive integer, "
                               f"got {samples!r}")
    n = int(n)
    if n > MAX_CALIBRATION_SAMPLES:
        from staredge.quiet import notice

        notice(f"calibration: {n:,} samples asked for, using {MAX_CALIBRATION_SAMPLES:,} (MAX_CALIBRATION_SAMPLES)")
        n = MAX_CALIBRATION_SAMPLES
    return n


_MODE_WORDS = {"L": "grey", "1": "1-bit", "I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit",
               "I;16N": "16-bit", "I": "32-bit integer", "F": "32-bit float", "CMYK": "CMYK", "P": "palette",
               "RGBA": "transparent", "LA": "transparent", "PA": "transparent", "YCbCr": "YCbCr",
               "LAB": "LAB", "HSV": "HSV"}


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def calibration_from_folder(folder: str | os.PathLike, config: Any, samples: int) -> np.ndarray:
    """Up to ``samples`` images from ``folder`` prepared by the Predictor's preprocessing.

    Follows the folder rules in the module docstring: when the folder holds more images than
    ``samples``, an evenly spaced subset is taken (the same files every time); unusable
    images are skipped and counted by reason; one notice line says what was used, skipped
    and converted. Raises :class:`CalibrationError` when fewer than
    ``min(MIN_CALIBRATION_IMAGES, samples)`` images are usable.
    """
    from staredge.preprocess import DEFAULT_MAX_ASPECT_RATIO, ImageInputError, open_image, preprocess
    from staredge.quiet import notice

    samples = calibration_count(samples)
    files, cut = list_images(folder)
    if cut:
        notice(f"calibration: {folder} has more than {MAX_CALIBRATION_FILES:,} entries; only the first "
               f"{MAX_CALIBRATION_FILES:,} were listed (MAX_CALIBRATION_FILES)")
    if not files:
        raise CalibrationError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); put a few hundred "
            f"representative photos there")
    if len(files) > samples:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, samples)]
    arrays: list[np.ndarray] = []
    skipped: dict[str, int] = {}
    examples: list[str] = []
    converted: dict[str, int] = {}
    for f in files:
        try:
            img = open_image(str(f), max_aspect_ratio=DEFAULT_MAX_ASPECT_RATIO)  # limits from the header
            if min(img.size) < MIN_CALIBRATION_SIDE:
                raise ImageInputError(f"{img.size[0]}x{img.size[1]} pixels is smaller than MIN_CALIBRATION_SIDE="
                                      f"{MIN_CALIBRATION_SIDE}")
            mode = _MODE_WORDS.get(img.mode)
            arrays.append(preprocess(img, config))
        except ImageInputError as exc:
            text = str(exc)
            why = ("too small" if "MIN_CALIBRATION_SIDE" in text else "over max_pixels (decompression-bomb guard)"
                   if "max_pixels" in text or "decompression" in text else "too elongated" if "aspect" in text else "unreadable or damaged")
            skipped[why] = skipped.get(why, 0) + 1
            if len(examples) < 3:
                examples.append(f"{f.name}: {text[:200]}")
            continue
        if mode is not None:
            converted[mode] = converted.get(mode, 0) + 1
    need = min(MIN_CALIBRATION_IMAGES, samples)
    n_skipped = sum(skipped.values())
    if len(arrays) < need:
        raise CalibrationError(
            f"calibration folder {folder} gave {len(arrays)} usable image(s) of {len(files)} tried, fewer than the "
            f"minimum of {need} (MIN_CALIBRATION_IMAGES); skipped {n_skipped} ({_counted(skipped)}), e.g. "
            f"{'; '.join(examples)}. Put representative photos there")
    line = f"calibration: {len(arrays)} image(s) from {folder}"
    if n_skipped:
        line += f"; skipped {n_skipped} ({_counted(skipped)})"
    if converted:
        line += f"; converted the way the Predictor does: {_counted(converted)}"
    notice(line)
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
    n = calibration_count(samples)
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

    samples = None if samples is None else calibration_count(samples)
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        model_preprocess_config(model)  # raises the CalibrationError that explains it
    photos, _ = photo_inputs(cfg, CALIBRATION_PHOTOS)
    if len(photos) == 0:
        raise CalibrationError(
            "no calibration data: the fallback photos need scikit-image (pip install staredge[dev]); pass "
            "--calibration DIR (a folder of images)")
    x = np.concatenate([photos, photos[..., ::-1]]).astype(np.float32)
    return np.ascontiguousarray(x if samples is None else x[:samples])
