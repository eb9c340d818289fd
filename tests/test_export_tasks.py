"""One ``export()`` for every task (issue 19) and the export findings of issues 22 and 23.

An image classifier and a STAR language model go through the same function: the same
naming, scratch staging, existence checks, result rows and ``.failed.`` names; options
from the format table's schema are refused (naming the flag) where they do not apply;
validation fits the model's context; NaN weights are refused before conversion; Ctrl-C is
never lost; converters' temporary files stay in the scratch folder.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from _lm_cases import MIXED, small_model
from staredge.cli import main
from staredge.errors import ArtifactExistsError, CheckpointError, ConfigError, NonFiniteWeightsError
from staredge.exporters import export
from staredge.exporters.lm_export import export_lm
from staredge.exporters.scratch import SCRATCH_PREFIX
from staredge.formats import TEXT_GENERATION
from staredge.metadata import read_metadata
from staredge.models import create

GENOME = dict(MIXED)["mixed-share-9"]


def _lm(max_seq_len: int = 64, seed: int = 3):
    return small_model(GENOME, seed=seed, max_seq_len=max_seq_len)


def _image():
    torch.manual_seed(0)
    return create("starnet_s050")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(SCRATCH_PREFIX))


# ------------------------------------------------------------------ one function, both tasks


@pytest.mark.parametrize("context", [64, 128])
def test_a_language_model_exports_and_validates_at_its_own_context(tmp_path, context):
    """Validation fits the model: contexts below the old 129-token minimum validate too."""
    report = export(_lm(context), ["onnx"], tmp_path)
    (art,) = report.artifacts
    assert report.task == TEXT_GENERATION and art.task == TEXT_GENERATION
    assert art.passed is True and art.error is None, art
    assert art.path == str(tmp_path / f"star_lm_ctx{context}.onnx") and os.path.isfile(art.path)
    assert art.max_context == context and art.validation["decode_steps"] >= context // 2 - 1
    assert art.validation["prompt_tokens"] + art.validation["decode_steps"] <= context
    assert read_metadata(art.path).lm["max_context"] == context
    assert _leftovers(tmp_path) == []


def test_export_lm_is_an_alias_of_export(tmp_path):
    rows = export_lm(_lm(64), ["onnx"], tmp_path, validate=False)
    assert rows[0]["path"] == str(tmp_path / "star_lm_ctx64.onnx") and rows[0]["passed"] is None
    assert rows[0]["state_bytes"] == read_metadata(rows[0]["path"]).lm["state_bytes"]
    with pytest.raises(ArtifactExistsError, match="star_lm_ctx64.onnx"):  # the shared existence check
        export(_lm(64), "onnx", tmp_path, validate=False)


def test_an_openvino_language_model_keeps_its_xml_and_bin_names(tmp_path):
    pytest.importorskip("openvino")
    (art,) = export(_lm(64), ["openvino"], tmp_path, validate=False).artifacts
    assert art.error is None and art.path == str(tmp_path / "star_lm_ctx64.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["star_lm_ctx64.bin", "star_lm_ctx64.xml"]
    assert art.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_a_failed_language_model_validation_never_leaves_the_final_name(tmp_path, monkeypatch):
    """Issue 23: like the image path, a failed LM artifact is kept only as ``.failed.``."""
    pytest.importorskip("openvino")
    from staredge.exporters import lm_validate

    monkeypatch.setattr(lm_validate, "FP32_ATOL", -1.0)  # nothing can pass
    report = export(_lm(64), ["onnx", "openvino"], tmp_path)
    assert not report.passed
    onnx, ov = report.artifacts
    assert onnx.passed is False and "validation failed: max |Δ|" in onnx.error and "not under its final name" in onnx.error
    assert onnx.path == str(tmp_path / "star_lm_ctx64.failed.onnx") and os.path.isfile(onnx.path)
    assert ov.path == str(tmp_path / "star_lm_ctx64.failed.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "star_lm_ctx64.failed.bin", "star_lm_ctx64.failed.onnx", "star_lm_ctx64.failed.xml"]


# ------------------------------------------------------------------ options from the schema


def test_options_that_do_not_apply_are_refused_naming_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"--dynamic-batch \(dynamic_batch=\) applies to image classifiers only"):
        export(_lm(64), "onnx", tmp_path, dynamic_batch=True)
    with pytest.raises(ConfigError, match=r"--max-context \(max_context=\) applies to language models only"):
        export(_image(), "onnx", tmp_path, max_context=10)
    with pytest.raises(ConfigError, match=r"--coreml-state .* applies to CoreML only"):
        export(_lm(64), "onnx", tmp_path, coreml_state="fp16x2")
    with pytest.raises(ConfigError, match=r"--precision fp16 is not available for language models in ONNX"):
        export(_lm(64), "onnx", tmp_path, precision="fp16")
    with pytest.raises(ConfigError, match=r"--calibration \(calibration=\) applies to image classifiers only"):
        export(_lm(64), "onnx", tmp_path, calibration="photos/")
    with pytest.raises(ConfigError, match=r"--dim \(dim=\)"):
        export(_image(), "onnx", tmp_path, dim=64)
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_out_that_looks_like_a_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="looks like a file name, but it is the output folder"):
        export(_image(), "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_nan_weights_of_a_language_model_are_refused_naming_the_tensor(tmp_path):
    model = _lm(64)
    with torch.no_grad():
        model.norm.weight[3] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"1 NaN/Inf value\(s\) in 'norm.weight'"):
        export(model, "onnx", tmp_path)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ Ctrl-C and scratch


def _patch_onnx_exporter(monkeypatch, body):
    from staredge.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "export_onnx", body)


def test_ctrl_c_wrapped_by_a_converter_ends_the_export(tmp_path, monkeypatch):
    """A native module that turns Ctrl-C into "ImportError: initialization failed" (seen in
    issue 23 as a MissingDependencyError) must not be recorded as a failed format."""

    def convert(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc

    _patch_onnx_exporter(monkeypatch, convert)
    with pytest.raises(KeyboardInterrupt):
        export(_image(), "onnx,tflite", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def interactive_sigint():
    """Ctrl-C as in an interactive Python (KeyboardInterrupt), whatever the test process had:
    an xdist worker may run with SIGINT at SIG_DFL, where the signal would end the worker."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_swallowed_by_a_converter_ends_the_export(tmp_path, monkeypatch, interactive_sigint):
    def convert(model, path, *args, **kwargs):
        try:
            # raise_signal is thread-directed: the C handler runs before it returns, so the
            # Python handler runs here. os.kill(getpid()) may be taken by another thread (torch's,
            # execnet's) and run the handler later, outside this try: CI's xdist worker died so.
            signal.raise_signal(signal.SIGINT)
            signal.getsignal(signal.SIGINT)  # let the handler run
        except KeyboardInterrupt:
            pass  # a converter that swallows it
        raise RuntimeError("converter gave up")

    _patch_onnx_exporter(monkeypatch, convert)
    with pytest.raises(KeyboardInterrupt):
        export(_image(), "onnx,tflite", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_converter_temporary_files_stay_in_the_scratch_folder(tmp_path, monkeypatch):
    """What a converter writes to "the temp dir" or leaves in the working folder (``.ses``,
    ``torchinductor_*``) is gone after the export; nothing reaches the system temp dir."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    seen = {}
    real = __import__("staredge.exporters.onnx", fromlist=["export_onnx"]).export_onnx

    def convert(model, path, *args, **kwargs):
        handle, name = tempfile.mkstemp(suffix="graph.onnx")
        os.close(handle)
        seen["tmp"] = Path(name)
        (Path.cwd() / ".ses").write_text("converter scratch")
        (Path.cwd() / "torchinductor_someone").mkdir()
        return real(model, path, *args, **kwargs)

    _patch_onnx_exporter(monkeypatch, convert)
    out = tmp_path / "out"
    (art,) = export(_image(), "onnx", out, validate=False).artifacts
    assert art.error is None and os.path.isfile(art.path)
    assert seen["tmp"].is_relative_to(out) and not seen["tmp"].exists()
    assert list(work.iterdir()) == [] and _leftovers(out) == []
    assert tempfile.gettempdir() != str(seen["tmp"].parent)


# ------------------------------------------------------------------ the CLI: one command


def test_cli_refuses_flags_that_do_not_apply(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["export", "star_lm_pydoc", "--precision", "fp16", "--out", out]) == 2
    assert "--precision fp16 is not available for language models" in capsys.readouterr().err
    assert main(["export", "star_lm_pydoc", "--dynamic-batch", "--out", out]) == 2
    assert "--dynamic-batch (dynamic_batch=) applies to image classifiers only" in capsys.readouterr().err
    assert main(["export", "starnet_s050", "--max-context", "10", "--out", out]) == 2
    assert "--max-context (max_context=) applies to language models only" in capsys.readouterr().err
    assert main(["export", "star_lm_pydoc", "--labels", "x.txt", "--out", out]) == 2
    assert "--labels applies to image classifiers only" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_cli_missing_checkpoint_says_the_file_does_not_exist(tmp_path, capsys):
    missing = str(tmp_path / "my_ft.safetensors")
    assert main(["export", missing, "--model", "starnet_s2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "model given twice" not in err


def test_cli_out_named_like_an_artifact_is_refused(tmp_path, capsys):
    assert main(["export", "starnet_s050", "--out", str(tmp_path / "model.onnx")]) == 2
    assert "looks like a file name" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


def test_cli_failed_language_model_export_prints_its_reason(tmp_path, capsys):
    """Issue 22: a failure prints its reason on the terminal; no final name is left."""
    out = tmp_path / "out"
    code = main(["export", "transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "40",
                 "--prefill-chunk", "50", "--out", str(out)])
    assert code == 2 and "prefill_chunk must be in 1..max_context (40), got 50" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_language_model_at_a_small_context(tmp_path, capsys):
    """``--max-context 10`` exports and validates on what the context holds."""
    out = tmp_path / "out"
    code = main(["export", "transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "10",
                 "--out", str(out), "--json"])
    doc = __import__("json").loads(capsys.readouterr().out)
    assert code == 0, doc
    (row,) = doc["artifacts"]
    assert doc["task"] == TEXT_GENERATION and row["passed"] is True and row["max_context"] == 10
    assert row["path"] == str(out / "transformer_pp_d32_n2_ctx10.onnx") and os.path.isfile(row["path"])


def test_python_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export(str(tmp_path / "my_ft.safetensors"), "onnx", tmp_path / "out", model_name="starnet_s2")


def test_cli_exports_every_task_through_the_one_export_function(tmp_path, monkeypatch, capsys):
    """``staredge export star_lm_pydoc --formats all`` and ``staredge export starnet_s050`` both
    call :func:`staredge.exporters.export` (no second pipeline)."""
    import staredge.exporters as exporters
    from staredge.exporters.api import ExportReport

    calls = []

    def fake_export(model, formats, out, **kwargs):
        calls.append((getattr(model, "staredge_name", model), list(formats), kwargs.get("max_context")))
        return ExportReport(model="m", family="f", precision="fp32", out_dir=str(out))

    monkeypatch.setattr(exporters, "export", fake_export)
    assert main(["export", "star_lm_pydoc", "--formats", "all", "--max-context", "64", "--out", str(tmp_path)]) == 0
    assert main(["export", "starnet_s050", "--formats", "all", "--out", str(tmp_path)]) == 0
    assert calls == [("star_lm_pydoc", ["onnx", "openvino", "tflite", "coreml"], 64),
                     ("starnet_s050", ["onnx", "openvino", "tflite", "coreml"], None)]


def test_dim_on_the_shipped_language_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--dim \(dim=\) builds the transformer_pp / striped_mamba baselines only"):
        export("star_lm_pydoc", "onnx", tmp_path, dim=64)


def test_sigkill_during_a_language_model_export_leaves_no_artifact_and_no_temp_file(tmp_path):
    """Issue 23: an LM export killed with SIGKILL leaves nothing under a final name and nothing in
    the system temp dir (converters write into the scratch folder, which the next export removes)."""
    import subprocess
    import sys
    import time

    pytest.importorskip("openvino")
    out, tmp = tmp_path / "out", tmp_path / "systemtmp"
    tmp.mkdir()
    code = ("from staredge.exporters import export; from _lm_cases import MIXED, small_model; "
            "export(small_model(dict(MIXED)['mixed-share-9'], seed=3, max_seq_len=64), ['openvino'], "
            f"{str(out)!r}, validate=False)")
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 240
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(out.glob(f"{SCRATCH_PREFIX}*/tmp/*")):
            seen = True  # the converter is writing its intermediate graph inside the scratch folder
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert seen, "the converter's temporary folder never appeared in the scratch folder"
    assert not list(out.glob("star_lm_ctx64*"))  # nothing under a final (or .failed.) name
    assert list(tmp.iterdir()) == []  # nothing in the system temp dir
    from staredge.exporters.scratch import remove_stale_scratch

    assert remove_stale_scratch(out) and _leftovers(out) == []  # the next export cleans up


@pytest.mark.parametrize("flag", ["--json", "--report"])
def test_cli_report_file_is_never_overwritten_without_force(tmp_path, capsys, flag):
    """Issue 23: ``--json FILE`` / ``--report FILE`` of an LM export onto an existing file."""
    report = tmp_path / "report.json"
    report.write_text("precious")
    code = main(["export", "transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "10",
                 "--out", str(tmp_path / "out"), flag, str(report)])
    assert code == 2 and "exists" in capsys.readouterr().err
    assert report.read_text() == "precious" and not (tmp_path / "out").exists()


def test_coreml_options_reach_the_coreml_exporter_only(tmp_path):
    """``--coreml-state`` / ``coreml_stateful`` from the schema go to the CoreML LM exporter
    (as ``state_precision`` / ``stateful``) and to no other format."""
    pytest.importorskip("coremltools")
    report = export(_lm(16), ["onnx", "coreml"], tmp_path, coreml_state="fp16x2", validate=False)
    onnx, coreml = report.artifacts
    assert onnx.error is None and coreml.error is None, report
    assert read_metadata(coreml.path).extra["coreml"]["state_dtype"] == "float16x2"
    assert "coreml" not in read_metadata(onnx.path).extra
    rows = export_lm(_lm(16), ["coreml"], tmp_path / "explicit", stateful_coreml=False, validate=False)
    assert read_metadata(rows[0]["path"]).extra["coreml"]["stateful"] is False


def test_cli_language_model_that_fails_validation_says_why_on_the_terminal(tmp_path, capsys, monkeypatch):
    """Issue 22: the reason is printed (not only logged), and no final name is left."""
    from staredge.exporters import lm_validate

    monkeypatch.setattr(lm_validate, "FP32_ATOL", -1.0)  # nothing can pass
    out = tmp_path / "out"
    code = main(["export", "transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "10", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "onnx: validation failed: max |Δ|" in captured.err and "not under its final name" in captured.err
    assert "FAIL" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["transformer_pp_d32_n2_ctx10.failed.onnx"]


def test_weight_only_int8_language_model_through_export(tmp_path, capsys):
    """``precision="int8"`` for an LM goes to the format's LM exporter (the table lists it for
    ONNX) and is validated by held-out bits per byte against the fp32 model; a format whose
    LM exporter cannot is refused with the reason, before any work."""
    pytest.importorskip("onnxruntime")
    from staredge.exporters.api import LM_BPB_BOUND

    (art,) = export(_lm(128), ["onnx"], tmp_path, precision="int8").artifacts
    assert art.path == str(tmp_path / "star_lm_int8_ctx128.onnx") and art.precision == "int8"
    assert read_metadata(art.path).precision == "int8"
    v = art.validation
    assert art.passed is True and abs(v["bpb_change"]) <= LM_BPB_BOUND["int8"] == v["bpb_bound"], v
    assert v["bits_per_byte"] != v["fp32_bits_per_byte"]  # the weights really are int8
    with pytest.raises(ConfigError, match=r"--precision int8 is not available for language models in CoreML"):
        export(_lm(128), ["onnx", "coreml"], tmp_path / "x", precision="int8")
    assert main(["export", "star_lm_pydoc", "--precision", "int4", "--formats", "coreml",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--precision int4 is not available for language models in CoreML" in capsys.readouterr().err


# ------------------------------------------------------------------ --img-size and --batch (issue 22)


def test_img_size_and_batch_reach_the_artifact_and_validate(tmp_path):
    """``export --img-size 160 --batch 2``: the graph takes (2, 3, 160, 160), the metadata says
    160, the artifact validates against PyTorch at that size, and a Predictor runs it with its
    own static batch (two images per call) without being told."""
    import numpy as np

    from staredge import Predictor

    assert main(["export", "starnet_s050", "--formats", "onnx,openvino", "--img-size", "160", "--batch", "2",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    for name in ("starnet_s050.onnx", "starnet_s050_openvino/starnet_s050.xml"):
        path = tmp_path / name
        fmt = "onnx" if name.endswith(".onnx") else "openvino"
        assert list(read_metadata(path, fmt).input_size) == [3, 160, 160]
        p = Predictor(path)
        assert p.backend.input_shape == (2, 3, 160, 160)
        x = np.random.default_rng(0).standard_normal((3, 3, 160, 160)).astype(np.float32)
        pair = p.predict(x[:2])[0]
        assert pair.shape == (2, 1000)
        three = p.predict(x)[0]  # two calls, the second padded: the same rows come back
        assert three.shape == (3, 1000)
        np.testing.assert_allclose(three[:2], pair, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(three[2:], p.predict(x[2:])[0], rtol=1e-5, atol=1e-6)
        assert len(p.classify([np.zeros((200, 240, 3), np.uint8)] * 3)) == 3


def test_img_size_rebuilds_efficientformer_for_the_size(tmp_path):
    """EfficientFormerV2's attention grids are built for one size: --img-size builds the model
    for it (a multiple of 32), and a size it cannot take is refused before any work."""
    report = export("efficientformerv2_s0", ["onnx"], tmp_path, img_size=256)
    assert report.passed and list(read_metadata(report.artifacts[0].path, "onnx").input_size) == [3, 256, 256]
    with pytest.raises(ConfigError, match="divisible by 32"):
        export("efficientformerv2_s0", ["onnx"], tmp_path / "b", img_size=100)
    built = create("efficientformerv2_s0")
    with pytest.raises(ConfigError, match="built for 224x224"):
        export(built, ["onnx"], tmp_path / "c", img_size=256)
    mine = create("starnet_s050")  # a module of the caller's: exported at 64, left as it was
    report = export(mine, ["onnx"], tmp_path / "d", img_size=64, validate=False)
    assert list(read_metadata(report.artifacts[0].path, "onnx").input_size) == [3, 64, 64]
    assert tuple(mine.pretrained_cfg.input_size) == (3, 224, 224)


def test_img_size_and_batch_are_refused_where_they_do_not_apply(tmp_path, capsys):
    """Not images: a language model and DemoNet2D (points) refuse them naming the flag; a size
    below 32 or a zero batch is refused as a value."""
    with pytest.raises(ConfigError, match=r"--img-size \(img_size=\) applies to image classifiers"):
        export(_lm(), ["onnx"], tmp_path, img_size=64)
    with pytest.raises(ConfigError, match=r"--batch \(batch=\) applies to image classifiers"):
        export(_lm(), ["onnx"], tmp_path, batch=2)
    with pytest.raises(ConfigError, match="takes points"):
        export("demonet2d", ["onnx"], tmp_path, img_size=64)
    with pytest.raises(ConfigError, match="at least 32"):
        export("starnet_s050", ["onnx"], tmp_path, img_size=16)
    with pytest.raises(ConfigError, match="CoreML image inputs take one image per call"):
        export("starnet_s050", ["onnx", "coreml"], tmp_path, batch=2)
    assert export("starnet_s050", ["coreml"], tmp_path / "one", batch=1, validate=False).artifacts[0].path
    with pytest.raises(SystemExit) as info:
        main(["export", "starnet_s050", "--batch", "0", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--batch" in capsys.readouterr().err
