"""The LM family table behind ``staredge models``: parameters equal what transformers builds
for the same LFM2 config, and decode state equals what the model's own state holds."""

from __future__ import annotations

import warnings

import pytest
import torch

from staredge.models.star.families import LFM2_SHAPES, lfm2_row, lm_families, lm_family_row


@pytest.mark.parametrize("name", sorted(LFM2_SHAPES))
def test_lfm2_parameters_equal_transformers(name):
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.Lfm2ForCausalLM(transformers.Lfm2Config(**LFM2_SHAPES[name]))
    total = sum(p.numel() for p in {id(p): p for p in hf.parameters()}.values())
    row = lfm2_row(name, LFM2_SHAPES[name])
    assert row.params_with_embeddings == total
    assert row.params == total - 65536 * row.dim
    assert row.livs == 32 and row.vocab_size == 65536


def test_state_bytes_equal_the_models_state(tmp_path):
    from _lfm2_cases import write_folder
    from staredge.models.star import from_pretrained

    write_folder(tmp_path / "m", "gqa4-bias-untied", tokenizer=False)
    model = from_pretrained(tmp_path / "m", max_seq_len=64)
    state = model.init_state(1)
    with torch.no_grad():
        _, state = model.step(torch.zeros(1, 40, dtype=torch.long), state)
    for row in (lm_family_row(model, seq_len=40, bytes_per_element=4),
                lm_family_row(tmp_path / "m", seq_len=40, bytes_per_element=4)):
        assert row.state_bytes == state.nbytes()
        assert row.params_with_embeddings == sum(p.numel() for p in model.parameters())  # untied: both tables


def test_table_lists_every_family():
    rows = {r.name: r for r in lm_families(seq_len=4096)}
    assert {"star_lm_pydoc", "transformer_pp", "striped_mamba", "lfm2-350m", "lfm2-700m", "lfm2-1.2b"} <= set(rows)
    assert rows["transformer_pp"].state_bytes == 150_994_944  # the paper's 150 MB at 4K tokens
    # LFM2-350M at 4K tokens: 6 GQA layers of 8 KV heads x 64, 10 conv layers of 2 x 1024, fp16
    assert rows["lfm2-350m"].state_bytes == (6 * 2 * 8 * 64 * 4096 + 10 * 2 * 1024) * 2
    assert rows["lfm2-350m"].genome.startswith("7-9-7-9-4-9")
