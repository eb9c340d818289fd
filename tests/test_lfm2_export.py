"""A random LFM2 folder written by transformers imports, exports to ONNX, OpenVINO, TFLite and
CoreML through the project's export (validated against PyTorch like every LM artifact), and
each artifact streams the same greedy text as transformers' generate() with the same
tokenizer, which travels beside the artifact (checked by hash)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from _lfm2_cases import VARIED, write_folder  # noqa: E402
from staredge.chat import chat_prompt_ids  # noqa: E402
from staredge.errors import TokenizerError  # noqa: E402
from staredge.models.star import from_pretrained  # noqa: E402
from staredge.tokenizer import (  # noqa: E402
    artifact_tokenizer_path,
    load_artifact_tokenizer,
    tokenizer_hash,
    tokenizer_metadata_entry,
    write_artifact_tokenizer,
)

#: Four conversions and validations (about two minutes here): slow, still run by CI.
pytestmark = pytest.mark.slow

FORMATS = ["onnx", "openvino", "tflite", "coreml"]
CONTEXT = 256
NEW_TOKENS = 24
PROMPT = "Grüße aus Köln 🙂 and the quick brown fox"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from staredge.exporters.lm_export import export_lm

    root = tmp_path_factory.mktemp("lfm2_export")
    hf = write_folder(root / "tiny-lfm2", "gqa2", seed=2, **VARIED)
    model = from_pretrained(root / "tiny-lfm2", max_seq_len=CONTEXT)
    rows = export_lm(model, FORMATS, root / "out", max_context=CONTEXT)
    return hf, model, {r["format"]: r for r in rows}


def _transformers_greedy(hf, ids):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=[4],
                          pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_exports_and_matches_pytorch(exported, fmt):
    _, _, rows = exported
    row = rows[fmt]
    assert row["error"] is None and row["passed"] is True
    v = row["validation"]
    assert v["greedy_identical"] and v["max_abs_diff"] <= v["atol"]
    assert v["decode_steps"] >= 64


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_runtime_streams_transformers_greedy_text(exported, fmt):
    from staredge.predictor import Predictor

    from staredge.metadata import read_metadata

    hf, model, rows = exported
    path = rows[fmt]["path"]
    lm_meta = read_metadata(path).lm
    assert (lm_meta["bos_id"], lm_meta["eos_id"], lm_meta["pad_id"]) == (1, 4, 0)  # the model's, not bytes'
    pred = Predictor(path)
    tok = pred.tokenizer  # travelled inside the artifact's metadata, checked by hash
    assert tokenizer_hash(tok) == tokenizer_hash(model.tokenizer) == lm_meta["tokenizer"]["sha256"]
    ids = tok.encode(PROMPT)
    expected_ids = _transformers_greedy(hf, ids)
    assert len(set(expected_ids)) > 5
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(str(model.source)).decode(expected_ids, skip_special_tokens=True)
    stream = pred.stream(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0.0)
    pieces = list(stream)
    assert stream.stats.generated_ids == expected_ids[:len(stream.stats.generated_ids)]
    assert "".join(pieces) == expected
    # chat through the artifact: the template's prompt, the same greedy reply as transformers
    msgs = [{"role": "user", "content": "Hi 🙂"}]
    chat_ids = chat_prompt_ids(tok, msgs)
    want = AutoTokenizer.from_pretrained(str(model.source)).decode(_transformers_greedy(hf, chat_ids),
                                                                   skip_special_tokens=True)
    assert pred.chat(msgs, max_new_tokens=NEW_TOKENS, temperature=0.0).text() == want


def test_a_replaced_tokenizer_file_is_refused(exported):
    _, model, rows = exported
    path = rows["onnx"]["path"]
    entry = write_artifact_tokenizer(path, model.tokenizer)
    sibling = artifact_tokenizer_path(path)
    sibling.write_text(sibling.read_text().replace('"add_bos": true', '"add_bos": false'))
    with pytest.raises(TokenizerError, match="SHA-256"):
        load_artifact_tokenizer(path, {"tokenizer": entry})
    sibling.unlink()
    with pytest.raises(TokenizerError, match="copy it along"):
        load_artifact_tokenizer(path, {"tokenizer": entry})
    write_artifact_tokenizer(path, model.tokenizer)
    # inside the metadata: the same tokenizer, and an edited copy is refused
    inline = tokenizer_metadata_entry(model.tokenizer)
    assert tokenizer_hash(load_artifact_tokenizer(path, {"tokenizer": inline})) == tokenizer_hash(model.tokenizer)
    inline["json"] = inline["json"].replace('"add_bos": true', '"add_bos": false')
    with pytest.raises(TokenizerError, match="SHA-256"):
        load_artifact_tokenizer(path, {"tokenizer": inline})


def test_cli_exports_a_hugging_face_folder(exported, tmp_path, capsys):
    from staredge.cli import main
    from staredge.metadata import read_metadata

    _, model, _ = exported
    rc = main(["export", str(model.source), "--formats", "onnx", "--max-context", "128", "--out", str(tmp_path)])
    assert rc == 0
    path = tmp_path / f"{model.source.rsplit('/', 1)[-1]}_ctx128.onnx"
    assert path.is_file()
    meta = read_metadata(path)
    assert meta.task == "text-generation" and meta.lm["vocab_size"] == 320
    assert meta.lm["genome"] == model.genome


def test_cli_chats_with_an_artifact(exported, monkeypatch, capsys):
    import io

    from staredge.chat import ChatSession
    from staredge.cli import main
    from staredge.predictor import Predictor

    _, _, rows = exported
    path = rows["onnx"]["path"]
    session = ChatSession(Predictor(path), max_new_tokens=8, temperature=0.0)
    expected = ["".join(session.send(t)) for t in ("Hello!", "And again?")]
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello!\nAnd again?\n"))
    assert main(["chat", str(path), "--temperature", "0", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == f"{expected[0]}\n{expected[1]}\n"
