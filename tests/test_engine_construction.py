"""Issue 19: every runtime session is constructed in exactly one module per runtime.

The scan walks the package source (``staredge/``, ``models/``, ``exporters/``,
``runtimes/``) with ``ast`` and fails when a constructor of a runtime session appears
outside its runtime's engine module: an ONNX Runtime ``InferenceSession``, an OpenVINO
``read_model`` / ``compile_model``, a LiteRT ``Interpreter``, a CoreML ``MLModel`` (one
opened with ``skip_model_load=True`` is a converter's handle, not a session), the MIL
reference executor. The engines themselves are checked to be the classes the image
backends and the LM steppers hold.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("staredge", "models", "exporters", "runtimes")

#: constructor name → the one module (path from the repository root) allowed to call it.
CONSTRUCTORS = {
    "InferenceSession": "runtimes/onnxruntime.py",
    "read_model": "runtimes/openvino.py",
    "compile_model": "runtimes/openvino.py",
    "Interpreter": "runtimes/litert.py",
    "MLModel": "runtimes/coreml.py",
    "MILExecutor": "runtimes/coreml.py",
    "StatefulMILExecutor": "runtimes/coreml.py",
}


def _called_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _is_converter_handle(node: ast.Call) -> bool:
    """``MLModel(..., skip_model_load=True)``: coremltools' handle on a spec, no runtime."""
    return any(k.arg == "skip_model_load" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in node.keywords)


def constructor_calls() -> list[tuple[str, int, str]]:
    """(file, line, constructor) of every constructor call in the package source."""
    found = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    name = _called_name(node)
                    if name in CONSTRUCTORS and not _is_converter_handle(node):
                        found.append((path.relative_to(ROOT).as_posix(), node.lineno, name))
    return found


def test_sessions_are_constructed_only_in_their_engine_module():
    calls = constructor_calls()
    outside = [f"{f}:{line}: {name}(...) (allowed only in {CONSTRUCTORS[name]})"
               for f, line, name in calls if f != CONSTRUCTORS[name]]
    assert not outside, "runtime sessions built outside their engine module:\n" + "\n".join(outside)
    # the scan sees the engines themselves (it would pass vacuously if it saw nothing)
    assert {name for _, _, name in calls} >= {"InferenceSession", "read_model", "compile_model", "Interpreter",
                                              "MLModel", "MILExecutor"}


def test_the_scan_catches_a_constructor_outside_its_module(tmp_path, monkeypatch):
    """A planted ``ort.InferenceSession(...)`` in another module is reported."""
    fake = tmp_path / "runtimes"
    fake.mkdir()
    (fake / "sneaky.py").write_text("import onnxruntime as ort\ns = ort.InferenceSession('m.onnx')\n")
    (fake / "coreml_ok.py").write_text("import coremltools as ct\nm = ct.models.MLModel('x', skip_model_load=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    calls = constructor_calls()
    assert calls == [("runtimes/sneaky.py", 2, "InferenceSession")]


@pytest.mark.parametrize("module, engine", [
    ("staredge.runtimes.onnxruntime", "OnnxRuntimeEngine"),
    ("staredge.runtimes.openvino", "OpenVinoEngine"),
    ("staredge.runtimes.litert", "LiteRtEngine"),
    ("staredge.runtimes.coreml", "CoreMLEngine"),
    ("staredge.runtimes.pytorch", "PyTorchEngine"),
])
def test_each_runtime_has_one_engine_with_the_common_interface(module, engine):
    import importlib

    from staredge.runtimes.base import Engine

    cls = getattr(importlib.import_module(module), engine)
    assert issubclass(cls, Engine) and cls.runtime == module.rsplit(".", 1)[1]
    for method in ("threads_in_effect", "op_histogram", "run_feeds", "inputs", "outputs", "run_failed", "close"):
        assert callable(getattr(cls, method)), method
    assert set(cls.capabilities) <= set(Engine.CAPABILITIES)
