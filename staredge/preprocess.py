"""Image preprocessing from artifact metadata, with Pillow and numpy only.

The pipeline is the one the model was trained with (timm's eval transform): resize so the
shorter side is ``floor(H / crop_pct)`` with the configured interpolation (bicubic by
default), centre-crop to (H, W), scale to [0, 1] and normalise with ``mean``/``std``.
It needs no torchvision (there is no CPU build of it here) and matches a PyTorch
reference to within 1e-6 (``tests/test_preprocess.py``).

Inputs are made safe before any pixel is decoded: EXIF orientation is applied, grey,
palette, RGBA, CMYK and 16-bit images are converted to the channels the model expects,
and images over a pixel limit (decompression bombs) are refused from their header.

Limits (each names itself in its error, see docs/security.md): ``max_pixels`` (decoded
size, checked from the header before decoding), :data:`DEFAULT_MAX_ASPECT_RATIO` (longer
side / shorter side) and :data:`MAX_RESIZE_PIXELS` (the size the resize step would
produce, checked before it allocates). Damaged files of any kind raise
:class:`ImageInputError`, never one of Pillow's own exceptions.
"""

from __future__ import annotations

import errno
import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from staredge.errors import ConfigError, StarEdgeError

#: Default pixel limit (width * height) of one decoded image: Pillow's own default
#: warning threshold, ~89.5 megapixels (a 3 x 8-bit image of that size is ~270 MB).
DEFAULT_MAX_PIXELS = 89_478_485

#: Default limit of an image's aspect ratio (longer side / shorter side). A 1 x 100000
#: strip is under the pixel limit but would become 256 x 25.6 M pixels when its shorter
#: side is resized; it is refused from the header instead. Pass ``max_aspect_ratio=None``
#: to :func:`preprocess` to switch this check off (the resize limit below still applies).
DEFAULT_MAX_ASPECT_RATIO = 100.0

#: Largest image (width * height) the resize step may produce: 16.8 M pixels (4096 x 4096,
#: ~50 MB as RGB). Checked before resizing, so a tall strip or metadata asking for a huge
#: input size ends in :class:`ImageInputError` naming this limit, not in ``MemoryError``.
#: Module-level so a trusted application can raise it.
MAX_RESIZE_PIXELS = 4096 * 4096

#: Longest input side (H or W) a :class:`PreprocessConfig` accepts from metadata.
MAX_INPUT_SIDE = 4096

