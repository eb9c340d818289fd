"""Stateful OpenVINO LM artifacts: state inside the infer request, inputs input_ids and
position only, f32 precision hint; token by token vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from _lm_cases import CONTEXT
from lm_helpers import GENOME_CASES, GENOME_IDS, assert_passes, case_model, export_and_check, shipped_fixture, validate_path
from staredge.metadata import read_metadata
from staredge.runtimes.lm import load_lm_artifact

ov = pytest.importorskip("openvino")

shipped = shipped_fixture("openvino")


def test_shipped_model_passes(shipped):
    model, path = shipped
    assert_passes(validate_path(path, model))


def test_stateful_contract(shipped):
    model, path = shipped
    meta = read_metadata(path)
    assert meta.task == "text-generation" and meta.format == "openvino"
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert sorted(p.any_name for p in compiled.inputs) == ["input_ids", "position"]
    assert [o.any_name for o in compiled.outputs] == ["logits"]
    request = compiled.create_infer_request()
    request.infer({"input_ids": np.array([[256, 84]]), "position": np.array([0])})
    states = {s.name: s.state.data.shape for s in request.query_state()}
    assert states == {s["input"]: tuple(s["shape"]) for s in meta.lm["state"]}
    # reset_state() starts a new stream: the same prompt gives the same logits again
    first = request.infer({"input_ids": np.array([[72]]), "position": np.array([2])})["logits"].copy()
    request.reset_state()
    assert all(not np.asarray(s.state.data).any() for s in request.query_state())
    request.infer({"input_ids": np.array([[256, 84]]), "position": np.array([0])})
    again = request.infer({"input_ids": np.array([[72]]), "position": np.array([2])})["logits"]
    np.testing.assert_array_equal(first, again)


def test_two_streams_are_independent(shipped):
    model, path = shipped
    a, b = load_lm_artifact(path), load_lm_artifact(path)
    la = a.prefill([256] + list(b"The import statement"))
    b.prefill([256] + list(b"A class"))
    la2 = a.step([32])
    a.reset()
    ref = a.prefill([256] + list(b"The import statement"))
    np.testing.assert_allclose(la, ref, atol=1e-6)
    np.testing.assert_allclose(la2, a.step([32]), atol=1e-6)


@pytest.mark.parametrize("name,genome", GENOME_CASES, ids=GENOME_IDS)
def test_random_genomes_and_baselines(tmp_path, name, genome):
    export_and_check("openvino", case_model(name, genome), tmp_path / f"{name}.xml", max_context=CONTEXT,
                     prefill_chunk=16)
