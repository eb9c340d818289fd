"""STAR genomes: parsing, tiling, validation (errors name segment and rule), repair, the
sharing semantics the backbone builds from them, baselines, configs and save/rebuild."""

from __future__ import annotations

import json

import pytest
import torch

from staredge.errors import ConfigError, StarEdgeError
from staredge.models.star import (
    ChannelMixingStructure,
    Genome,
    GenomeError,
    LIVConfig,
    STARLanguageModel,
    Segment,
    TokenMixingStructure,
    parse_genome,
    random_genome,
    striped_mamba,
    transformer_pp,
)
from staredge.models.star import choices as C


# -- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "11111-91111-12121-92121",
    "11111 91111 12121 92121",
    "11111_91111|12121,92121",
    "11111911111212192121",
    [[1, 1, 1, 1, 1], [9, 1, 1, 1, 1], [1, 2, 1, 2, 1], [9, 2, 1, 2, 1]],
    ["11111", "91111", "12121", "92121"],
    "1-9-1-9",
    [1, 9, 1, 9],
])
def test_equivalent_forms_parse_to_the_same_genome(text):
    g = parse_genome(text)
    assert str(g) == "11111-91111-12121-92121"
    assert g.as_lists()[2] == [1, 2, 1, 2, 1]


def test_residual_gene_dotted_values_and_round_trip():
    g = parse_genome("111111-911110-121211")
    assert [s.residual_group for s in g] == [1, 0, 1]
    assert g.residual_source(2) == 0 and g.residual_source(1) is None
    assert str(g) == "111111-911110-121211"
    d = parse_genome("10.1.1.1.1-91111-10.2.2.1.4")
    assert [s.liv_class for s in d] == [10, 9, 10]
    assert d.feature_producer(2) == 0 and d.shared_feature_groups(2) == ("k", "v")
    assert parse_genome(str(d)) == d
    for seed in range(5):
        r = random_genome(12, seed=seed, share_prob=0.6, residual_prob=0.3)
        assert parse_genome(str(r)) == r
        assert parse_genome(r.as_lists()) == r


def test_tiling_a_motif_to_depth():
    g = parse_genome([[1, 1, 1, 1, 1], [9, 1, 1, 1, 1], [1, 2, 1, 2, 1]], depth=24)
    assert len(g) == 24 and [s.liv_class for s in g[:6]] == [1, 9, 1, 1, 9, 1]
    with pytest.raises(GenomeError, match="does not divide depth 10"):
        parse_genome("11111-91111-12121", depth=10)


@pytest.mark.parametrize("bad, match", [
    ("", "empty"),
    ("11111-9x111", "characters other than digits"),
    ("1111", "multiple of 5"),
    ("11111-9111", "1 \\(class only\\), 5 or 6 integers"),
    ([[1, 1, 1]], "5 or 6 integers"),
    (3.5, "string, a list or a Genome"),
])
def test_unparseable_genomes_raise_genome_error(bad, match):
    with pytest.raises(GenomeError, match=match):
        parse_genome(bad)


# -- validation and repair -----------------------------------------------------------------

@pytest.mark.parametrize("text, segment, rule", [
    ("11111-18.1.1.1.1", 2, "class"),
    ("11111-01111", 2, "class"),
    ("11111-91311", 2, "featurizer-strategy"),
    ("11111-91114", 2, "feature-strategy"),   # GMemless has strategies 1..3
    ("11111-11116", 2, "feature-strategy"),   # attention has 1..4
    ("11111-13111", 2, "featurizer-link"),    # 2 SA-1 LIVs: groups 1..2
    ("11111-91121", 2, "feature-link"),       # a lone GMemless can only be group 1
    ("11111-10111", 2, "featurizer-link"),    # group 0
])
def test_validation_errors_name_segment_and_rule(text, segment, rule):
    g = parse_genome(text, repair=True)  # repair never raises and yields a valid genome
    assert g.issues() == []
    with pytest.raises(GenomeError) as exc:
        parse_genome(text)
    assert f"segment {segment} (" in str(exc.value) and f"[{rule}]" in str(exc.value)
    assert "repair=True" in str(exc.value) and "--repair" in str(exc.value)
    assert isinstance(exc.value, ConfigError) and isinstance(exc.value, StarEdgeError)


