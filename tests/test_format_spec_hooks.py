"""Per-format facts that general code looks up in the format table (issue 19): an artifact's
files, the integrity digest's walker, the LM quantisers' options and precisions, the
checkpoint and Apple formats. A new format is one spec entry plus its own modules."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from staredge import formats, integrity
from staredge.errors import ConfigError
from staredge.formats import (FORMATS, RUNTIMES, TEXT_GENERATION, apple_format, checkpoint_format, get_format,
                              load_object)


def test_artifact_files_follow_the_spec(tmp_path):
    ov = get_format("openvino")
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    assert ov.artifact_files(xml) == [xml]  # the weights file is missing: only what exists
    (tmp_path / "m.bin").write_bytes(b"\0" * 8)
    assert ov.artifact_files(xml) == [xml, tmp_path / "m.bin"]
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert get_format("onnx").artifact_files(onnx) == [onnx]  # no companions: the .bin beside it is not its
    folder = tmp_path / "pkg"
    (folder / "Data").mkdir(parents=True)
    (folder / "Data" / "w.bin").write_bytes(b"1")
    (folder / "Manifest.json").write_text("{}")
    assert get_format("coreml").artifact_files(folder) == [folder / "Data" / "w.bin", folder / "Manifest.json"]


def test_every_digest_walker_the_table_names_exists():
    named = [n for n, s in FORMATS.items() if s.weight_payload]
    assert set(named) == set(integrity.FORMATS) and named  # the exported formats carry digests
    for name in named:
        assert callable(load_object(FORMATS[name].weight_payload))
    assert not integrity.has_digest(formats.CHECKPOINT_FORMAT)


def test_a_new_format_gets_digests_from_its_spec_entry(tmp_path, monkeypatch):
    """A format added to the table with a walker is digested, with no change to integrity.py."""
    calls = []

    def walker(path, spec, buffers):
        calls.append(spec.name)
        return [("all", path, 0, path.stat().st_size)]

    monkeypatch.setattr(integrity, "fake_regions", walker, raising=False)
    base = get_format("onnx")
    monkeypatch.setitem(FORMATS, "fakefmt", dataclasses.replace(
        base, name="fakefmt", suffixes=(".fake",), weight_payload="staredge.integrity:fake_regions"))
    path = tmp_path / "m.fake"
    path.write_bytes(b"weights")
    digest = integrity.payload_digest(path, "fakefmt")
    path.write_bytes(b"weightz")
    assert integrity.payload_digest(path, "fakefmt") != digest and calls == ["fakefmt", "fakefmt"]
    with pytest.raises(ConfigError, match="no weight digest"):
        integrity.payload_regions(path, formats.CHECKPOINT_FORMAT)


@pytest.mark.parametrize("fmt, module, function", [
    ("onnx", "staredge.exporters.onnx_lm", "quantize_onnx_lm"),
    ("openvino", "staredge.exporters.openvino_lm", "compress_openvino_lm"),
    ("tflite", "staredge.exporters.tflite_lm", "quantize_tflite_lm"),
])
def test_lm_quant_options_are_the_quantisers_keywords(fmt, module, function):
    """The spec's ``lm_quant_options`` are exactly the keyword-only parameters of the format's
    quantiser (what ``quantization={...}`` is passed to), so the two cannot drift apart."""
    pytest.importorskip("torch")
    import importlib

    params = inspect.signature(getattr(importlib.import_module(module), function)).parameters.values()
    keywords = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    assert get_format(fmt).lm_quant_options == keywords
    assert get_format(fmt).precisions_for(TEXT_GENERATION) == ("fp32", "int8", "int4")


def test_lm_precision_refusals_are_for_precisions_the_format_does_not_take():
    from staredge.exporters.lm_quantize import check_lm_precision

    for spec in FORMATS.values():
        for precision, why in spec.lm_precision_refusals:
            assert precision not in spec.precisions_for(TEXT_GENERATION)
            with pytest.raises(ConfigError, match=why.split(" (")[0]):
                check_lm_precision(spec.name, precision)


def test_role_lookups():
    assert checkpoint_format().name == formats.CHECKPOINT_FORMAT
    ckpt = checkpoint_format()
    assert ckpt.primary_suffix not in ckpt.pickle_suffixes and set(ckpt.pickle_suffixes) <= set(ckpt.suffixes)
    assert RUNTIMES[apple_format().runtime].apple_only and apple_format().exportable
