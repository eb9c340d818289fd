"""Running language-model artifacts (the decode contract of ``docs/lm-artifacts.md``).

:class:`LMStepper` is the format-independent part: it reads the ``lm`` metadata embedded
in the artifact, tracks the position, splits a prompt into prefill chunks, and decodes
greedily. A subclass per runtime implements :meth:`LMStepper._run` (one graph call on
numpy arrays) and, for runtimes that keep the state themselves (OpenVINO), :meth:`reset`.
``load_lm_artifact(path)`` picks the subclass the format table names for the artifact's
format (:attr:`staredge.formats.RuntimeSpec.lm_stepper`). No torch here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, StarEdgeError
from staredge.metadata import ArtifactMetadata, detect_format, read_metadata

TEXT_GENERATION = "text-generation"


class LMContextError(StarEdgeError):
    """A step would go past the artifact's fixed maximum context."""


class LMStepper(ABC):
    """One decode stream over an LM artifact (state, position); make one per stream.

    ``step(ids)`` feeds tokens at the current position and returns their logits
    ``[T, vocab]``; ``prefill(ids)`` does the same in chunks of at most the artifact's
    ``prefill_chunk`` (the remainder one token at a time where the format has fixed
    chunks); ``greedy(prompt, n)`` prefills and decodes ``n`` tokens by argmax.
    """

    #: Whether one call may take any T <= prefill_chunk (else exactly 1 or prefill_chunk).
    flexible_tokens = True

    def __init__(self, path: str | Path | None, metadata: ArtifactMetadata | None = None) -> None:
        if path is None and metadata is None:
            raise ConfigError("an LM stepper needs an artifact path or its metadata")
        self.path = Path(path) if path is not None else None
        self.metadata = metadata or read_metadata(self.path)
        if self.metadata.task != TEXT_GENERATION or not self.metadata.lm:
            raise ConfigError(f"{self.path} is a {self.metadata.task} artifact, not a text-generation one")
        lm = self.metadata.lm
        self.max_context = int(lm["max_context"])
        self.prefill_chunk = int(lm["prefill_chunk"])
        self.vocab_size = int(lm["vocab_size"])
        self.state_spec: list[dict[str, Any]] = list(lm["state"])
        self.position = 0
        self.state: list[np.ndarray] = []

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

    # ----------------------------------------------------------------- shared
    def step(self, ids) -> np.ndarray:
        """Feed ``ids`` (ints) at the current position; logits [T, vocab] (float32)."""
        arr = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        t = arr.shape[1]
        if t == 0:
            raise ConfigError("step() got no tokens")
        if self.position + t > self.max_context:
            raise LMContextError(
                f"{self.position + t} tokens exceed the artifact's fixed context of {self.max_context} "
                "(max_context); re-export with a larger --max-context or start a new stream")
        if t > self.prefill_chunk and t > 1:
            raise ConfigError(f"one call takes at most prefill_chunk={self.prefill_chunk} tokens, got {t}; use prefill()")
        if not self.flexible_tokens and t not in (1, self.prefill_chunk):
            raise ConfigError(f"this artifact takes 1 or {self.prefill_chunk} tokens per call, got {t}; use prefill()")
        if int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size:
            raise ConfigError(f"token ids must be in 0..{self.vocab_size - 1}, got {int(arr.min())}..{int(arr.max())}")
        logits = self._run(arr, self.position)
        self.position += t
        return np.asarray(logits, dtype=np.float32).reshape(t, -1)

    def prefill(self, ids) -> np.ndarray:
        """Feed a prompt in chunks; logits for every prompt token [T, vocab]."""
        ids = [int(i) for i in ids]
        out, k = [], 0
        while k < len(ids):
            rest = len(ids) - k
            n = min(rest, self.prefill_chunk) if self.flexible_tokens else (self.prefill_chunk if rest >= self.prefill_chunk else 1)
            out.append(self.step(ids[k:k + n]))
            k += n
        return np.concatenate(out, axis=0)

    def greedy(self, prompt, new_tokens: int, record: list[np.ndarray] | None = None) -> list[int]:
        """Reset, prefill ``prompt`` and decode ``new_tokens`` tokens by argmax.

        ``record`` (a list) receives the logits of every prompt token and every decode step."""
        self.reset()
        logits = self.prefill(prompt)
        if record is not None:
            record.extend(logits)
        tokens = []
        nxt = int(np.argmax(logits[-1]))
        for k in range(new_tokens):
            tokens.append(nxt)
            if k == new_tokens - 1:
                break
            row = self.step([nxt])[0]
            if record is not None:
                record.append(row)
            nxt = int(np.argmax(row))
        return tokens


def stepper_class(fmt: str) -> type[LMStepper]:
    """The :class:`LMStepper` subclass for artifacts of format ``fmt``: the one its default
    runtime's :class:`~staredge.formats.RuntimeSpec` names (``lm_stepper``), imported now."""
    from staredge.formats import runtime_for_format

    spec = runtime_for_format(fmt)
    if spec.lm_stepper is None:
        raise ConfigError(f"no language-model runtime for {fmt} artifacts here ({spec.title} has no LM stepper)")
    return spec.lm_stepper_class()


def load_lm_artifact(path: str | Path, **kwargs: Any) -> LMStepper:
    """A fresh :class:`LMStepper` (reset, position 0) for the LM artifact at ``path``."""
    fmt = detect_format(path)
    stepper = stepper_class(fmt)(path, **kwargs)
    stepper.reset()
    return stepper


__all__ = ["LMStepper", "LMContextError", "load_lm_artifact", "stepper_class", "TEXT_GENERATION"]
