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


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Logs and downloads of these tests go to a temporary cache, not the user's."""
    monkeypatch.setenv("STAREDGE_CACHE", str(tmp_path / "staredge-cache"))


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


# ----------------------------------------------------------------------------- issue 15: one vocabulary


def test_verbose_is_accepted_before_and_after_the_subcommand(capsys):
    from staredge.cli import build_parser

    parser = build_parser()
    for argv in (["-v", "models"], ["models", "-v"], ["models", "--verbose", "--json"]):
        assert parser.parse_args(argv).verbose is True
    assert parser.parse_args(["models"]).verbose is False
    for cmd in ("export x", "classify a b", "demo", "generate hi", "genome transformer_pp --dim 64 --seq-len 8"):
        assert parser.parse_args([*cmd.split(), "-v"]).verbose is True, cmd


def test_old_spellings_are_aliases():
    from staredge.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["export", "starnet_s1", "--format", "onnx,ov", "--report", "r.json"])
    b = parser.parse_args(["export", "starnet_s1", "--formats", "onnx,ov", "--json", "r.json"])
    assert (a.formats, a.json) == (b.formats, b.json) == ("onnx,ov", "r.json")
    assert parser.parse_args(["export", "starnet_s1", "--json"]).json == "-"
    assert parser.parse_args(["classify", "m.onnx", "i.png", "--backend", "ov"]).backends == "ov"
    assert parser.parse_args(["classify", "m.onnx", "i.png", "--backends", "ov"]).backends == "ov"
    assert parser.parse_args(["generate", "hi", "--backends", "ort"]).backends == "ort"
    assert parser.parse_args(["generate", "hi", "--backend", "ort"]).backends == "ort"


def test_unknown_family_is_an_error_listing_the_families(capsys):
    assert main(["models", "--family", "foo"]) == 2
    err = capsys.readouterr().err
    assert "unknown model family 'foo'" in err and "starnet" in err and "efficientformer_v2" in err


def test_unknown_format_names_the_valid_ones(capsys):
    assert main(["export", "starnet_s050", "--formats", "onnx,foo"]) == 2
    err = capsys.readouterr().err
    assert "unknown export format 'foo'" in err and "openvino" in err


def test_fine_tuned_checkpoint_exports_and_classifies_from_the_cli(tmp_path, capsys):
    """A 10-class fine-tuned checkpoint with names from --labels: export and classify, CLI only."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from staredge.metadata import read_metadata
    from staredge.models import create

    model = create("starnet_s050", num_classes=10)
    with torch.no_grad():
        model.head.bias.copy_(torch.arange(10, dtype=torch.float32))  # class 9 wins on any input
    ckpt = tmp_path / "ft.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))  # no StarEdge metadata
    names = [f"flower {i}" for i in range(10)]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    img = tmp_path / "img.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(img)

    # without --model the error gives the CLI flag, not Python advice
    assert main(["classify", str(ckpt), str(img)]) == 2
    err = capsys.readouterr().err
    assert "--model NAME" in err and "--num-classes" in err and "load_backend" not in err

    out = tmp_path / "out"
    assert main(["export", str(ckpt), "--model", "starnet_s050", "--num-classes", "10", "--labels", str(labels),
                 "--formats", "onnx", "--out", str(out), "--no-validate"]) == 0
    meta = read_metadata(out / "starnet_s050.onnx")
    assert meta.labels == names and meta.checkpoint_sha256 is not None
    capsys.readouterr()
    assert main(["classify", str(out / "starnet_s050.onnx"), str(img), "--top-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"][0]["top_k"][0]["label"] == "flower 9"
    # the checkpoint itself, on the PyTorch runtime, with the same names from the file
    result_file = tmp_path / "res.json"
    assert main(["classify", str(ckpt), str(img), "--model", "starnet_s050", "--num-classes", "10",
                 "--labels", str(labels), "--json", str(result_file)]) == 0
    res = json.loads(result_file.read_text())
    assert res["backend"] == "pytorch" and res["results"][0]["top_k"][0]["label"] == "flower 9"
    # a head that does not fit is reported with the CLI flag
    assert main(["export", str(ckpt), "--model", "starnet_s050", "--formats", "onnx", "--out",
                 str(tmp_path / "o2"), "--no-validate"]) == 2
    assert "does not fit" in capsys.readouterr().err


_QUIET_SCRIPT = r"""
import os, sys, warnings
from staredge.quiet import captured
with captured("quiet-test") as cap:
    os.write(2, b"I0000 some C++ library log line\n")
    print("python stderr chatter", file=sys.stderr)
    warnings.warn("a third-party deprecation", DeprecationWarning)
    print("staredge progress line", file=cap.stderr)
    log = cap.log_path
print("log=" + str(log))
"""


def test_converter_output_goes_to_the_log_not_the_terminal(tmp_path):
    env = {**__import__("os").environ, "STAREDGE_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "always"}
    proc = subprocess.run([sys.executable, "-c", _QUIET_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    assert proc.stderr == "staredge progress line\n"
    log = Path(proc.stdout.strip().split("log=", 1)[1])
    assert log == tmp_path / "cache" / "logs" / "quiet-test.log"
    text = log.read_text()
    assert "some C++ library log line" in text and "python stderr chatter" in text
    assert "a third-party deprecation" in text


def test_demo_json_names_no_path_in_its_deleted_folder(tmp_path, capsys):
    result = tmp_path / "demo.json"
    assert main(["demo", "--formats", "onnx", "--limit", "4", "--repeats", "1", "--json", str(result)]) == 0
    data = json.loads(result.read_text())
    rows = {r["format"]: r for r in data["rows"]}
    assert rows["onnx"]["path"] is None and data["out_dir"] is None and "--out" in data["artifacts_kept"]
    assert Path(rows["pytorch"]["path"]).is_file()  # the shipped checkpoint stays where it is
    assert "held-out" in capsys.readouterr().out  # the table is printed as well