#: What Pillow's decoders raise for damaged or hostile files (found by fuzzing every
#: format Pillow opens: truncated chunks, bad offsets, bad tables, oversize text chunks).
#: They are turned into :class:`ImageInputError`; anything else is a bug and propagates.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, IndexError, KeyError, TypeError, EOFError,
                  struct.error, zlib.error, ZeroDivisionError, OverflowError, AttributeError)

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageInputError(StarEdgeError, ValueError):
    """An image cannot be read or used: not an image, empty, truncated, too large, bad array."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What :func:`preprocess` does; built from an artifact's metadata by :meth:`from_metadata`."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    #: When True the artifact scales and normalises itself: it gets float32 pixels in 0..255.
    pixels_in_model: bool = False

    def __post_init__(self) -> None:
        if (not isinstance(self.input_size, tuple) or len(self.input_size) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.input_size)):
            raise ConfigError(f"input_size must be a tuple of 3 integers (C, H, W), got {self.input_size!r}")
        c, h, w = self.input_size
        if c not in (1, 3) or h < 1 or w < 1:
            raise ConfigError(f"input_size must be (1 or 3, H, W), got {self.input_size}")
        if h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
            raise ConfigError(
                f"input_size {self.input_size} is over the limit of {MAX_INPUT_SIDE} pixels per side "
                f"(MAX_INPUT_SIDE); re-export the model with a smaller input size")
        if not isinstance(self.crop_pct, (int, float)) or isinstance(self.crop_pct, bool):
            raise ConfigError(f"crop_pct must be a number, got {self.crop_pct!r}")
        if not (0.0 < self.crop_pct <= 4.0):
            raise ConfigError(f"crop_pct must be in (0, 4], got {self.crop_pct}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation '{self.interpolation}'; use one of {sorted(_INTERPOLATIONS)}"
            )
        if (len(self.mean) != c or len(self.std) != c
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (*self.mean, *self.std))
                or any(s <= 0 for s in self.std)):
            raise ConfigError(f"mean/std must have {c} finite entries (std > 0), got {self.mean} / {self.std}")

    @classmethod
    def from_metadata(cls, metadata: Any) -> "PreprocessConfig":
        """The config an :class:`~staredge.metadata.ArtifactMetadata` describes.

        Metadata whose values are not numbers of the right shape (``input_size='abc'``,
        ``crop_pct='big'``) raises :class:`~staredge.metadata.MetadataError`.
        """
        from staredge.metadata import MetadataError

        try:
            pre = dict(metadata.preprocessing or {})
            size = metadata.input_size
            if isinstance(size, (str, bytes)) or len(size) != 3:
                raise ValueError(f"input_size must be 3 integers (C, H, W), got {size!r}")
            input_size = tuple(_metadata_int(v) for v in size)
            c = input_size[0]
            default_mean = (0.485, 0.456, 0.406) if c == 3 else (0.5,)
            default_std = (0.229, 0.224, 0.225) if c == 3 else (0.5,)
            crop_pct = pre.get("crop_pct", 0.875)
            if isinstance(crop_pct, (str, bytes, bool)):
                raise ValueError(f"crop_pct must be a number, got {crop_pct!r}")
            mean, std = pre.get("mean", default_mean), pre.get("std", default_std)
            if isinstance(mean, (str, bytes)) or isinstance(std, (str, bytes)):
                raise ValueError(f"mean/std must be lists of numbers, got {mean!r} / {std!r}")
            return cls(
                input_size=input_size,
                crop_pct=float(crop_pct),
                interpolation=str(pre.get("interpolation", "bicubic")),
                mean=tuple(float(v) for v in mean),
                std=tuple(float(v) for v in std),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            # ConfigError is a ValueError too: re-raise it as what it is, bad metadata
            raise MetadataError(
                f"the artifact's preprocessing metadata is invalid ({exc}); re-export the model with "
                f"staredge export") from exc

    @property
    def resize_size(self) -> int | tuple[int, int]:
        """Target of the resize step: the shorter side (int) or the exact (H, W)."""
        _, h, w = self.input_size
        if h == w:
            return math.floor(h / self.crop_pct)
        return (math.floor(h / self.crop_pct), math.floor(w / self.crop_pct))


def _metadata_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise ValueError(f"input_size values must be integers, got {v!r}")
    return int(v)


# ----------------------------------------------------------------------------- reading


def open_image(source: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_aspect_ratio: float | None = None) -> Image.Image:
    """A decoded PIL image from a path, bytes, a file object, a PIL image or an HWC uint8 array.

    EXIF orientation is applied. Raises :class:`ImageInputError` (with what to do) for a
    missing or empty file, bytes that are not an image, a truncated or damaged image, an
    image over ``max_pixels`` (checked from the header, before decoding), an image with no
    pixels, a closed file object or an unusable array. With ``max_aspect_ratio`` an image
    more elongated than that is refused from its header too.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "image")
        check_aspect_ratio(source.size, max_aspect_ratio)
        try:
            return ImageOps.exif_transpose(source)
        except _DECODE_ERRORS as exc:
            raise ImageInputError(f"the PIL image cannot be used ({type(exc).__name__}: {exc})") from exc
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_aspect_ratio((source.shape[1], source.shape[0]), max_aspect_ratio, "image array")
        return _array_to_image(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageInputError("the image bytes are empty (0 bytes); pass the contents of an image file")
        return _decode(io.BytesIO(data), "<bytes>", max_pixels, max_aspect_ratio)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        st = _stat_image_path(path)
        import stat as _stat

        if _stat.S_ISDIR(st.st_mode):
            raise ImageInputError(f"{path} is a directory; pass image files (e.g. {path}/*.jpg)")
        if st.st_size == 0:
            raise ImageInputError(f"image file is empty (0 bytes): {path}; re-copy or re-download it")
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise ImageInputError(f"cannot open image {_short(path)}: {exc.strerror or exc}; check its permissions") from exc
        with fh:
            return _decode(fh, str(path), max_pixels, max_aspect_ratio)
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        if getattr(source, "closed", False):
            raise ImageInputError(f"the file object {_short(name)} is closed; pass an open file (opened with 'rb')")
        if hasattr(source, "mode") and isinstance(source.mode, str) and "b" not in source.mode:
            raise ImageInputError(f"the file object {_short(name)} is open in text mode; open it with 'rb'")
        return _decode(source, name, max_pixels, max_aspect_ratio)
    raise ImageInputError(
        f"cannot use an object of type {type(source).__name__} as an image; pass a path, bytes, "
        f"a PIL image or an HWC uint8 numpy array"
    )


def _short(name: Any, limit: int = 200) -> str:
    """A path or name cut to ``limit`` characters for messages (a 5000-character path would
    drown the message)."""
    text = str(name)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text)} characters)"


