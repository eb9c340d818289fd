"""LFM2 folders import as STAR genomes: logits equal transformers' ``Lfm2ForCausalLM`` (fp32,
parallel form and step form with 64 decode steps), the folder round-trips through
``save_pretrained``, and bad folders give one typed error each."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from _lfm2_cases import SHAPES, write_folder  # noqa: E402
from staredge.errors import (  # noqa: E402
    ArtifactExistsError,
    HFCheckpointError,
    PickleWeightsRefusedError,
    TensorMismatchError,
    TokenizerError,
    UnsupportedArchitectureError,
)
from staredge.models.star import STARLanguageModel, from_pretrained, is_hf_folder, save_pretrained  # noqa: E402
from staredge.models.star.lfm2 import lfm2_ff_dim  # noqa: E402

ATOL = 1e-4


def _decode_against_hf(hf, model, ids, feed):
    """Prefill both with ``ids``, then feed the tokens of ``feed`` one per step to both
    (transformers with its cache); returns the largest logit difference seen."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf(ids, use_cache=True)
        state = model.init_state(1)
        ours, state = model.step(ids, state)
        worst = (out.logits - ours).abs().max().item()
        cache = out.past_key_values
        for tok in feed.split(1, dim=1):
            ours, state = model.step(tok, state)
            out = hf(tok, cache=cache, use_cache=True)
            cache = out.past_key_values
            worst = max(worst, (out.logits - ours).abs().max().item())
    assert state.pos == ids.shape[1] + feed.shape[1]
    return worst


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_logits_match_transformers_parallel_and_step(tmp_path, shape):
    hf = write_folder(tmp_path / shape, shape, seed=3)
    model = from_pretrained(tmp_path / shape)
    assert isinstance(model, STARLanguageModel)
    ids = torch.randint(5, 320, (1, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        par = model(ids)
    assert (ref - par).abs().max().item() <= ATOL
    assert ref.abs().max().item() > 1.0  # the comparison is not between near-zero logits
    feed = torch.randint(5, 320, (1, 64), generator=torch.Generator().manual_seed(2))
    assert _decode_against_hf(hf, model, ids[:, :9], feed) <= ATOL  # prefill + 64 decode steps


def test_genome_and_operator_choices(tmp_path):
    write_folder(tmp_path / "m", "gqa4-bias-untied")
    model = from_pretrained(tmp_path / "m")
    # 3 layers -> 6 LIVs: conv, SwiGLU, conv, SwiGLU, GQA (8 heads over 2 KV heads = SA-3), SwiGLU
    assert [s.liv_class for s in model.backbone.genome] == [7, 9, 7, 9, 3, 9]
    cfg = model.backbone.configs
    assert cfg[3].repeat_factor == 4 and cfg[3].head_dim == 4 and cfg[3].qk_norm is True
    assert cfg[3].rope_base == 1e6
    assert cfg[7].kernel_size == 4 and cfg[7].bias is True
    assert cfg[9].hidden_dim == lfm2_ff_dim(80, True, 1.0, 16) == 64
    assert model.tie_embeddings is False and model.eos_id == 4 and model.bos_id == 1 and model.pad_id == 0
    assert model.tokenizer is not None and model.tokenizer.vocab_size == 320
    # a ratio no STAR attention class fixes (3) is SA-3 with the ratio as an operator choice
    write_folder(tmp_path / "r3", "gqa3-mha-idxs")
    m3 = from_pretrained(tmp_path / "r3")
    assert [s.liv_class for s in m3.backbone.genome] == [7, 9, 3, 9, 7, 9]
    assert m3.backbone.configs[3].repeat_factor == 3
    assert m3.backbone.configs[3].norm_eps == 1e-6 and m3.norm_eps == 1e-6


def test_ff_dim_as_lfm2_computes_it():
    assert lfm2_ff_dim(6656, True, 1.0, 256) == 4608  # LFM2-350M's real config
    assert lfm2_ff_dim(96, True, None, 256) == 64  # no multiplier: no rounding
    assert lfm2_ff_dim(100, False, 1.0, 256) == 100


def test_sharded_folder_and_save_pretrained_round_trip(tmp_path):
    import transformers

    hf = write_folder(tmp_path / "src", "gqa2", shard_bytes=20_000)
    assert (tmp_path / "src" / "model.safetensors.index.json").is_file()
    model = from_pretrained(tmp_path / "src")
    out = save_pretrained(model, tmp_path / "dst", max_shard_bytes=30_000)
    assert (out / "model.safetensors.index.json").is_file()
    with pytest.raises(ArtifactExistsError):
        save_pretrained(model, out)
    again = from_pretrained(out)
    ids = torch.randint(5, 320, (1, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.Lfm2ForCausalLM.from_pretrained(str(out)).eval()
        assert torch.equal(back(ids).logits, hf(ids).logits)
        assert torch.equal(again(ids), model(ids))
    assert again.tokenizer.encode("Grüße 🙂") == model.tokenizer.encode("Grüße 🙂")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 4
    assert again.tokenizer.chat_template == model.tokenizer.chat_template
    # single file, written over with force
    save_pretrained(again, out, force=True)
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()


def test_is_hf_folder(tmp_path):
    write_folder(tmp_path / "m", "gqa2", tokenizer=False)
    assert is_hf_folder(tmp_path / "m")
    assert not is_hf_folder(tmp_path)
    assert not is_hf_folder(tmp_path / "missing")
    assert from_pretrained(tmp_path / "m").tokenizer is None


# ------------------------------------------------------------------------ bad folders


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lfm2") / "good"
    write_folder(folder, "gqa2", shard_bytes=20_000)
    return folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_config(folder, **changes):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_unknown_model_type(good_folder, tmp_path):
    f = _copy(good_folder, tmp_path / "f")
    _edit_config(f, model_type="llama")
    with pytest.raises(UnsupportedArchitectureError, match="'llama'"):
        from_pretrained(f)
    assert not is_hf_folder(f)


def test_missing_config_and_weights(tmp_path, good_folder):
    with pytest.raises(HFCheckpointError, match="no config.json"):
        from_pretrained(tmp_path)
    f = _copy(good_folder, tmp_path / "f")
    shard = sorted(f.glob("model-0000*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(HFCheckpointError, match=shard.name):
        from_pretrained(f)
    with pytest.raises(HFCheckpointError, match="neither a folder nor"):
        from_pretrained(tmp_path / "nope" / "deeper" / "x")


def test_pickle_bin_is_refused_unopened(tmp_path, good_folder):
    f = tmp_path / "f"
    f.mkdir()
    (f / "config.json").write_text((good_folder / "config.json").read_text())
    # a pickle that would run code if it were ever unpickled
    (f / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode()
                                          + b"'\ntR.")
    with pytest.raises(PickleWeightsRefusedError, match="pytorch_model.bin"):
        from_pretrained(f)
    assert not (tmp_path / "pwned").exists()


def test_truncated_shard(tmp_path, good_folder):
    f = _copy(good_folder, tmp_path / "f")
    shard = sorted(f.glob("model-0000*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(HFCheckpointError, match=f"{shard.name} is truncated"):
        from_pretrained(f)


def _rewrite_tensors(folder, edit):
    """Rewrite the (single-file) weights after ``edit(dict) -> dict``."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = edit(load_file(str(path)))
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture
def single_file_folder(tmp_path):
    f = tmp_path / "single"
    write_folder(f, "gqa2", tokenizer=True)
    return f


def test_missing_extra_shape_and_dtype(single_file_folder):
    f = single_file_folder
    name = "model.layers.1.self_attn.k_layernorm.weight"

    _rewrite_tensors(f, lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(TensorMismatchError, match="k_layernorm") as err:
        from_pretrained(f)
    assert err.value.tensor == name

    _rewrite_tensors(f, lambda t: {**t, name: torch.ones(8), "model.layers.9.extra.weight": torch.ones(2)})
    with pytest.raises(TensorMismatchError, match="model.layers.9.extra.weight"):
        from_pretrained(f)

    _rewrite_tensors(f, lambda t: {k: v for k, v in t.items() if "extra" not in k} | {name: torch.ones(9)})
    with pytest.raises(TensorMismatchError, match=r"shape \[9\].*\[8\]"):
        from_pretrained(f)

    _rewrite_tensors(f, lambda t: {**t, name: torch.ones(8, dtype=torch.int8)})
    with pytest.raises(TensorMismatchError, match="I8"):
        from_pretrained(f)

    _rewrite_tensors(f, lambda t: {**t, name: torch.full((8,), float("nan"))})
    with pytest.raises(TensorMismatchError, match="NaN"):
        from_pretrained(f)

    _rewrite_tensors(f, lambda t: {**t, name: torch.ones(8, dtype=torch.bfloat16)})
    assert from_pretrained(f).backbone.livs[2].k_norm.weight.dtype == torch.float32


def test_tokenizer_bigger_than_vocabulary(tmp_path):
    f = tmp_path / "f"
    write_folder(f, "gqa2", vocab_size=300)  # the tokenizer has 320 tokens
    with pytest.raises(TokenizerError, match="320 tokens.*300"):
        from_pretrained(f)


def test_unsupported_rope_type(good_folder, tmp_path):
    f = _copy(good_folder, tmp_path / "f")
    _edit_config(f, rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0})
    with pytest.raises(UnsupportedArchitectureError, match="yarn"):
        from_pretrained(f)


def test_hub_id_goes_through_huggingface_hub_without_pickles(tmp_path, good_folder, monkeypatch):
    """No network here: huggingface_hub.snapshot_download is replaced by a copy of a local
    folder, to check what from_pretrained asks the hub for and that it loads the result."""
    import shutil

    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, endpoint=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        dst = tmp_path / "cache" / repo_id.replace("/", "--")
        if not dst.exists():
            shutil.copytree(good_folder, dst)
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)  # 'LiquidAI/LFM2-tiny' is not a local folder here
    model = from_pretrained("LiquidAI/LFM2-tiny", revision="main")
    assert model.tokenizer is not None
    (repo, revision, patterns), = calls
    assert (repo, revision) == ("LiquidAI/LFM2-tiny", "main")
    assert "*.safetensors" in patterns and not any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) for p in patterns)

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(HFCheckpointError, match="without network access, pass a local folder"):
        from_pretrained("LiquidAI/LFM2-other")
