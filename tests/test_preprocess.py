"""Preprocessing: parity with a PyTorch reference, geometry, EXIF and colour-mode conversions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from staredge.preprocess import PreprocessConfig, open_image, preprocess, resize_shorter, to_channels

IMAGENET = PreprocessConfig()  # 224, crop_pct 0.875, bicubic, ImageNet mean/std


def _photo(name: str = "chelsea") -> Image.Image:
    """A real photo shipped inside scikit-image (no download)."""
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def _torch_reference(resized: Image.Image, cfg: PreprocessConfig) -> torch.Tensor:
    """timm's eval transform after the resize, written with torch ops (ToTensor, CenterCrop, Normalize)."""
    t = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    t = t.to(torch.float32).div(255.0)
    _, h, w = t.shape
    ch, cw = cfg.input_size[1:]
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    t = t[:, top : top + ch, left : left + cw]
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)
    return (t - mean) / std


@pytest.mark.parametrize(
    "name,size,crop_pct",
    [("chelsea", 224, 0.875), ("astronaut", 224, 0.95), ("coffee", 160, 1.0), ("rocket", 256, 0.9)],
)
def test_matches_torch_reference_within_1e6(name, size, crop_pct):
    img = _photo(name)
    cfg = PreprocessConfig(input_size=(3, size, size), crop_pct=crop_pct)
    ours = preprocess(img, cfg)
    # the resize the reference starts from: torchvision's rule for the shorter side
    short = math.floor(size / crop_pct)
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = img.resize(new, Image.Resampling.BICUBIC)
    ref = _torch_reference(resized, cfg).numpy()
    assert ours.shape == (3, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_portrait_and_odd_sizes_crop_like_torchvision():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(301, 157, 3), dtype=np.uint8)  # portrait, odd sides
    cfg = PreprocessConfig(input_size=(3, 64, 64), crop_pct=0.875)
    ours = preprocess(arr, cfg)
    resized = resize_shorter(Image.fromarray(arr), cfg.resize_size, "bicubic")
    assert resized.size == (73, int(73 * 301 / 157))  # shorter side floor(64 / 0.875) = 73
    np.testing.assert_allclose(ours, _torch_reference(resized, cfg).numpy(), rtol=0, atol=1e-6)


def test_path_pil_and_array_inputs_agree(tmp_path):
    img = _photo("coffee")
    path = tmp_path / "coffee.png"
    img.save(path)
    a = preprocess(path, IMAGENET)
    b = preprocess(img, IMAGENET)
    c = preprocess(np.asarray(img), IMAGENET)
    d = preprocess(path.read_bytes(), IMAGENET)
    for other in (b, c, d):
        np.testing.assert_array_equal(a, other)


def test_exif_orientation_is_applied(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(20, 40, 3), dtype=np.uint8)  # wide as stored
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif)
    shown = open_image(path)
    assert shown.size == (20, 40)  # displayed tall
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_grey_becomes_three_equal_channels():
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    rgb = np.asarray(to_channels(grey, 3))
    assert rgb.shape == (8, 8, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], np.asarray(grey))


def test_rgba_transparent_pixels_become_white():
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 200  # red under every pixel
    arr[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    out = np.asarray(to_channels(Image.fromarray(arr, mode="RGBA"), 3))
    np.testing.assert_array_equal(out[:2], np.broadcast_to([200, 0, 0], (2, 4, 3)))
    np.testing.assert_array_equal(out[2:], np.full((2, 4, 3), 255))


def test_palette_image_matches_its_rgb_version():
    img = _photo("astronaut").resize((64, 64)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    np.testing.assert_array_equal(np.asarray(to_channels(img, 3)), np.asarray(img.convert("RGB")))


def test_cmyk_is_converted_to_rgb(tmp_path):
    img = _photo("coffee").resize((48, 32)).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    img.save(path, quality=95)
    x = preprocess(path, PreprocessConfig(input_size=(3, 32, 32), crop_pct=1.0))
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert x.shape == (3, 32, 32)
    # the colour survives CMYK → RGB: the mean red level is the reference's, after normalisation
    red_ref = (ref[..., 0].mean() / 255 - 0.485) / 0.229
    assert abs(float(x[0].mean()) - red_ref) < 0.1


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 128], [65535, 257 * 64]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)  # a 16-bit greyscale PNG
    opened = open_image(path)
    assert opened.mode.startswith("I")
    out = np.asarray(to_channels(opened, 1))
    np.testing.assert_array_equal(out, np.array([[0, 128], [255, 64]], dtype=np.uint8))


def test_single_channel_models_get_grey_input():
    cfg = PreprocessConfig(input_size=(1, 16, 16), crop_pct=1.0, mean=(0.5,), std=(0.5,))
    x = preprocess(np.full((16, 16, 3), 255, dtype=np.uint8), cfg)
    assert x.shape == (1, 16, 16)
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_pixels_in_model_gets_raw_pixel_values():
    cfg = PreprocessConfig(input_size=(3, 8, 8), crop_pct=1.0, pixels_in_model=True)
    arr = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    x = preprocess(arr, cfg)
    np.testing.assert_array_equal(x, arr.transpose(2, 0, 1).astype(np.float32))
