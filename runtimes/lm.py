"""Running language-model artifacts (the decode contract of ``docs/lm-artifacts.md``).

:class:`LMStepper` is the format-independent part of one decode stream: it reads the ``lm``
metadata embedded in the artifact (checked by :func:`check_lm_metadata` before anything is
allocated, and against the graph's own inputs and outputs by :meth:`LMStepper.check_graph`),
tracks the position, and splits a prompt into prefill chunks (the one prefill chunker of
StarEdge). A subclass per runtime (``runtimes/<runtime>_lm.py``) implements
:meth:`LMStepper._run` (one graph call on its engine) and, for runtimes that keep the state
themselves, :meth:`reset`. :class:`StepperSession` turns a stepper into the
:class:`~staredge.decoding.DecodeSession` the one decode loop
(:func:`staredge.decoding.decode_tokens`) drives.

``load_lm_artifact(path)`` returns the stepper the runtime's text-generation backend serves
(``Predictor(path).stream`` runs the same class over the same engine settings), so what
export validation checks is what ships. No torch here.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from staredge.decoding import DecodeSession, check_token_ids, decode_tokens, greedy_pick
from staredge.errors import ConfigError, MetadataError, StarEdgeError, StreamError  # noqa: F401 - re-exported
from staredge.formats import TEXT_GENERATION
from staredge.metadata import ArtifactMetadata, detect_format, read_metadata

#: Limits on what an LM artifact's metadata may ask for (checked before any allocation;
#: docs/security.md): the context, the vocabulary, and the bytes of one stream's state.
MAX_LM_CONTEXT = 1 << 20
MAX_LM_VOCAB = 1 << 22
MAX_LM_STATE_BYTES = 1 << 33
#: Keys the ``lm`` section must hold.
LM_REQUIRED_KEYS = ("max_context", "prefill_chunk", "vocab_size", "state")
_STATE_DTYPES = {"float32": 4, "float16": 2, "float16x2": 4}


class LMContextError(StarEdgeError):
    """A step would go past the artifact's fixed maximum context."""


def _where(path: Any) -> str:
    return str(path) if path is not None else "this artifact"


def check_lm_metadata(meta: ArtifactMetadata, path: Any = None) -> dict[str, Any]:
    """The ``lm`` section of ``meta`` after checking its types and ranges (before any
    allocation): a text-generation task, a non-empty ``lm`` with every key of
    :data:`LM_REQUIRED_KEYS`, positive integers within :data:`MAX_LM_CONTEXT` /
    :data:`MAX_LM_VOCAB`, ``prefill_chunk <= max_context``, and state entries with names,
    positive integer shapes, a known dtype, a string kind, no name/input/output listed twice
    and at most :data:`MAX_LM_STATE_BYTES` in all (the past_X/present_X pairing is checked
    with the graph: :func:`check_state_pairs`). Raises one :class:`MetadataError` naming the
    field, its value and what is expected."""
    where = _where(path)
    if meta.task != TEXT_GENERATION:
        raise MetadataError(f"{where}: metadata task is {meta.task!r}, not {TEXT_GENERATION!r}; "
                            "it is not a language model")
    lm = meta.lm
    if not isinstance(lm, dict) or not lm:
        raise MetadataError(f"{where}: metadata task is {TEXT_GENERATION!r} but its lm section is "
                            f"{'empty' if isinstance(lm, dict) or lm is None else type(lm).__name__}; "
                            "the metadata was edited or the export was incomplete: re-export it")
    for key in LM_REQUIRED_KEYS:
        if key not in lm:
            raise MetadataError(f"{where}: metadata lm.{key} is missing (an LM artifact records "
                                f"{', '.join(LM_REQUIRED_KEYS)}); re-export it")
    limits = {"max_context": MAX_LM_CONTEXT, "prefill_chunk": MAX_LM_CONTEXT, "vocab_size": MAX_LM_VOCAB}
    for key, limit in limits.items():
        value = lm[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise MetadataError(f"{where}: metadata lm.{key} is {value!r}; it must be an integer in 1..{limit:,}")
    if lm["prefill_chunk"] > lm["max_context"]:
        raise MetadataError(f"{where}: metadata lm.prefill_chunk is {lm['prefill_chunk']:,}, more than "
                            f"lm.max_context {lm['max_context']:,}")
    state = lm["state"]
    if not isinstance(state, list):
        raise MetadataError(f"{where}: metadata lm.state must be a list, got {type(state).__name__}")
    total = 0
    seen: dict[str, set[str]] = {"name": set(), "input": set(), "output": set()}
    for i, s in enumerate(state):
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str) for k in ("name", "input", "output")):
            raise MetadataError(f"{where}: metadata lm.state[{i}] needs string name, input and output, got {s!r}"[:300])
        shape = s.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                  for d in shape):
            raise MetadataError(f"{where}: metadata lm.state[{i}].shape ({s['name']}) is {shape!r}; "
                                "it must be a list of positive integers")
        dtype = s.get("dtype", "float32")
        if not isinstance(dtype, str) or dtype not in _STATE_DTYPES:
            raise MetadataError(f"{where}: metadata lm.state[{i}].dtype ({s['name']}) is {dtype!r}; "
                                f"expected one of {', '.join(_STATE_DTYPES)}")
        for key in ("name", "input", "output"):
            if s[key] in seen[key]:
                raise MetadataError(f"{where}: metadata lm.state[{i}].{key} {s[key]!r} appears twice in lm.state; "
                                    "each state is listed once"[:300])
            seen[key].add(s[key])
        kind = s.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise MetadataError(f"{where}: metadata lm.state[{i}].kind ({s['name']}) is {kind!r}; "
                                "it must be a string (kv, longconv, ...)"[:300])
        total += int(np.prod(shape, dtype=np.float64)) * _STATE_DTYPES[dtype]
        if total > MAX_LM_STATE_BYTES:
            raise MetadataError(f"{where}: metadata lm.state shapes add up to over {MAX_LM_STATE_BYTES:,} bytes "
                                f"(MAX_LM_STATE_BYTES) at lm.state[{i}] ({s['name']} {shape}); nothing was allocated")
    return lm


