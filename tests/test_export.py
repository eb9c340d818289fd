"""export(): every model × ONNX / OpenVINO / TFLite within tolerance, atomic writes, CLI."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from staredge.errors import MissingDependencyError, StarEdgeError
from staredge.exporters import ArtifactExistsError, export
from staredge.exporters.validate import TOLERANCES, validate_artifact
from staredge.metadata import read_metadata
from staredge.models import create, list_models, realistic_weights

FORMATS = ("onnx", "openvino", "tflite")
SMALL = ["starnet_s050", "starnet_s1", "demonet_w96"]
IMAGE_MODELS = [
    n for n in list_models("starnet") + list_models("demonet") + list_models("efficientformer_v2")
    if n not in ("demonet2d", "starnet_digits")  # the digits model is exported by the demo tests
]
LARGE = [n for n in IMAGE_MODELS if n not in SMALL]


def randomized(name: str, seed: int = 0) -> nn.Module:
    """The registry model with real BN statistics, layer scales and O(1) logits.

    A fresh model's logits are ~1e-3 (tiny head init), which would make a 1e-4 tolerance
    meaningless; these weights make a wrong conversion show.
    """
    return realistic_weights(create(name), seed)


def leftovers(out_dir) -> list[str]:
    """Temporary files or folders export() left in ``out_dir``."""
    return [n for n in os.listdir(out_dir) if n.startswith(".")]


def check_model_exports(name: str, tmp_path, formats=FORMATS, precision: str = "fp32") -> None:
    model = randomized(name)
    report = export(model, formats, tmp_path, precision=precision)
    assert [a.format for a in report.artifacts] == list(formats)
    for art in report.artifacts:
        assert art.error is None, art.error
        assert art.passed, f"{name} {art.format}: max|Δ| {art.max_abs_diff:.3g}, rel {art.rel_error:.3g}"
        if precision == "fp32":
            assert art.max_abs_diff <= TOLERANCES["fp32"]["max_abs_diff"]
            assert art.cosine > 0.999999
        else:
            assert art.rel_error <= TOLERANCES["fp16"]["rel_error"]
        assert art.top1_agreement == 1.0
        # photos and random inputs, and another batch size where the artifact allows one
        sets = {(c["inputs"], c["batch"]) for c in art.validation["comparisons"]}
        assert {"photos", "random"} <= {s for s, _ in sets}
        if art.format in ("openvino", "tflite"):
            # a resizable artifact is also checked at another batch size, or says why not
            # (EfficientFormerV2's attention and DemoNet's TFLite graph keep the traced batch)
            assert any(b != 1 for _, b in sets) or len(art.validation["notes"]) == 2
            if name.startswith("starnet") or (name.startswith("demonet") and art.format == "openvino"):
                assert any(b != 1 for _, b in sets)
        meta = read_metadata(art.path)
        assert meta.model == name and meta.format == art.format and meta.precision == precision
        assert meta.rewrites == art.rewrites and "fuse_batchnorm" in meta.rewrites
        assert len(meta.labels) == 1000 and meta.preprocessing["crop_pct"] == model.pretrained_cfg.crop_pct
        assert art.size_bytes > 0
    assert report.passed
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", SMALL)
def test_export_small_models_all_formats_fp32(name, tmp_path):
    check_model_exports(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_export_every_other_model_all_formats_fp32(name, tmp_path):
    check_model_exports(name, tmp_path)


def test_export_onnx_fp16(tmp_path):
    check_model_exports("starnet_s050", tmp_path, formats=("onnx",), precision="fp16")
    fp16 = tmp_path / "starnet_s050_fp16.onnx"
    assert fp16.is_file()


@pytest.mark.slow
def test_export_openvino_tflite_fp16(tmp_path):
    check_model_exports("starnet_s1", tmp_path, formats=("openvino", "tflite"), precision="fp16")


def test_fp16_artifacts_are_about_half_the_size(tmp_path):
    model = randomized("starnet_s050")
    full = export(model, "onnx", tmp_path, validate=False).artifacts[0]
    half = export(model, "onnx", tmp_path, precision="fp16", validate=False).artifacts[0]
    assert full.passed is None and half.passed is None  # not validated
    assert 0.4 < half.size_bytes / full.size_bytes < 0.6


def test_dynamic_batch_onnx_validates_another_batch_size(tmp_path):
    import onnx

    report = export(randomized("starnet_s050"), "onnx,openvino", tmp_path, dynamic_batch=True)
    art, ir = report.artifacts
    assert ir.passed and read_metadata(ir.path).dynamic_batch is True
    assert any(c["batch"] > 1 for c in ir.validation["comparisons"])
    import openvino as ov

    assert ov.Core().read_model(ir.path).inputs[0].get_partial_shape()[0].is_dynamic
    assert art.passed and art.max_abs_diff <= 1e-4
    assert any(c["batch"] > 1 for c in art.validation["comparisons"])
    dim0 = onnx.load(art.path).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    assert read_metadata(art.path).dynamic_batch is True


def test_static_onnx_is_batch_one_and_validated_at_batch_one(tmp_path):
    import onnx

    art = export(randomized("starnet_s050"), "onnx", tmp_path).artifacts[0]
    assert onnx.load(art.path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert {c["batch"] for c in art.validation["comparisons"]} == {1}


def test_no_overwrite_without_force(tmp_path):
    model = randomized("starnet_s050")
    first = export(model, "onnx,openvino", tmp_path, validate=False)
    onnx_path = first.artifacts[0].path
    xml_path = first.artifacts[1].path
    stamps = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in (onnx_path, xml_path)}
    with pytest.raises(ArtifactExistsError, match="already exist") as err:
        export(model, "onnx,openvino", tmp_path)
    assert isinstance(err.value, StarEdgeError)
    for p, (mtime, data) in stamps.items():
        assert os.stat(p).st_mtime_ns == mtime and open(p, "rb").read() == data
    # force replaces both, the IR folder included, and leaves nothing else behind
    second = export(model, "onnx,openvino", tmp_path, force=True, validate=False)
    assert [a.path for a in second.artifacts] == [onnx_path, xml_path]
    assert os.stat(onnx_path).st_mtime_ns >= stamps[onnx_path][0]
    assert read_metadata(xml_path).model == "starnet_s050"
    assert sorted(os.listdir(tmp_path)) == ["starnet_s050.onnx", "starnet_s050_openvino"]


def _fail_halfway(model, path, metadata, precision, **kwargs):
    with open(path, "wb") as fh:
        fh.write(b"partial artifact")
    raise RuntimeError("converter crashed halfway")


def test_failure_halfway_leaves_no_file(tmp_path, monkeypatch):
    import staredge.exporters.onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "export_onnx", _fail_halfway)
    report = export(randomized("starnet_s050"), "onnx", tmp_path)
    art = report.artifacts[0]
    assert art.path is None and art.passed is False and "converter crashed halfway" in art.error
    assert not report.passed
    assert os.listdir(tmp_path) == []


def test_interrupt_halfway_leaves_no_file_and_keeps_old_artifact(tmp_path, monkeypatch):
    import staredge.exporters.onnx as onnx_exporter

    model = randomized("starnet_s050")
    good = export(model, "onnx", tmp_path, validate=False).artifacts[0].path
    before = open(good, "rb").read()

    def interrupted(model, path, metadata, precision, **kwargs):
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_exporter, "export_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(model, "onnx", tmp_path, force=True)
    assert os.listdir(tmp_path) == ["starnet_s050.onnx"] and open(good, "rb").read() == before


def test_missing_converter_names_the_extra(tmp_path, monkeypatch):
    import dataclasses

    from staredge.formats import FORMATS

    missing = dataclasses.replace(FORMATS["tflite"], export_requires=(("staredge_no_such_converter", "tflite"),))
    monkeypatch.setitem(FORMATS, "tflite", missing)
    with pytest.raises(MissingDependencyError, match=r"staredge\[tflite\]"):
        export("starnet_s050", "onnx,tflite", tmp_path)
    assert os.listdir(tmp_path) == []  # checked before any work


def test_unknown_format_and_precision(tmp_path):
    with pytest.raises(StarEdgeError, match="unknown export format"):
        export("starnet_s050", "onnx,keras", tmp_path)
    with pytest.raises(StarEdgeError, match="precision"):
        export("starnet_s050", "onnx", tmp_path, precision="int4")


def test_validation_catches_a_different_model(tmp_path):
    art = export(randomized("starnet_s050", seed=0), "onnx", tmp_path, validate=False).artifacts[0]
    other = randomized("starnet_s050", seed=1)
    result = validate_artifact(other, art.path, "onnx", "fp32")
    assert not result.passed and result.max_abs_diff > 1e-2


def test_rewrite_choice_is_recorded(tmp_path):
    model = randomized("starnet_s050")
    report = export(model, "onnx", tmp_path, rewrite="fuse_batchnorm,pointwise_conv_to_linear")
    art = report.artifacts[0]
    assert art.passed and art.rewrites == ["fuse_batchnorm", "pointwise_conv_to_linear"]
    assert read_metadata(art.path).rewrites == art.rewrites
    none = export(model, "onnx", tmp_path / "none", rewrite="none").artifacts[0]
    assert none.passed and none.rewrites == []


def test_cli_export_report_and_exit_codes(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    from staredge.cli import main

    ckpt = tmp_path / "starnet_s050.safetensors"
    save_file(randomized("starnet_s050").state_dict(), str(ckpt))
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    argv = ["export", str(ckpt), "--format", "onnx", "--out", str(out), "--report", str(report_path)]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["artifacts"][0]["max_abs_diff"] <= 1e-4
    meta = read_metadata(out / "starnet_s050.onnx")
    assert meta.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    table = capsys.readouterr().out
    assert "starnet_s050.onnx" in table and "pass" in table
    # exists → clear error (exit 2), nothing touched
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    # a validation failure → exit 1
    monkeypatch.setitem(TOLERANCES, "fp32", {"max_abs_diff": -1.0})
    assert main(argv + ["--force"]) == 1
    assert json.loads(report_path.read_text())["passed"] is False


def test_validation_photos_are_real_and_preprocessed():
    from staredge.exporters.validate import photo_inputs

    cfg = create("starnet_s050").pretrained_cfg
    photos, names = photo_inputs(cfg)
    assert names[:4] == ["astronaut", "coffee", "chelsea", "rocket"]
    assert photos.shape == (len(names), 3, 224, 224) and photos.dtype == np.float32
    # normalised ImageNet-style: roughly zero-mean, unit-ish spread, distinct images
    assert abs(float(photos.mean())) < 1.0 and 0.3 < float(photos.std()) < 2.0
    assert not np.allclose(photos[0], photos[1])


def test_coreml_through_export_api(tmp_path):
    """The CoreML exporter plugs into export(): atomic write, metadata, MIL-executor validation."""
    report = export(randomized("starnet_s050"), "coreml", tmp_path)
    art = report.artifacts[0]
    assert art.error is None, art.error
    assert art.path.endswith("starnet_s050.mlpackage") and os.path.isdir(art.path)
    assert art.passed and art.max_abs_diff <= TOLERANCES["fp32"]["max_abs_diff"]
    meta = read_metadata(art.path)
    assert meta.format == "coreml" and meta.pixels_in_model and meta.rewrites == art.rewrites
    assert leftovers(tmp_path) == []


def test_checkpoint_without_a_registry_name_asks_for_model(tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "finetuned.safetensors"
    save_file(create("starnet_s050").state_dict(), str(ckpt))
    with pytest.raises(StarEdgeError, match="--model"):
        export(str(ckpt), "onnx", tmp_path / "out")
    report = export(str(ckpt), "onnx", tmp_path / "out", model_name="starnet_s050", validate=False)
    assert read_metadata(report.artifacts[0].path).checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_artifact_its_runtime_refuses_fails_validation(tmp_path, monkeypatch):
    import staredge.exporters.validate as validate_module

    def refusing_runtime(path, backend=None, device="auto", **options):
        raise RuntimeError("runtime refused the file")

    monkeypatch.setattr(validate_module, "load_backend", refusing_runtime)
    report = export(randomized("starnet_s050"), "onnx", tmp_path)
    art = report.artifacts[0]
    assert art.passed is False and "runtime refused the file" in art.error and not report.passed
    assert os.path.isfile(art.path)  # kept for inspection, reported as failed
