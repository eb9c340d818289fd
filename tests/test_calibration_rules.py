"""Calibration folder rules (issue 23): what int8 calibration takes from a folder, what it
skips (counted by reason), when it refuses, and that it says so on the terminal.

Every case here used to be accepted silently: a 1-pixel image, a decompression bomb beside one
good image, a folder of mostly bad files, huge folders, odd image modes, a sample count of 1e9.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import _fuzz_seeds as S
from staredge.exporters import quantize as Q
from staredge.exporters.quantize import CalibrationError, calibration_from_folder, resolve_calibration
from staredge.preprocess import PreprocessConfig

CFG = PreprocessConfig(input_size=(3, 16, 16))


def _photo(path, size=(40, 30), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size[1], size[0])).astype(np.uint16))
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def _bomb_png(path, side=30_000):
    """A tiny PNG whose header claims side x side pixels (the IHDR is rewritten, CRC fixed)."""
    base = S.strip_png(8, 8)
    ihdr = bytearray(base[16:29])
    struct.pack_into(">II", ihdr, 0, side, side)
    chunk = struct.pack(">I", 13) + b"IHDR" + bytes(ihdr) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    path.write_bytes(base[:8] + chunk + base[33:])
    return path


def _good(folder, n, start=0):
    for i in range(n):
        _photo(folder / f"good{start + i:03d}.png", seed=start + i)


def test_a_decompression_bomb_beside_one_good_image_is_refused(tmp_path):
    _bomb_png(tmp_path / "bomb.png")
    _good(tmp_path, 1)
    with pytest.raises(CalibrationError, match=r"1 usable image\(s\) of 2 tried.*minimum of 8.*max_pixels") as info:
        calibration_from_folder(tmp_path, CFG, 128)
    assert "bomb.png" in str(info.value)


def test_bombs_and_tiny_images_are_skipped_and_counted(tmp_path, capsys):
    _good(tmp_path, 9)
    _bomb_png(tmp_path / "bomb.png")
    _photo(tmp_path / "one_pixel.png", size=(1, 1))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    x = calibration_from_folder(tmp_path, CFG, 128)
    assert x.shape == (9, 3, 16, 16)
    err = capsys.readouterr().err
    assert "calibration: 9 image(s)" in err and "skipped 3" in err
    assert "1 too small" in err and "1 over max_pixels" in err and "1 unreadable or damaged" in err


def test_a_folder_of_mostly_bad_files_is_refused_with_reasons(tmp_path):
    _good(tmp_path, 1)
    for i in range(20):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]) * 40)
    with pytest.raises(CalibrationError, match=r"1 usable image\(s\) of 21 tried.*skipped 20 \(20 unreadable"):
        calibration_from_folder(tmp_path, CFG, 128)


def test_the_one_pixel_image_alone_is_refused(tmp_path):
    _photo(tmp_path / "dot.png", size=(1, 1))
    with pytest.raises(CalibrationError, match="too small"):
        calibration_from_folder(tmp_path, CFG, 1)


@pytest.mark.parametrize("mode, word", [("L", "grey"), ("CMYK", "CMYK"), ("I;16", "16-bit"), ("RGBA", "transparent"),
                                        ("P", "palette")])
def test_odd_modes_are_converted_like_the_predictor_and_counted(tmp_path, capsys, mode, word):
    from staredge.preprocess import preprocess

    suffix = ".jpg" if mode == "CMYK" else ".png"
    for i in range(8):
        _photo(tmp_path / f"img{i}{suffix}", mode=mode, seed=i)
    x = calibration_from_folder(tmp_path, CFG, 128)
    assert x.shape == (8, 3, 16, 16) and np.isfinite(x).all()
    np.testing.assert_array_equal(x[0], preprocess(str(tmp_path / f"img0{suffix}"), CFG))  # the one preprocessing
    assert f"8 {word}" in capsys.readouterr().err


def test_a_huge_folder_is_cut_at_the_listing_cap(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Q, "MAX_CALIBRATION_FILES", 40)  # stands for 100,000 tiny files
    _good(tmp_path, 12)
    for i in range(100):
        (tmp_path / f"z{i:03d}.txt").write_text("x")
    files, cut = Q.list_images(tmp_path)
    assert cut and len(files) == 12
    x = calibration_from_folder(tmp_path, CFG, 128)
    assert len(x) == 12
    assert "MAX_CALIBRATION_FILES" in capsys.readouterr().err
    # the cut is deterministic: sorted, so the same files every time
    assert Q.list_images(tmp_path)[0] == files


def test_a_huge_sample_count_is_capped_with_a_notice(tmp_path, capsys):
    from staredge.models import create

    assert Q.calibration_count(10**9) == Q.MAX_CALIBRATION_SAMPLES
    assert "MAX_CALIBRATION_SAMPLES" in capsys.readouterr().err
    for bad in (1e9, "1e9", 0, -3, True, 2.5):
        with pytest.raises(CalibrationError, match="positive integer"):
            Q.calibration_count(bad)
    model = create("starnet_s050")
    arr = np.zeros((3, 3, 224, 224), np.float32)
    assert len(resolve_calibration(model, arr, 10**9)) == 3
    assert "using 4,096" in capsys.readouterr().err


def test_bench_calibration_follows_the_same_rules(tmp_path):
    from staredge.bench.artifacts import calibration_for
    from staredge.models import create

    model = create("starnet_s050")
    _bomb_png(tmp_path / "bomb.png")
    _good(tmp_path, 1)
    with pytest.raises(CalibrationError, match="minimum of 8"):
        calibration_for(model, str(tmp_path))
    with pytest.raises(CalibrationError, match="positive integer"):
        calibration_for(model, None, samples=1e9)
