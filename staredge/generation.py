"""Streaming text generation for STAR language models, on any runtime (no torch needed).

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

import codecs
import json
import math
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import CheckpointError, ConfigError, StarEdgeError
from staredge.fileio import atomic_write_bytes

#: Token ids of the byte-level vocabulary: ids 0..255 are the byte values themselves.
BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259
SPECIAL_IDS = (BOS_ID, EOS_ID, PAD_ID)

#: Name of the STAR model shipped inside the package (files ``staredge/data/<name>.*``).
DEFAULT_LM_NAME = "star_lm_pydoc"

#: How many prompt tokens one prefill call to ``model.step`` consumes. Chunking bounds the
#: memory of attention and long-convolution prefill without changing the result (the model's
#: step form is tested against its parallel form).
DEFAULT_PREFILL_CHUNK = 128

#: Values of ``truncate`` that :func:`stream` understands.
TRUNCATE_MODES = (None, "left")


class ContextLengthError(StarEdgeError, ValueError):
    """A prompt does not fit in the model's context window."""


# --------------------------------------------------------------------------------------
# Argument validation (every check runs when stream() is called, before any work)
# --------------------------------------------------------------------------------------

#: Limits on what a caller may ask of :func:`stream` (docs/security.md). The prompt limit
#: is checked before it is encoded; longer prompts are refused even with truncate="left".
MAX_PROMPT_BYTES = 1 << 24
MAX_NEW_TOKENS = 1 << 20
MAX_STOP_STRINGS = 256
MAX_STOP_CHARS = 1024
#: Seeds are unsigned 63-bit integers.
MAX_SEED = 2**63 - 1


def _is_int(v: Any) -> bool:
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _show(v: Any, limit: int = 60) -> str:
    try:
        text = repr(v)
    except ValueError:  # an int over Python's int-string limit
        return f"a {type(v).__name__} too large to print"
    return text if len(text) <= limit else text[:limit] + "..."


