"""Static analysis of STAR genomes: the paper's cache figures, parameter counts, the
analytic cache against the tensors a real decode state holds, and ``staredge genome``."""

from __future__ import annotations

import json

import pytest
import torch

from staredge.cli import main
from staredge.models.star import LIVConfig, STARLanguageModel, random_genome
from staredge.models.star.analysis import analyze_genome


def test_transformer_pp_cache_matches_paper():
    # 12 SA-1 layers x (K + V) x 768 x 4096 tokens x 2 bytes
    a = analyze_genome("transformer_pp", 768, 4096, depth=24)
    assert a.total_cache_bytes == 12 * 2 * 768 * 4096 * 2 == 150_994_944
    assert round(a.total_cache_mb, 2) == 150.99
    b = analyze_genome("transformer_pp", 2048, 4096, depth=48)
    assert b.total_cache_bytes == 805_306_368 and round(b.total_cache_mb, 1) == 805.3


def test_transformer_pp_parameters_exclude_embeddings():
    d, h = 768, 2048  # SwiGLU hidden = ceil(8/3 * 768 / 256) * 256
    a = analyze_genome("transformer_pp", d, 4096, depth=24)
    per_sa = 4 * d * d + d  # q, k, v, out + pre-norm
    per_mlp = 3 * d * h + d  # gate, up, down + pre-norm
    assert [r.params for r in a.rows[:2]] == [per_sa, per_mlp]
    assert a.total_params == 12 * (per_sa + per_mlp) + d  # + final norm


def test_striped_mamba_cache_is_about_25_mb_and_dominated_by_attention():
    a = analyze_genome("striped_mamba", 768, 4096, depth=24)
    assert 25.0 <= a.total_cache_mb < 26.0
    attention = sum(r.cache_bytes for r in a.rows if r.name == "SA-1")
    assert attention == 2 * 2 * 768 * 4096 * 2
    assert attention / a.total_cache_bytes > 0.97
    rec = [r for r in a.rows if r.name == "Rec-1"]
    assert len(rec) == 10 and all(r.cache_elements == 2 * 768 * 16 + 3 * 2 * 768 for r in rec)


def test_bytes_per_element_and_sharing_reduce_as_expected():
    plain = analyze_genome("11111-12121", 256, 1000)
    shared_kv = analyze_genome("11111-12114", 256, 1000)
    assert plain.total_cache_bytes == 2 * 2 * 256 * 1000 * 2
    assert shared_kv.total_cache_bytes == plain.total_cache_bytes // 2
    assert shared_kv.rows[1].sharing == "k,v of #1"
    fp32 = analyze_genome("11111-12121", 256, 1000, bytes_per_element=4)
    assert fp32.total_cache_bytes == 2 * plain.total_cache_bytes
    gqa = analyze_genome("31111", 256, 1000, configs={3: LIVConfig(head_dim=32)})
    assert gqa.total_cache_bytes == 2 * (256 // 4) * 1000 * 2  # 8 heads, 2 K/V heads


CONFIGS = {c: LIVConfig(head_dim=16) for c in (1, 2, 3, 4, 10, 11, 12, 13)}


@pytest.mark.parametrize("seed", range(6))
def test_analytic_cache_and_params_equal_the_real_model(seed):
    """The analytic cache equals the elements of the state after init_state + step, per LIV;
    the analysed parameters equal the model's (shared featurizers counted once)."""
    genome = random_genome(12, seed=100 + seed, share_prob=0.6, residual_prob=0.2)
    dim, seq = 64, 11
    model = STARLanguageModel(dim, len(genome), genome, configs=CONFIGS, max_seq_len=32).eval()
    report = analyze_genome(genome, dim, seq, bytes_per_element=4, configs=CONFIGS)
    state = model.init_state(1)
    with torch.no_grad():
        _, state = model.step(torch.randint(0, 256, (1, 7)), state)
        for t in range(seq - 7):
            _, state = model.step(torch.randint(0, 256, (1, 1)), state)
    assert state.pos == seq
    actual = [sum(t.numel() for t in c.values()) for c in state.caches]
    assert [r.cache_elements for r in report.rows] == actual
    assert report.total_cache_bytes == state.nbytes()  # fp32 tensors, 4 bytes per element
    assert report.total_params == model.num_parameters()


def test_named_state_tensors_follow_the_decode_convention():
    m = STARLanguageModel(64, 4, "11111-51111-81111-21111", configs=CONFIGS, max_seq_len=16)
    names = m.init_state(1).named_tensors()
    assert {"past_key_values.0.key", "past_key_values.0.value", "past_ssm.1", "past_conv.1",
            "past_longconv.2", "past_conv.3.q", "past_key_values.3.key"} <= set(names)
    assert names["past_key_values.0.key"].shape == (1, 4, 0, 16)  # [batch, kv_heads, past, head_dim]


def test_cli_genome_table_and_json(capsys):
    assert main(["genome", "transformer_pp", "--dim", "768", "--depth", "24", "--seq-len", "4096"]) == 0
    out = capsys.readouterr().out
    assert "150.99" in out and "SA-1" in out and "GMemless" in out
    assert main(["genome", "transformer_pp", "--dim", "2048", "--seq-len", "4096", "--depth", "48", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert round(doc["total_cache_mb"], 1) == 805.3 and len(doc["rows"]) == 48
    assert main(["genome", "striped_mamba", "--dim", "768", "--depth", "24", "--seq-len", "4096", "--json"]) == 0
    assert 25 <= json.loads(capsys.readouterr().out)["total_cache_mb"] < 26
    assert main(["genome", "11111-91111", "--dim", "64", "--seq-len", "8", "--bytes-per-element", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_cache_bytes"] == 2 * 64 * 8 * 4


def test_cli_genome_reports_invalid_genomes_in_one_line(capsys):
    assert main(["genome", "11111-91114", "--dim", "64", "--seq-len", "8"]) == 2
    err = capsys.readouterr().err
    assert "segment 2" in err and "[feature-strategy]" in err and "--repair" in err and "Traceback" not in err
    assert main(["genome", "11111-91114", "--dim", "64", "--seq-len", "8", "--repair", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["genome"].startswith("11111-9111") and doc["genome"][-1] in "123"
