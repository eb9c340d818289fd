"""Integrity digests (issue 23): every export records a SHA-256 of its weight payload in its
metadata, and ``load_backend`` checks it, so a flipped weight byte in an ``.onnx``, ``.tflite``,
OpenVINO ``.bin`` or ``.mlpackage`` weight file is an ArtifactIntegrityError naming the file
instead of a model that runs and computes garbage.

The artifacts are the digits model's shared demo exports (one export per test run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _digits_artifacts import artifact_paths, shared_demo_summary
from staredge.errors import ArtifactIntegrityError, MetadataError
from staredge.integrity import EXTRA_KEY, SCHEME, payload_digest, payload_regions, verify
from staredge.metadata import read_metadata, write_metadata
from staredge.runtimes import load_backend

FORMATS = ["onnx", "openvino", "tflite", "coreml"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


def _copy(fmt: str, artifacts, tmp_path: Path) -> Path:
    """A private copy of the demo artifact of ``fmt``; returns the path to load."""
    if fmt not in artifacts:
        pytest.fail(f"the demo run made no {fmt} artifact")
    src = Path(artifacts[fmt])
    if fmt == "openvino":
        folder = tmp_path / "ir"
        folder.mkdir()
        shutil.copy(src, folder / src.name)
        shutil.copy(src.with_suffix(".bin"), folder / src.with_suffix(".bin").name)
        return folder / src.name
    dst = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def _weight_position(fmt: str, path: Path) -> tuple[Path, int]:
    """(file, offset) of the top byte of a float32 weight near the middle of the largest weight
    tensor: flipping bit 5 of it (exponent) scales that weight by 2**-64, all but removing it."""
    if fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(path))
        init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        values = numpy_helper.to_array(init).ravel()
        k = int(np.flatnonzero(values)[len(np.flatnonzero(values)) // 2])
        start = path.read_bytes().find(init.raw_data)
        assert start > 0 and init.data_type == onnx.TensorProto.FLOAT
        return path, start + 4 * k + 3
    _, file, offset, length = max(payload_regions(path, fmt), key=lambda r: r[3])
    data = Path(file).read_bytes()[offset : offset + length]
    words = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4")
    nonzero = np.flatnonzero(np.abs(words) > 1e-3)
    k = int(nonzero[len(nonzero) // 2])
    return Path(file), offset + 4 * k + 3


def _flip(file: Path, pos: int, words: int = 1) -> None:
    """Flip bit 5 of the byte at ``pos`` (and of every 4th byte after it, ``words`` in all)."""
    data = bytearray(file.read_bytes())
    for i in range(words):
        data[pos + 4 * i] ^= 0x20
    file.write_bytes(bytes(data))


def _x(meta) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, *meta.input_size)).astype(np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_export_records_the_digest_of_its_weights(artifacts, fmt):
    path = Path(artifacts[fmt])
    record = read_metadata(path).extra[EXTRA_KEY]
    assert record == {"scheme": SCHEME, "sha256": payload_digest(path, fmt)}
    assert verify(path) == record["sha256"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_flipped_weight_byte_fails_at_load_naming_the_file(artifacts, tmp_path, monkeypatch, fmt):
    path = _copy(fmt, artifacts, tmp_path)
    meta = read_metadata(path)
    before = load_backend(path, device="cpu").forward(_x(meta))
    file, pos = _weight_position(fmt, path)
    _flip(file, pos)
    with pytest.raises(ArtifactIntegrityError, match="do not match the digest recorded at export") as info:
        load_backend(path, device="cpu")
    assert str(file) in str(info.value)
    # these bytes really are weights: unchecked, the artifact runs and computes something else
    # (a run of 64 words: one weight alone may multiply only zero padding at the digits' 8x8 size)
    _flip(file, pos + 4, words=64)
    after = load_backend(path, device="cpu", verify_integrity=False).forward(_x(meta))
    assert not np.allclose(np.asarray(before), np.asarray(after), atol=1e-6)
    monkeypatch.setenv("STAREDGE_SKIP_INTEGRITY", "1")
    load_backend(path, device="cpu").close()


def test_the_predictor_refuses_a_damaged_artifact(artifacts, tmp_path):
    from staredge import Predictor

    path = _copy("onnx", artifacts, tmp_path)
    _flip(*_weight_position("onnx", path))
    with pytest.raises(ArtifactIntegrityError):
        Predictor(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rewriting_the_metadata_keeps_the_digest_valid(artifacts, tmp_path, fmt):
    """The digest covers the weights, not the metadata it lives in."""
    path = _copy(fmt, artifacts, tmp_path)
    meta = read_metadata(path)
    meta.labels = [f"digit {i}" for i in range(len(meta.labels))]
    write_metadata(path, meta, fmt)
    assert read_metadata(path).labels[0] == "digit 0"
    assert verify(path, fmt) == meta.extra[EXTRA_KEY]["sha256"]


def test_an_artifact_without_a_digest_loads_unchecked(artifacts, tmp_path):
    """Exports from before digests existed carry none: they load, with no check (documented)."""
    path = _copy("onnx", artifacts, tmp_path)
    meta = read_metadata(path)
    del meta.extra[EXTRA_KEY]
    write_metadata(path, meta, "onnx")
    _flip(*_weight_position("onnx", path))
    assert verify(path) is None
    load_backend(path, device="cpu").close()


@pytest.mark.parametrize("record", ["abc", {"scheme": SCHEME}, {"scheme": "md5", "sha256": "0" * 64},
                                    {"scheme": SCHEME, "sha256": "xyz"}, [1, 2]])
def test_a_malformed_digest_record_is_a_metadata_error(artifacts, tmp_path, record):
    path = _copy("onnx", artifacts, tmp_path)
    meta = read_metadata(path)
    meta.extra[EXTRA_KEY] = record
    write_metadata(path, meta, "onnx")
    with pytest.raises(MetadataError, match=f"extra.{EXTRA_KEY}"):
        load_backend(path, device="cpu")


def test_a_truncated_openvino_bin_is_an_integrity_error(artifacts, tmp_path):
    path = _copy("openvino", artifacts, tmp_path)
    weights = path.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactIntegrityError, match=str(weights)):
        load_backend(path, device="cpu")


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_a_language_model_export_is_sealed_and_checked(tmp_path, fmt):
    from _lm_cases import baseline
    from staredge.exporters.lm_export import export_lm

    rows = export_lm(baseline("transformer_pp"), [fmt], tmp_path, max_context=32, validate=False)
    path = Path(rows[0]["path"])
    assert read_metadata(path).extra[EXTRA_KEY]["sha256"] == payload_digest(path, fmt)
    load_backend(path, device="cpu").close()
    file, pos = _weight_position(fmt, path)
    _flip(file, pos)
    with pytest.raises(ArtifactIntegrityError, match=file.name):
        load_backend(path, device="cpu")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_fuzz_the_payload_walkers(artifacts, tmp_path, fmt):
    """Mutated files (bit flips, cut lengths, offsets set to 0xFFFFFFFF...) give a digest or a
    StarEdgeError from the walkers, never a raw struct/mmap/protobuf error."""
    import random

    import _fuzz_seeds as S
    from staredge.errors import StarEdgeError

    seed = Path(artifacts[fmt]).read_bytes()
    path = tmp_path / f"case.{fmt}"
    for i in range(150):
        path.write_bytes(S.mutate(seed, random.Random(f"integrity:{fmt}:{i}")))
        try:
            payload_digest(path, fmt)
            verify(path, fmt)
        except StarEdgeError:
            pass
