"""Issue 22 / 19: the Python API is as quiet as the CLI (with a documented way to see the
messages), ``staredge --version`` / ``--help`` import no numpy, and files the demo writes are
never replaced without --force."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_numpy(flag):
    code = ("import sys\nfrom staredge.cli import main\ntry:\n    main([%r])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'torch', 'onnxruntime') if m in sys.modules]\n"
            "print('HEAVY', heavy)" % flag)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "HEAVY []" in out, out[-500:]


@pytest.fixture(scope="module")
def demo_paths(tmp_path_factory, worker_id):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from tests._digits_artifacts import artifact_paths, shared_demo_summary

    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def tflite_path(demo_paths):
    if "tflite" not in demo_paths:
        pytest.skip("no TFLite converter on this machine")
    return demo_paths["tflite"]


def _load_in_python(path, env_extra: dict, runtime: str = "litert") -> str:
    code = f"from staredge import Predictor\np = Predictor({str(path)!r})\nprint('loaded', p.backend.name)"
    env = {k: v for k, v in os.environ.items() if k != "STAREDGE_VERBOSE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**env, **env_extra})
    assert proc.returncode == 0 and f"loaded {runtime}" in proc.stdout, proc.stderr[-2000:]
    return proc.stderr


def test_predictor_prints_no_third_party_lines_by_default(tflite_path, tmp_path):
    quiet = _load_in_python(tflite_path, {"STAREDGE_CACHE": str(tmp_path)})
    assert quiet.strip() == ""  # LiteRT's XNNPACK line went to the log
    logs = list((tmp_path / "logs").glob("python-predictor.log"))
    assert logs and "XNNPACK" in logs[0].read_text()
    shown = _load_in_python(tflite_path, {"STAREDGE_CACHE": str(tmp_path), "STAREDGE_VERBOSE": "1"})
    assert "XNNPACK" in shown  # the documented way to see them


def test_a_coreml_predictor_shows_its_notice_not_the_userwarning(demo_paths, tmp_path):
    """Issue 22: loading a .mlpackage from Python printed a CoreML UserWarning (file, line and
    source line); it goes to the log, and the terminal keeps StarEdge's one-line notice."""
    if "coreml" not in demo_paths:
        pytest.skip("no CoreML converter on this machine")
    err = _load_in_python(demo_paths["coreml"], {"STAREDGE_CACHE": str(tmp_path)}, runtime="coreml")
    lines = err.strip().splitlines()
    assert "UserWarning" not in err and all(line.startswith("staredge: ") for line in lines), err
    assert "UserWarning" in (tmp_path / "logs" / "python-predictor.log").read_text()


def test_set_verbose_is_the_python_switch():
    from staredge import quiet

    try:
        quiet.set_verbose(True)
        assert quiet.api_verbose()
    finally:
        quiet.set_verbose(False)
    assert not quiet.api_verbose() or os.environ.get("STAREDGE_VERBOSE")


def test_demo_refuses_to_replace_its_json_before_any_work(tmp_path, capsys):
    pytest.importorskip("torch")
    from staredge.cli import main

    target = tmp_path / "demo.json"
    target.write_text("keep me")
    assert main(["demo", "--formats", "onnx", "--limit", "2", "--json", str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main(["demo", "--formats", "onnx", "--limit", "2", "--json", "/proc/x/demo.json"]) == 2
    assert "/proc/x" in capsys.readouterr().err


@pytest.mark.slow  # a TFLite conversion in a fresh interpreter (about 15 s)
def test_python_export_prints_no_third_party_lines_by_default(tmp_path):
    """Issue 22: export() from Python printed the converters' lines (26 for TFLite + CoreML);
    they go to <cache>/logs/python-export.log unless STAREDGE_VERBOSE / set_verbose(True)."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    code = ("from staredge.exporters import export\n"
            f"(a,) = export('starnet_digits', 'tflite', {str(tmp_path / 'out')!r}, validate=False).artifacts\n"
            "print('exported', a.error)")
    env = {k: v for k, v in os.environ.items() if k != "STAREDGE_VERBOSE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**env, "STAREDGE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0 and "exported None" in proc.stdout, proc.stderr[-2000:]
    assert proc.stderr.strip() == ""
    log = (tmp_path / "cache" / "logs" / "python-export.log").read_text()
    assert len(log.splitlines()) > 1  # the converter's lines are kept, not lost