def test_repair_fixes_values_and_links_and_keeps_valid_genes():
    bad = Genome([Segment(1, 1, 1, 1, 1), Segment(0, 1, 1, 1, 1), Segment(9, 1, 7, 1, 9),
                  Segment(1, 5, 2, 1, 4), Segment(9, 1, 1, 4, 3)])
    rules = {i.rule for i in bad.issues()}
    assert "class" in rules
    fixed = bad.repaired(seed=3)
    assert fixed.issues() == []
    assert fixed.repaired(seed=3) == fixed  # a valid genome is left alone
    assert fixed == bad.repaired(seed=3)  # deterministic for a seed
    assert fixed[0] == bad[0]
    assert fixed[2].featurizer_strategy in (1, 2) and fixed[2].feature_strategy in (1, 2, 3)
    assert 1 <= fixed[1].liv_class <= 17
    # the invalid featurizer link of segment 4 (group 5 with 2 SA-1s) moved to a free group
    n_sa1 = sum(s.liv_class == 1 for s in fixed)
    assert 1 <= fixed[3].featurizer_group <= n_sa1
    # the valid feature link of segment 4 (K and V of segment 1) survives
    assert fixed.feature_producer(3) == 0 and fixed[3].feature_strategy == 4


def test_random_genomes_are_valid_and_seeded():
    gens = [random_genome(16, seed=s, share_prob=0.7, residual_prob=0.3) for s in range(20)]
    assert all(g.issues() == [] for g in gens)
    assert random_genome(16, seed=4, share_prob=0.7) == random_genome(16, seed=4, share_prob=0.7)
    assert len({str(g) for g in gens}) == 20
    assert any(g.feature_producer(i) is not None for g in gens for i in range(16))
    assert any(g.featurizer_producer(i) is not None for g in gens for i in range(16))


# -- sharing semantics as built by the backbone --------------------------------------------------

def test_paper_examples_share_as_described():
    # Section 3.1: LIVs 1 and 3 (class 2) share featurizers; LIVs 2 and 4 (class 3) share feature groups.
    g = parse_genome("21211-31112-21221-32112")
    assert g.featurizer_producer(2) == 0 and g.featurizer_producer(3) is None
    assert g.feature_producer(3) == 1 and g.shared_feature_groups(3) == ("k",)
    cfg = {c: LIVConfig(head_dim=16) for c in (2, 3)}
    m = STARLanguageModel(64, 4, g, configs=cfg, max_seq_len=16)
    livs = m.backbone.livs
    assert livs[2].featurizer is livs[0].featurizer and livs[3].featurizer is not livs[1].featurizer
    # Appendix A.6.1 third example: the two SA-1 LIVs (1st and 5th) share featurizer weights.
    a6 = parse_genome("11111 91111 51111 92121 11221 91131")
    assert a6.featurizer_producer(4) == 0
    shared_params = STARLanguageModel(64, 6, a6, max_seq_len=16).num_parameters()
    unshared_params = STARLanguageModel(64, 6, "11111-91111-51111-92121-12121-93131", max_seq_len=16).num_parameters()
    assert unshared_params - shared_params == 3 * 64 * 64  # one set of q, k, v projections


def test_residual_groups_follow_appendix_a7():
    """y^n = LIV(norm(u)) + u with u = y^{n-1} + y^m for the nearest earlier m in the group."""
    torch.manual_seed(0)
    m = STARLanguageModel(32, 3, "911111-911110-911111", max_seq_len=8).eval()
    bb = m.backbone
    assert bb.residual_sources == [None, None, 0]
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        y0 = x + bb.livs[0](bb.norms[0](x))[0]
        y1 = y0 + bb.livs[1](bb.norms[1](y0))[0]
        u = y1 + y0
        y2 = u + bb.livs[2](bb.norms[2](u))[0]
        torch.testing.assert_close(bb(x), y2, rtol=0, atol=1e-6)