def check_state_pairs(state: list[dict[str, Any]], path: Any = None) -> None:
    """Each state entry of a checked ``lm`` section names its input ``past_X`` and its output
    ``present_X`` (the decode contract, docs/lm-artifacts.md): another output would feed the
    state another one's values. :meth:`LMStepper.check_graph` runs this after it has checked
    that the graph has the named inputs and outputs, so a name the graph lacks is reported as
    missing rather than as mis-paired. Raises one :class:`MetadataError` naming the entry."""
    where = _where(path)
    for i, s in enumerate(state):
        if not s["input"].startswith("past_"):
            raise MetadataError(f"{where}: metadata lm.state[{i}].input ({s['name']}) is {s['input']!r}; the decode "
                                "contract names state inputs past_X and their outputs present_X "
                                "(docs/lm-artifacts.md)"[:400])
        if s["output"] != "present_" + s["input"][len("past_"):]:
            raise MetadataError(f"{where}: metadata lm.state[{i}] ({s['name']}) pairs input {s['input']!r} with "
                                f"output {s['output']!r}; the decode contract pairs past_X with present_X "
                                "(docs/lm-artifacts.md), so this state would be fed another one's values"[:400])


class LMStepper(ABC):
    """One decode stream over an LM artifact (state, position); make one per stream.

    ``step(ids)`` feeds tokens at the current position and returns their logits
    ``[T, vocab]``; ``prefill(ids)`` does the same in chunks of at most the artifact's
    ``prefill_chunk`` (the remainder one token at a time where the format has fixed
    chunks); ``greedy(prompt, n)`` prefills and decodes ``n`` tokens by argmax through the
    one decode loop (:func:`staredge.decoding.decode_tokens`).
    """

    #: Whether one call may take any T <= prefill_chunk (else exactly 1 or prefill_chunk).
    flexible_tokens = True

    def __init__(self, path: str | Path | None, metadata: ArtifactMetadata | None = None) -> None:
        if path is None and metadata is None:
            raise ConfigError("an LM stepper needs an artifact path or its metadata")
        self.path = Path(path) if path is not None else None
        self.metadata = metadata or read_metadata(self.path)
        lm = check_lm_metadata(self.metadata, self.path)
        self.max_context = int(lm["max_context"])
        self.prefill_chunk = int(lm["prefill_chunk"])
        self.vocab_size = int(lm["vocab_size"])
        self.state_spec: list[dict[str, Any]] = list(lm["state"])
        self.position = 0
        self.state: list[Any] = []

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:  # pragma: no cover - abstract
        """One graph call: ``ids`` int64 [1, T] at ``position``; updates ``self.state``;
        returns logits float32 [1, T, V]."""
        raise NotImplementedError

    def reset(self) -> None:
        """Start a new stream: position 0, zero state."""
        self.position = 0
        self.state = [np.zeros(s["shape"], dtype=np.float32) for s in self.state_spec]

    def graph_tensors(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs, outputs) the loaded graph declares, as name → ``TensorInfo``; the state
        tensors are among the inputs under the names the metadata's ``state[i].input`` uses
        (stateful runtimes: their variables). Empty where the runtime cannot tell."""
        return {}, {}

    def graph_prefill_tokens(self) -> int | None:
        """T of the graph's fixed prefill call (TFLite ``prefill`` signature, CoreML ``prefill``
        function), or None when the token axis is dynamic or there is none."""
        return None

    def check_graph(self) -> None:
        """Compare the metadata with the loaded graph before any state is allocated: the
        inputs ``input_ids`` and ``position``, the ``logits`` vocabulary, every state tensor's
        name, shape and dtype, the context the state buffers are sized for, graph state inputs
        the metadata does not list, each state output (where the graph returns them), the
        past_X/present_X pairing (:func:`check_state_pairs`, after the names the graph lacks) and
        a fixed prefill chunk. Raises one :class:`MetadataError` naming the field, its value and what
        the graph says."""
        ins, outs = self.graph_tensors()
        if not ins:  # the runtime cannot tell: the names are still checked against the contract
            check_state_pairs(self.state_spec, self.path)
            return
        where = _where(self.path)
        for name in ("input_ids", "position"):
            if name not in ins:
                raise MetadataError(f"{where}: metadata says task {TEXT_GENERATION!r} but the graph has no input "
                                    f"{name!r} (it takes: {', '.join(sorted(ins))[:200]}); it is not a StarEdge "
                                    "language model")
        logits = outs.get("logits")
        if outs and logits is None:
            raise MetadataError(f"{where}: the graph has no output 'logits' (it gives: {', '.join(sorted(outs))[:200]})")
        if logits is not None and logits.shape and logits.shape[-1] is not None and logits.shape[-1] != self.vocab_size:
            raise MetadataError(f"{where}: metadata lm.vocab_size is {self.vocab_size} but the graph's logits have "
                                f"{logits.shape[-1]} entries per token")
        for i, s in enumerate(self.state_spec):
            g = ins.get(s["input"])
            if g is None:
                raise MetadataError(f"{where}: metadata lm.state[{i}].input is {s['input']!r} but the graph has no "
                                    f"such state input (it has: {', '.join(sorted(ins))[:200]})")
            if g.shape is not None and (len(g.shape) != len(s["shape"]) or any(
                    d is not None and d != w for d, w in zip(g.shape, s["shape"]))):
                shown = "[" + ", ".join("?" if d is None else str(d) for d in g.shape) + "]"
                raise MetadataError(f"{where}: metadata lm.state[{i}].shape ({s['name']}) is {s['shape']} but the "
                                    f"graph's {s['input']} is {shown}")
            want = self.state_dtype(s)
            if g.dtype is not None and want is not None and g.dtype != want:
                raise MetadataError(f"{where}: metadata lm.state[{i}].dtype ({s['name']}) is "
                                    f"{s.get('dtype', 'float32')!r} but the graph's {s['input']} is {g.dtype}")
            axis = {"kv": 2, "longconv": 1}.get(s.get("kind"))
            if axis is not None and axis < len(s["shape"]) and s["shape"][axis] != self.max_context:
                raise MetadataError(f"{where}: metadata lm.max_context is {self.max_context} but the graph's "
                                    f"{s['input']} ({s.get('kind')} state) holds {s['shape'][axis]} positions")
        listed = {s["input"] for s in self.state_spec}
        unlisted = sorted(set(ins) - {"input_ids", "position"} - listed)
        if unlisted:
            raise MetadataError(f"{where}: the graph takes state input(s) {', '.join(unlisted)[:200]} that metadata "
                                f"lm.state does not list ({len(self.state_spec)} entries); the metadata was edited: "
                                "re-export the artifact")
        if len(outs) > 1:  # the graph returns its states as outputs (ONNX, TFLite): each one is named
            for i, s in enumerate(self.state_spec):
                g_in, g_out = ins[s["input"]], outs.get(s["output"])
                if g_out is None:
                    raise MetadataError(f"{where}: metadata lm.state[{i}].output is {s['output']!r} but the graph has "
                                        f"no such output (it gives: {', '.join(sorted(outs))[:200]})")
                if g_in.shape is not None and g_out.shape is not None and (len(g_in.shape) != len(g_out.shape) or any(
                        a is not None and b is not None and a != b for a, b in zip(g_in.shape, g_out.shape))):
                    raise MetadataError(f"{where}: metadata lm.state[{i}] ({s['name']}) pairs input {s['input']} "
                                        f"{list(g_in.shape)} with output {s['output']} {list(g_out.shape)}; "
                                        "a state's output must have its input's shape")
        check_state_pairs(self.state_spec, self.path)  # after the graph said which names it lacks
        fixed = self.graph_prefill_tokens()
        if fixed is not None and fixed != self.prefill_chunk:
            raise MetadataError(f"{where}: metadata lm.prefill_chunk is {self.prefill_chunk} but the graph's prefill "
                                f"call takes {fixed} tokens")

    def state_dtype(self, spec: dict[str, Any]) -> str | None:
        """The numpy dtype name the graph should declare for a state entry."""
        return {"float16x2": "float16"}.get(spec.get("dtype", "float32"), spec.get("dtype", "float32"))

    # ----------------------------------------------------------------- shared
    def step(self, ids) -> np.ndarray:
        """Feed ``ids`` (ints) at the current position; logits [T, vocab] (float32). The ids
        are checked first (:func:`staredge.decoding.check_token_ids`: a ConfigError for
        anything that is not a non-empty sequence of ids in the vocabulary)."""
        return self._step(check_token_ids(ids, self.vocab_size))

    def _step(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """:meth:`step` on ids that :func:`~staredge.decoding.check_token_ids` accepted."""
        arr = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        t = arr.shape[1]
        if self.position + t > self.max_context:
            raise LMContextError(
                f"{self.position + t} tokens exceed the artifact's fixed context of {self.max_context} "
                "(max_context); re-export with a larger --max-context or start a new stream")
        if t > self.prefill_chunk and t > 1:
            raise ConfigError(f"one call takes at most prefill_chunk={self.prefill_chunk} tokens, got {t}; use prefill()")
        if not self.flexible_tokens and t not in (1, self.prefill_chunk):
            raise ConfigError(f"this artifact takes 1 or {self.prefill_chunk} tokens per call, got {t}; use prefill()")
        logits = self._run(arr, self.position)
        self.position += t
        return np.asarray(logits, dtype=np.float32).reshape(t, -1)

    def prefill(self, ids) -> np.ndarray:
        """Feed a prompt in chunks; logits for every prompt token [T, vocab]. The ids are
        checked once, and a prompt that would run past the context is refused before any
        chunk runs (:class:`LMContextError`)."""
        return self._prefill(check_token_ids(ids, self.vocab_size))

    def _prefill(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """:meth:`prefill` on checked ids."""
        if self.position + len(ids) > self.max_context:
            raise LMContextError(
                f"{self.position + len(ids)} tokens exceed the artifact's fixed context of {self.max_context} "
                "(max_context); re-export with a larger --max-context or start a new stream")
        out, k = [], 0
        while k < len(ids):
            rest = len(ids) - k
            n = min(rest, self.prefill_chunk) if self.flexible_tokens else (self.prefill_chunk if rest >= self.prefill_chunk else 1)
            out.append(self._step(ids[k:k + n]))
            k += n
        return np.concatenate(out, axis=0)

    def greedy(self, prompt, new_tokens: int, record: list[np.ndarray] | None = None) -> list[int]:
        """Reset, prefill ``prompt`` and decode ``new_tokens`` tokens by argmax, through the
        one decode loop. ``record`` (a list) receives the logits of every prompt token and
        every decode step."""
        self.reset()
        session = StepperSession(self, None, close_stepper=False)
        return list(decode_tokens(session, list(prompt), int(new_tokens), greedy_pick,
                                  max_seq_len=self.max_context, record=record))


class StepperSession(DecodeSession):
    """One decode stream over an :class:`LMStepper`: what ``open_session()`` of a text
    backend returns and the decode loop drives. Closing it frees the stream's state; using
    it after that, or from a second thread while a call is running, is a :class:`StreamError`."""

    def __init__(self, stepper: LMStepper, backend: Any = None, close_stepper: bool = True) -> None:
        self.stepper: LMStepper | None = stepper
        self.backend_name = getattr(backend, "name", None)
        self._close_stepper = close_stepper
        self._busy = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the state is gone)."""
        return self.stepper is None

    @property
    def position(self) -> int:
        """Tokens fed so far."""
        if self.stepper is None:
            raise StreamError("this decode session is closed; open a new one")
        return self.stepper.position

    def feed(self, ids: Sequence[int], all_rows: bool = False) -> np.ndarray:
        """Feed ``ids`` at the current position; the logits row of the last one (``all_rows``:
        every row). The ids are checked here, for every runtime, before any runtime sees
        them (:func:`staredge.decoding.check_token_ids`): anything but a non-empty list or
        1-D integer array of ids in the vocabulary is a ConfigError, and ids that would run
        past the context an :class:`LMContextError`, with the stream left as it was."""
        stepper = self.stepper
        if stepper is None:
            raise StreamError("this decode session is closed; open a new one")
        if not isinstance(all_rows, (bool, np.bool_)):
            raise ConfigError(f"all_rows must be True or False, got {type(all_rows).__name__} {all_rows!r}"[:200])
        ids = check_token_ids(ids, stepper.vocab_size)
        if not self._busy.acquire(blocking=False):
            raise StreamError("this decode session is being fed from another thread; a stream belongs to one "
                              "thread at a time (open one session per thread)")
        try:
            if len(ids) == 1 and not all_rows:
                return stepper._step(ids)[0]
            rows = stepper._prefill(ids)
            return rows if all_rows else rows[-1]
        finally:
            self._busy.release()

    def close(self) -> None:
        stepper, self.stepper = self.stepper, None
        if stepper is not None and self._close_stepper:
            release = getattr(stepper, "release", None)
            if callable(release):
                release()


