"""LM artifacts follow the format table: each format's LM exporter and each runtime's LM
stepper are named in ``staredge/formats.py`` (``FormatSpec.lm_exporter``,
``RuntimeSpec.lm_stepper``), live in their own modules, resolve without torch on the
inference side, and the dispatch has no per-format branches."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _no_torch import NO_TORCH
from staredge import formats
from staredge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LM_FORMATS = ("onnx", "openvino", "tflite", "coreml")


def _defined(folder: str, ref: str, kind) -> bool:
    module, _, attr = ref.partition(":")
    path = ROOT / folder / f"{module.rsplit('.', 1)[1]}.py"
    tree = ast.parse(path.read_text("utf-8"))
    return attr in {n.name for n in tree.body if isinstance(n, kind)}


def test_each_lm_format_names_its_exporter_module_stepper_and_text_backend():
    for name in LM_FORMATS:
        spec = formats.FORMATS[name]
        assert spec.lm_exporter == f"staredge.exporters.{name}_lm:export_lm_{name}"
        assert _defined("exporters", spec.lm_exporter, ast.FunctionDef)
        stepper = formats.RUNTIMES[spec.runtime].lm_stepper
        assert stepper and stepper.startswith(f"staredge.runtimes.{spec.runtime}_lm:")
        assert _defined("runtimes", stepper, ast.ClassDef)
        # the runtime's text-generation backend sits beside its stepper: one LM module per runtime
        backend = formats.RUNTIMES[spec.runtime].text_backend
        assert backend.partition(":")[0] == stepper.partition(":")[0] and _defined("runtimes", backend, ast.ClassDef)
    assert formats.FORMATS["pytorch"].lm_exporter is None
    with pytest.raises(ConfigError, match="does not export language models"):
        formats.FORMATS["pytorch"].lm_exporter_function()


def test_lm_dispatch_has_no_per_format_branches():
    """No ``fmt == "onnx"`` style comparisons left in the LM dispatch code (the one export
    function included)."""
    names = set(formats.FORMATS) | set(formats.RUNTIMES)
    for rel in ("exporters/lm_export.py", "exporters/api.py", "runtimes/lm.py"):
        tree = ast.parse((ROOT / rel).read_text("utf-8"))
        hits = [f"{rel}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Compare)
                and any(isinstance(c, ast.Constant) and c.value in names for c in [n.left, *n.comparators])]
        assert hits == []


def test_lm_steppers_resolve_without_torch():
    code = textwrap.dedent(
        """
        import sys
        from staredge.runtimes.lm import stepper_class
        print(sorted(stepper_class(f).__name__ for f in ("onnx", "openvino", "tflite", "coreml")))
        assert "torch" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['CoreMLReferenceLM', 'LiteRTLM', 'OnnxRuntimeLM', 'OpenVINOLM']"


def test_a_new_lm_format_is_dispatched_from_the_table(tmp_path, monkeypatch):
    """A format entry and a runtime entry are all ``export_lm`` and ``load_lm_artifact`` need."""
    from staredge.exporters.lm_export import export_lm, lm_formats
    from staredge.runtimes.lm import load_lm_artifact, stepper_class
    from staredge.runtimes.onnxruntime_lm import OnnxRuntimeLM
    import _lm_cases

    runtime = dataclasses.replace(formats.RUNTIMES["onnxruntime"], name="ort2", aliases=(), formats=("onnx2",))
    fmt = dataclasses.replace(formats.FORMATS["onnx"], name="onnx2", title="ONNX2", aliases=(), suffixes=(".onnx2",),
                              unit="{stem}.onnx2", entry="{stem}.onnx2", runtime="ort2")
    monkeypatch.setitem(formats.RUNTIMES, "ort2", runtime)
    monkeypatch.setitem(formats.FORMATS, "onnx2", fmt)
    assert lm_formats()["onnx2"] == ".onnx2"
    assert stepper_class("onnx2") is OnnxRuntimeLM
    model = _lm_cases.small_model(_lm_cases.MIXED[0][1], seed=3, max_seq_len=128)
    rows = export_lm(model, ["onnx2"], tmp_path, max_context=128, validate=False)
    assert rows[0]["error"] is None and rows[0]["path"].endswith(".onnx2"), rows
    stepper = load_lm_artifact(rows[0]["path"])
    assert isinstance(stepper, OnnxRuntimeLM) and stepper.step([256]).shape == (1, 259)
