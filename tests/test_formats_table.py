"""The format table holds what used to leak out of it (issue 19): precisions per format and
task, the export options schema, a detector and a metadata writer per format, and runtime
specs from which the benchmark's runtime list is derived (a second runtime for an existing
format is benchmarkable from one spec entry and one module)."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap

import pytest

from staredge import formats
from staredge.errors import ConfigError
from staredge.metadata import (ArtifactMetadata, _encode_field, _string_entry, read_coreml_text, read_metadata,
                               write_metadata)


def test_precisions_per_format_and_task():
    lm = {name: formats.FORMATS[name].precisions_for(formats.TEXT_GENERATION) for name in formats.export_formats()}
    for name in formats.export_formats():
        assert formats.FORMATS[name].precisions_for(formats.IMAGE_CLASSIFICATION) == ("fp32", "fp16", "int8")
    # weight-only int8/int4 where the LM exporters write it (exporters/lm_quantize.py); fp16 nowhere
    assert lm == {"onnx": ("fp32", "int8", "int4"), "openvino": ("fp32", "int8", "int4"),
                  "tflite": ("fp32", "int8", "int4"), "coreml": ("fp32",)}
    assert formats.FORMATS["pytorch"].precisions_for(formats.TEXT_GENERATION) == ()
    with pytest.raises(ConfigError, match=r"--precision int4 is not available for image classifiers in ONNX"):
        formats.check_precision(formats.IMAGE_CLASSIFICATION, ["onnx"], "int4")
    assert formats.check_precision(formats.IMAGE_CLASSIFICATION, ["onnx", "coreml"], "int8") == "int8"
    with pytest.raises(ConfigError, match=r"--precision int8 is not available for language models in CoreML "
                                          r"\(CoreML: fp32\)"):
        formats.check_precision(formats.TEXT_GENERATION, ["tflite", "coreml"], "int8")


def test_options_schema_checks_task_format_and_value():
    check = formats.check_export_options
    assert check(formats.TEXT_GENERATION, ["coreml"], {"coreml_state": "fp16x2", "max_context": 64}) == {
        "coreml_state": "fp16x2", "max_context": 64}
    assert check(formats.IMAGE_CLASSIFICATION, ["onnx"], {"dynamic_batch": False, "max_context": None}) == {}
    with pytest.raises(ConfigError, match=r"--max-context \(max_context=\) must be at least 1, got 0"):
        check(formats.TEXT_GENERATION, ["onnx"], {"max_context": 0})
    with pytest.raises(ConfigError, match=r"--coreml-state \(coreml_state=\) must be one of fp16, fp16x2"):
        check(formats.TEXT_GENERATION, ["coreml"], {"coreml_state": "fp8"})
    with pytest.raises(ConfigError, match="unknown export option 'image_size'"):
        check(formats.IMAGE_CLASSIFICATION, ["onnx"], {"image_size": 3})
    with pytest.raises(ConfigError, match=r"--img-size \(img_size=\) must be at least 32, got 3"):
        check(formats.IMAGE_CLASSIFICATION, ["onnx"], {"img_size": 3})
    # the CLI builds one flag per schema entry that has one
    import argparse

    from staredge.commands.export import add_option_flags

    p = argparse.ArgumentParser()
    add_option_flags(p)
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.option_strings[0] != "-h"}
    assert flags == {o.flag for o in formats.EXPORT_OPTIONS.values() if o.flag}


def test_detection_asks_each_format(tmp_path, monkeypatch):
    """No folder markers in detect_format: a new folder format brings its own detector."""
    module = tmp_path / "fake_bundle_detector.py"
    module.write_text(textwrap.dedent('''
        def is_bundle(path):
            """a Bundle folder (holding bundle.json)."""
            return path.is_dir() and (path / "bundle.json").is_file()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    new = dataclasses.replace(formats.FORMATS["onnx"], name="bundle", title="Bundle", aliases=(),
                              suffixes=(".bundle",), detector="fake_bundle_detector:is_bundle")
    monkeypatch.setitem(formats.FORMATS, "bundle", new)
    folder = tmp_path / "whatever"
    folder.mkdir()
    (folder / "bundle.json").write_text("{}")
    assert formats.detect_format(folder).name == "bundle"
    pkg = tmp_path / "m.mlpackage"
    pkg.mkdir()
    (pkg / "Manifest.json").write_text("{}")
    assert formats.detect_format(pkg).name == "coreml"
    empty = tmp_path / "empty"
    empty.mkdir()
    from staredge.metadata import MetadataError

    with pytest.raises(MetadataError, match="neither a Bundle folder .* nor a CoreML .mlpackage"):
        formats.detect_format(empty)


def test_every_exportable_format_names_a_metadata_writer():
    for name in formats.export_formats():
        spec = formats.FORMATS[name]
        assert spec.metadata_writer and callable(formats.load_object(spec.metadata_writer)), name


def _coreml_package(folder, entries):
    """A minimal .mlpackage whose root spec holds description → metadata → userDefined entries."""
    pkg = folder / "m.mlpackage"
    (pkg / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (pkg / "Manifest.json").write_text(json.dumps({
        "rootModelIdentifier": "A", "itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel"}}}))
    meta = _encode_field(2, 2, b"an author") + b"".join(_string_entry(100, k, v) for k, v in entries.items())
    spec = _encode_field(1, 0, 8) + _encode_field(2, 2, _encode_field(1, 2, b"input") + _encode_field(100, 2, meta))
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec + _encode_field(5, 2, b"weights"))
    return pkg


def test_coreml_writer_replaces_only_our_entry(tmp_path):
    pkg = _coreml_package(tmp_path, {"user": "kept", "staredge": "old"})
    meta = ArtifactMetadata(model="m", family="custom", format="coreml")
    write_metadata(pkg, meta)
    assert read_metadata(pkg).model == "m"
    spec = (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes()
    assert b"kept" in spec and b"old" not in spec and spec.endswith(_encode_field(5, 2, b"weights"))
    bare = _coreml_package(tmp_path / "bare", {})
    write_metadata(bare, meta)
    assert json.loads(read_coreml_text(bare))["model"] == "m"


def test_onnx_and_openvino_writers_round_trip_and_still_load(tmp_path):
    pytest.importorskip("openvino")
    import numpy as np
    import torch

    from staredge.exporters import export
    from staredge.models import create
    from staredge.runtimes import load_backend

    torch.manual_seed(0)
    report = export(create("starnet_s050"), "onnx,openvino", tmp_path, validate=False)
    for art in report.artifacts:
        meta = read_metadata(art.path)
        meta.labels = [f"class {i}" for i in range(len(meta.labels))]
        write_metadata(art.path, meta)
        assert read_metadata(art.path).labels[3] == "class 3"
        (logits,) = load_backend(art.path, device="cpu").forward(np.zeros((1, 3, 224, 224), np.float32))
        assert logits.shape == (1, 1000) and np.isfinite(logits).all()


# ------------------------------------------------------------------ the benchmark's runtimes


FAKE_RUNTIME = '''
from staredge.runtimes.onnxruntime import OnnxRuntimeBackend

CALLS = []


class FakeOrtBackend(OnnxRuntimeBackend):
    """A second runtime for ONNX files (ONNX Runtime under another name)."""

    name = "ort2"

    def load(self):
        CALLS.append(str(self.path))
        return super().load()
'''


def test_a_second_runtime_for_an_existing_format_is_benchmarkable(tmp_path, monkeypatch):
    """One spec entry and one module: the benchmark times it (specs are not keyed by each
    format's default runtime)."""
    from staredge.bench import specs
    from staredge.bench.harness import run_bench
    from staredge.bench.protocols import get_protocol

    (tmp_path / "fake_ort2.py").write_text(FAKE_RUNTIME)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = dataclasses.replace(formats.RUNTIMES["onnxruntime"], name="ort2", title="ORT2", aliases=(),
                                backend="fake_ort2:FakeOrtBackend", accelerators=("cpu",))
    monkeypatch.setitem(formats.RUNTIMES, "ort2", entry)
    assert [r.name for r in formats.runtimes_for_format("onnx")] == ["onnxruntime", "ort2"]
    spec = specs.parse_backend("ort2")
    assert spec.format == "onnx" and "ort2" in specs.runtime_names()
    assert specs.BackendSpec("ort2") in specs.expand_backends(["all"])
    protocol = get_protocol("paper-cpu", warmup=0, iters=2, repeats=1, threads=1)
    doc = run_bench(["starnet_s050"], [spec], [protocol], show_progress=False, workdir=str(tmp_path / "work"))
    (result,) = [r for r in doc.results if r.backend == "ort2"]
    assert result.latency_ms > 0 and result.runtime_version
    loaded = sys.modules["fake_ort2"].CALLS
    assert loaded and all(p.endswith(".onnx") for p in loaded)  # the fake runtime ran the exported ONNX file


def test_lm_bench_runtimes_come_from_the_table():
    from staredge.bench import generate

    assert not hasattr(generate, "ARTIFACT_SUFFIX") and not hasattr(generate, "FORMAT_OF")
    assert generate.lm_runtimes() == {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}