def _stat_image_path(path: Path) -> os.stat_result:
    """``os.stat`` of an image path, every failure an :class:`ImageInputError` saying why."""
    try:
        return path.stat()
    except FileNotFoundError as exc:
        raise ImageInputError(f"image not found: {_short(path)}; check the path") from exc
    except ValueError as exc:  # embedded NUL byte
        raise ImageInputError(f"image path {_short(repr(str(path)))} is not a valid path ({exc})") from exc
    except OSError as exc:
        reasons = {
            errno.ENAMETOOLONG: "the path (or one of its parts) is longer than the file system allows",
            errno.ELOOP: "it is a symbolic link loop (a link that points back to itself)",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EACCES: "permission denied",
        }
        why = reasons.get(exc.errno, exc.strerror or str(exc))
        raise ImageInputError(f"cannot read image {_short(path)}: {why}; check the path") from exc


def _check_pixels(size: tuple[int, int], max_pixels: int | None, what: str) -> None:
    if size[0] < 1 or size[1] < 1:
        raise ImageInputError(f"{_short(what)} has no pixels (size {size[0]}x{size[1]}); pass a non-empty image")
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageInputError(
            f"{what} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the limit of "
            f"{max_pixels:,} (a guard against decompression bombs); downscale it first, or pass "
            f"a larger max_pixels if you trust the file"
        )


def _decode(fh: Any, name: str, max_pixels: int | None, max_aspect_ratio: float | None = None) -> Image.Image:
    name = _short(name)
    try:
        img = Image.open(fh)
    except UnidentifiedImageError as exc:
        raise ImageInputError(
            f"{name} is not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP ...); check the file"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageInputError(
            f"{name} is over Pillow's decompression-bomb limit ({exc}); downscale it first"
        ) from exc
    except _DECODE_ERRORS as exc:
        if "MAX_TEXT" in str(exc):
            raise ImageInputError(
                f"{name} holds a text chunk that decompresses past Pillow's limit "
                f"(PngImagePlugin.MAX_TEXT_CHUNK / MAX_TEXT_MEMORY; {exc}); strip its metadata, e.g. re-save it"
            ) from exc
        raise ImageInputError(
            f"{name} is truncated or damaged: its header cannot be read ({type(exc).__name__}: {exc}); "
            f"re-copy or re-download it") from exc
    # Image.open reads only the header: refuse huge images before decoding a single pixel.
    _check_pixels(img.size, max_pixels, name)
    check_aspect_ratio(img.size, max_aspect_ratio, name)
    try:
        img.load()
        return ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        raise ImageInputError(
            f"{name} is truncated or corrupt ({type(exc).__name__}: {exc}); re-copy or re-download it") from exc


def _array_to_image(arr: np.ndarray, max_pixels: int | None) -> Image.Image:
    if arr.dtype != np.uint8:  # also refuses object, bool and float arrays
        raise ImageInputError(
            f"image arrays must be uint8 HWC (0..255), got dtype {arr.dtype}; convert with "
            f"np.clip(a, 0, 255).astype(np.uint8), or call predict() for preprocessed float input"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageInputError(
            f"image arrays must be HxW, HxWx1, HxWx3 or HxWx4 uint8, got shape {arr.shape}; "
            f"a CHW array needs arr.transpose(1, 2, 0)"
        )
    _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, "image array")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


# ----------------------------------------------------------------------------- conversion


def to_channels(img: Image.Image, channels: int = 3) -> Image.Image:
    """``img`` as 8-bit RGB (``channels=3``) or L (``channels=1``).

    16-bit and 32-bit grey images are scaled to 8 bits by their full range (not clipped);
    transparent images (RGBA, LA, palette with transparency) are composited over white,
    so transparent pixels do not carry whatever colour the file stored under them;
    CMYK, YCbCr, LAB, HSV and 1-bit images go through Pillow's own conversions.
    """
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)  # damaged float images
        if mode == "F":
            hi = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
            a = a / hi * 255.0
        elif mode == "I" and a.max(initial=0) <= 255:
            pass  # 8-bit data stored as 32-bit ints
        else:
            a = a / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
        mode = img.mode
    want = "RGB" if channels == 3 else "L"
    return img if mode == want else img.convert(want)


# ----------------------------------------------------------------------------- geometry