def validate_stream_args(prompt: Any, max_new_tokens: Any, seed: Any, stop: Any, add_bos: Any = True,
                         prefill_chunk: Any = DEFAULT_PREFILL_CHUNK) -> None:
    """Raise :class:`~staredge.errors.ConfigError` (or :class:`~staredge.errors.LimitError`) for
    arguments :func:`stream` cannot use, with what to pass instead: a prompt that is not text,
    bytes or token ids (None, a list of strings, a lone surrogate, ids that are not integers),
    a seed that is not an integer in 0..2**63-1, ``stop`` given as bytes, lengths of the wrong
    type or over :data:`MAX_PROMPT_BYTES` / :data:`MAX_NEW_TOKENS` / :data:`MAX_STOP_STRINGS`."""
    from staredge.errors import LimitError

    if prompt is None:
        raise ConfigError('prompt is None; pass text (e.g. "Once upon"), bytes, token ids, or "" for none')
    if isinstance(prompt, str):
        if len(prompt) > MAX_PROMPT_BYTES:
            raise LimitError(f"the prompt is {len(prompt):,} characters, over the limit of {MAX_PROMPT_BYTES:,} "
                             "(MAX_PROMPT_BYTES)")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = prompt[exc.start]
            raise ConfigError(
                f"the prompt holds a lone surrogate U+{ord(bad):04X} at character {exc.start}, which is not "
                f"text and has no UTF-8 bytes; remove or replace it (s.encode('utf-8', 'replace').decode()), "
                f"or pass the prompt as bytes") from None
    elif isinstance(prompt, (bytes, bytearray, memoryview)):
        if len(prompt) > MAX_PROMPT_BYTES:
            raise LimitError(f"the prompt is {len(prompt):,} bytes, over the limit of {MAX_PROMPT_BYTES:,} "
                             "(MAX_PROMPT_BYTES)")
    elif isinstance(prompt, (list, tuple)) or (hasattr(prompt, "__len__") and hasattr(prompt, "__getitem__")
                                               and not isinstance(prompt, dict)):
        if len(prompt) > MAX_PROMPT_BYTES:
            raise LimitError(f"the prompt is {len(prompt):,} token ids, over the limit of {MAX_PROMPT_BYTES:,} "
                             "(MAX_PROMPT_BYTES)")
        if any(isinstance(t, str) for t in prompt):
            raise ConfigError('the prompt is a list of strings; pass one string ("".join(parts)) or a list '
                              'of token ids (integers 0..258)')
        ok = object()
        wrong = next((t for t in prompt if not _is_int(t) and not (getattr(t, "ndim", None) == 0
                                                                    and _is_int(t.item()))), ok)
        if wrong is not ok:
            raise ConfigError(f"prompt token ids must be integers 0..{VOCAB_SIZE - 1}, got {type(wrong).__name__} "
                              f"{_show(wrong)}")
    else:
        raise ConfigError(f"prompt must be text, bytes or a list of token ids, got {type(prompt).__name__}")
    if not _is_int(max_new_tokens):
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {type(max_new_tokens).__name__} "
                          f"{_show(max_new_tokens)}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise LimitError(f"max_new_tokens is {_show(max_new_tokens)}, over the limit of {MAX_NEW_TOKENS:,} "
                         "(MAX_NEW_TOKENS); generation also stops at the model's context")
    if seed is not None:
        if not _is_int(seed):
            raise ConfigError(f"seed must be an integer 0..2**63-1 or None, got {type(seed).__name__} {_show(seed)}")
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed must be in 0..2**63-1, got {_show(seed)}; reduce it, e.g. seed % 2**63")
    if isinstance(stop, (bytes, bytearray, memoryview)):
        raise ConfigError(f"stop is bytes ({_show(bytes(stop))}); pass a str (stop={_show(bytes(stop).decode('utf-8', 'replace'))}) "
                          f"or token ids (stop=[{', '.join(map(str, bytes(stop)[:4]))}])")
    if stop is not None and not isinstance(stop, (str, int)):
        try:
            items = list(stop)
        except TypeError:
            raise ConfigError(f"stop must be a string, a token id or a list of them, got {type(stop).__name__}") from None
        if len(items) > MAX_STOP_STRINGS:
            raise LimitError(f"{len(items)} stop entries, over the limit of {MAX_STOP_STRINGS} (MAX_STOP_STRINGS)")
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                raise ConfigError(f"stop entry {_show(item)} is bytes; pass it as a str")
    for item in ([stop] if isinstance(stop, str) else list(stop) if isinstance(stop, (list, tuple)) else []):
        if isinstance(item, str) and len(item) > MAX_STOP_CHARS:
            raise LimitError(f"a stop string is {len(item):,} characters, over the limit of {MAX_STOP_CHARS} "
                             "(MAX_STOP_CHARS)")
    if not isinstance(add_bos, bool):
        raise ConfigError(f"add_bos must be True or False, got {type(add_bos).__name__} {_show(add_bos)}")
    if not _is_int(prefill_chunk):
        raise ConfigError(f"prefill_chunk must be a positive integer, got {type(prefill_chunk).__name__} "
                          f"{_show(prefill_chunk)}")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


from staredge.tokenizer import ByteTokenizer, IncrementalUTF8Decoder  # noqa: E402  (moved; re-exported)


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen from the logits.

    ``temperature`` 0 means greedy (argmax; the generator is not used). ``top_k`` 0 or None
    and ``top_p`` 1.0 switch those filters off; ``repetition_penalty`` 1.0 switches the
    penalty off. The order is the usual one: penalty, temperature, top-k, top-p.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ConfigError(f"top_k must be a non-negative integer (0 or None = off), got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            raise ConfigError(f"repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty!r}")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0


def _to_numpy_row(logits: Any) -> tuple[np.ndarray, Any]:
    """``logits`` as a 1-D numpy row, and a function that turns a numpy result back into the
    caller's kind (a torch tensor in gives a torch tensor out; torch is never imported here)."""
    if isinstance(logits, np.ndarray):
        return logits.reshape(-1), lambda a: a
    if hasattr(logits, "detach") and hasattr(logits, "numpy"):  # a torch tensor
        like = logits
        row = logits.detach().float().cpu().numpy().reshape(-1)

        def back(a: np.ndarray) -> Any:
            import torch

            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=like.dtype, device=like.device)

        return row, back
    return np.asarray(logits, dtype=np.float32).reshape(-1), lambda a: a


