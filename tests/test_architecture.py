"""The architecture's promises: one table per format, one runtime layer, one preprocessing,
and an inference path that needs no torch."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _no_torch import NO_TORCH
from staredge import formats
from staredge.errors import ConfigError, MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("staredge", "models", "exporters", "runtimes", "scripts")



def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_import_staredge_loads_no_torch_and_no_runtime():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, staredge, staredge.cli; staredge.cli.build_parser(); "
         "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'coremltools', 'ai_edge_litert', "
         "'litert_torch') if m in sys.modules))"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    from staredge.exporters import export

    out = tmp_path_factory.mktemp("torchfree")
    report = export("starnet_s050", "onnx", out, validate=False)
    return report.artifacts[0].path


def test_predictor_classifies_with_torch_unimportable(onnx_artifact):
    code = f"""
    import numpy as np, staredge
    from PIL import Image
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("torch imported")
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    p = staredge.Predictor({str(onnx_artifact)!r}, device="cpu")
    top = p.classify(img, top_k=3)
    assert len(top) == 3 and all(isinstance(label, str) for label, _ in top), top
    import sys
    assert "torch" not in sys.modules
    print("ok", top[0][0])
    """
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def test_model_and_export_functions_without_torch_name_the_extra():
    out = _run(
        """
        from staredge.errors import MissingDependencyError
        for module, name in (("staredge.models", "create"), ("staredge.exporters", "export")):
            try:
                getattr(__import__(module, fromlist=[name]), name)  # staredge.models loads torch on first use
            except MissingDependencyError as exc:
                assert "staredge[torch]" in str(exc), exc
            else:
                raise SystemExit(module + " imported without torch")
        print("ok")
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert issubclass(MissingDependencyError, ImportError)


def test_every_list_of_formats_is_derived_from_the_table():
    from staredge.bench import specs
    from staredge.exporters import api
    from staredge.runtimes import BACKENDS, BACKENDS_BY_FORMAT

    exportable = [n for n, s in formats.FORMATS.items() if s.exportable]
    assert list(api.FORMATS) == exportable == formats.parse_formats("all")
    assert set(BACKENDS) == set(formats.RUNTIMES)
    assert BACKENDS_BY_FORMAT == {f: s.runtime for f, s in formats.FORMATS.items()}
    assert list(specs.EXPORTED_RUNTIMES.values()) == exportable
    for name, spec in formats.FORMATS.items():
        assert spec.runtime in formats.RUNTIMES and name in formats.RUNTIMES[spec.runtime].formats
        for suffix in spec.suffixes:
            assert formats.FORMATS[name] is next(s for s in formats.FORMATS.values() if suffix in s.suffixes)
        if spec.exportable:  # the exporter entry point and the metadata reader resolve
            assert callable(formats.load_object(spec.metadata_reader))
            module, _, attr = spec.exporter.partition(":")
            tree = ast.parse((ROOT / "exporters" / f"{module.rsplit('.', 1)[1]}.py").read_text())
            assert attr in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_one_name_per_runtime_and_aliases_resolve():
    assert formats.get_runtime("tflite").name == "litert"
    assert formats.get_runtime("ORT").name == "onnxruntime"
    assert formats.get_format("mlpackage").name == "coreml"
    with pytest.raises(ConfigError, match="choose one of"):
        formats.get_runtime("tensorflow")
    with pytest.raises(ConfigError, match="export format"):
        formats.parse_formats("pytorch")  # a checkpoint format, not an export target


def test_a_new_format_is_one_table_entry(tmp_path, monkeypatch):
    """Detection, format parsing, runtime dispatch and artifact naming follow a new entry."""
    from staredge.runtimes import select_backend

    new = dataclasses.replace(
        formats.FORMATS["onnx"], name="onnx2", title="ONNX2", aliases=(), suffixes=(".onnx2",),
        unit="{stem}.onnx2", entry="{stem}.onnx2",
    )
    monkeypatch.setitem(formats.FORMATS, "onnx2", new)
    artifact = tmp_path / "m.onnx2"
    artifact.write_bytes(b"x")
    assert formats.detect_format(artifact).name == "onnx2"
    assert "onnx2" in formats.parse_formats("all")
    assert select_backend(artifact) == "onnxruntime"
    assert new.artifact_paths(tmp_path, "m") == (artifact, artifact)


def _calls_outside_runtimes() -> list[str]:
    """Source locations outside runtimes/ that construct a runtime session or interpreter."""
    constructors = {"InferenceSession", "Core", "Interpreter", "MILExecutor"}
    hits = []
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    fn = node.func
                    name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                    if name in constructors:
                        hits.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return hits


def test_only_the_runtime_layer_constructs_runtimes():
    hits = _calls_outside_runtimes()
    allowed_prefix = "runtimes/"
    offenders = [h for h in hits if not h.startswith(allowed_prefix)]
    assert offenders == [], offenders


def test_validation_prepares_photos_with_the_predictors_preprocessing():
    import skimage.data as skimage_data

    from staredge.exporters.validate import photo_inputs
    from staredge.models import create
    from staredge.preprocess import PreprocessConfig, preprocess

    cfg = create("starnet_s050").pretrained_cfg
    photos, names = photo_inputs(cfg, names=("rocket",))
    assert names == ["rocket"]
    config = PreprocessConfig(input_size=tuple(cfg.input_size), crop_pct=cfg.crop_pct,
                              interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std)
    expected = preprocess(skimage_data.rocket(), config)  # what Predictor.classify feeds the model
    np.testing.assert_array_equal(photos[0], expected)


def test_unknown_backend_option_is_a_config_error(onnx_artifact):
    from staredge.runtimes import load_backend

    with pytest.raises(ConfigError, match="graph_optimization"):
        load_backend(onnx_artifact, graph_optimization="bogus")
    with pytest.raises(ConfigError, match="unknown option"):
        load_backend(onnx_artifact, not_an_option=1)
