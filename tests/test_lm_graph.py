"""The exportable decode graph (staredge.exporters.lm_graph) against the PyTorch model.

Static state equal to the cache analysis, chunked prefill + >= 64 decode steps within 1e-4
of the parallel forward, and 128 greedy tokens identical, for the parity suite's random
genomes (all 17 classes, every sharing strategy, residual groups), both baselines at small
width and the shipped model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _lm_cases import CASES, CONTEXT, baseline, small_model
from staredge.errors import ConfigError
from staredge.exporters.lm_graph import LMDecodeGraph, state_spec, write_rows
from staredge.exporters.lm_validate import GraphStepper, validate_lm
from staredge.generation import load_lm
from staredge.models.star import STARState
from staredge.models.star.analysis import analyze_genome, cache_elements

ATOL = 1e-4
M = 96  # graph context for the parity cases: chunks of 5+3+7+1+11 then 69 single steps


@pytest.mark.parametrize("name,genome", CASES, ids=[n for n, _ in CASES])
def test_state_spec_equals_static_analysis(name, genome):
    model = small_model(genome, seed=1, max_seq_len=M)
    spec = state_spec(model, M)
    cfgs = model.backbone.configs
    for i, seg in enumerate(genome):
        elems = sum(s.numel for s in spec if s.liv == i)
        assert elems == cache_elements(seg.liv_class, model.dim, M, cfgs.get(seg.liv_class), genome.shared_feature_groups(i))
        if genome.shared_feature_groups(i) and seg.liv_class in (1, 3, 4, 10, 12, 13) and genome[i].feature_strategy == 4:
            assert elems == 0  # a full K/V consumer holds nothing
    report = analyze_genome(genome, model.dim, M, bytes_per_element=4, configs=cfgs)
    assert sum(s.nbytes for s in spec) == report.total_cache_bytes
    # names follow STARState.named_tensors, in the same order
    names = list(STARState(0, model.backbone.init_state(1), 1).named_tensors())
    assert ["past_" + s.name for s in spec] == names
    assert all(s.kind in ("kv", "conv", "ssm", "longconv") for s in spec)
    assert all(s.shape[2] == M for s in spec if s.kind == "kv")
    assert all(s.shape[1] == M for s in spec if s.kind == "longconv")


@pytest.mark.parametrize("name,genome", CASES, ids=[n for n, _ in CASES])
def test_decode_graph_matches_parallel_forward(name, genome):
    seed = sum(map(ord, name))
    model = small_model(genome, seed, max_seq_len=M)
    graph = LMDecodeGraph(model, M)
    ids = torch.randint(0, 259, (1, M), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(ids)
        assert ref.abs().max() > 1.0
        state, pos, pieces = graph.zero_state(), 0, []
        chunks = [5, 3, 7, 1, 11] + [1] * (M - 27)
        for n in chunks:
            out = graph(ids[:, pos:pos + n], torch.tensor([pos]), *state)
            assert out[0].shape == (1, n, 259)
            assert [tuple(t.shape) for t in out[1:]] == [s.shape for s in graph.spec]
            pieces.append(out[0])
            state, pos = list(out[1:]), pos + n
    assert sum(1 for n in chunks if n == 1) >= 64
    torch.testing.assert_close(torch.cat(pieces, 1), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("which", ["star_lm_pydoc", "transformer_pp", "striped_mamba"])
def test_decode_graph_greedy_128_identical(which):
    model = load_lm().model if which == "star_lm_pydoc" else baseline(which)
    graph = LMDecodeGraph(model, CONTEXT if which != "star_lm_pydoc" else 256)
    result = validate_lm(GraphStepper(graph, prefill_chunk=16), model)
    assert result["prompt_tokens"] >= 65 and result["decode_steps"] >= 64
    assert result["greedy_identical"], result
    assert result["max_abs_diff"] <= ATOL, result
    assert result["passed"]


def test_write_rows_is_exact_and_leaves_other_rows():
    buf = torch.randn(1, 2, 10, 3)
    new = torch.randn(1, 2, 4, 3)
    out = write_rows(buf, new, torch.tensor([3, 4, 5, 6]), dim=2)
    assert torch.equal(out[:, :, 3:7], new)
    assert torch.equal(out[:, :, :3], buf[:, :, :3]) and torch.equal(out[:, :, 7:], buf[:, :, 7:])


def test_bad_context_and_state_count_are_refused():
    model = small_model(CASES[0][1], seed=0, max_seq_len=64)
    with pytest.raises(ConfigError, match="exceeds the model's context of 64"):
        LMDecodeGraph(model, 65)
    graph = LMDecodeGraph(model, 32)
    with pytest.raises(ConfigError, match="state tensors"):
        graph(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ConfigError, match="STARLanguageModel"):
        LMDecodeGraph(torch.nn.Linear(2, 2))


def test_graph_stepper_refuses_context_overflow():
    from staredge.runtimes.lm import LMContextError

    model = small_model(CASES[0][1], seed=0, max_seq_len=64)
    stepper = GraphStepper(LMDecodeGraph(model, 8), prefill_chunk=4)
    stepper.reset()
    stepper.prefill(list(range(8)))
    with pytest.raises(LMContextError, match="fixed context of 8"):
        stepper.step([1])
    assert np.isfinite(stepper.state[0]).all()
