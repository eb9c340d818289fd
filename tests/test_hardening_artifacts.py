"""Hardening (issue 16): artifact metadata readers and metadata that lies.

- the TFLite flatbuffer reader bounds-checks every offset (mutated files used to raise
  ``struct.error`` from four places), so a damaged file is a DamagedArtifactError;
- metadata fields of the wrong type or size are a MetadataError when the file is read;
- metadata whose input_size is not the graph's own input shape is an ArtifactError at load
  time (it used to reach ONNX Runtime / OpenVINO / LiteRT as a raw error at the first call);
- a checkpoint's ``create_kwargs`` may set only known keys.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _fuzz_seeds as S
from _digits_artifacts import artifact_paths, shared_demo_summary
from staredge.errors import ArtifactError, StarEdgeError
from staredge.metadata import (
    MAX_INPUT_ELEMENTS,
    ArtifactMetadata,
    DamagedArtifactError,
    MetadataError,
    read_metadata,
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return dict(S.artifact_seeds(tmp_path_factory.mktemp("seeds")))


# ----------------------------------------------------------------------------- TFLite reader


def _tflite_with(seed: bytes, pos: int, value: int) -> bytes:
    buf = bytearray(seed)
    buf[pos:pos + 4] = struct.pack("<I", value)
    return bytes(buf)


@pytest.mark.parametrize("where", ["root", "vtable", "metadata-count", "past-end", "every-word"])
def test_tflite_offsets_are_bounds_checked(seeds, tmp_path, where):
    seed = seeds[".tflite"]
    path = tmp_path / "bad.tflite"
    root = struct.unpack_from("<I", seed, 0)[0]
    if where == "root":
        cases = [_tflite_with(seed, 0, 0xFFFFFFF0)]
    elif where == "vtable":
        cases = [_tflite_with(seed, root, 0x7FFFFFFF), _tflite_with(seed, root, 0x80000001)]
    elif where == "metadata-count":
        # every u32 that equals the metadata vector's length (1) becomes 2**32-1: no 4-billion-step loop
        cases = [_tflite_with(seed, i, 0xFFFFFFFF) for i in range(8, len(seed) - 4, 4)
                 if struct.unpack_from("<I", seed, i)[0] == 1]
    elif where == "past-end":
        cases = [seed[:n] for n in (8, 12, 16, len(seed) // 2, len(seed) - 1)]
    else:
        cases = [_tflite_with(seed, i, v) for i in range(0, len(seed) - 4, 4) for v in (0xFFFFFFFF, 0x7FFFFFFF)]
    assert cases
    for data in cases:
        path.write_bytes(data)
        try:
            meta = read_metadata(path)
        except StarEdgeError as exc:
            assert isinstance(exc, MetadataError)
            continue
        assert isinstance(meta, ArtifactMetadata)


def test_a_corrupt_tflite_is_damaged_not_foreign(seeds, tmp_path):
    seed = seeds[".tflite"]
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(seed[:8] + b"\xff" * (len(seed) - 8))
    with pytest.raises(DamagedArtifactError, match="damaged") as info:
        read_metadata(path)
    assert "not exported by StarEdge" not in str(info.value)
    assert isinstance(info.value, ArtifactError)


# ----------------------------------------------------------------------------- lying metadata


def _doc(**change) -> str:
    doc = json.loads(S.sample_metadata_json("onnx"))
    for key, value in change.items():
        if "." in key:
            outer, inner = key.split(".")
            doc[outer][inner] = value
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize("change, match", [
    ({"input_size": "abc"}, "'input_size' must be a list of 1 to 4 positive integers"),
    ({"input_size": [3, 0, 32]}, "input_size"),
    ({"input_size": [3, 32.5, 32]}, "input_size"),
    ({"input_size": [3, 100000, 100000]}, "MAX_INPUT_ELEMENTS"),
    ({"preprocessing.crop_pct": "big"}, "'preprocessing.crop_pct' must be a number"),
    ({"preprocessing.mean": "red"}, "preprocessing.mean"),
    ({"labels": "cat,dog"}, "'labels' must be a list of strings"),
    ({"labels": [1, 2]}, "labels"),
    ({"model": 7}, "'model' must be a string"),
    ({"dynamic_batch": "yes"}, "dynamic_batch"),
    ({"extra": []}, "'extra' must be a JSON object"),
])
def test_lying_metadata_is_a_metadata_error(change, match):
    with pytest.raises(MetadataError, match=match):
        ArtifactMetadata.from_json(_doc(**change))
    assert MAX_INPUT_ELEMENTS >= 3 * 4096 * 4096


def _lying_copy(fmt: str, artifacts, tmp_path, input_size) -> object:
    """A copy of the demo artifact whose metadata claims another input size."""
    src = artifacts[fmt]
    doc = read_metadata(src).to_dict()
    doc["input_size"] = list(input_size)
    text = json.dumps(doc)
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(src))
        for prop in proto.metadata_props:
            if prop.key == "staredge":
                prop.value = text
        dst = tmp_path / "lying.onnx"
        onnx.save(proto, str(dst))
        return dst
    if fmt == "openvino":
        tree = ET.parse(src)
        tree.getroot().find("rt_info/staredge").set("value", text)
        dst = tmp_path / "lying.xml"
        tree.write(dst)
        shutil.copy(src.with_suffix(".bin"), dst.with_suffix(".bin"))
        return dst
    from staredge.exporters.tflite import add_metadata

    dst = tmp_path / "lying.tflite"
    dst.write_bytes(add_metadata(src.read_bytes(), "staredge", text.encode()))
    return dst


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_metadata_that_disagrees_with_the_graph_fails_at_load(artifacts, tmp_path, fmt):
    from staredge import Predictor

    if fmt not in artifacts:
        pytest.fail(f"the demo run made no {fmt} artifact")
    real = [int(v) for v in read_metadata(artifacts[fmt]).input_size]
    assert Predictor(artifacts[fmt], device="cpu", threads=1).backend.graph_input_shape()[1:] is not None
    lying = _lying_copy(fmt, artifacts, tmp_path, [3, 224, 224] if real != [3, 224, 224] else [3, 32, 32])
    with pytest.raises(ArtifactError, match=r"metadata says input_size \[3, \d+, \d+\] but the graph takes"):
        Predictor(lying, device="cpu", threads=1)  # at load: warmup() or classify() never run


# ----------------------------------------------------------------------------- create_kwargs


@pytest.mark.parametrize("create_kwargs, match", [
    ({"num_classes": 10, "checkpoint": "/etc/passwd"}, r"holds \['checkpoint'\], which a file may not set"),
    ({"base_dim": 100000}, "base_dim"),
    ({"num_classes": "10"}, "num_classes must be an integer"),
    ({"num_classes": 10**12}, "num_classes must be an integer in 1..1000000"),
    ([1, 2], "must be a JSON object"),
])
def test_create_kwargs_from_a_file_take_only_known_keys(tmp_path, create_kwargs, match):
    from importlib.resources import files

    from safetensors.torch import load_file, save_file

    from staredge.runtimes import load_backend

    src = files("staredge") / "data" / "digits.safetensors"
    doc = json.loads(read_metadata(src).to_json())
    doc["extra"]["create_kwargs"] = create_kwargs
    dst = tmp_path / "digits.safetensors"
    save_file(load_file(str(src)), str(dst), metadata={"staredge": json.dumps(doc)})
    with pytest.raises(MetadataError, match=match):
        load_backend(dst, device="cpu")


def test_the_shipped_checkpoint_still_loads():
    from importlib.resources import files

    from staredge.runtimes import load_backend

    backend = load_backend(files("staredge") / "data" / "digits.safetensors", device="cpu")
    assert backend.metadata.labels and backend.torch_module.head.out_features == 10


# ----------------------------------------------------------------------------- fuzz


@settings(max_examples=400, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([".onnx", ".tflite", ".xml", ".safetensors", ".mlmodel"]),
       mutation_seed=st.integers(0, 2**32 - 1))
def test_fuzz_metadata_readers(seeds, tmp_path, which, mutation_seed):
    data = S.mutate(seeds[which], random.Random(mutation_seed), pool=list(seeds.values()))
    if which == ".mlmodel":
        path = S.write_coreml_package(tmp_path / "case.mlpackage", data)
    else:
        path = tmp_path / f"case{which}"
        path.write_bytes(data)
    try:
        meta = read_metadata(path)
    except StarEdgeError:
        return
    assert isinstance(meta, ArtifactMetadata)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(changes=st.dictionaries(st.sampled_from(["input_size", "labels", "preprocessing", "model", "family",
                                                "dynamic_batch", "pixels_in_model", "extra", "task",
                                                "input_layout", "output_names", "checkpoint_sha256"]),
                               _json_values, max_size=4))
def test_fuzz_metadata_documents(changes):
    from staredge.preprocess import PreprocessConfig

    doc = {**json.loads(S.sample_metadata_json("onnx")), **changes}
    try:
        meta = ArtifactMetadata.from_json(json.dumps(doc))
    except StarEdgeError:
        return
    try:
        PreprocessConfig.from_metadata(meta)
    except StarEdgeError:
        pass


def test_openvino_xml_entity_bomb_is_refused(tmp_path):
    """'Billion laughs' in an IR .xml: expat's amplification limit refuses it (no 3 GB string)."""
    entities = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    path = tmp_path / "bomb.xml"
    path.write_text(f'<?xml version="1.0"?><!DOCTYPE n [{entities}]>'
                    f'<net><rt_info><staredge value="&l9;"/></rt_info></net>')
    with pytest.raises(MetadataError, match="not a readable OpenVINO IR"):
        read_metadata(path)
