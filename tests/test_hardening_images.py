"""Hardening (issue 16): every damaged or hostile image is an ImageInputError, and every size
limit is checked before anything of that size is allocated.

The reproducers live in tests/fuzz_corpus/images/ (see its README); the fuzz test mutates
small valid images of every format Pillow reads here, with a fixed seed and a bounded count.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import _fuzz_seeds as S
from staredge.errors import ConfigError, StarEdgeError
from staredge.preprocess import (
    DEFAULT_MAX_ASPECT_RATIO,
    MAX_INPUT_SIDE,
    ImageInputError,
    PreprocessConfig,
    open_image,
    preprocess,
    resize_target,
)

# Pillow warns about every damaged tag it skips; the tests look at what is raised, not warned
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CORPUS = Path(__file__).parent / "fuzz_corpus" / "images"
SMALL = PreprocessConfig(input_size=(3, 32, 32))

# Each reproducer and the words its message must contain (what went wrong, in the user's terms).
EXPECTED = {
    "apng_truncated_acTL.png": "truncated or damaged",
    "apng_truncated_fcTL.png": "truncated or damaged",
    "bmp_huge_offset.bmp": "truncated or corrupt",
    "gif_truncated.gif": "not an image",
    "ico_truncated.ico": "truncated",
    "jpeg_truncated.jpg": "truncated",
    "not_a_tiff.tif": "not an image",
    "tiff_bad_offsets.tif": "not an image",
    "truncated_IHDR.png": "truncated or damaged",
    "truncated_cHRM.png": "truncated or damaged",
    "truncated_file_read.png": "truncated or damaged",
    "truncated_gAMA.png": "truncated or damaged",
    "truncated_pHYs.png": "truncated or damaged",
    "webp_truncated.webp": "truncated or damaged",
    "ztxt_50MB.png": "MAX_TEXT_CHUNK",
    "strip_100000x1.png": "aspect ratio of 100000.0:1",
    "strip_1x100000.png": "aspect ratio of 100000.0:1",
    "fuzz_SyntaxError_1603.bin": "truncated or corrupt",
    "fuzz_SyntaxError_1617.bin": "truncated or corrupt",
    "fuzz_SyntaxError_2239.bin": "truncated or corrupt",
}


def test_corpus_is_complete():
    on_disk = {p.name for p in CORPUS.iterdir()}
    # every reproducer has an expectation (or is one of the two that decode fine, below)
    assert on_disk - set(EXPECTED) == {"jpeg_bad_exif.jpg", "truncated_tRNS.png"}
    assert set(EXPECTED) <= on_disk


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_image_is_a_typed_error(name):
    data = (CORPUS / name).read_bytes()
    for source in (data, CORPUS / name, io.BytesIO(data)):
        with pytest.raises(ImageInputError, match=EXPECTED[name]):
            preprocess(source, SMALL)


@pytest.mark.parametrize("name", ["jpeg_bad_exif.jpg", "truncated_tRNS.png"])
def test_corpus_images_that_decode_give_a_normal_result(name):
    out = preprocess(CORPUS / name, SMALL)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and np.isfinite(out).all()


def test_limits_name_themselves_and_can_be_raised():
    with pytest.raises(ImageInputError, match="max_aspect_ratio"):
        preprocess(np.zeros((1000, 5, 3), np.uint8), SMALL)
    # 200:1 is over the default limit, fine with a larger one
    assert DEFAULT_MAX_ASPECT_RATIO < 200
    out = preprocess(np.zeros((1000, 5, 3), np.uint8), SMALL, max_aspect_ratio=250)
    assert out.shape == (3, 32, 32)
    # with the aspect check off, the resize limit still holds (checked before resizing)
    with pytest.raises(ImageInputError, match="MAX_RESIZE_PIXELS"):
        preprocess(S.strip_png(1, 100000), PreprocessConfig(), max_aspect_ratio=None)
    with pytest.raises(ImageInputError, match="MAX_RESIZE_PIXELS"):
        resize_target((1, 100000), 256)
    assert resize_target((640, 480), 256) == (341, 256)


@pytest.mark.parametrize("shape", [(0, 0, 3), (10, 0, 3), (0, 10), (0, 5, 4)])
def test_zero_size_arrays(shape):
    with pytest.raises(ImageInputError, match="no pixels"):
        preprocess(np.zeros(shape, np.uint8), SMALL)


def test_tall_array_is_refused_before_resizing():
    with pytest.raises(ImageInputError, match="aspect ratio"):
        preprocess(np.zeros((100000, 1, 3), np.uint8), SMALL)


def test_zero_size_pil_image():
    with pytest.raises(ImageInputError, match="no pixels"):
        preprocess(Image.new("RGB", (0, 0)), SMALL)


def test_closed_and_text_mode_file_objects(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    fh = open(path, "rb")
    fh.close()
    with pytest.raises(ImageInputError, match="is closed"):
        preprocess(fh, SMALL)
    with open(path) as text:  # noqa: PTH123 - a text-mode file object on purpose
        with pytest.raises(ImageInputError, match="text mode"):
            preprocess(text, SMALL)


def test_bad_paths(tmp_path):
    with pytest.raises(ImageInputError, match="longer than the file system allows") as info:
        preprocess(str(tmp_path / ("a" * 5000 + ".png")), SMALL)
    assert len(str(info.value)) < 600  # the 5000-character path is shortened in the message
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageInputError, match="symbolic link loop"):
        preprocess(loop, SMALL)
    with pytest.raises(ImageInputError, match="not a valid path"):
        preprocess("bad\x00name.png", SMALL)
    with pytest.raises(ImageInputError, match="image not found"):
        preprocess(tmp_path / "missing.png", SMALL)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ImageInputError, match="not a folder|not found"):
        preprocess(tmp_path / "file" / "below.png", SMALL)


def test_lying_preprocessing_metadata_is_a_metadata_error():
    from types import SimpleNamespace

    from staredge.metadata import MetadataError

    def meta(**kw):
        base = dict(input_size=[3, 32, 32], preprocessing={}, pixels_in_model=False)
        base.update(kw)
        return SimpleNamespace(**base)

    assert PreprocessConfig.from_metadata(meta()).input_size == (3, 32, 32)
    for bad, match in [(dict(input_size="abc"), "input_size"), (dict(input_size=[3, 32.5, 32]), "integers"),
                       (dict(preprocessing={"crop_pct": "big"}), "crop_pct"),
                       (dict(preprocessing={"mean": "red"}), "mean"),
                       (dict(input_size=[3, 100000, 100000]), "MAX_INPUT_SIDE"),
                       (dict(preprocessing={"std": [0.1, float("nan"), 0.1]}), "finite")]:
        with pytest.raises(MetadataError, match=match):
            PreprocessConfig.from_metadata(meta(**bad))
    assert MAX_INPUT_SIDE >= 1024
    with pytest.raises(ConfigError, match="integers"):
        PreprocessConfig(input_size=(3, "32", 32))


# ----------------------------------------------------------------------------- fuzz

SEEDS = S.image_seeds()


@settings(max_examples=400, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(SEEDS) - 1), mutation_seed=st.integers(0, 2**32 - 1))
def test_fuzz_mutated_images_are_a_result_or_a_typed_error(which, mutation_seed):
    data = S.mutate(SEEDS[which], random.Random(mutation_seed), pool=SEEDS)
    try:
        out = preprocess(data, SMALL)
    except StarEdgeError:
        return
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and np.isfinite(out).all()


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(data=st.binary(max_size=256))
def test_fuzz_random_bytes(data):
    try:
        open_image(data)
    except ImageInputError:
        pass


@settings(max_examples=150, derandomize=True, deadline=None, database=None)
@given(shape=st.lists(st.integers(0, 300), min_size=0, max_size=2) | st.tuples(
           st.integers(0, 300), st.integers(0, 300), st.integers(0, 6)) | st.tuples(
           st.integers(0, 8), st.integers(0, 8), st.integers(0, 4), st.integers(0, 4)),
       dtype=st.sampled_from([np.uint8, np.float32, np.int64, bool]))
def test_fuzz_arrays(shape, dtype):
    arr = np.zeros(shape, dtype=dtype)  # at most 300 x 300 x 6 elements
    try:
        out = preprocess(arr, SMALL)
    except StarEdgeError:
        return
    assert out.shape == (3, 32, 32)
