"""Bad input: every case is a StarEdgeError subclass whose message says what to do."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from _digits_artifacts import artifact_paths, heldout_images, shared_demo_summary
from staredge import Predictor, StarEdgeError
from staredge.cli import main as cli_main
from staredge.metadata import MetadataError
from staredge.preprocess import ImageInputError
from staredge.runtimes import ArtifactError, InputShapeError, load_backend


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def predictor(artifacts):
    return Predictor(artifacts["onnx"], device="cpu", threads=1)


def _truncated_copy(src, dst, keep: float = 0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


# ----------------------------------------------------------------------------- artifacts


def test_missing_path(tmp_path):
    with pytest.raises(ArtifactError, match="no such file") as info:
        Predictor(tmp_path / "nowhere.onnx")
    assert isinstance(info.value, StarEdgeError)


def test_directory_that_is_not_an_ir(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="neither a CoreML .mlpackage .* nor an OpenVINO IR"):
        Predictor(tmp_path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(b"\x08\x01")
    with pytest.raises(ArtifactError, match=r"unknown artifact suffix '\.pb'.*known suffixes"):
        Predictor(path)


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("tflite", ".tflite")])
def test_truncated_artifact(artifacts, tmp_path, fmt, suffix):
    bad = _truncated_copy(artifacts[fmt], tmp_path / f"cut{suffix}")
    with pytest.raises(StarEdgeError, match="truncated|damaged|corrupt") as info:
        Predictor(bad)
    assert "re-export" in str(info.value).lower()


def test_truncated_openvino_ir(artifacts, tmp_path):
    xml = artifacts["openvino"]
    _truncated_copy(xml, tmp_path / "m.xml")
    (tmp_path / "m.bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    with pytest.raises(ArtifactError, match="(?i)OpenVINO cannot read .*re-export"):
        Predictor(tmp_path / "m.xml")


def test_openvino_xml_without_its_bin(artifacts, tmp_path):
    (tmp_path / "m.xml").write_bytes(artifacts["openvino"].read_bytes())
    with pytest.raises(ArtifactError, match=r"no weights file m\.bin"):
        Predictor(tmp_path / "m.xml")


def test_corrupt_artifact_random_bytes(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ArtifactError, match="(?i)ONNX Runtime cannot load .*re-export"):
        Predictor(path)
    tfl = tmp_path / "garbage.tflite"
    tfl.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ArtifactError, match="TFL3|damaged"):
        Predictor(tfl)


def test_empty_artifact(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"(?i)empty \(0 bytes\).*re-export"):
        Predictor(path)


def test_onnx_without_staredge_metadata(artifacts, tmp_path):
    import onnx

    proto = onnx.load(str(artifacts["onnx"]))
    del proto.metadata_props[:]
    path = tmp_path / "foreign.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(MetadataError, match="carries no StarEdge metadata.*staredge export"):
        Predictor(path)


def test_corrupt_mlpackage(artifacts, tmp_path):
    import shutil

    pkg = tmp_path / "broken.mlpackage"
    shutil.copytree(artifacts["coreml"], pkg)
    for spec in pkg.rglob("model.mlmodel"):
        spec.write_bytes(spec.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="re-export"):
        load_backend(pkg)


def test_checkpoint_without_metadata_needs_a_model_name(tmp_path):
    import torch

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ArtifactError, match="model='starnet_s1'"):
        Predictor(path)


# ----------------------------------------------------------------------------- images


def test_bytes_that_are_not_an_image(predictor, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"%PDF-1.4 this is a document, not a picture" * 20)
    with pytest.raises(ImageInputError, match="not an image Pillow can read"):
        predictor.classify(path)
    with pytest.raises(ImageInputError, match="not an image"):
        predictor.classify(b"\x00\x01\x02 definitely not pixels")


def test_empty_image_file(predictor, tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"empty \(0 bytes\)"):
        predictor.classify(path)
    with pytest.raises(ImageInputError, match="empty"):
        predictor.classify(b"")
    with pytest.raises(ImageInputError, match="no images given"):
        predictor.classify([])


def test_missing_image_file(predictor, tmp_path):
    with pytest.raises(ImageInputError, match="image not found"):
        predictor.classify(tmp_path / "nope.png")


def test_truncated_image(predictor, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    _truncated_copy(path, path, keep=0.5)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        predictor.classify(path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_image_over_the_pixel_limit(artifacts, tmp_path):
    small_limit = Predictor(artifacts["onnx"], threads=1, max_pixels=32 * 32)
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    with pytest.raises(ImageInputError, match=r"64x64 = 4,096 pixels, over the limit of 1,024"):
        small_limit.classify(path)
    with pytest.raises(ImageInputError, match="over the limit"):
        small_limit.classify(np.zeros((64, 64), np.uint8))
    # a header claiming 100k x 100k pixels is refused before decoding (Pillow would need 30 GB)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))
    default = Predictor(artifacts["onnx"], threads=1)
    with pytest.raises(ImageInputError, match="decompression"):
        default.classify(bomb)


def test_bad_image_arrays(predictor):
    with pytest.raises(ImageInputError, match="must be uint8"):
        predictor.classify(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ImageInputError, match=r"transpose\(1, 2, 0\)"):
        predictor.classify(np.zeros((3, 8, 8, 2), np.uint8))
    with pytest.raises(ImageInputError, match="cannot use an object of type int"):
        predictor.classify(42)


# ----------------------------------------------------------------------------- predict()


def test_predict_wrong_shape(predictor):
    with pytest.raises(InputShapeError, match=r"expected an array of shape \(N, 3, 32, 32\), got \(1, 3, 28, 28\)"):
        predictor.predict(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(InputShapeError, match="expected an array of shape"):
        predictor.predict(np.zeros((32, 32), np.float32))


def test_predict_wrong_dtype(predictor):
    with pytest.raises(InputShapeError, match=r"expected dtype float32, got uint8.*classify\(\)"):
        predictor.predict(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(InputShapeError, match="got float64; convert"):
        predictor.predict(np.zeros((1, 3, 32, 32), np.float64))
    with pytest.raises(InputShapeError, match="numpy float32 array"):
        predictor.predict([[0.0]])


def test_batch_to_a_fixed_batch_backend(artifacts):
    backend = load_backend(artifacts["tflite"], threads=1)
    with pytest.raises(InputShapeError, match="fixed batch of 1.*dynamic_batch=True"):
        backend.forward(np.zeros((2, 3, 32, 32), np.float32))
    # the Predictor loops instead, so the same batch works through it
    predictor = Predictor(artifacts["tflite"], threads=1)
    images, _ = heldout_images(2)
    x = np.stack([predictor.preprocess(im) for im in images])
    assert predictor.predict(x)[0].shape == (2, 10)


def test_bad_arguments_are_config_errors(artifacts):
    from staredge.errors import ConfigError

    with pytest.raises(ConfigError, match="device must be one of"):
        Predictor(artifacts["onnx"], device="tpu")
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        Predictor(artifacts["onnx"], threads=0)
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        Predictor(artifacts["onnx"], threads=1).classify(np.zeros((8, 8), np.uint8), top_k=0)


def test_cli_reports_bad_input_in_one_line(artifacts, tmp_path, capsys):
    assert cli_main(["classify", str(tmp_path / "missing.onnx"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("staredge classify: error: no such file") and "Traceback" not in err
    not_image = tmp_path / "a.png"
    not_image.write_text("text")
    assert cli_main(["classify", str(artifacts["onnx"]), str(not_image)]) == 2
    assert "not an image Pillow can read" in capsys.readouterr().err