# -- baselines ----------------------------------------------------------------------------------

def test_baselines_by_name():
    t = transformer_pp(768, 24)
    assert [s.liv_class for s in t] == [1, 9] * 12
    assert all(t.featurizer_producer(i) is None and t.feature_producer(i) is None for i in range(24))
    s = striped_mamba(768, 24)
    classes = [x.liv_class for x in s]
    assert [i for i, c in enumerate(classes) if c == 1] == [6, 18]
    assert all(c == 9 for c in classes[1::2])
    assert classes.count(5) == 10
    with pytest.raises(GenomeError, match="even"):
        transformer_pp(768, 7)
    m = STARLanguageModel(64, 4, transformer_pp(64, 4), max_seq_len=8)
    assert m.genome == "11111-91111-12121-92121"


# -- configs, the README's LIVConfig and save/rebuild ---------------------------------------------

def test_livconfig_must_match_the_operator_genome():
    ok = LIVConfig(featurizer_class=1, token_mixing=TokenMixingStructure.LOW_RANK, sparsity_mask=False,
                   nonlinearity="softmax", channel_mixing=ChannelMixingStructure.GROUPED)
    assert ok.check(1) is ok and ok.check(10) is ok  # differential SA-1 has SA-1's operator genome
    with pytest.raises(ConfigError, match="token_mixing"):
        LIVConfig(token_mixing=TokenMixingStructure.DIAGONAL).check(1)
    with pytest.raises(ConfigError, match="nonlinearity"):
        LIVConfig(nonlinearity="relu").check(9)
    with pytest.raises(ConfigError, match="not a LIV class"):
        STARLanguageModel(32, 2, "1-9", configs={18: LIVConfig()})
    with pytest.raises(ConfigError, match="positive"):
        LIVConfig(head_dim=0).check(1)
    assert LIVConfig.from_dict(ok.to_dict()) == ok


def test_config_dict_rebuilds_the_model_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_model, save_model

    torch.manual_seed(0)
    cfg = {3: LIVConfig(head_dim=16), 5: LIVConfig(expansion_factor=4)}
    m = STARLanguageModel(64, 6, "31111-51111-91111-31214-52221-92121", configs=cfg, max_seq_len=32).eval()
    d = json.loads(json.dumps(m.config_dict()))
    assert d["genome"] == m.genome and d["vocab_size"] == 259 and d["tie_embeddings"] is True
    save_model(m, str(tmp_path / "m.safetensors"))
    r = STARLanguageModel.from_config_dict(d).eval()
    load_model(r, str(tmp_path / "m.safetensors"))
    ids = torch.randint(0, 259, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(r(ids), m(ids), rtol=0, atol=0)
    assert r.backbone.livs[1].state_size == 4 and r.backbone.livs[0].shape.heads == 4
    with pytest.raises(ConfigError, match="format"):
        STARLanguageModel.from_config_dict({**d, "format": "other/9"})


def test_vocab_tied_head_and_context_limit():
    m = STARLanguageModel(32, 2, "1-9", max_seq_len=8)
    assert (C.VOCAB_SIZE, C.BOS_ID, C.EOS_ID, C.PAD_ID) == (259, 256, 257, 258)
    assert m.head.weight is m.embed.weight and m.max_seq_len == 8
    assert m(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 259)
    with pytest.raises(ConfigError, match="exceed the model's context of 8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    _, st = m.step(torch.zeros(1, 6, dtype=torch.long), m.init_state())
    with pytest.raises(ConfigError, match="context"):
        m.step(torch.zeros(1, 3, dtype=torch.long), st)
    with pytest.raises(ConfigError, match="batch"):
        m.step(torch.zeros(2, 1, dtype=torch.long), st)
    untied = STARLanguageModel(32, 2, "1-9", tie_embeddings=False)
    assert untied.head.weight is not untied.embed.weight
