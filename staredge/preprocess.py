"""Image preprocessing from artifact metadata, with Pillow and numpy only.

The pipeline is the one the model was trained with (timm's eval transform): resize so the
shorter side is ``floor(H / crop_pct)`` with the configured interpolation (bicubic by
default), centre-crop to (H, W), scale to [0, 1] and normalise with ``mean``/``std``.
It needs no torchvision (there is no CPU build of it here) and matches a PyTorch
reference to within 1e-6 (``tests/test_preprocess.py``).

Inputs are made safe before any pixel is decoded: EXIF orientation is applied, grey,
palette, RGBA, CMYK and 16-bit images are converted to the channels the model expects,
and images over a pixel limit (decompression bombs) are refused from their header.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from staredge.errors import ConfigError, StarEdgeError

#: Default pixel limit (width * height) of one decoded image: Pillow's own default
#: warning threshold, ~89.5 megapixels (a 3 x 8-bit image of that size is ~270 MB).
DEFAULT_MAX_PIXELS = 89_478_485

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
        c, h, w = self.input_size
        if c not in (1, 3) or h < 1 or w < 1:
            raise ConfigError(f"input_size must be (1 or 3, H, W), got {self.input_size}")
        if not (0.0 < self.crop_pct <= 4.0):
            raise ConfigError(f"crop_pct must be in (0, 4], got {self.crop_pct}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation '{self.interpolation}'; use one of {sorted(_INTERPOLATIONS)}"
            )
        if len(self.mean) != c or len(self.std) != c or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean/std must have {c} entries (std > 0), got {self.mean} / {self.std}")

    @classmethod
    def from_metadata(cls, metadata: Any) -> "PreprocessConfig":
        """The config an :class:`~staredge.metadata.ArtifactMetadata` describes."""
        pre = dict(metadata.preprocessing or {})
        c = int(metadata.input_size[0])
        default_mean = (0.485, 0.456, 0.406) if c == 3 else (0.5,)
        default_std = (0.229, 0.224, 0.225) if c == 3 else (0.5,)
        return cls(
            input_size=tuple(int(v) for v in metadata.input_size),
            crop_pct=float(pre.get("crop_pct", 0.875)),
            interpolation=str(pre.get("interpolation", "bicubic")),
            mean=tuple(float(v) for v in pre.get("mean", default_mean)),
            std=tuple(float(v) for v in pre.get("std", default_std)),
            pixels_in_model=bool(getattr(metadata, "pixels_in_model", False)),
        )

    @property
    def resize_size(self) -> int | tuple[int, int]:
        """Target of the resize step: the shorter side (int) or the exact (H, W)."""
        _, h, w = self.input_size
        if h == w:
            return math.floor(h / self.crop_pct)
        return (math.floor(h / self.crop_pct), math.floor(w / self.crop_pct))


# ----------------------------------------------------------------------------- reading


def open_image(source: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A decoded PIL image from a path, bytes, a file object, a PIL image or an HWC uint8 array.

    EXIF orientation is applied. Raises :class:`ImageInputError` (with what to do) for a
    missing or empty file, bytes that are not an image, a truncated image, an image over
    ``max_pixels`` (checked from the header, before decoding) or an unusable array.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "image")
        return ImageOps.exif_transpose(source)
    if isinstance(source, np.ndarray):
        return _array_to_image(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageInputError("the image bytes are empty (0 bytes); pass the contents of an image file")
        return _decode(io.BytesIO(data), "<bytes>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageInputError(f"image not found: {path}; check the path")
        if path.is_dir():
            raise ImageInputError(f"{path} is a directory; pass image files (e.g. {path}/*.jpg)")
        if path.stat().st_size == 0:
            raise ImageInputError(f"image file is empty (0 bytes): {path}; re-copy or re-download it")
        with open(path, "rb") as fh:
            return _decode(fh, str(path), max_pixels)
    if hasattr(source, "read"):
        return _decode(source, getattr(source, "name", "<file object>"), max_pixels)
    raise ImageInputError(
        f"cannot use an object of type {type(source).__name__} as an image; pass a path, bytes, "
        f"a PIL image or an HWC uint8 numpy array"
    )


def _check_pixels(size: tuple[int, int], max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageInputError(
            f"{what} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the limit of "
            f"{max_pixels:,} (a guard against decompression bombs); downscale it first, or pass "
            f"a larger max_pixels if you trust the file"
        )


def _decode(fh: Any, name: str, max_pixels: int | None) -> Image.Image:
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
    # Image.open reads only the header: refuse huge images before decoding a single pixel.
    _check_pixels(img.size, max_pixels, name)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{name} is truncated or corrupt ({exc}); re-copy or re-download it") from exc
    return ImageOps.exif_transpose(img)


def _array_to_image(arr: np.ndarray, max_pixels: int | None) -> Image.Image:
    if arr.dtype != np.uint8:
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


def resize_shorter(img: Image.Image, size: int | tuple[int, int], interpolation: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size`` (aspect kept), or to exactly (H, W) for a tuple.

    The longer side is ``int(size * long / short)``, as torchvision's ``Resize`` computes it.
    """
    resample = _INTERPOLATIONS[interpolation]
    w, h = img.size
    if isinstance(size, tuple):
        new_h, new_w = size
    elif w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_h, new_w = size, int(size * w / h)
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


def preprocess(img: Any, config: PreprocessConfig, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image (path, bytes, PIL image or HWC uint8 array) → float32 array (C, H, W).

    Normalised floats, or raw 0..255 pixel values when ``config.pixels_in_model``.
    """
    c, h, w = config.input_size
    pil = to_channels(open_image(img, max_pixels), c)
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
    images: Sequence[Any], config: PreprocessConfig, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Several images → float32 array (N, C, H, W)."""
    if len(images) == 0:
        raise ImageInputError("no images given; pass at least one image")
    return np.stack([preprocess(im, config, max_pixels) for im in images])