def _penalise(row: np.ndarray, previous_ids: Iterable[int], penalty: float) -> np.ndarray:
    if penalty == 1.0:
        return row
    seen = sorted({int(i) for i in previous_ids if 0 <= int(i) < row.shape[-1]})
    if not seen:
        return row
    out = row.copy()
    idx = np.asarray(seen, dtype=np.int64)
    vals = out[idx]
    out[idx] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def _top_k(row: np.ndarray, k: int | None) -> np.ndarray:
    if not k or k >= row.shape[-1]:
        return row
    kth = np.partition(row, row.shape[-1] - k)[row.shape[-1] - k]
    return np.where(row < kth, -np.inf, row).astype(row.dtype, copy=False)


#: Rounding allowance of the nucleus test: probabilities computed from float32 logits are
#: exact to about 1e-7, so "the tokens above already hold p" is decided to within 1e-6.
TOP_P_TOLERANCE = 1e-6


def _softmax64(row: np.ndarray) -> np.ndarray:
    z = row.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _top_p(row: np.ndarray, p: float) -> np.ndarray:
    if p >= 1.0:
        return row
    order = np.argsort(-row, kind="stable")
    probs = _softmax64(row[order])
    mass_before = np.cumsum(probs) - probs
    drop_sorted = mass_before >= p - TOP_P_TOLERANCE
    drop_sorted[0] = False
    drop = np.empty_like(drop_sorted)
    drop[order] = drop_sorted
    return np.where(drop, -np.inf, row).astype(row.dtype, copy=False)


def apply_repetition_penalty(logits: Any, previous_ids: Iterable[int], penalty: float) -> Any:
    """Make every token already seen less likely (the CTRL rule, as in Hugging Face).

    A seen token's positive logit is divided by ``penalty`` and its negative logit multiplied
    by it, so ``penalty > 1`` always lowers it. Each seen token is penalised once, however
    often it occurred. Returns a new row (numpy in, numpy out; a torch tensor in gives a
    torch tensor out); ``logits`` is a 1-D row and is not modified.
    """
    if penalty == 1.0:
        return logits
    row, back = _to_numpy_row(logits)
    out = _penalise(row, previous_ids, penalty)
    return logits if out is row else back(out)


def filter_top_k(logits: Any, k: int | None) -> Any:
    """Keep the ``k`` highest logits (ties with the k-th are kept too); the rest become -inf."""
    row, back = _to_numpy_row(logits)
    if not k or k >= row.shape[-1]:
        return logits
    return back(_top_k(row, k))


def filter_top_p(logits: Any, p: float) -> Any:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    A token is dropped when the tokens ranked above it already hold probability >= ``p``
    (to within :data:`TOP_P_TOLERANCE`); the most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    row, back = _to_numpy_row(logits)
    return back(_top_p(row, p))


def _distribution(row: np.ndarray, config: SamplingConfig, previous_ids: Sequence[int]) -> np.ndarray:
    row = _penalise(row.astype(np.float32, copy=False), previous_ids, config.repetition_penalty)
    if config.greedy:
        out = np.zeros(row.shape[-1], dtype=np.float64)
        out[int(np.argmax(row))] = 1.0
        return out
    row = (row.astype(np.float64) / config.temperature)
    row = _top_k(row, config.top_k)
    row = _top_p(row, config.top_p)
    return _softmax64(row)


def next_token_distribution(logits: Any, config: SamplingConfig, previous_ids: Sequence[int] = ()) -> Any:
    """Probabilities the sampler draws from, after penalty, temperature, top-k and top-p.

    With ``temperature == 0`` this is one-hot on the argmax of the penalised logits. numpy in,
    numpy out (float64); a torch tensor in gives a tensor of its dtype out.
    """
    row, back = _to_numpy_row(logits)
    probs = _distribution(row, config, previous_ids)
    return back(probs) if not isinstance(logits, np.ndarray) else probs


