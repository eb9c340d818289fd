"""Streaming text generation for STAR language models, on any runtime (no torch needed).

The user-facing names in one place (front layer). They live in the core modules
:mod:`staredge.tokenizer`, :mod:`staredge.sampling` and :mod:`staredge.decoding` (the one
decode loop), and with the STAR models (:mod:`staredge.models.star.lm`: :func:`save_lm`,
:func:`load_lm`, :class:`LanguageModel`, imported on first use since they need torch).
Three layers, each usable on its own:

* :class:`ByteTokenizer` and :class:`IncrementalUTF8Decoder`: the byte-level vocabulary
  (256 byte values plus ``BOS``/``EOS``/``PAD``) and a decoder that turns a stream of byte
  tokens into text without ever emitting half of a multi-byte character.
* :class:`SamplingConfig` and :func:`sample_next_token`: repetition penalty, temperature,
  top-k and top-p over one row of numpy logits, drawing from a private
  ``numpy.random.Generator`` so that a seed fixes the result (temperature 0 is greedy).
* :func:`stream` / :func:`generate`: prefill the prompt (in chunks), then decode one token
  per step, yielding text pieces as they become printable. The loop talks to a
  :class:`DecodeSession` only (feed ids, get the last logits row as numpy), so the same
  sampler, stop conditions, UTF-8 decoding, cancellation and context handling run on every
  runtime: a PyTorch model (:class:`TorchStepSession`) or an exported artifact through its
  text-generation backend (:mod:`staredge.runtimes.text`, used by ``Predictor.stream``).
  Each call owns its own decode state and generator, so any number of streams can be
  interleaved on one model; closing a stream cancels it and frees its state.

:class:`LanguageModel` (``staredge.LanguageModel``, built by :func:`load_lm`) bundles a
model with the tokenizer: ``lm.stream(prompt, ...)`` and ``lm.generate(prompt, ...)``.

The model contract (``staredge.models.star.STARLanguageModel`` implements it):
``init_state(batch_size) -> state``, ``step(input_ids [B, T], state) -> (logits [B, T, V],
new_state)`` and an integer ``max_seq_len``; or, for any runtime, ``max_seq_len`` and
``open_session() -> DecodeSession``. The state is an explicit value; the model keeps
none of its own, which is what makes concurrent sessions safe.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from staredge.decoding import (  # noqa: F401 - re-exported
    BOS_ID,
    DEFAULT_PREFILL_CHUNK,
    EAGER_PREFILL_CHUNK,
    EOS_ID,
    MAX_NEW_TOKENS,
    MAX_PROMPT_BYTES,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    TRUNCATE_MODES,
    VOCAB_SIZE,
    ContextLengthError,
    DecodeSession,
    StreamStats,
    TextStream,
    _first_stop,
    _held_back_length,
    _model_context,
    _prepare_prompt,
    _split_stop,
    decode_tokens,
    generate,
    open_session,
    stream,
    validate_stream_args,
)
from staredge.sampling import (  # noqa: F401 - re-exported
    TOP_P_TOLERANCE,
    SamplingConfig,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    make_generator,
    next_token_distribution,
    sample_next_token,
)
from staredge.tokenizer import BYTE_PAD_ID as PAD_ID  # noqa: F401 - re-exported
from staredge.tokenizer import BYTE_SPECIAL_IDS as SPECIAL_IDS  # noqa: F401 - re-exported
from staredge.tokenizer import ByteTokenizer, IncrementalUTF8Decoder  # noqa: F401 - re-exported

#: Names that live with the STAR models (:mod:`staredge.models.star.lm`, which needs torch):
#: imported on first use, so ``import staredge.generation`` stays torch-free.
_FROM_STAR_LM = ("DEFAULT_LM_NAME", "LM_FORMAT", "LM_FORMAT_VERSION", "LanguageModel", "load_lm", "save_lm",
                 "_data_dir", "_resolve_lm_files")


def __getattr__(name: str) -> Any:
    if name in _FROM_STAR_LM:
        value = getattr(importlib.import_module("staredge.models.star.lm"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'staredge.generation' has no attribute {name!r}")


def _model_device(model: Any) -> Any:
    """Where the model's weights live (token ids are created there); CPU for weightless models."""
    import torch

    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def TorchStepSession(model: Any, prefill_chunk: int = EAGER_PREFILL_CHUNK) -> DecodeSession:
    """A decode session over a PyTorch model with ``init_state``/``step``, where its weights
    are: the PyTorch engine's stepper (:class:`staredge.runtimes.pytorch.TorchLMStepper`),
    prompts fed in chunks of ``prefill_chunk`` tokens by the one prefill chunker."""
    from staredge.runtimes.pytorch import torch_lm_session

    return torch_lm_session(model, prefill_chunk)


__all__ = [
    "BOS_ID", "ByteTokenizer", "ContextLengthError", "DEFAULT_PREFILL_CHUNK", "DecodeSession", "EAGER_PREFILL_CHUNK", "EOS_ID",
    "IncrementalUTF8Decoder", "LanguageModel", "MAX_NEW_TOKENS", "MAX_PROMPT_BYTES", "PAD_ID", "SPECIAL_IDS",
    "SamplingConfig", "StreamStats", "TextStream", "TorchStepSession", "VOCAB_SIZE", "apply_repetition_penalty",
    "decode_tokens", "filter_top_k", "filter_top_p", "generate", "load_lm", "make_generator",
    "next_token_distribution", "open_session", "sample_next_token", "save_lm", "stream", "validate_stream_args",
]
