"""Metadata embedded by every exporter reads back unchanged; missing or damaged metadata is an error."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from staredge.metadata import ArtifactMetadata, MetadataError, read_metadata
from staredge.models.registry import PretrainedConfig


class TinyNet(nn.Module):
    """A small conv net so that every converter runs in seconds."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 5)
        self.pretrained_cfg = PretrainedConfig(input_size=(3, 32, 32), num_classes=5, labels="none")

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def sample_metadata(fmt: str) -> ArtifactMetadata:
    return ArtifactMetadata(
        model="tinynet",
        family="custom",
        format=fmt,
        input_size=[3, 32, 32],
        preprocessing={"resize_shorter": 36, "crop_pct": 0.875, "interpolation": "bicubic",
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        labels=["cat", "dog", "zebra", "über", "鳥"],  # non-ASCII must survive every format
        precision="fp32",
        rewrites=["fuse_batchnorm"],
        checkpoint_sha256="ab" * 32,
        extra={"note": 'quotes " and <angle> & ampersands'},
    )


def export_tiny(fmt: str, tmp_path, precision: str = "fp32"):
    x = torch.randn(1, 3, 32, 32)
    meta = sample_metadata(fmt)
    model = TinyNet().eval()
    if fmt == "onnx":
        from staredge.exporters.onnx import export_onnx

        return export_onnx(model, tmp_path / "tiny.onnx", meta, precision, example_input=x), meta
    if fmt == "openvino":
        from staredge.exporters.openvino import export_openvino

        return export_openvino(model, tmp_path / "tiny.xml", meta, precision, example_input=x), meta
    from staredge.exporters.tflite import export_tflite

    return export_tflite(model, tmp_path / "tiny.tflite", meta, precision, example_input=x), meta


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_metadata_round_trip(fmt, tmp_path):
    path, meta = export_tiny(fmt, tmp_path)
    got = read_metadata(path)
    assert got == meta
    assert got.to_dict() == meta.to_dict()


def test_openvino_folder_and_fp16_round_trip(tmp_path):
    path, meta = export_tiny("openvino", tmp_path, precision="fp16")
    assert read_metadata(path.parent) == meta  # a folder holding one IR


def test_tflite_fp16_round_trip_and_replacing_entry(tmp_path):
    from staredge.exporters.tflite import add_metadata

    path, meta = export_tiny("tflite", tmp_path, precision="fp16")
    assert read_metadata(path) == meta
    other = ArtifactMetadata(model="other", family="custom")
    path.write_bytes(add_metadata(path.read_bytes(), "staredge", other.to_json().encode()))
    assert read_metadata(path) == other  # replaced, not duplicated


def test_onnx_without_metadata_is_an_error(tmp_path):
    import onnx

    path, _ = export_tiny("onnx", tmp_path)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(MetadataError, match="no StarEdge metadata"):
        read_metadata(path)


def test_tflite_without_metadata_is_an_error(tmp_path):
    from staredge.exporters.tflite import add_metadata

    path, _ = export_tiny("tflite", tmp_path)
    # a different metadata name: the file has metadata, but not ours
    raw = path.read_bytes()
    renamed = add_metadata(raw, "someone_else", b"{}")
    import ai_edge_litert.schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(renamed), 0)
    model.metadata = [m for m in model.metadata if m.name not in (b"staredge", "staredge")]
    import flatbuffers

    b = flatbuffers.Builder(len(raw))
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    with pytest.raises(MetadataError, match="no StarEdge metadata"):
        read_metadata(path)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_damaged_file_is_a_metadata_error(suffix, tmp_path):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x08\x07" + b"\xff" * 5)
    with pytest.raises(MetadataError):
        read_metadata(path)


def test_openvino_xml_without_metadata_and_broken_xml(tmp_path):
    xml = tmp_path / "m.xml"
    (tmp_path / "m.bin").write_bytes(b"")
    xml.write_text('<?xml version="1.0"?><net name="x" version="11"><layers/></net>')
    with pytest.raises(MetadataError, match="no StarEdge metadata"):
        read_metadata(xml)
    xml.write_text("<net><layers>")
    with pytest.raises(MetadataError, match="not a readable OpenVINO"):
        read_metadata(xml)


def test_read_metadata_refuses_pytorch_and_unknown_files(tmp_path):
    pt = tmp_path / "w.pth"
    pt.write_bytes(b"x")
    with pytest.raises(MetadataError, match="exported artifacts only"):
        read_metadata(pt)
    with pytest.raises(MetadataError, match="no such file"):
        read_metadata(tmp_path / "missing.onnx")


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_the_format_tables_writer_replaces_the_document_and_the_artifact_still_runs(fmt, tmp_path):
    """Each format's metadata writer (issue 19: beside the reader, named by the format table)
    replaces the embedded document in place; the runtime still loads and runs the file."""
    import numpy as np

    from staredge.metadata import write_metadata
    from staredge.runtimes import load_backend

    path, meta = export_tiny(fmt, tmp_path)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = load_backend(path, device="cpu").forward(x)[0]
    new = sample_metadata(fmt)
    new.labels = ["ein", "zwei", "drei", "vier", "fünf"]
    new.extra = {"note": "<rewritten> & \"quoted\""}
    write_metadata(path, new)
    assert read_metadata(path) == new
    write_metadata(path, meta)  # and back: one document, replaced, never duplicated
    assert read_metadata(path) == meta
    after = load_backend(path, device="cpu").forward(x)[0]
    np.testing.assert_array_equal(before, after)
