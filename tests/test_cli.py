"""The ``staredge`` console script: help, version, models table, error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from staredge import __version__
from staredge.cli import main

BIN = Path(sys.executable).parent / "staredge"


def test_console_script_help_and_version():
    out = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, check=True).stdout
    assert "models" in out
    out = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"staredge {__version__}"


def test_models_json_has_paper_figures(capsys):
    assert main(["models", "--family", "starnet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["models"]}
    assert "conv, linear and matmul" in data["convention"]
    s1 = rows["starnet_s1"]
    assert s1["paper_params_m"] == 2.9 and s1["paper_macs_m"] == 425
    assert round(s1["params_m"], 1) == 2.9
    assert abs(s1["macs_delta_pct"]) < 3
    assert "outlier" in rows["starnet_s4"]["note"]


def test_models_table_prints_every_model(capsys):
    from staredge.models import list_models

    assert main(["models", "--family", "demonet"]) == 0
    out = capsys.readouterr().out
    for name in list_models("demonet"):
        assert name in out


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "usage" in capsys.readouterr().out


def test_starEdge_errors_are_one_line(capsys, monkeypatch):
    import staredge.commands.models as cmd

    def boom(family=None):
        from staredge.errors import UnknownModelError

        raise UnknownModelError("unknown model 'x'")

    monkeypatch.setattr(cmd, "model_rows", boom)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "staredge models: error: unknown model 'x'"


def test_unknown_subcommand_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_models_compare_params_under_the_papers_convention(capsys):
    """EfficientFormerV2's paper counts params without BN: the table must compare like with like."""
    assert main(["models", "--family", "efficientformer_v2", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    s0 = rows["efficientformerv2_s0"]
    assert s0["params_convention"] == "no_bn"
    assert abs(s0["params_m"] - s0["paper_params_m"]) / s0["paper_params_m"] < 0.02
    from staredge import profile

    res = profile("efficientformerv2_s0")
    assert res.params_no_bn < res.params  # BN affine parameters exist and were left out
    assert s0["params_m"] == res.params_no_bn / 1e6
