"""Random-initialised LFM2 folders written by transformers, for tests/test_lfm2_*.py.

Each folder is what ``Lfm2ForCausalLM.save_pretrained`` and a fast tokenizer's
``save_pretrained`` write: config.json, safetensors (sharded on request), generation_config.json,
tokenizer.json and tokenizer_config.json with a chat template. The tokenizer is a byte-level
BPE trained here on a few sentences (multi-byte characters included), with LFM2's special
ids: pad 0, BOS 1, EOS 2, then ``<|im_start|>`` 3 and ``<|im_end|>`` 4.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

#: A ChatML-style template (our own words) that ends with the assistant's turn opened.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIALS = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. Streaming text, one token at a time.",
    "Grüße aus Köln: naïve café, résumé, déjà vu. 日本語のテキスト。 Emoji 🙂🚀 and math ∑∫√.",
    "def main():\n    return 42  # a comment\n",
]

#: Shapes of the tiny random LFM2 configs (name -> Lfm2Config keyword arguments).
SHAPES = {
    "gqa2": dict(hidden_size=32, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, layer_types=["conv", "full_attention", "conv", "full_attention"]),
    "gqa4-bias-untied": dict(hidden_size=32, intermediate_size=80, num_hidden_layers=3, num_attention_heads=8,
                             num_key_value_heads=2, layer_types=["conv", "conv", "full_attention"],
                             conv_bias=True, tie_word_embeddings=False, conv_L_cache=4),
    "gqa3-mha-idxs": dict(hidden_size=48, intermediate_size=128, num_hidden_layers=3, num_attention_heads=6,
                          num_key_value_heads=2, full_attn_idxs=[1], block_ffn_dim_multiplier=1.5,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, norm_eps=1e-6),
    "mha-linear-rope": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=2, layer_types=["full_attention", "conv"],
                            block_auto_adjust_ff_dim=False,
                            rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0}),
}


#: Overrides that make a random model's greedy text varied (for streaming/generate tests).
VARIED = {"tie_word_embeddings": False}


@functools.lru_cache(maxsize=1)
def tokenizer_object(vocab_size: int = 320):
    """A byte-level BPE ``tokenizers.Tokenizer`` with :data:`SPECIALS` at ids 0..4."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TRAIN_TEXT * 8, trainer)
    return tok


def save_tokenizer(folder: Path, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """Write tokenizer.json + tokenizer_config.json as transformers' fast tokenizer does."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object(), bos_token="<|startoftext|>",
                                   eos_token="<|im_end|>", pad_token="<|pad|>")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(folder))


def hf_config(shape: str, vocab_size: int = 320, **overrides):
    """The ``Lfm2Config`` of a named shape (special ids: pad 0, BOS 1, EOS 4 = ``<|im_end|>``)."""
    import transformers

    kw = dict(vocab_size=vocab_size, block_multiple_of=16, max_position_embeddings=512, pad_token_id=0,
              bos_token_id=1, eos_token_id=4)
    kw.update(SHAPES[shape])
    kw.update(overrides)
    return transformers.Lfm2Config(**kw)


def build_hf_model(shape: str, seed: int = 0, **overrides):
    """A seeded random ``Lfm2ForCausalLM`` (norm weights and biases perturbed off their init,
    so that a mapping that drops them would show in the logits). :data:`VARIED` (untied
    embeddings) makes greedy decoding produce varied tokens, for streaming tests."""
    import transformers

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.Lfm2ForCausalLM(hf_config(shape, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
            elif name.endswith("lm_head.weight"):
                p.mul_(20.0)  # logits far from ties, so greedy text is well defined
            elif name.endswith("embed_tokens.weight"):
                # tied: the head's scale; untied: enough to make greedy text vary (not one token repeated)
                p.mul_(20.0 if model.config.tie_word_embeddings else 4.0)
    return model


def write_folder(folder: Path, shape: str = "gqa2", seed: int = 0, shard_bytes: int | None = None,
                 tokenizer: bool = True, chat_template: str | None = CHAT_TEMPLATE, **overrides):
    """Write a random LFM2 folder; returns the transformers model that wrote it."""
    model = build_hf_model(shape, seed, **overrides)
    kw = {} if shard_bytes is None else {"max_shard_size": shard_bytes}
    model.save_pretrained(str(folder), **kw)
    if tokenizer:
        save_tokenizer(folder, chat_template)
    return model
