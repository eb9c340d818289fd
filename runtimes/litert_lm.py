"""LiteRT (TFLite) stepper for LM artifacts: signatures ``decode`` (1 token) and
``prefill`` (``prefill_chunk`` tokens); state arrays go in as ``past_*`` and come back as
``present_*`` (names with underscores); and the text-generation backend
(:class:`LiteRtTextBackend`: one interpreter, calls under a lock, state arrays per stream)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import DeviceError, require
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.text import TextBackend, _threads


class LiteRTLM(LMStepper):
    """Decode stream over a ``.tflite`` LM artifact with the LiteRT interpreter (XNNPACK)."""

    flexible_tokens = False

    def __init__(self, path: str | Path, threads: int | None = 1, metadata=None) -> None:
        super().__init__(path, metadata)
        interp = require("ai_edge_litert.interpreter", "tflite", "running TFLite LM artifacts")
        self.interpreter = interp.Interpreter(model_path=str(self.path), num_threads=int(threads or 1))
        names = self.interpreter.get_signature_list()
        self.runners = {k: self.interpreter.get_signature_runner(k) for k in ("decode", "prefill") if k in names}

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        runner = self.runners["decode" if ids.shape[1] == 1 else "prefill"]
        feed = {"input_ids": ids, "position": np.array([position], dtype=np.int64)}
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = runner(**feed)
        self.state = [np.array(out[s["output"]]) for s in self.state_spec]
        return out["logits"]


# ------------------------------------------------------------------ text generation


class LiteRtTextLM(LiteRTLM):
    """LiteRT stepper sharing one interpreter (calls under a lock); its own state arrays."""

    def __init__(self, path, threads, lock, metadata=None):  # noqa: D107
        super().__init__(path, threads=threads, metadata=metadata)
        self.lock = lock

    def _run(self, ids, position):
        with self.lock:
            return super()._run(ids, position)

    def release(self) -> None:
        """Drop the state arrays (the stream is over)."""
        self.state = []


class LiteRtTextBackend(TextBackend):
    """LiteRT text-generation backend: ``prefill`` (a chunk of ``prefill_chunk`` tokens) and
    ``decode`` (one token) signature runners; a prompt's remainder is fed one token at a time."""

    name = "litert"

    def load_text(self) -> None:
        self._metadata = self.read_artifact_metadata(self.path)
        if self.requested_device in ("cuda", "gpu"):
            raise DeviceError("the LiteRT backend runs on the CPU here (XNNPACK); use device='cpu' or 'auto'")
        self._proto = LiteRtTextLM(self.path, _threads(self.threads), threading.Lock(),
                                                   metadata=self._metadata)

    def describe_extra(self) -> dict[str, Any]:
        return {"signatures": sorted(self._proto.runners) if self._proto else [], "state_on": "numpy arrays per stream"}


__all__ = ["LiteRTLM", "LiteRtTextLM", "LiteRtTextBackend"]