def resize_target(image_size: tuple[int, int], size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) that :func:`resize_shorter` resizes an image of ``image_size`` (W, H) to.

    Raises :class:`ImageInputError` for an image without pixels or a result over
    :data:`MAX_RESIZE_PIXELS` (checked before anything is allocated).
    """
    w, h = image_size
    if w < 1 or h < 1:
        raise ImageInputError(f"the image has no pixels (size {w}x{h}); pass a non-empty image")
    if isinstance(size, tuple):
        new_h, new_w = size
    elif w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_h, new_w = size, int(size * w / h)
    if new_w * new_h > MAX_RESIZE_PIXELS:
        raise ImageInputError(
            f"resizing this {w}x{h} image so its shorter side is {size} would make it {new_w}x{new_h} = "
            f"{new_w * new_h:,} pixels, over the limit of {MAX_RESIZE_PIXELS:,} (MAX_RESIZE_PIXELS); "
            f"crop the image to a less elongated shape first")
    return new_w, new_h


def resize_shorter(img: Image.Image, size: int | tuple[int, int], interpolation: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size`` (aspect kept), or to exactly (H, W) for a tuple.

    The longer side is ``int(size * long / short)``, as torchvision's ``Resize`` computes it.
    The result is limited to :data:`MAX_RESIZE_PIXELS` (see :func:`resize_target`).
    """
    resample = _INTERPOLATIONS[interpolation]
    w, h = img.size
    new_w, new_h = resize_target((w, h), size)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample=resample)


def center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop of an HWC array to (height, width), zero-padding first if it is smaller.

    Offsets are ``round((H - height) / 2)`` as torchvision's ``CenterCrop`` takes them.
    """
    h, w = arr.shape[:2]
    if h < height or w < width:
        pad_top = (height - h) // 2 if h < height else 0
        pad_left = (width - w) // 2 if w < width else 0
        pad = [(pad_top, max(height - h - pad_top, 0)), (pad_left, max(width - w - pad_left, 0))]
        arr = np.pad(arr, pad + [(0, 0)] * (arr.ndim - 2))
        h, w = arr.shape[:2]
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return arr[top : top + height, left : left + width]


# ----------------------------------------------------------------------------- pipeline


def check_aspect_ratio(size: tuple[int, int], max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO,
                       what: str = "image") -> None:
    """Raise :class:`ImageInputError` if ``size`` (W, H) is more elongated than ``max_aspect_ratio``."""
    w, h = size
    if w < 1 or h < 1:
        raise ImageInputError(f"{_short(what)} has no pixels (size {w}x{h}); pass a non-empty image")
    if max_aspect_ratio is not None and max(w, h) / min(w, h) > max_aspect_ratio:
        raise ImageInputError(
            f"{_short(what)} is {w}x{h}, an aspect ratio of {max(w, h) / min(w, h):.1f}:1, over the limit of "
            f"{max_aspect_ratio:g}:1 (max_aspect_ratio; resizing its shorter side would blow up the longer "
            f"one); crop it first, or pass a larger max_aspect_ratio")


def preprocess(img: Any, config: PreprocessConfig, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO) -> np.ndarray:
    """One image (path, bytes, PIL image or HWC uint8 array) → float32 array (C, H, W).

    Normalised floats, or raw 0..255 pixel values when ``config.pixels_in_model``.
    Images over ``max_pixels`` or more elongated than ``max_aspect_ratio`` are refused
    before they are decoded or resized (:class:`ImageInputError`; None switches a limit off).
    """
    c, h, w = config.input_size
    opened = open_image(img, max_pixels, max_aspect_ratio)
    resize_target(opened.size, config.resize_size)  # the resize's size limit, before converting
    try:
        pil = to_channels(opened, c)
    except _DECODE_ERRORS as exc:
        raise ImageInputError(
            f"an image in mode {opened.mode!r} cannot be converted to {'RGB' if c == 3 else 'grey'} "
            f"({type(exc).__name__}: {exc}); convert it to RGB first") from exc
    pil = resize_shorter(pil, config.resize_size, config.interpolation)
    arr = np.asarray(pil, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = center_crop(arr, h, w)
    x = arr.transpose(2, 0, 1).astype(np.float32)
    if config.pixels_in_model:
        # the artifact scales and normalises itself (e.g. a CoreML image input): raw 0..255
        return np.ascontiguousarray(x)
    # Same operation order and dtype as ToTensor + Normalize, so results agree to ~1 ulp.
    x = x / np.float32(255.0)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(-1, 1, 1)
    x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_batch(
    images: Sequence[Any], config: PreprocessConfig, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO,
) -> np.ndarray:
    """Several images → float32 array (N, C, H, W)."""
    if len(images) == 0:
        raise ImageInputError("no images given; pass at least one image")
    return np.stack([preprocess(im, config, max_pixels, max_aspect_ratio) for im in images])