def _uniform(generator: Any) -> float:
    """One draw in [0, 1) from a numpy Generator (or a torch.Generator, for callers that pass one)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    if generator is not None and hasattr(generator, "manual_seed"):
        import torch

        return float(torch.rand((), generator=generator, dtype=torch.float64))
    return float(make_generator(None).random())


def sample_next_token(logits: Any, config: SamplingConfig, generator: Any = None,
                      previous_ids: Sequence[int] = ()) -> int:
    """One token id drawn from ``logits`` (shape [V], numpy or torch) with ``config``.

    Greedy (temperature 0) takes the argmax (the first one on ties) and draws nothing.
    Otherwise one uniform number is drawn from ``generator`` (a ``numpy.random.Generator``
    from :func:`make_generator`; None draws a fresh OS seed) and mapped through the
    cumulative distribution, so the same generator state gives the same token on every
    runtime whose probabilities agree.
    """
    row, _ = _to_numpy_row(logits)
    if config.greedy:
        row = _penalise(row, previous_ids, config.repetition_penalty)
        return int(np.argmax(row))
    probs = _distribution(row, config, previous_ids)
    cdf = np.cumsum(probs)
    u = _uniform(generator) * cdf[-1]
    idx = int(np.searchsorted(cdf, u, side="right"))
    idx = min(idx, probs.shape[-1] - 1)
    while probs[idx] == 0 and idx > 0:  # float rounding at the very top of the cdf
        idx -= 1
    return idx


def make_generator(seed: int | None) -> np.random.Generator:
    """A private numpy generator for one stream: seeded from ``seed``, or from the OS when it
    is None (never from numpy's or torch's global state)."""
    return np.random.Generator(np.random.PCG64(int(seed) if seed is not None else secrets.randbits(63)))


# --------------------------------------------------------------------------------------
# Stop conditions
# --------------------------------------------------------------------------------------


def _split_stop(stop: str | int | Iterable[str | int] | None,
                tokenizer: Any = None) -> tuple[tuple[str, ...], frozenset[int]]:
    """Separate ``stop`` into stop strings and stop token ids (EOS, or the tokenizer's stop ids,
    always stop)."""
    vocab = VOCAB_SIZE if tokenizer is None else tokenizer.vocab_size
    if stop is None:
        items: list[Any] = []
    elif isinstance(stop, (str, int)):
        items = [stop]
    else:
        items = list(stop)
    strings, ids = [], {EOS_ID} if tokenizer is None else set(tokenizer.stop_ids)
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"stop entries must be strings or token ids, got {item!r}")
        if isinstance(item, str):
            if item == "":
                raise ConfigError("a stop string must not be empty")
            strings.append(item)
        elif isinstance(item, int):
            if not 0 <= item < vocab:
                raise ConfigError(f"stop token id {item} is outside the vocabulary (0..{vocab - 1})")
            ids.add(item)
        else:
            raise ConfigError(f"stop entries must be strings or token ids, got {type(item).__name__}")
    return tuple(strings), frozenset(ids)


def _held_back_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def _first_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


# --------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------


@dataclass
class StreamStats:
    """What one stream did: token counts, why it ended and how long each phase took."""

    prompt_tokens: int = 0
    truncated_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str | None = None  # "length" | "eos" | "stop" | "context" | "cancelled"
    prefill_s: float = 0.0
    decode_s: float = 0.0
    generated_ids: list[int] = field(default_factory=list)
    #: Seconds from the start of the stream to the first sampled token (prefill + sampling).
    first_token_s: float = float("nan")
    #: Seconds of each decode step (one token fed, its logits back), in order.
    step_s: list[float] = field(default_factory=list)
    #: ``time.perf_counter()`` when each token was sampled (its differences are the time per
    #: token as the caller sees it: graph call plus sampling and loop).
    token_t: list[float] = field(default_factory=list)

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens consumed per second of prefill."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second of decoding (the first token comes from prefill and is
        not counted)."""
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")


class TextStream(Iterator[str]):
    """Iterator over the text pieces of one generation (see :func:`stream`).

    Each piece is complete characters (never half of one). ``close()`` (or leaving a
    ``with`` block, or ``break`` followed by garbage collection) cancels the generation and
    frees its decode state. ``stats`` tells how many tokens were produced and why it ended.
    """

    def __init__(self, gen: Iterator[str], stats: StreamStats) -> None:
        self._gen = gen
        self.stats = stats

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        """Cancel the generation; later ``next()`` calls raise StopIteration."""
        self._gen.close()
        if self.stats.finish_reason is None:
            self.stats.finish_reason = "cancelled"

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def text(self) -> str:
        """Consume the rest of the stream and return it as one string."""
        return "".join(self)


