"""The one decode loop of StarEdge (core layer: numpy and the standard library only).

Every token any StarEdge code generates comes from :func:`decode_tokens`: export
validation (``exporters/lm_validate.py``, through ``LMStepper.greedy``), ``Predictor.stream``
/ :func:`staredge.generation.stream`, ``staredge generate`` and the generation benchmark.
It talks to a :class:`DecodeSession` (one stream's state on some engine: feed ids, get
logits back), so prefill chunking and state handling are the session's (one
implementation: :class:`staredge.runtimes.lm.LMStepper`), and choosing the next token is
the caller's ``pick`` (greedy argmax, or the sampler of :mod:`staredge.generation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from staredge.errors import ConfigError, StarEdgeError
from staredge.sampling import SamplingConfig, make_generator, sample_next_token
from staredge.tokenizer import (BYTE_BOS_ID as BOS_ID, BYTE_EOS_ID as EOS_ID, BYTE_VOCAB_SIZE as VOCAB_SIZE,
                                ByteTokenizer)

#: Values of ``truncate`` that :func:`stream` understands.
TRUNCATE_MODES = (None, "left")

#: Tokens per prefill call of an exported LM when the export is not told otherwise: the one
#: named default (``exporters/lm_graph.py`` should import it; an artifact then records its
#: chunk in its metadata, ``lm.prefill_chunk``, which is the only source at run time: the
#: TFLite ``prefill`` signature and the CoreML ``prefill`` function are built for it).
DEFAULT_PREFILL_CHUNK = 16
#: Tokens per prefill call of a PyTorch model's eager stream (``stream(..., prefill_chunk=)``
#: overrides it): eager mode has no graph fixed to a chunk, so a larger chunk only bounds the
#: memory of attention and long-convolution prefill (the step form is exact for any chunk).
EAGER_PREFILL_CHUNK = 128


class DecodeSession:
    """One stream's decode state over some engine: :meth:`feed` takes token ids at the
    current position and returns the logits row (numpy float32 ``[vocab]``) of the last one
    (``all_rows=True``: every row, ``[T, vocab]``); :meth:`close` frees the state. The decode
    loop (:func:`decode_tokens`) only talks to this.

    Implementations: :class:`staredge.runtimes.lm.StepperSession` over any runtime's
    stepper (ONNX Runtime, OpenVINO, LiteRT, CoreML, PyTorch), returned by a text-generation
    backend's ``open_session()``.
    """

    def feed(self, ids: Sequence[int], all_rows: bool = False) -> np.ndarray:  # pragma: no cover - interface
        """Feed ``ids`` (prefill chunks are the session's business); logits of the last (or every) token."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the decode state (idempotent)."""


def _id_error(what: str) -> ConfigError:
    return ConfigError(f"token ids must be a non-empty list or 1-D integer array of ids; {what}")


def _check_id_list(ids: list[Any], vocab_size: int) -> list[int]:
    """The slow path of :func:`check_token_ids` for a list: one pass over it."""
    import numbers

    if not ids:
        raise _id_error("got an empty list (nothing to feed)")
    if not all(type(t) is int for t in ids):  # bool is not int here: type(True) is bool
        out = []
        for i, t in enumerate(ids):
            if type(t) is int:
                out.append(t)
            elif isinstance(t, numbers.Integral) and not isinstance(t, bool):  # numpy integers too
                out.append(int(t))
            elif isinstance(t, np.ndarray) and t.ndim == 0 and t.dtype.kind in "iu":
                out.append(int(t))
            else:
                kind = ("a nested list or array" if isinstance(t, (list, tuple, np.ndarray))
                        else f"{type(t).__name__} {_show(t)}")
                raise _id_error(f"ids[{i}] is {kind}; each id must be an integer (not bool, float or str)")
        ids = out
    lo, hi = min(ids), max(ids)
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ConfigError(f"token id {_show(bad)} at ids[{ids.index(bad)}] is outside the vocabulary: ids must "
                          f"be in 0..{vocab_size - 1}")
    return ids


def _check_id_array(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """The array path of :func:`check_token_ids`: vectorised, no Python loop over the ids."""
    if ids.ndim != 1:
        hint = "; for a batch of one, pass ids[0]" if ids.ndim == 2 and ids.shape[0] == 1 else ""
        raise _id_error(f"got an array of shape {tuple(ids.shape)} (one stream takes a 1-D sequence{hint})")
    if ids.dtype.kind not in "iu":  # bool ("b"), float, complex, object, str are refused
        raise _id_error(f"got a {ids.dtype} array; convert whole-number ids with .astype(np.int64)")
    if ids.size == 0:
        raise _id_error("got an empty array (nothing to feed)")
    lo, hi = ids.min(), ids.max()
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ConfigError(f"token id {int(bad)} at ids[{int(np.flatnonzero(ids == bad)[0])}] is outside the "
                          f"vocabulary: ids must be in 0..{vocab_size - 1}")
    return ids.astype(np.int64, copy=False)


def check_token_ids(ids: Any, vocab_size: int) -> list[int] | np.ndarray:
    """``ids`` checked for feeding a decode stream with a vocabulary of ``vocab_size``: a
    non-empty list, tuple or range of integers (Python or numpy, never bool or float), or a
    1-D integer numpy array, every id in ``0..vocab_size - 1``. Returns a list of Python
    ints or an int64 array; anything else is a :class:`~staredge.errors.ConfigError` that
    names the problem (a string, an iterator, a dict, a nested list, a 2-D array, a float
    or bool dtype, an empty sequence, an id out of range).

    Every decode session runs it on every feed (:class:`staredge.runtimes.lm.StepperSession`),
    so the decode loop's own ``[token]`` takes a constant-time path, a list is checked in one
    pass, and an array with vectorised min/max."""
    if type(ids) is list:
        if len(ids) == 1:
            t = ids[0]
            if type(t) is int and 0 <= t < vocab_size:  # the decode loop's one token
                return ids
        return _check_id_list(ids, vocab_size)
    if isinstance(ids, np.ndarray):
        return _check_id_array(ids, vocab_size)
    if isinstance(ids, (list, tuple, range)):
        return _check_id_list(list(ids), vocab_size)
    if isinstance(ids, (str, bytes, bytearray, memoryview)):
        raise _id_error(f"got {type(ids).__name__} {_show(ids)}; encode text with the model's tokenizer first")
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        raise _id_error(f"got a single {type(ids).__name__} {_show(ids)}; pass a list: [{_show(ids)}]")
    if hasattr(ids, "__array__") and not isinstance(ids, (Mapping, set, frozenset)):  # e.g. a CPU torch tensor
        try:
            arr = np.asarray(ids)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise _id_error(f"got a {type(ids).__name__} that is not an array of ids ({exc})"[:300]) from None
        return _check_id_array(arr, vocab_size)
    raise _id_error(f"got {type(ids).__name__} {_show(ids)}" + (" (an iterator: pass list(ids))"
                                                                 if isinstance(ids, Iterator) else ""))


def greedy_pick(row: np.ndarray, history: Sequence[int]) -> int:
    """The argmax of a logits row (the first one on ties)."""
    return int(np.argmax(row))


def decode_tokens(session: DecodeSession, ids: Sequence[int], max_new_tokens: int,
                  pick: Callable[[np.ndarray, list[int]], int] = greedy_pick, *, max_seq_len: int,
                  stats: Any = None, record: list[np.ndarray] | None = None) -> Iterator[int]:
    """Prefill ``ids``, then yield up to ``max_new_tokens`` tokens, each chosen by
    ``pick(logits_row, history)`` (history: prompt and tokens so far) and fed back.

    The caller stops early by closing the generator (a stop id, a stop string); the last
    token yielded is never fed. Stops by itself after ``max_new_tokens`` (``finish_reason``
    "length") or when ``max_seq_len`` tokens were fed ("context"). ``stats`` (a
    :class:`staredge.generation.StreamStats`, or None) receives the timings and token ids;
    ``record`` (a list, or None) every logits row: all prompt rows, then one per decode step.
    """
    if max_new_tokens <= 0:
        if stats is not None:
            stats.finish_reason = "length"
        return
    history = list(ids)
    t0 = time.perf_counter()
    if record is not None:
        rows = session.feed(ids, all_rows=True)
        record.extend(rows)
        last = rows[-1]
    else:
        last = session.feed(ids)
    fed = len(ids)
    if stats is not None:
        stats.prefill_s = time.perf_counter() - t0
    t_decode = time.perf_counter()
    generated = 0
    try:
        while True:
            token = pick(last, history)
            generated += 1
            history.append(token)
            if stats is not None:
                now = time.perf_counter()
                if generated == 1:
                    stats.first_token_s = now - t0
                stats.token_t.append(now)
                stats.generated_ids.append(token)
                stats.generated_tokens = generated
            yield token
            if generated >= max_new_tokens:
                if stats is not None and stats.finish_reason is None:
                    stats.finish_reason = "length"
                return
            if fed >= max_seq_len:
                if stats is not None and stats.finish_reason is None:
                    stats.finish_reason = "context"
                return
            t_step = time.perf_counter()
            last = session.feed([token])
            if stats is not None:
                stats.step_s.append(time.perf_counter() - t_step)
            if record is not None:
                record.append(last)
            fed += 1
    finally:
        if stats is not None:
            stats.decode_s = time.perf_counter() - t_decode


# --------------------------------------------------------------------------------------
# Streams: stream() / generate() over any model or text backend
# --------------------------------------------------------------------------------------


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
                         prefill_chunk: Any = EAGER_PREFILL_CHUNK) -> None:
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
    if isinstance(stop, Mapping):
        raise ConfigError(f"stop must be a string, a token id or a list of them, got a {type(stop).__name__} "
                          f"{_show(stop)}; pass stop=[...] with the strings or ids to stop at")
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
        import threading

        self._gen = gen
        self.stats = stats
        self._busy = threading.Lock()

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        if not self._busy.acquire(blocking=False):
            from staredge.errors import StreamError

            raise StreamError("this stream is being iterated from another thread; a stream belongs to one thread "
                              "at a time (start one stream per thread: streams on one model run concurrently)")
        try:
            return next(self._gen)
        finally:
            self._busy.release()

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


def open_session(model: Any, prefill_chunk: int = EAGER_PREFILL_CHUNK) -> DecodeSession:
    """A fresh :class:`DecodeSession` for ``model``: a text backend's own ``open_session()``,
    or, for a PyTorch model with the step contract (``init_state``/``step``), a session of the
    PyTorch runtime (its text backend's :meth:`session_for`, found through the format table
    like every runtime: :data:`staredge.formats.RUNTIMES`), where the model's weights are
    and with torch's current threads."""
    opener = getattr(model, "open_session", None)
    if callable(opener):
        return opener()
    if callable(getattr(model, "init_state", None)) and callable(getattr(model, "step", None)):
        from staredge.formats import EAGER_RUNTIME, get_runtime

        return get_runtime(EAGER_RUNTIME).text_backend_class().session_for(model, prefill_chunk)
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
           add_bos: bool = True, prefill_chunk: int = EAGER_PREFILL_CHUNK,
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
    decoder = tokenizer.decoder()
    pending = ""  # decoded text held back because it might be the start of a stop string

    def pick(row: np.ndarray, history: list[int]) -> int:
        return sample_next_token(row, config, rng, history)

    session = open_session(model, prefill_chunk)  # the state exists from here until finally
    tokens = decode_tokens(session, ids, max_new_tokens, pick, max_seq_len=max_seq_len, stats=stats)
    try:
        stopped_by_string = False
        for token in tokens:
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
        tokens.close()
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
        tokens.close()
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


__all__ = ["BOS_ID", "ContextLengthError", "check_token_ids", "DEFAULT_PREFILL_CHUNK", "DecodeSession", "EAGER_PREFILL_CHUNK", "EOS_ID", "MAX_NEW_TOKENS",
           "MAX_PROMPT_BYTES", "MAX_SEED", "MAX_STOP_CHARS", "MAX_STOP_STRINGS", "StreamStats", "TRUNCATE_MODES",
           "TextStream", "VOCAB_SIZE", "decode_tokens", "generate", "greedy_pick", "open_session", "stream",
           "validate_stream_args"]
