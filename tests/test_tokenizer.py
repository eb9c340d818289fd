"""The tokenizer interface: the byte tokenizer, Hugging Face tokenizer.json (byte-level BPE
and byte-fallback vocabularies) through the ``tokenizers`` library, streaming decode that never
emits half a character nor re-emits text, special/stop ids, and the JSON form with its hash."""

from __future__ import annotations

import json

import pytest

from staredge.errors import ConfigError, TokenizerError
from staredge.tokenizer import (
    ByteTokenizer,
    HFTokenizer,
    IncrementalUTF8Decoder,
    Tokenizer,
    tokenizer_from_json,
    tokenizer_hash,
    tokenizer_to_json,
)

TEXTS = ["hello world", "Grüße aus Köln 🙂 日本語", "e\u0301 ∑∫ 🚀🚀 tail", "   spaces  and\nnew lines\t!"]


def _byte_level_json() -> str:
    from _lfm2_cases import tokenizer_object

    return tokenizer_object().to_str()


def _byte_fallback_json() -> str:
    """A SentencePiece-style BPE: '▁' for spaces, <0xNN> byte tokens for anything unknown,
    and a decoder that strips the leading space, so token text depends on its neighbours."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "he", "ll", "llo", "▁he", "▁hello", "▁w", "or", "▁wor",
              "ld", "▁world", "a", "i", "n", "t", "s"]
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    merges = [("▁", "h"), ("h", "e"), ("l", "l"), ("ll", "o"), ("▁", "he"), ("▁he", "llo"), ("▁", "w"), ("o", "r"),
              ("▁w", "or"), ("l", "d"), ("▁wor", "ld")]
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    return tok.to_str()


@pytest.fixture(params=["byte-level-bpe", "byte-fallback"])
def hf(request) -> HFTokenizer:
    if request.param == "byte-level-bpe":
        return HFTokenizer(_byte_level_json(), bos_token="<|startoftext|>", eos_token="<|im_end|>",
                           pad_token="<|pad|>", stop_ids=[2])
    return HFTokenizer(_byte_fallback_json(), bos_token="<s>", eos_token="</s>")


def _stream(tok: Tokenizer, ids) -> list[str]:
    dec = tok.decoder()
    pieces = [dec.feed(i) for i in ids]
    return pieces + [dec.flush()]


def test_byte_tokenizer_is_a_tokenizer():
    tok = ByteTokenizer()
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 259
    assert tok.encode("é") == [256, 0xC3, 0xA9] and tok.stop_ids == {257}
    assert isinstance(tok.decoder(), IncrementalUTF8Decoder)
    assert tokenizer_from_json(tokenizer_to_json(tok)).encode("x") == tok.encode("x")


def test_generation_reexports_the_moved_classes():
    import staredge.generation as g

    assert g.ByteTokenizer is ByteTokenizer and g.IncrementalUTF8Decoder is IncrementalUTF8Decoder


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(hf, text):
    ids = hf.encode(text)
    assert ids[0] == hf.bos_id  # BOS from the config, once
    assert hf.encode(text, add_bos=False) == ids[1:]
    assert hf.decode(ids) == text
    hf.check_ids(ids)


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_never_splits_a_character_nor_repeats_text(hf, text):
    ids = hf.encode(text) + [hf.eos_id]
    pieces = _stream(hf, ids)
    assert "".join(pieces) == hf.decode(ids) == text
    for p in pieces:
        assert "\ufffd" not in p  # no half characters
        p.encode("utf-8")  # and no lone surrogates
    # a multi-byte character split over byte tokens is held back, then emitted once
    assert sum(p.count("🙂") for p in pieces) == text.count("🙂")


def test_byte_fallback_holds_back_partial_characters():
    tok = HFTokenizer(_byte_fallback_json(), bos_token="<s>", eos_token="</s>")
    ids = tok.encode("hello 🙂", add_bos=False)
    assert ids[-4:] == [tok.token_to_id(f"<0x{b:02X}>") for b in "🙂".encode()]  # one token per byte
    pieces = _stream(tok, ids)
    assert pieces[-5:-2] == ["", "", ""]  # the first three bytes of the emoji produce nothing
    assert pieces[-2] == "🙂" and pieces[-1] == ""  # the fourth completes it: emitted once
    assert "".join(pieces) == "hello 🙂"


def test_invalid_bytes_are_emitted_not_held_forever():
    tok = HFTokenizer(_byte_fallback_json(), bos_token="<s>", eos_token="</s>")
    bad = tok.encode("hello", add_bos=False) + [tok.token_to_id("<0xFF>")] * 12 + tok.encode(" world", add_bos=False)
    pieces = _stream(tok, bad)
    assert "".join(pieces) == tok.decode(bad)
    assert "\ufffd" in "".join(pieces[:-1])  # invalid bytes come out once text follows, not at flush


def test_special_and_stop_ids(tmp_path):
    from _lfm2_cases import save_tokenizer

    save_tokenizer(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [4, 2], "bos_token_id": 1}))
    tok = HFTokenizer.from_folder(tmp_path, vocab_size=400, config={"bos_token_id": 1, "eos_token_id": 4})
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 4, 0)
    assert tok.stop_ids == {2, 4}
    assert {0, 1, 2, 3, 4} <= tok.special_ids
    assert tok.vocab_size == 400  # padding rows beyond the tokenizer's 320 tokens
    assert tok.decode([1, 3, 350, 4]) == ""  # specials and padding rows make no text
    assert tok.chat_template and "im_start" in tok.chat_template
    assert tok.encode("<|im_start|>user", add_bos=False)[0] == 3  # special strings map to their ids


def test_json_round_trip_and_hash(hf):
    text = tokenizer_to_json(hf)
    again = tokenizer_from_json(text)
    assert isinstance(again, HFTokenizer)
    for t in TEXTS:
        assert again.encode(t) == hf.encode(t)
    assert (again.bos_id, again.eos_id, again.stop_ids) == (hf.bos_id, hf.eos_id, hf.stop_ids)
    assert tokenizer_hash(again) == tokenizer_hash(hf) == tokenizer_hash(text)
    assert tokenizer_hash(ByteTokenizer()) != tokenizer_hash(hf)
    assert tokenizer_hash(hf).startswith("sha256:")


def test_bad_tokenizers_are_typed_errors(tmp_path):
    with pytest.raises(TokenizerError, match="cannot be loaded"):
        HFTokenizer("{not json")
    with pytest.raises(TokenizerError, match="not in tokenizer.json"):
        HFTokenizer(_byte_level_json(), bos_token="<nope>")
    with pytest.raises(TokenizerError, match="320 tokens.*100"):
        HFTokenizer(_byte_level_json(), vocab_size=100)
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        HFTokenizer.from_folder(tmp_path)
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        tokenizer_from_json('{"kind": "sentencepiece"}')
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        HFTokenizer(_byte_level_json()).decoder().feed(10**6)


@pytest.mark.parametrize("kind", ["byte-level-bpe", "byte-fallback"])
def test_stream_equals_decode_on_random_ids(kind):
    """Random id sequences (most are not valid text): the streamed pieces join to exactly
    ``decode(ids)`` for byte-level BPE always, and for byte-fallback whenever the ids decode
    without replacement characters (the library replaces a whole invalid run of byte tokens,
    which no stream that has already emitted part of it can reproduce; documented)."""
    import random

    if kind == "byte-level-bpe":
        tok = HFTokenizer(_byte_level_json(), bos_token="<|startoftext|>", eos_token="<|im_end|>")
    else:
        tok = HFTokenizer(_byte_fallback_json(), bos_token="<s>", eos_token="</s>")
    rng = random.Random(7)
    checked = 0
    for _ in range(3000):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 24))]
        whole = tok.decode(ids)
        if kind == "byte-fallback" and "\ufffd" in whole:
            continue
        pieces = _stream(tok, ids)
        assert "".join(pieces) == whole, ids
        checked += 1
    assert checked > 100


def test_artifact_tokenizer_entry(tmp_path):
    from staredge.tokenizer import load_artifact_tokenizer, tokenizer_metadata_entry

    tok = HFTokenizer(_byte_level_json(), bos_token="<|startoftext|>", eos_token="<|im_end|>")
    entry = tokenizer_metadata_entry(tok)
    assert entry["vocab_size"] == 320 and entry["sha256"] == tokenizer_hash(tok)
    art = tmp_path / "m_ctx64.onnx"
    again = load_artifact_tokenizer(art, {"vocab_size": 320, "tokenizer": entry})
    assert again.encode("Grüße") == tok.encode("Grüße")
    with pytest.raises(TokenizerError, match="vocabulary of 320, the model 400"):
        load_artifact_tokenizer(art, {"vocab_size": 400, "tokenizer": entry})
    assert isinstance(load_artifact_tokenizer(art, {"vocab_size": 259}), ByteTokenizer)  # byte-level artifacts
    assert tokenizer_metadata_entry(ByteTokenizer()) == {"kind": "bytes"}
