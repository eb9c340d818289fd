"""ONNX LM artifacts: exported decode graphs run by ONNX Runtime, token by token vs PyTorch.

Validation goes through the runtime layer (staredge.runtimes.lm); one test drives the
artifact with onnxruntime's own API only, following docs/lm-artifacts.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _lm_cases import CONTEXT, MIXED, small_model
from lm_helpers import GENOME_CASES, GENOME_IDS, case_model, export, export_and_check, shipped_fixture
from staredge.exporters.lm_validate import prompt_ids, reference, validate_lm
from staredge.metadata import read_metadata
from staredge.models.star.analysis import analyze_genome
from staredge.runtimes.lm import LMContextError, load_lm_artifact

pytest.importorskip("onnxruntime")

shipped = shipped_fixture("onnx")


def test_shipped_model_passes_through_the_runtime(shipped):
    model, path = shipped
    result = validate_lm(load_lm_artifact(path), model)
    assert result["prompt_tokens"] >= 65 and result["decode_steps"] >= 64 and result["greedy_tokens"] == 128
    assert result["max_abs_diff"] <= 1e-4, result
    assert result["greedy_identical"] and result["passed"]


def test_metadata_carries_the_contract(shipped):
    model, path = shipped
    meta = read_metadata(path)
    assert meta.task == "text-generation" and meta.format == "onnx"
    lm = meta.lm
    assert lm["genome"] == model.genome and lm["dim"] == 128 and lm["depth"] == 10
    assert (lm["vocab_size"], lm["bos_id"], lm["eos_id"], lm["pad_id"]) == (259, 256, 257, 258)
    assert lm["max_context"] == 256 and lm["prefill_chunk"] == 16
    report = analyze_genome(model.genome, 128, 256, bytes_per_element=4)
    assert lm["state_bytes"] == report.total_cache_bytes
    kinds = {s["kind"] for s in lm["state"]}
    assert kinds == {"kv", "conv", "ssm"}
    # the KV-sharing consumer (LIV 8) holds no state of its own
    assert not [s for s in lm["state"] if s["liv"] == 8]
    assert [s["input"] for s in lm["state"]][:2] == ["past_conv.0", "past_key_values.2.key"]


def test_driven_with_onnxruntime_api_only(shipped):
    """The loop of docs/lm-artifacts.md, with nothing from StarEdge in it."""
    import onnxruntime as ort

    model, path = shipped
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lm = json.loads(sess.get_modelmeta().custom_metadata_map["staredge"])["lm"]
    state = {s["input"]: np.zeros(s["shape"], dtype=np.float32) for s in lm["state"]}
    outputs = ["logits"] + [s["output"] for s in lm["state"]]

    def run(tokens, position):
        out = sess.run(outputs, {"input_ids": np.array([tokens], dtype=np.int64),
                                 "position": np.array([position], dtype=np.int64), **state})
        state.update({s["input"]: o for s, o in zip(lm["state"], out[1:])})
        return out[0][0]

    ids = prompt_ids()
    pos = 0
    while pos < len(ids):
        chunk = ids[pos:pos + lm["prefill_chunk"]]
        logits = run(chunk, pos)
        pos += len(chunk)
    tokens = []
    for _ in range(128):
        tokens.append(int(np.argmax(logits[-1])))
        logits = run([tokens[-1]], pos)
        pos += 1
    ref_tokens, _ = reference(model, ids, 128)
    assert tokens == ref_tokens


@pytest.mark.parametrize("name,genome", GENOME_CASES, ids=GENOME_IDS)
def test_random_genomes_and_baselines(tmp_path, name, genome):
    export_and_check("onnx", case_model(name, genome), tmp_path / f"{name}.onnx", max_context=CONTEXT, prefill_chunk=16)


def test_stream_refuses_to_run_past_the_context(tmp_path):
    model = small_model(MIXED[0][1], seed=3, max_seq_len=16)
    stepper = load_lm_artifact(export("onnx", model, tmp_path / "m.onnx", max_context=16, prefill_chunk=4))
    stepper.prefill(list(range(16)))
    with pytest.raises(LMContextError):
        stepper.step([0])
    stepper.reset()
    assert stepper.position == 0 and stepper.step([1]).shape == (1, 259)


def test_small_context_validates_with_a_shortened_prompt(tmp_path):
    """The shipped prompt is cut (never below 64 bytes) so that a context of 129 still gets 64
    decode steps; below it validation fits the model: the context is split between prompt and
    decode steps, so 128 (and 64) validate too (issue 19; it used to refuse below 129)."""
    from staredge.exporters.lm_export import export_lm
    from staredge.exporters.lm_validate import MIN_CONTEXT, validation_budget

    assert MIN_CONTEXT == 129 and validation_budget(129) == (64, 64) and validation_budget(128) == (63, 64)
    (ok,) = export_lm("star_lm_pydoc", ["onnx"], tmp_path / "ok", max_context=MIN_CONTEXT)
    assert ok["passed"] is True and ok["error"] is None
    (short,) = export_lm("star_lm_pydoc", ["onnx"], tmp_path / "short", max_context=MIN_CONTEXT - 1)
    assert short["passed"] is True and short["error"] is None
    assert short["validation"]["prompt_tokens"] == 64 and short["validation"]["decode_steps"] == 64