def stepper_class(fmt: str) -> type[LMStepper]:
    """The :class:`LMStepper` subclass for artifacts of format ``fmt``: the one its default
    runtime's :class:`~staredge.formats.RuntimeSpec` names (``lm_stepper``), imported now."""
    from staredge.formats import runtime_for_format

    spec = runtime_for_format(fmt)
    if spec.lm_stepper is None:
        raise ConfigError(f"no language-model runtime for {fmt} artifacts here ({spec.title} has no LM stepper)")
    return spec.lm_stepper_class()


def load_lm_artifact(path: str | Path, device: str = "auto", threads: int | None = None, **options: Any) -> LMStepper:
    """A fresh stepper (reset, position 0) for the LM artifact at ``path``: exactly the one
    ``Predictor(path).stream`` serves, from the format's runtime's text-generation backend
    (same engine, same settings, same class). The backend stays alive with the stepper
    (``stepper.backend``)."""
    from staredge.formats import runtime_for_format

    fmt = detect_format(path)
    spec = runtime_for_format(fmt)
    if spec.text_backend is None:
        raise ConfigError(f"no language-model runtime for {fmt} artifacts here ({spec.title} has no text backend)")
    backend = spec.text_backend_class()(path, device=device, threads=threads, **options)
    stepper = backend.new_stepper()
    stepper.backend = backend
    return stepper


__all__ = ["LMStepper", "LMContextError", "StepperSession", "StreamError", "check_lm_metadata", "check_state_pairs",
           "load_lm_artifact", "stepper_class", "TEXT_GENERATION", "MAX_LM_CONTEXT", "MAX_LM_STATE_BYTES", "MAX_LM_VOCAB"]
