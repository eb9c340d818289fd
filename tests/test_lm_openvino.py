"""Stateful OpenVINO LM artifacts: state inside the infer request, inputs input_ids and
position only, f32 precision hint; token by token vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from _lm_cases import CONTEXT, MIXED, baseline, small_model
from staredge.exporters.lm_export import export_lm_openvino
from staredge.exporters.lm_validate import validate_lm
from staredge.generation import load_lm
from staredge.metadata import read_metadata
from staredge.runtimes.lm import load_lm_artifact

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    model = load_lm().model
    path = export_lm_openvino(model, tmp_path_factory.mktemp("lm") / "star_lm_pydoc.xml", max_context=256,
                              name="star_lm_pydoc")
    return model, path


def test_shipped_model_passes(shipped):
    model, path = shipped
    result = validate_lm(load_lm_artifact(path), model)
    assert result["decode_steps"] >= 64 and result["max_abs_diff"] <= 1e-4, result
    assert result["greedy_identical"] and result["passed"]


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


@pytest.mark.parametrize("name,genome", MIXED + [("transformer_pp", None), ("striped_mamba", None)],
                         ids=[n for n, _ in MIXED] + ["transformer_pp", "striped_mamba"])
def test_random_genomes_and_baselines(tmp_path, name, genome):
    model = baseline(name) if genome is None else small_model(genome, seed=sum(map(ord, name)))
    path = export_lm_openvino(model, tmp_path / f"{name}.xml", max_context=CONTEXT, prefill_chunk=16)
    result = validate_lm(load_lm_artifact(path), model)
    assert result["decode_steps"] >= 64 and result["max_abs_diff"] <= 1e-4, result
    assert result["greedy_identical"] and result["passed"], result
