"""Weight-only int8 / int4 LM artifacts (exporters/lm_quantize.py, issue 21) on the shipped
model: ONNX (MatMulNBits), OpenVINO (NNCF) and TFLite (ai-edge-quantizer) keep held-out bits
per byte (int8 within 1 %, int4 within 5 %: measured 0.1-0.7 %); int8 keeps the fp32 model's
greedy tokens (int4's agreement is reported: TFLite's per-channel int4 flips the first token);
they are smaller; they run through ``staredge.runtimes.load_backend``; precisions a format
cannot do are refused."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from lm_helpers import SHIPPED_CONTEXT, export, shipped_artifact, shipped_model
from staredge.errors import ConfigError
from staredge.exporters.lm_quantize import bits_per_byte, check_lm_precision, held_out_bytes, lm_quality
from staredge.formats import TEXT_GENERATION, get_format
from staredge.metadata import read_metadata
from staredge.runtimes.lm import load_lm_artifact

HELD = 1024  # bytes of the held-out text (4 windows of 256) scored per artifact here
GREEDY = 64
BOUND = {"int8": 0.01, "int4": 0.05}
CASES = [("onnx", "int8"), ("onnx", "int4"), ("openvino", "int8"), ("openvino", "int4"), ("tflite", "int8"),
         ("tflite", "int4")]
NEEDS = {"onnx": "onnxruntime", "openvino": "nncf", "tflite": "ai_edge_quantizer"}


def _size(path) -> int:
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


@pytest.mark.parametrize("fmt,precision", CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_quantized_artifact_keeps_quality(tmp_path_factory, fmt, precision):
    pytest.importorskip(NEEDS[fmt])
    model = shipped_model()
    path = shipped_artifact(tmp_path_factory, fmt, precision=precision)
    fp32 = shipped_artifact(tmp_path_factory, fmt)
    meta = read_metadata(path)
    assert meta.precision == precision
    assert meta.extra[fmt]["weights"]["embedding"] == ("quantized" if fmt == "tflite" else "fp32")
    assert _size(path) < (0.5 if precision == "int8" else 0.4) * _size(fp32)
    q = lm_quality(load_lm_artifact(path), model, held_bytes=HELD, greedy_tokens=GREEDY)
    print(fmt, precision, q)
    assert q["held_out_bytes"] == HELD and q["greedy_tokens"] == GREEDY
    assert abs(q["bpb_change"]) <= BOUND[precision], q
    if precision == "int8":
        assert q["greedy_agree"] >= GREEDY // 2, q
    # not a no-op: the quantised weights move the score a little
    assert q["bits_per_byte"] != q["fp32_bits_per_byte"]


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_quantized_artifact_runs_through_load_backend(tmp_path_factory, fmt):
    pytest.importorskip(NEEDS[fmt])
    from staredge.exporters.lm_validate import prompt_ids
    from staredge.runtimes import load_backend

    path = shipped_artifact(tmp_path_factory, fmt, precision="int8")
    backend = load_backend(path, threads=1, device="cpu")
    try:
        stepper = backend.new_stepper()
        stepper.reset()
        logits = stepper.prefill(prompt_ids(b"The return value "))
        assert logits.shape == (18, 259) and np.isfinite(logits).all()
        ref = load_lm_artifact(shipped_artifact(tmp_path_factory, fmt))
        ref.reset()
        want = ref.prefill(prompt_ids(b"The return value "))
        assert (logits.argmax(-1) == want.argmax(-1)).mean() >= 0.9
    finally:
        backend.close()


def test_onnx_embedding_and_head_precision_are_explicit(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = shipped_model()
    kept = export("onnx", model, tmp_path / "a.onnx", max_context=SHIPPED_CONTEXT, precision="int4")
    both = export("onnx", model, tmp_path / "b.onnx", max_context=SHIPPED_CONTEXT, precision="int4",
                  quantization={"embedding": "quantized", "head": "quantized"})
    ops_kept = collections.Counter(n.op_type for n in onnx.load(str(kept)).graph.node)
    ops_both = collections.Counter(n.op_type for n in onnx.load(str(both)).graph.node)
    assert ops_both["MatMulNBits"] == ops_kept["MatMulNBits"] + 1  # the LM head
    assert "GatherBlockQuantized" in ops_both and "GatherBlockQuantized" not in ops_kept
    assert read_metadata(both).extra["onnx"]["weights"]["head"] == "quantized"
    data = held_out_bytes(512)
    a, b = bits_per_byte(load_lm_artifact(kept), data), bits_per_byte(load_lm_artifact(both), data)
    assert a != b and abs(a / b - 1) < 0.02
    with pytest.raises(ConfigError, match="4 bits only"):  # ORT's GatherBlockQuantized is int4 only
        export("onnx", model, tmp_path / "c.onnx", max_context=SHIPPED_CONTEXT, precision="int8",
               quantization={"embedding": "quantized"})


def test_refusals_name_the_reason(tmp_path):
    model = shipped_model()
    for fmt, precision in (("coreml", "int8"), ("coreml", "int4"), ("onnx", "fp16"), ("tflite", "int2")):
        with pytest.raises(ConfigError, match=f"{fmt}.*{precision}"):
            check_lm_precision(fmt, precision)
    with pytest.raises(ConfigError, match="not offered for TFLite"):
        export("tflite", model, tmp_path / "m.tflite", max_context=SHIPPED_CONTEXT, precision="int8",
               quantization={"head": "fp32"})
    with pytest.raises(ConfigError, match="int8 only"):
        export("tflite", model, tmp_path / "m.tflite", max_context=SHIPPED_CONTEXT, precision="int4",
               quantization={"mode": "dynamic"})
    with pytest.raises(ConfigError, match="block_size"):
        export("onnx", model, tmp_path / "m.onnx", max_context=SHIPPED_CONTEXT, precision="int4",
               quantization={"block_size": 24})
    with pytest.raises(ConfigError, match="embedding"):
        export("onnx", model, tmp_path / "m.onnx", max_context=SHIPPED_CONTEXT, precision="int8",
               quantization={"embedding": "int2"})
    for fmt, path in (("tflite", "m.tflite"), ("onnx", "m.onnx")):
        with pytest.raises(ConfigError, match="unknown: group_size"):
            export(fmt, model, tmp_path / path, max_context=SHIPPED_CONTEXT, precision="int4",
                   quantization={"group_size": 32} if fmt == "tflite" else {"group_size": 32, "block_size": 32})
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.tflite").exists()
    assert get_format("onnx").precisions_for(TEXT_GENERATION) == ("fp32", "int8", "int4")


def test_validate_quantized_judges_against_the_bounds(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from staredge.exporters.lm_quantize import validate_quantized

    model = shipped_model()
    stepper = load_lm_artifact(shipped_artifact(tmp_path_factory, "onnx", precision="int8"))
    ok = validate_quantized(stepper, model, "int8", held_bytes=512, greedy_tokens=40)
    assert ok["passed"] and ok["bound"] == 0.01 and ok["greedy_agree"] >= 32
    # the same artifact judged as if it had to match another model fails
    from staredge.bench.peers import transformer_pp_model

    other = transformer_pp_model(dim=128, layers=1, max_seq_len=1024)  # random weights
    bad = validate_quantized(stepper, other, "int8", held_bytes=512, greedy_tokens=40)
    assert not bad["passed"] and bad["bpb_change"] < -0.01  # the trained artifact is far from random weights
    with pytest.raises(ConfigError, match="judges"):
        validate_quantized(stepper, model, "fp32")


def test_held_out_text_is_the_training_scripts_tail():
    data = held_out_bytes()
    assert 10_000 < len(data) < 200_000
    assert held_out_bytes(300) == data[:300]
