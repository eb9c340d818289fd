"""Hardening (issue 16): genome parsing and STAR model arguments.

Every reproducer in tests/fuzz_corpus/genomes.json (untyped errors, hangs and silently
accepted values from the issue) is now a ConfigError/GenomeError/LimitError that names the
argument; limits are checked before a genome is tiled or a module allocated.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _fuzz_seeds as S
from staredge.cli import main as cli_main
from staredge.errors import ConfigError, LimitError, StarEdgeError
from staredge.models.star import Genome, GenomeError, LIVConfig, STARLanguageModel, parse_genome
from staredge.models.star.config import MAX_DEPTH, MAX_DIM, MAX_PARAMETERS, check_int
from staredge.models.star.genome import MAX_GENE_VALUE

CORPUS = json.loads((Path(__file__).parent / "fuzz_corpus" / "genomes.json").read_text())

# (error class, words in the message) per corpus case, in file order
EXPECTED = [
    (GenomeError, "expected a list of ints or a string, got bytes"),
    (GenomeError, "genes must be integers, got NoneType"),
    (GenomeError, "genes must be integers, got list"),
    (ConfigError, "depth must be an integer, got str '4'; pass the integer 4"),
    (ConfigError, "depth must be an integer, got float 4.0; pass the integer 4"),
    (GenomeError, "genes must be integers, got float inf"),
    (GenomeError, "5000-digit gene value, over the limit"),
    (GenomeError, "got 5000 digits"),
    (LimitError, "depth is 100000, over the limit of 1,024 \\(MAX_DEPTH\\)"),
    (LimitError, "depth is 1000000000, over the limit"),
    (LimitError, "10,000 segments, over the limit"),
    (GenomeError, "genes must be integers, got float 1.9"),
    (GenomeError, "depth must be a positive number of LIVs, got 0"),
    (ConfigError, "depth must be an integer, got bool"),
    (ConfigError, "repair must be True or False"),
    (ConfigError, "dim must be an integer, got float 16.5"),
    (ConfigError, "dim must be an integer, got str '16'; pass the integer 16"),
    (ConfigError, "depth must be a positive number of LIVs, got 0"),
    (ConfigError, "max_seq_len must be >= 1, got 0"),
    (LimitError, "MAX_PARAMETERS"),
    (LimitError, "dim is 1000000000, over the limit"),
    (None, "depth is 1000000000, over the limit of 1,024 \\(MAX_DEPTH\\)"),
    (None, "--depth: must be a positive integer, got 0"),  # refused by the shared --depth check, under genome's usage
]


def _decode(v):
    """JSON stand-ins for values JSON cannot hold: {"bytes": s}, {"float": "inf"}."""
    if isinstance(v, dict) and set(v) == {"bytes"}:
        return v["bytes"].encode()
    if isinstance(v, dict) and set(v) == {"float"}:
        return float(v["float"])
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def test_corpus_and_expectations_line_up():
    assert len(CORPUS) == len(EXPECTED)
    assert all(case["why"] for case in CORPUS)


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=[c["why"][:40] for c in CORPUS])
def test_corpus_case_is_a_typed_error(index, capsys):
    case, (cls, match) = CORPUS[index], EXPECTED[index]
    if case["call"] == "parse_genome":
        kwargs = {k: _decode(case[k]) for k in ("depth", "repair") if k in case}
        with pytest.raises(cls, match=match):
            parse_genome(_decode(case["genome"]), **kwargs)
    elif case["call"] == "STARLanguageModel":
        kwargs = {k: case[k] for k in ("max_seq_len",) if k in case}
        with pytest.raises(cls, match=match):
            STARLanguageModel(case["dim"], case["depth"], case["genome"], **kwargs)
    else:
        try:
            rc = cli_main(case["argv"])
        except SystemExit as exc:  # an argparse-level refusal (the flag's own check): exit 2 with usage
            rc = exc.code
        assert rc == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        import re

        assert re.search(match, err), err


def test_limits_are_documented_constants_and_errors_name_them():
    assert MAX_DEPTH == 1024 and MAX_DIM == 16384 and MAX_PARAMETERS == 1 << 32
    with pytest.raises(LimitError, match="MAX_DEPTH"):
        parse_genome("11111", depth=MAX_DEPTH + 1)
    with pytest.raises(LimitError, match="MAX_GENOME_CHARS"):
        parse_genome("1" * 70000)
    with pytest.raises(GenomeError, match="MAX_GENE_VALUE"):
        parse_genome([[MAX_GENE_VALUE + 1, 1, 1, 1, 1]])
    with pytest.raises(GenomeError, match="MAX_GENE_VALUE"):
        parse_genome([[10**5000, 1, 1, 1, 1]])  # printing it would hit Python's int-string limit
    assert len(parse_genome("11111", depth=MAX_DEPTH)) == MAX_DEPTH


def test_repair_at_the_depth_limit_is_linear():
    # depth 100000 with repair used to run for > 10 s; at the limit every LIV needs a new group
    g = parse_genome([[1, 0, 1, 0, 1]], depth=MAX_DEPTH, repair=True)
    assert [s.featurizer_group for s in g] == list(range(1, MAX_DEPTH + 1))
    assert g.issues() == []


def test_repair_keeps_its_choices():
    # the linear-time repair picks the same smallest free group the quadratic one did
    g = parse_genome([[1, 3, 1, 3, 1], [1, 9, 1, 9, 1], [1, 1, 1, 1, 1]], repair=True)
    assert [(s.featurizer_group, s.feature_group) for s in g] == [(3, 3), (2, 2), (1, 1)]
    with pytest.raises(ConfigError, match="seed must be an integer"):
        parse_genome([[1, 3, 1, 3, 1]], repair=True, seed="abc")


def test_star_model_arguments():
    m = STARLanguageModel(16, 2, "1-9", max_seq_len=8)
    assert m.dim == 16 and m.depth == 2 and m.max_seq_len == 8
    for kwargs, match in [(dict(vocab_size="259"), "vocab_size must be an integer"),
                          (dict(tie_embeddings="no"), "tie_embeddings must be True or False"),
                          (dict(max_seq_len=2**40), "MAX_CONTEXT"),
                          (dict(configs=[1]), "configs must be a dict"),
                          (dict(configs={"x": {}}), "LIV class ids"),
                          (dict(configs={9: LIVConfig(expansion_factor=1e9)}), "MAX_LIV_FACTOR"),
                          (dict(configs={1: LIVConfig(head_dim=8.5)}), "head_dim must be a"),
                          (dict(configs={1: {"token_mixing": 99}}), "token_mixing")]:
        with pytest.raises(ConfigError, match=match):
            STARLanguageModel(16, 2, "1-9", **kwargs)
    with pytest.raises(ConfigError, match="must be an integer, got bool"):
        STARLanguageModel(True, 2, "1-9")


def test_shape_only_models_are_not_held_to_the_parameter_budget():
    import torch

    with torch.device("meta"):
        m = STARLanguageModel(4096, 512, "9", max_seq_len=8)
    assert m.num_parameters() > 0
    with pytest.raises(LimitError, match="MAX_PARAMETERS"):
        STARLanguageModel(4096, 512, "9", max_seq_len=8)


def test_config_dict_with_lying_values_is_refused():
    d = STARLanguageModel(16, 2, "1-9", max_seq_len=8).config_dict()
    for key, value in [("dim", 16.5), ("depth", "2"), ("max_seq_len", 0)]:
        with pytest.raises(ConfigError, match=key):
            STARLanguageModel.from_config_dict({**d, key: value})


def test_check_int_messages():
    assert check_int("n", 5, 1, 10) == 5
    with pytest.raises(LimitError, match="a 51-digit number"):
        check_int("n", 10**50, 1, 10)
    with pytest.raises(ConfigError, match="got NoneType None"):
        check_int("n", None)


def test_genome_object_limit():
    from staredge.models.star import Segment

    with pytest.raises(LimitError, match="MAX_DEPTH"):
        Genome([Segment(1, 1, 1, 1, 1)] * (MAX_DEPTH + 1))


# ----------------------------------------------------------------------------- fuzz


@settings(max_examples=600, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case_seed=st.integers(0, 2**32 - 1))
def test_fuzz_parse_genome_is_a_genome_or_a_typed_error(case_seed):
    rng = random.Random(case_seed)
    genome, depth, repair = S.random_genome_input(rng), S.random_depth(rng), rng.random() < 0.5
    try:
        g = parse_genome(genome, depth=depth, repair=repair)
    except StarEdgeError:
        return
    assert isinstance(g, Genome) and 1 <= len(g) <= MAX_DEPTH
    assert g.issues() == []  # validated or repaired: always valid
    assert parse_genome(str(g)) == g  # the canonical text parses back


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.-_|, x\u0663")), max_size=60),
       depth=st.none() | st.integers(-5, 2000))
def test_fuzz_genome_text(text, depth):
    try:
        g = parse_genome(text, depth=depth, repair=True)
    except StarEdgeError:
        return
    assert g.issues() == [] and (depth is None or len(g) == depth)


@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(dim=st.one_of(st.integers(-4, 64), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
       depth=st.one_of(st.integers(-2, 4), st.floats(), st.none()))
def test_fuzz_star_model_arguments(dim, depth):
    import torch

    try:
        with torch.device("meta"):
            m = STARLanguageModel(dim, depth, "9", max_seq_len=8)
    except StarEdgeError:
        return
    assert m.dim == dim and m.depth == depth


def test_analyze_genome_arguments():
    from staredge.models.star.analysis import analyze_genome

    assert analyze_genome("1-9", 64, 16).dim == 64
    for args, cls, match in [(("1-9", "16", 8), ConfigError, "dim must be an integer, got str"),
                             (("1-9", 16.5, 8), ConfigError, "got float 16.5"),
                             (("1-9", 16, -1), ConfigError, "seq_len must be >= 0"),
                             (("1-9", 10**9, 8), LimitError, "MAX_DIM")]:
        with pytest.raises(cls, match=match):
            analyze_genome(*args)
    with pytest.raises(GenomeError, match="even number of LIVs"):
        analyze_genome("transformer_pp", 64, 16, depth=0)  # used to analyse 24 LIVs
