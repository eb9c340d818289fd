"""A decode graph a converter cannot express is refused with an ExportError that names the
LIVs (index and class) and the converter's one-line reason, and nothing is written."""

from __future__ import annotations

import sys

import pytest

from _lm_cases import MIXED, small_model
from staredge.errors import ExportError
from staredge.exporters.lm_export import LMExportError, conversion_error, export_lm, failing_ops
from staredge.exporters.lm_graph import LMDecodeGraph

# mixed-share-9: LIV 0 Diff-GConv-1, 1 GConv-1, 2-3 GConv-2, 4 GConv-1, 5 Diff-GConv-1.
GENOME = dict(MIXED)["mixed-share-9"]


@pytest.fixture(scope="module")
def model():
    return small_model(GENOME, seed=3, max_seq_len=64)


def test_a_failing_op_is_traced_to_the_livs_that_run_it(model, tmp_path, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::index_select' to ONNX opset version 17 is not supported.\n"
                           "  (a long converter traceback follows)")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    from staredge.exporters.onnx_lm import export_lm_onnx

    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as info:
        export_lm_onnx(model, target, max_context=64)
    err = info.value
    assert isinstance(err, LMExportError) and err.format == "ONNX"
    # the long-convolution LIVs gather their filter taps; nothing else does
    assert err.livs == [(2, "GConv-2"), (3, "GConv-2")]
    text = str(err)
    assert "LIV 2 (GConv-2), LIV 3 (GConv-2)" in text and "op 'index_select'" in text
    assert "RuntimeError: Exporting the operator 'aten::index_select'" in text and "traceback" not in text
    assert not target.exists()


def test_an_untraceable_failure_lists_the_genome(model, tmp_path, monkeypatch):
    """The stateful CoreML path: a converter error with no op name lists every LIV's class."""
    pytest.importorskip("coremltools")
    import coremltools as ct

    def refuse(*args, **kwargs):
        print("some converter chatter", file=sys.stderr)
        raise ValueError("Types should have zero-rank ndarray input\nmore detail")

    monkeypatch.setattr(ct, "convert", refuse)
    from staredge.exporters.coreml_lm import export_lm_coreml

    target = tmp_path / "m.mlpackage"
    with pytest.raises(LMExportError) as info:
        export_lm_coreml(model, target, max_context=64, stateful=True)
    text = str(info.value)
    assert info.value.livs == [] and info.value.reason == "ValueError: Types should have zero-rank ndarray input"
    assert text.startswith("CoreML (iOS 18 stateful) conversion of star_lm's decode graph failed")
    assert "0 Diff-GConv-1, 1 GConv-1, 2 GConv-2, 3 GConv-2, 4 GConv-1, 5 Diff-GConv-1" in text
    assert "more detail" not in text and not target.exists()


def test_converter_log_scopes_and_op_names(model):
    graph = LMDecodeGraph(model, 64)
    # coremltools logs the op and its module scope; the pre-norm of LIV 4 belongs to LIV 4
    log = "WARNING: param decoder.model.backbone.livs.1.w is large\nERROR - converting 'rsqrt' op (located at: 'decoder/model/backbone/norms.4'):"
    err = conversion_error(graph, "CoreML", RuntimeError("unsupported"), log=log)
    assert err.livs == [(4, "GConv-1")] and "LIV 4 (GConv-1)" in str(err)
    assert failing_ops("Lowering not found: aten._softmax.default; aten::cumsum") == ["softmax", "cumsum"]
    # a message that dumps every LIV's parameters locates nothing; its op name still does
    dump = "\n".join(f"p_decoder_model_backbone_livs_{i}_w" for i in range(6))
    err = conversion_error(graph, "TFLite", RuntimeError(f"Lowering not found: aten.index_select.default\n{dump}"))
    assert err.livs == [(2, "GConv-2"), (3, "GConv-2")]


def test_export_lm_records_the_refusal_and_goes_on(model, tmp_path, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator aten::conv1d")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    rows = export_lm(model, ["onnx", "openvino"], tmp_path, max_context=64, validate=False)
    assert [r["passed"] for r in rows] == [False, False]
    assert rows[0]["path"] is None and rows[0]["error"].startswith("LMExportError: ONNX cannot express LIV 0 (Diff-GConv-1)")
    assert rows[0]["refused_livs"] == [[0, "Diff-GConv-1"], [1, "GConv-1"], [4, "GConv-1"], [5, "Diff-GConv-1"]]
    assert rows[1]["error"].startswith("LMExportError: OpenVINO cannot express LIV 0")
    assert list(tmp_path.iterdir()) == []
