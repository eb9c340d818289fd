"""Hardening (issue 16): exports that fail, are killed, or are pointed at unusable places.

- an artifact that fails validation (NaN included) is not left under its final name;
- scratch folders of a killed export are removed by the next export to that folder (only
  those whose owning process is gone), and SIGTERM cleans up like Ctrl-C;
- an unusable output folder or a missing checkpoint path is a typed error naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from staredge.errors import CheckpointError, ConfigError
from staredge.exporters import export
from staredge.exporters.scratch import OWNER_FILE, SCRATCH_PREFIX, failed_paths, remove_stale_scratch
from staredge.models import create


def _model(nan: bool = False):
    torch.manual_seed(0)
    model = create("starnet_s050")
    if nan:
        with torch.no_grad():
            model.head.bias.fill_(float("nan"))
    return model


def test_failed_paths_never_use_the_final_name(tmp_path):
    assert failed_paths(tmp_path / "m.onnx", tmp_path / "m.onnx") == (tmp_path / "m.failed.onnx",) * 2
    unit, entry = failed_paths(tmp_path / "m_openvino", tmp_path / "m_openvino" / "m.xml")
    assert unit == tmp_path / "m_openvino.failed" and entry == unit / "m.xml"


def test_failed_validation_is_not_kept_under_the_final_name(tmp_path, monkeypatch):
    from staredge.exporters.validate import TOLERANCES

    monkeypatch.setitem(TOLERANCES, "fp32", {"max_abs_diff": -1.0})  # nothing can pass
    art = export(_model(), "onnx", tmp_path).artifacts[0]
    assert art.passed is False and "not under its final name" in art.error
    assert art.path == str(tmp_path / "starnet_s050.failed.onnx") and os.path.isfile(art.path)
    assert not (tmp_path / "starnet_s050.onnx").exists()
    # asked to keep it: the old behaviour
    kept = export(_model(), "onnx", tmp_path / "keep", keep_failed=True).artifacts[0]
    assert kept.passed is False and kept.path == str(tmp_path / "keep" / "starnet_s050.onnx")
    assert os.path.isfile(kept.path)


def test_nan_weights_are_refused_and_leave_no_final_artifact(tmp_path):
    """Issue 23: a model with NaN weights is refused before any conversion, naming the tensor
    (it used to be converted and then fail validation on NaN outputs)."""
    from staredge.errors import NonFiniteWeightsError

    with pytest.raises(NonFiniteWeightsError, match=r"1,000 NaN/Inf value\(s\) in 'head.bias'"):
        export(_model(nan=True), "onnx", tmp_path)
    assert not (tmp_path / "starnet_s050.onnx").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(SCRATCH_PREFIX)] if tmp_path.exists() else True


def _make_scratch_and_die(out: Path) -> None:
    """A real process makes a scratch folder and dies without cleaning up (like SIGKILL)."""
    code = textwrap.dedent(f"""
        import os, pathlib
        from staredge.exporters.scratch import make_scratch
        d = make_scratch(pathlib.Path({str(out)!r}))
        (d / "model.onnx").write_bytes(b"half-written artifact")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_stale_scratch_of_a_dead_process_is_removed_by_the_next_export(tmp_path):
    _make_scratch_and_die(tmp_path)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
    assert len(stale) == 1 and (stale[0] / OWNER_FILE).is_file()
    # a folder of a live process (this test's parent) and one without an owner file stay
    live = tmp_path / f"{SCRATCH_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(json.dumps({"pid": os.getppid(), "start": None}))
    foreign = tmp_path / f"{SCRATCH_PREFIX}foreign"
    foreign.mkdir()
    report = export(_model(), "onnx", tmp_path, validate=False)
    assert report.artifacts[0].path == str(tmp_path / "starnet_s050.onnx")
    assert not stale[0].exists()
    assert live.is_dir() and foreign.is_dir()
    assert remove_stale_scratch(tmp_path) == []


def test_recycled_pid_is_not_mistaken_for_the_owner(tmp_path):
    folder = tmp_path / f"{SCRATCH_PREFIX}recycled"
    folder.mkdir()
    # this process's pid, but another start time: the owner is gone and the pid reused
    (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getppid(), "start": "1"}))
    if Path(f"/proc/{os.getppid()}/stat").is_file():
        assert remove_stale_scratch(tmp_path) == [folder]
    else:  # without /proc the start time cannot be compared: the folder is kept
        assert remove_stale_scratch(tmp_path) == []


def test_sigterm_during_export_removes_the_scratch_folder(tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        import torch
        import staredge.exporters.onnx as onnx_exporter
        from staredge.exporters import export
        from staredge.models import create

        def slow(model, path, metadata, precision, **kw):
            open(path, "wb").write(b"half")
            print("EXPORTING", flush=True)
            time.sleep(300)

        onnx_exporter.export_onnx = slow
        import staredge.formats as formats
        export(create("starnet_s050"), "onnx", {str(out)!r}, validate=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "EXPORTING"
        assert [p for p in out.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == -signal.SIGTERM
    finally:
        proc.kill()
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("where", ["file", "below-file", "proc"])
def test_unusable_out_folder_is_a_config_error(tmp_path, where):
    (tmp_path / "a-file").write_text("x")
    out = {"file": tmp_path / "a-file", "below-file": tmp_path / "a-file" / "out", "proc": Path("/proc/staredge-x")}[where]
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        export("starnet_s050", "onnx", out, validate=False)


def test_missing_checkpoint_path_says_not_found(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pth"):
        export(str(tmp_path / "missing.pth"), "onnx", tmp_path / "out")


def test_export_cli_checks_its_outputs_before_any_work(tmp_path, capsys):
    from staredge.cli import main

    report = tmp_path / "r.json"
    report.write_text('{"mine": 1}')
    out = tmp_path / "out"
    base = ["export", "starnet_s050", "--out", str(out), "--no-validate"]
    # an existing report is not overwritten without --force, and nothing is exported
    assert main(base + ["--report", str(report)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert report.read_text() == '{"mine": 1}' and not out.exists()
    # a report under /proc: refused before the artifacts are written
    assert main(base + ["--report", "/proc/staredge-x/r.json"]) == 2
    assert "cannot write there" in capsys.readouterr().err and not out.exists()
    # --out that is a file, or below a file
    for bad in (report, report / "below"):
        assert main(["export", "starnet_s050", "--out", str(bad), "--no-validate"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "--out" in err
    # with --force the report is replaced
    assert main(base + ["--report", str(report), "--force"]) == 0
    assert json.loads(report.read_text())["model"] == "starnet_s050"
