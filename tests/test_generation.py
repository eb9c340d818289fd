"""Streaming generation: byte tokenizer, incremental UTF-8, sampling, stop conditions,
cancellation, concurrent sessions, context limits, the shipped STAR model and the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from staredge.errors import CheckpointError, ConfigError, StarEdgeError
from staredge.generation import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    ByteTokenizer,
    ContextLengthError,
    IncrementalUTF8Decoder,
    LanguageModel,
    SamplingConfig,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    generate,
    load_lm,
    next_token_distribution,
    sample_next_token,
    save_lm,
    stream,
)


# --------------------------------------------------------------------------------------
# Test models
# --------------------------------------------------------------------------------------


class ScriptedLM:
    """Follows the step contract and, greedily decoded, emits ``script`` after the prompt,
    then EOS. It counts its ``step`` calls, so tests can see when decoding stopped."""

    def __init__(self, script: bytes | list[int], prompt_len: int = 1, max_seq_len: int = 512) -> None:
        self.script = list(script)
        self.prompt_len = prompt_len
        self.max_seq_len = max_seq_len
        self.step_calls = 0

    def init_state(self, batch_size: int = 1) -> dict:
        return {"fed": 0}

    def step(self, input_ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        self.step_calls += 1
        b, t = input_ids.shape
        logits = torch.zeros(b, t, VOCAB_SIZE)
        for j in range(t):
            pos = state["fed"] + j + 1 - self.prompt_len  # index of the token to predict
            target = self.script[pos] if 0 <= pos < len(self.script) else EOS_ID
            logits[:, j, target] = 10.0
        return logits, {"fed": state["fed"] + t}


def tiny_star_lm(genome: str = "1-9-7-9", dim: int = 64, max_seq_len: int = 96, seed: int = 0):
    """A small randomly initialised STAR LM (the real model class)."""
    from staredge.models.star import STARLanguageModel

    torch.manual_seed(seed)
    return STARLanguageModel(dim=dim, depth=4, genome=genome, max_seq_len=max_seq_len).eval()


@pytest.fixture(scope="module")
def star_lm():
    return tiny_star_lm()


# --------------------------------------------------------------------------------------
# Tokenizer and incremental UTF-8
# --------------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer()
    ids = tok.encode("héllo €")
    assert ids[0] == BOS_ID and ids[1:] == list("héllo €".encode())
    assert tok.encode("a", add_bos=False) == [97]
    assert tok.decode(ids + [EOS_ID, PAD_ID]) == "héllo €"
    assert tok.decode([0xFF, 97]) == "\ufffda"
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (259, 256, 257, 258)


@pytest.mark.parametrize("text", ["naïve café", "€uro 𝄞 clef", "日本語のテキスト", "mixed ascii + 🙂 emoji"])
def test_incremental_decoder_never_emits_half_a_character(text):
    dec = IncrementalUTF8Decoder()
    pieces = []
    for b in text.encode("utf-8"):
        piece = dec.feed(b)
        # every piece is whole characters: it re-encodes to bytes that decode strictly
        piece.encode("utf-8").decode("utf-8", errors="strict")
        assert "\ufffd" not in piece
        pieces.append(piece)
    assert dec.flush() == ""
    assert "".join(pieces) == text
    # a 4-byte character is held back for 3 tokens and then emitted whole
    dec = IncrementalUTF8Decoder()
    out = [dec.feed(b) for b in "𝄞".encode()]
    assert out == ["", "", "", "𝄞"]


def test_incremental_decoder_invalid_bytes_become_replacement():
    dec = IncrementalUTF8Decoder()
    assert dec.feed(0xE2) == "" and dec.pending_bytes == 1
    assert dec.feed(ord("a")) == "\ufffda"  # a broken sequence is replaced as soon as it is certain
    assert dec.feed(0xF0) == "" and dec.feed(0x9D) == ""
    assert dec.flush() == "\ufffd"  # incomplete at the end of the stream
    assert dec.feed(EOS_ID) == "" and dec.feed(BOS_ID) == ""
    with pytest.raises(ConfigError):
        dec.feed(300)


def test_stream_splits_multibyte_characters_across_tokens_cleanly():
    text = "Grüße, 世界 🙂!"
    lm = ScriptedLM(text.encode())
    pieces = list(stream(lm, "", max_new_tokens=100, temperature=0))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p and p for p in pieces)
    assert "🙂" in pieces  # the 4 bytes of the emoji came out as one piece
    # a stream that ends inside a character ends with one replacement character
    lm = ScriptedLM(text.encode())
    cut = len("Grüße, 世".encode()) + 1
    s = stream(lm, "", max_new_tokens=cut, temperature=0)
    assert s.text() == "Grüße, 世\ufffd" and s.stats.finish_reason == "length"


# --------------------------------------------------------------------------------------
# Sampling on hand-made logits
# --------------------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_best():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [False, True, False, True, False]
    assert torch.equal(filter_top_k(logits, 0), logits) and torch.equal(filter_top_k(logits, None), logits)
    probs = next_token_distribution(logits, SamplingConfig(temperature=1.0, top_k=2))
    expected = torch.softmax(torch.tensor([5.0, 4.0]), 0)
    assert torch.allclose(probs[[1, 3]], expected, atol=1e-6) and probs[[0, 2, 4]].sum() == 0


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.5, 0.05, 0.3, 0.15])
    logits = probs.log()
    # 0.5 alone < 0.7; 0.5 + 0.3 reaches it: the nucleus is {0, 2}
    assert torch.isfinite(filter_top_p(logits, 0.7)).tolist() == [True, False, True, False]
    # p exactly at a boundary keeps no extra token: 0.5 + 0.3 = 0.8
    assert torch.isfinite(filter_top_p(logits, 0.8)).tolist() == [True, False, True, False]
    assert torch.isfinite(filter_top_p(logits, 0.81)).tolist() == [True, False, True, True]
    # the best token survives even a tiny p
    assert torch.isfinite(filter_top_p(logits, 1e-6)).tolist() == [True, False, False, False]
    dist = next_token_distribution(logits, SamplingConfig(temperature=1.0, top_p=0.7))
    assert torch.allclose(dist, torch.tensor([0.5, 0.0, 0.3, 0.0]) / 0.8, atol=1e-6)


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = apply_repetition_penalty(logits, [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]  # seen: 2 -> 1, -2 -> -4 (once each); unseen unchanged
    assert logits.tolist() == [2.0, -2.0, 1.0, 0.5]  # input untouched
    # greedy picks token 0 without the penalty and token 2 with it
    cfg = SamplingConfig(temperature=0, repetition_penalty=3.0)
    assert sample_next_token(logits, SamplingConfig(temperature=0)) == 0
    assert sample_next_token(logits, cfg, previous_ids=[0]) == 2


def test_temperature_zero_is_greedy_and_temperature_sharpens():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert all(sample_next_token(logits, SamplingConfig(temperature=0), torch.Generator().manual_seed(s)) == 1
               for s in range(5))
    hot = next_token_distribution(logits, SamplingConfig(temperature=2.0))
    cold = next_token_distribution(logits, SamplingConfig(temperature=0.5))
    assert torch.allclose(hot, torch.softmax(logits / 2, 0)) and cold[1] > hot[1]


def test_sampling_frequencies_follow_the_distribution():
    logits = torch.tensor([0.0, math.log(3.0), -1e9])  # probabilities 0.25, 0.75, 0
    gen = torch.Generator().manual_seed(123)
    draws = [sample_next_token(logits, SamplingConfig(temperature=1.0), gen) for _ in range(4000)]
    frac1 = draws.count(1) / len(draws)
    assert 0.72 < frac1 < 0.78 and 2 not in draws


@pytest.mark.parametrize("kwargs", [
    {"temperature": -1}, {"temperature": float("nan")}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5},
    {"repetition_penalty": 0.0},
])
def test_bad_sampling_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SamplingConfig(**kwargs)
    with pytest.raises(ConfigError):
        stream(ScriptedLM(b"x"), "", **kwargs)


# --------------------------------------------------------------------------------------
# Stop conditions, cancellation, context
# --------------------------------------------------------------------------------------


def test_stop_string_spanning_tokens_is_not_emitted():
    lm = ScriptedLM(b"alpha beta\n\ngamma delta")
    s = stream(lm, "", max_new_tokens=100, temperature=0, stop="\n\n")
    pieces = list(s)
    assert "".join(pieces) == "alpha beta" and s.stats.finish_reason == "stop"
    assert all("\n" not in p for p in pieces)
    # decoding stopped right there: prefill + one step per token up to the stop string
    assert lm.step_calls == 1 + len(b"alpha beta\n\n") - 1
    # the earliest of several stop strings wins; a partial match that fails is emitted
    lm = ScriptedLM(b"one two three four")
    assert generate(lm, "", 100, temperature=0, stop=["four", "thr", "tx"]) == "one two "
    assert generate(ScriptedLM(b"tea at ten"), "", 100, temperature=0, stop="tex") == "tea at ten"
    # a stop string can match a multi-byte character
    assert generate(ScriptedLM("a→b".encode()), "", 100, temperature=0, stop="→") == "a"


def test_stop_ids_and_eos():
    s = stream(ScriptedLM(b"abc;def"), "", 100, temperature=0, stop=ord(";"))
    assert s.text() == "abc" and s.stats.finish_reason == "stop"
    s = stream(ScriptedLM(b"abc"), "", 100, temperature=0)
    assert s.text() == "abc" and s.stats.finish_reason == "eos" and s.stats.generated_ids[-1] == EOS_ID
    with pytest.raises(ConfigError):
        stream(ScriptedLM(b"abc"), "", stop=[""])
    with pytest.raises(ConfigError):
        stream(ScriptedLM(b"abc"), "", stop=[999])


def test_closing_the_iterator_cancels_decoding():
    lm = ScriptedLM(b"x" * 200)
    s = stream(lm, "", max_new_tokens=200, temperature=0)
    assert next(s) == "x" and next(s) == "x"
    calls = lm.step_calls
    s.close()
    assert s.stats.finish_reason == "cancelled"
    with pytest.raises(StopIteration):
        next(s)
    assert lm.step_calls == calls  # no step ran after close
    with stream(lm, "", max_new_tokens=200, temperature=0) as s2:
        for i, _ in enumerate(s2):
            if i == 4:
                break
    assert s2.stats.finish_reason == "cancelled" and s2.stats.generated_tokens == 5


def test_context_overflow_error_and_left_truncation():
    lm = ScriptedLM(b"abcdef", prompt_len=16, max_seq_len=16)
    prompt = "p" * 30  # 31 tokens with BOS
    with pytest.raises(ContextLengthError, match="truncate='left'") as err:
        stream(lm, prompt, max_new_tokens=4)
    assert isinstance(err.value, StarEdgeError) and "31 tokens" in str(err.value)
    # truncation keeps BOS and the newest bytes, leaving room for every requested token
    s = stream(lm, prompt, max_new_tokens=4, temperature=0, truncate="left")
    assert s.stats.prompt_tokens == 13 and s.stats.truncated_tokens == 18
    lm.prompt_len = 13
    assert s.text() == "abcd" and s.stats.finish_reason == "length"
    # a prompt that fits but leaves little room: generation ends when the context is full
    lm = ScriptedLM(b"abcdef", prompt_len=14, max_seq_len=16)
    s = stream(lm, "p" * 13, max_new_tokens=10, temperature=0)
    assert s.text() == "abc" and s.stats.finish_reason == "context"
    with pytest.raises(ConfigError):
        stream(lm, "p", truncate="right")


# --------------------------------------------------------------------------------------
# Real STAR models: determinism, concurrency, stream == generate
# --------------------------------------------------------------------------------------


def test_same_seed_same_text_and_different_seed_differs(star_lm):
    kw = dict(max_new_tokens=40, temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.1)
    a = generate(star_lm, "The ", seed=7, **kw)
    b = generate(star_lm, "The ", seed=7, **kw)
    c = generate(star_lm, "The ", seed=8, **kw)
    assert a == b and len(a) > 0
    assert a != c
    # seed=None draws from the OS, not from torch's global generator (which stays untouched)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    generate(star_lm, "The ", max_new_tokens=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_stream_pieces_join_to_generate_output(star_lm):
    kw = dict(max_new_tokens=48, temperature=0.9, top_p=0.9, seed=3)
    s = stream(star_lm, "Hello", **kw)
    pieces = list(s)
    assert "".join(pieces) == generate(star_lm, "Hello", **kw)
    assert s.stats.generated_tokens == 48 or s.stats.finish_reason == "eos"
    # the generated ids decode to the same text (EOS aside)
    assert ByteTokenizer().decode(s.stats.generated_ids) == "".join(pieces)


def test_interleaved_sessions_equal_separate_ones(star_lm):
    prompts = [("Once", 1), ("Python is", 2), ("x = [", 3)]
    separate = [generate(star_lm, p, max_new_tokens=24, temperature=1.0, seed=s) for p, s in prompts]
    streams = [stream(star_lm, p, max_new_tokens=24, temperature=1.0, seed=s) for p, s in prompts]
    outs = ["", "", ""]
    live = set(range(3))
    while live:  # round-robin: one piece from each live stream in turn
        for i in sorted(live):
            try:
                outs[i] += next(streams[i])
            except StopIteration:
                live.discard(i)
    assert outs == separate


def test_chunked_prefill_matches_single_chunk(star_lm):
    prompt = "The quick brown fox jumps over the lazy dog. " * 2
    ref = generate(star_lm, prompt, max_new_tokens=16, temperature=0, prefill_chunk=1000)
    for chunk in (1, 7, 32):
        assert generate(star_lm, prompt, max_new_tokens=16, temperature=0, prefill_chunk=chunk) == ref


def test_real_model_context_limit(star_lm):
    with pytest.raises(ContextLengthError):
        generate(star_lm, "z" * star_lm.max_seq_len, max_new_tokens=1)
    s = stream(star_lm, "z" * 500, max_new_tokens=8, temperature=0, truncate="left")
    s.text()
    assert s.stats.prompt_tokens == star_lm.max_seq_len - 7
    assert s.stats.generated_tokens == 8 or s.stats.finish_reason == "eos"


def test_save_and_load_round_trip(tmp_path, star_lm):
    weights, config = save_lm(star_lm, tmp_path / "mini", info={"note": "test"})
    with pytest.raises(ConfigError):
        save_lm(star_lm, tmp_path / "mini")
    lm = load_lm(tmp_path / "mini")
    assert isinstance(lm, LanguageModel) and lm.info == {"note": "test"}
    kw = dict(max_new_tokens=20, temperature=0.7, seed=11)
    assert lm.generate("abc", **kw) == generate(star_lm, "abc", **kw)
    assert load_lm(weights).generate("abc", **kw) == lm.generate("abc", **kw)
    with pytest.raises(CheckpointError, match="Shipped models"):
        load_lm(tmp_path / "nothing_here")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_lm(config)


# --------------------------------------------------------------------------------------
# The shipped model and the CLI
# --------------------------------------------------------------------------------------


def test_shipped_model_loads_and_generates_text():
    import staredge

    lm = staredge.load_lm()
    assert isinstance(lm, staredge.LanguageModel) and lm.name == "star_lm_pydoc"
    assert lm.num_parameters > 100_000
    text = lm.generate("The ", max_new_tokens=60, temperature=0.7, seed=0)
    assert len(text) > 0
    # trained on English prose: most generated characters are ASCII letters or spaces
    assert sum(ch.isalpha() or ch.isspace() for ch in text) / len(text) > 0.6
    assert "".join(lm.stream("The ", max_new_tokens=60, temperature=0.7, seed=0)) == text


def test_cli_generate_streams_text(capsys):
    from staredge.cli import main

    assert main(["generate", "The ", "--max-new-tokens", "30", "--seed", "1", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    expected = load_lm().generate("The ", max_new_tokens=30, temperature=0)
    assert out.rstrip("\n") == ("The " + expected).rstrip("\n")
    argv = ["generate", "star_lm_pydoc", "A", "--max-new-tokens", "5", "--no-echo", "--stop", "zz", "--seed", "2", "--stats"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    # CLI defaults equal the API defaults (temperature 0.8, top-p 0.95); --no-echo omits the prompt
    assert captured.out.rstrip("\n") == load_lm().generate("A", max_new_tokens=5, seed=2, stop="zz").rstrip("\n")
    assert "tok/s decode" in captured.err and "star_lm_pydoc" in captured.err
    assert main(["generate", "nonexistent_model", "A"]) == 2
    assert "Shipped models" in capsys.readouterr().err
    assert main(["generate", "a", "b", "c"]) == 2  # three positionals: asks to quote the prompt
    assert "quote the prompt" in capsys.readouterr().err


def test_token_ids_are_created_on_the_models_device():
    from staredge.generation import _model_device

    assert _model_device(ScriptedLM(b"a")) == torch.device("cpu")  # no weights: CPU
    on_meta = torch.nn.Linear(2, 2, device="meta")
    assert _model_device(on_meta) == torch.device("meta")  # selection logic only: no GPU here
