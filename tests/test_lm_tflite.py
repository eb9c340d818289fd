"""TFLite LM artifacts: ``decode`` and ``prefill`` signatures run by the LiteRT interpreter,
token by token vs PyTorch; no scatter ops; one test uses ai_edge_litert's API only.

Conversions take 10-250 s each here (litert-torch), so there are few of them: the shipped
model, both baselines, and one genome holding all 17 classes with sharing and residual groups.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _lm_cases import CONTEXT, all_classes_genome, baseline, small_model
from lm_helpers import assert_passes, export_and_check, shipped_fixture, validate_path
from staredge.exporters.lm_validate import prompt_ids, reference
from staredge.exporters.tflite_lm import tflite_op_names
from staredge.metadata import read_metadata

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

shipped = shipped_fixture("tflite")


def test_shipped_model_passes(shipped):
    model, path = shipped
    assert_passes(validate_path(path, model))


def test_signatures_ops_and_metadata(shipped):
    from ai_edge_litert.interpreter import Interpreter

    model, path = shipped
    ops = set(tflite_op_names(path.read_bytes()))
    assert not ops & {"STABLEHLO_SCATTER", "SCATTER_ND"}
    assert {"BATCH_MATMUL", "SOFTMAX", "SELECT_V2"} <= ops
    meta = read_metadata(path)
    assert meta.task == "text-generation" and meta.lm["prefill_chunk"] == 16
    sigs = Interpreter(model_path=str(path)).get_signature_list()
    assert set(sigs) == {"decode", "prefill"}
    names = [s["input"] for s in meta.lm["state"]]
    assert all("." not in n for n in names)
    assert sorted(sigs["decode"]["inputs"]) == sorted(["input_ids", "position"] + names)
    assert sorted(sigs["prefill"]["outputs"]) == sorted(["logits"] + [s["output"] for s in meta.lm["state"]])


def test_driven_with_litert_api_only(shipped):
    """The loop of docs/lm-artifacts.md with ai_edge_litert's Interpreter only."""
    from ai_edge_litert.interpreter import Interpreter

    model, path = shipped
    meta_json = read_metadata_with_flatbuffers(path)
    lm = json.loads(meta_json)["lm"]
    interp = Interpreter(model_path=str(path))
    decode, prefill = interp.get_signature_runner("decode"), interp.get_signature_runner("prefill")
    state = {s["input"]: np.zeros(s["shape"], dtype=np.float32) for s in lm["state"]}

    def run(runner, tokens, position):
        out = runner(input_ids=np.array([tokens], dtype=np.int64), position=np.array([position], dtype=np.int64), **state)
        state.update({s["input"]: out[s["output"]] for s in lm["state"]})
        return out["logits"][0]

    ids, chunk, pos = prompt_ids(), lm["prefill_chunk"], 0
    while pos < len(ids):
        if len(ids) - pos >= chunk:
            logits = run(prefill, ids[pos:pos + chunk], pos)
            pos += chunk
        else:
            logits = run(decode, ids[pos:pos + 1], pos)
            pos += 1
    tokens = []
    for _ in range(128):
        tokens.append(int(np.argmax(logits[-1])))
        logits = run(decode, [tokens[-1]], pos)
        pos += 1
    assert tokens == reference(model, ids, 128)[0]


def read_metadata_with_flatbuffers(path) -> str:
    """The ``staredge`` metadata entry, read with the TFLite schema that ai_edge_litert ships."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    entry = next(e for e in m.metadata if e.name in (b"staredge", "staredge"))
    return bytes(np.asarray(m.buffers[entry.buffer].data, dtype=np.uint8)).decode("utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["transformer_pp", "striped_mamba", "all_classes"])
def test_baselines_and_all_classes(tmp_path, which):
    if which == "all_classes":
        model, chunk = small_model(all_classes_genome(), seed=5), 1  # decode signature only: halves the conversion
    else:
        model, chunk = baseline(which), 16
    export_and_check("tflite", model, tmp_path / f"{which}.tflite", max_context=CONTEXT, prefill_chunk=chunk)