def _model_context(model: Any) -> int:
    n = getattr(model, "max_seq_len", None)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{type(model).__name__} has no positive integer max_seq_len; it cannot be streamed")
    return n


def _model_device(model: Any) -> Any:
    """Where the model's weights live (token ids are created there); CPU for weightless models."""
    import torch

    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


class DecodeSession:
    """One stream's decode state over some runtime: :meth:`feed` takes token ids at the
    current position and returns the logits row (numpy float32 ``[vocab]``) of the last one;
    :meth:`close` frees the state. The generation loop (:func:`stream`) only talks to this,
    so sampling, stop conditions and decoding are the same code on every runtime.

    Implementations: :class:`TorchStepSession` (a PyTorch model with the step contract) and
    the text-generation backends of :mod:`staredge.runtimes.text` (ONNX Runtime, OpenVINO,
    LiteRT, CoreML, PyTorch), whose ``open_session()`` returns one.
    """

    def feed(self, ids: Sequence[int]) -> np.ndarray:  # pragma: no cover - interface
        """Feed ``ids`` (prefill chunks are the session's business); logits row of the last."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the decode state (idempotent)."""


class TorchStepSession(DecodeSession):
    """A decode session over a PyTorch model with ``init_state``/``step`` (see the module doc).

    Prompts are fed in chunks of ``prefill_chunk`` tokens; grad mode is entered around each
    model call only (a generator suspended inside ``torch.no_grad()`` would leak that mode
    into the caller's code)."""

    def __init__(self, model: Any, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.prefill_chunk = int(prefill_chunk)
        self.device = _model_device(model)
        with torch.no_grad():
            self.state = model.init_state(1)

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        torch = self._torch
        ids = [int(i) for i in ids]
        logits = None
        with torch.no_grad():
            for start in range(0, len(ids), self.prefill_chunk):
                chunk = torch.tensor([ids[start:start + self.prefill_chunk]], dtype=torch.long, device=self.device)
                logits, self.state = self.model.step(chunk, self.state)
            return logits[0, -1].detach().float().cpu().numpy()

    def close(self) -> None:
        self.state = None


def open_session(model: Any, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> DecodeSession:
    """A fresh :class:`DecodeSession` for ``model``: a text backend's own ``open_session()``,
    or a :class:`TorchStepSession` for a PyTorch model with the step contract."""
    opener = getattr(model, "open_session", None)
    if callable(opener):
        return opener()
    if callable(getattr(model, "init_state", None)) and callable(getattr(model, "step", None)):
        return TorchStepSession(model, prefill_chunk)
    raise ConfigError(f"{type(model).__name__} cannot be streamed: it has neither open_session() nor "
                      "init_state()/step(); pass a STAR language model, a text-generation artifact's "
                      "Predictor, or a model with the step contract")


def _prepare_prompt(prompt: str | bytes | Sequence[int], tokenizer: ByteTokenizer, add_bos: bool,
                    max_seq_len: int, max_new_tokens: int, truncate: str | None) -> tuple[list[int], int]:
    """Prompt token ids that fit the context window, and how many were dropped."""
    if truncate not in TRUNCATE_MODES:
        raise ConfigError(f"truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
    if isinstance(prompt, (str, bytes, bytearray)):
        ids = tokenizer.encode(prompt, add_bos=add_bos)
    else:
        ids = [int(i) for i in prompt]
        tokenizer.check_ids(ids)
        if add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
            ids = [tokenizer.bos_id] + ids
    if not ids:
        raise ConfigError("the prompt is empty and add_bos=False: there is nothing to condition on")
    if truncate == "left":
        # Keep room for every requested token: the last generated token is never fed back,
        # so prompt + max_new_tokens - 1 positions must fit.
        keep = max(1, max_seq_len - max(max_new_tokens, 1) + 1)
        if len(ids) > keep:
            head = ids[:1] if ids[0] == tokenizer.bos_id and keep > 1 else []
            tail = ids[len(ids) - (keep - len(head)):]
            return head + tail, len(ids) - len(head) - len(tail)
        return ids, 0
    if len(ids) > max_seq_len:
        raise ContextLengthError(
            f"the prompt is {len(ids)} tokens (bytes, BOS included) but the model's context is "
            f"{max_seq_len} tokens; shorten the prompt or pass truncate='left' to drop its oldest bytes"
        )
    return ids, 0


def stream(model: Any, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
           temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
           repetition_penalty: float = 1.0, seed: int | None = None,
           stop: str | int | Iterable[str | int] | None = None, *, truncate: str | None = None,
           add_bos: bool = True, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
           tokenizer: ByteTokenizer | None = None, ignore_eos: bool = False) -> TextStream:
    """Generate text from ``model`` after ``prompt``, yielding pieces as they become printable.

    Args:
        model: a PyTorch model with ``init_state``, ``step`` and ``max_seq_len``, or anything
            with ``max_seq_len`` and ``open_session()`` (a text-generation backend from
            :func:`staredge.runtimes.load_backend`; see the module doc).
        prompt: text (encoded as UTF-8 bytes after a BOS token), bytes, or token ids.
        max_new_tokens: at most this many tokens are generated.
        temperature, top_k, top_p, repetition_penalty: see :class:`SamplingConfig`.
        seed: seeds this stream's private generator; the same seed gives the same text.
            None draws a seed from the OS.
        stop: a stop string, a stop token id, or a list of both. Generation ends at the first
            stop string (which is not emitted) or stop id; EOS always stops.
        truncate: None raises :class:`ContextLengthError` for a prompt longer than the
            context; ``"left"`` drops the oldest prompt bytes (keeping BOS) so that the
            prompt and ``max_new_tokens`` fit.
        add_bos: put BOS in front of the prompt (the shipped model was trained that way).
        prefill_chunk: prompt tokens per prefill step of a PyTorch model (an artifact
            prefills in the chunks its graph was exported for).
        ignore_eos: EOS does not end the stream (it produces no text); for benchmarks that
            need exactly ``max_new_tokens`` tokens.

    A stream that reaches the end of the context stops with ``finish_reason == "context"``.
    Arguments are checked when this is called, not on the first ``next()``.
    """
    validate_stream_args(prompt, max_new_tokens, seed, stop, add_bos, prefill_chunk)
    tokenizer = tokenizer or ByteTokenizer()
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(prefill_chunk, int) or prefill_chunk < 1:
        raise ConfigError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
    stop_strings, stop_ids = _split_stop(stop, tokenizer)
    eos = tokenizer.eos_id
    if ignore_eos is True and eos in stop_ids and not (stop == eos or (isinstance(stop, (list, tuple))
                                                                       and eos in stop)):
        stop_ids = frozenset(stop_ids - {eos})
    max_seq_len = _model_context(model)
    ids, dropped = _prepare_prompt(prompt, tokenizer, add_bos, max_seq_len, max_new_tokens, truncate)
    stats = StreamStats(prompt_tokens=len(ids), truncated_tokens=dropped)
    gen = _stream_pieces(model, ids, max_new_tokens, config, make_generator(seed), stop_strings, stop_ids,
                         max_seq_len, prefill_chunk, tokenizer, stats)
    return TextStream(gen, stats)


def _stream_pieces(model: Any, ids: list[int], max_new_tokens: int, config: SamplingConfig,
                   rng: np.random.Generator, stop_strings: tuple[str, ...], stop_ids: frozenset[int],
                   max_seq_len: int, prefill_chunk: int, tokenizer: ByteTokenizer,
                   stats: StreamStats) -> Iterator[str]:
    if max_new_tokens == 0:
        stats.finish_reason = "length"
        return
    history = list(ids)  # what the repetition penalty looks at: prompt and generated tokens
    decoder = tokenizer.decoder()
    pending = ""  # decoded text held back because it might be the start of a stop string
    t0 = time.perf_counter()
    session = open_session(model, prefill_chunk)  # the state exists from here until finally
    try:
        last = session.feed(ids)
        stats.prefill_s = time.perf_counter() - t0
        fed = len(ids)
        t_decode = time.perf_counter()
        stopped_by_string = False
        try:
            while True:
                token = sample_next_token(last, config, rng, history)
                now = time.perf_counter()
                if stats.generated_tokens == 0:
                    stats.first_token_s = now - t0
                stats.token_t.append(now)
                stats.generated_ids.append(token)
                stats.generated_tokens += 1
                history.append(token)
                if token in stop_ids:
                    stats.finish_reason = "eos" if token == tokenizer.eos_id else "stop"
                    break
                piece = decoder.feed(token)
                if piece and stop_strings:
                    pending += piece
                    cut = _first_stop(pending, stop_strings)
                    if cut >= 0:
                        pending, stopped_by_string = pending[:cut], True
                        stats.finish_reason = "stop"
                        break
                    keep = _held_back_length(pending, stop_strings)
                    piece, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                if piece:
                    yield piece
                if stats.generated_tokens >= max_new_tokens:
                    stats.finish_reason = "length"
                    break
                if fed >= max_seq_len:
                    stats.finish_reason = "context"
                    break
                t_step = time.perf_counter()
                last = session.feed([token])
                stats.step_s.append(time.perf_counter() - t_step)
                fed += 1
            # Text held back for a stop string that never completed is real output; so is the
            # replacement for an incomplete final character. After a stop string, bytes that
            # follow it are dropped with it.
            tail = pending if stopped_by_string else pending + decoder.flush()
            if not stopped_by_string and stop_strings:
                cut = _first_stop(tail, stop_strings)
                if cut >= 0:
                    tail, stats.finish_reason = tail[:cut], "stop"
            if tail:
                yield tail
        finally:
            stats.decode_s = time.perf_counter() - t_decode
    finally:
        if stats.finish_reason is None:
            stats.finish_reason = "cancelled"
        session.close()
        del session


def generate(model: Any, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
             temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
             repetition_penalty: float = 1.0, seed: int | None = None,
             stop: str | int | Iterable[str | int] | None = None, **kwargs: Any) -> str:
    """The whole generated text (without the prompt); same arguments as :func:`stream`."""
    return stream(model, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                  **kwargs).text()


# --------------------------------------------------------------------------------------
# Saved models and the user-facing class
# --------------------------------------------------------------------------------------

#: ``format`` value of the JSON file that sits next to a saved STAR LM's weights.
LM_FORMAT = "staredge-star-lm"
LM_FORMAT_VERSION = 1


def _data_dir() -> Path:
    return Path(__file__).resolve().parent / "data"




def save_lm(model: Any, path: str | os.PathLike, info: dict[str, Any] | None = None, force: bool = False) -> tuple[Path, Path]:
    """Save a ``STARLanguageModel`` as ``<path>.safetensors`` plus ``<path>.json``.

    ``path`` is the common stem (a ``.safetensors``/``.json`` suffix is dropped). The JSON
    holds ``model.config_dict()``, the weights' SHA-256 and ``info`` (anything JSON-able, e.g.
    training settings and results). Both files are written atomically; existing files are
    only replaced with ``force=True``. Returns (weights path, config path).
    """
    from staredge.models.checkpoint import file_sha256, save_safetensors

    stem = Path(path)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    weights, config = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    for p in (weights, config):
        if p.exists() and not force:
            raise ConfigError(f"{p} already exists; pass force=True to replace it")
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, weights, metadata={"format": LM_FORMAT})
    doc = {
        "format": LM_FORMAT,
        "format_version": LM_FORMAT_VERSION,
        "name": stem.name,
        "weights": weights.name,
        "weights_sha256": file_sha256(weights),
        "model": model.config_dict(),
        "info": info or {},
    }
    atomic_write_bytes(config, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return weights, config


def _resolve_lm_files(name_or_path: str | os.PathLike | None) -> tuple[Path, Path]:
    """(weights, config) for a shipped model name, a stem, either file, or a folder."""
    if name_or_path is None:
        name_or_path = DEFAULT_LM_NAME
    raw = str(name_or_path)
    shipped = _data_dir() / raw
    if not any(sep in raw for sep in ("/", os.sep)) and shipped.with_name(raw + ".json").is_file():
        stem = shipped
    else:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            found = [f for f in found if f.with_suffix(".safetensors").is_file()]
            if len(found) != 1:
                raise CheckpointError(
                    f"{p} must hold exactly one <name>.json + <name>.safetensors pair (found {len(found)})")
            stem = found[0].with_suffix("")
        elif p.suffix in (".json", ".safetensors"):
            stem = p.with_suffix("")
        else:
            stem = p
    config = stem.with_name(stem.name + ".json")
    if not config.is_file():
        shipped_names = sorted(f.stem for f in _data_dir().glob("star_lm*.json"))
        raise CheckpointError(
            f"no language model at {raw!r}: expected {config} (and its .safetensors). "
            f"Shipped models: {', '.join(shipped_names) or 'none'}; or pass a path saved with save_lm()."
        )
    return stem.with_name(stem.name + ".safetensors"), config


def load_lm(name_or_path: str | os.PathLike | None = None) -> "LanguageModel":
    """Load a saved STAR language model; None (or ``"star_lm_pydoc"``) is the shipped one.

    Accepts a shipped model's name, the stem of a ``save_lm`` pair, either of its two files,
    or a folder holding exactly one pair. Weights are read with safetensors (no pickle).
    """
    from staredge.models.checkpoint import file_sha256, load_checkpoint
    from staredge.models.star import STARLanguageModel

    weights, config = _resolve_lm_files(name_or_path)
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the model config {config}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != LM_FORMAT or "model" not in doc:
        raise CheckpointError(f"{config} is not a StarEdge STAR-LM config (expected \"format\": \"{LM_FORMAT}\")")
    if not weights.is_file():
        raise CheckpointError(f"the weights file {weights} named by {config} is missing")
    expected = doc.get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in {config}; the file is corrupt or was replaced")
    try:
        model = STARLanguageModel.from_config_dict(doc["model"])
    except StarEdgeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"the model config in {config} is invalid: {exc}") from exc
    load_checkpoint(model, weights)
    model.eval()
    return LanguageModel(model, name=doc.get("name", config.stem), info=doc.get("info", {}))


class LanguageModel:
    """A language model ready to generate: ``lm.stream(prompt, ...)`` / ``lm.generate(prompt, ...)``.

    Wraps any model with the step contract (see the module doc) and the byte tokenizer.
    The model is shared and stateless; each call to :meth:`stream` has its own decode state
    and random generator, so several streams can run interleaved.
    """

    def __init__(self, model: Any, name: str | None = None, info: dict[str, Any] | None = None,
                 tokenizer: ByteTokenizer | None = None) -> None:
        _model_context(model)
        if hasattr(model, "eval"):
            model.eval()
        self.model = model
        self.name = name or type(model).__name__
        self.info = dict(info or {})
        self.tokenizer = tokenizer or getattr(model, "tokenizer", None) or ByteTokenizer()

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None) -> "LanguageModel":
        """Same as :func:`load_lm`."""
        return load_lm(name_or_path)

    @property
    def max_seq_len(self) -> int:
        """The model's context window in tokens (bytes, BOS included)."""
        return _model_context(self.model)

    @property
    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = getattr(self.model, "parameters", None)
        return sum(p.numel() for p in params()) if callable(params) else 0

    def stream(self, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
               temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
               repetition_penalty: float = 1.0, seed: int | None = None,
               stop: str | int | Iterable[str | int] | None = None, **kwargs: Any) -> TextStream:
        """Iterator over generated text pieces; see :func:`stream` for every argument."""
        return stream(self.model, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                      stop, tokenizer=self.tokenizer, **kwargs)

    def generate(self, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
                 repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: str | int | Iterable[str | int] | None = None, **kwargs: Any) -> str:
        """The generated text as one string; see :func:`stream` for every argument."""
        return self.stream(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                           **kwargs).text()

    def chat(self, messages: Any, max_new_tokens: int = 256, **kwargs: Any) -> TextStream:
        """Stream the assistant's reply to ``messages`` (``[{"role": "user", "content": ...}]``)
        rendered with the model's own chat template; see :func:`staredge.chat.chat_stream`."""
        from staredge.chat import chat_stream

        return chat_stream(self, messages, max_new_tokens, **kwargs)

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, params={self.num_parameters:,}, max_seq_len={self.max_seq_len})"
