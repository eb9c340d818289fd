"""`staredge generate FOLDER` streams an imported Hugging Face STAR-family model (LFM2) with
its own tokenizer, and `load_lm(FOLDER)` gives the same greedy text as transformers."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from tests._lfm2_cases import write_folder  # noqa: E402


def test_load_lm_reads_a_hugging_face_folder_and_matches_transformers(tmp_path):
    import torch

    from staredge.generation import load_lm

    folder = tmp_path / "lfm2"
    hf = write_folder(folder, "gqa2", seed=3)
    lm = load_lm(folder)
    assert lm.tokenizer.vocab_size == 320 and type(lm.tokenizer).__name__ == "HFTokenizer"
    ids = lm.tokenizer.encode("hello world", add_bos=True)
    ours = lm.model(torch.tensor([ids])).detach()
    theirs = hf(torch.tensor([ids])).logits.detach()
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


def test_generate_command_streams_a_hugging_face_folder(tmp_path, capsys):
    from staredge.cli import main
    from staredge.generation import load_lm

    folder = tmp_path / "lfm2"
    write_folder(folder, "gqa2", seed=3)
    expected = load_lm(folder).generate("hello", max_new_tokens=12, temperature=0)
    assert main(["generate", str(folder), "hello", "--max-new-tokens", "12", "--temperature", "0", "--no-echo"]) == 0
    out = capsys.readouterr().out
    assert expected and expected in out
