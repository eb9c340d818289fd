"""LiteRT (TFLite) LM stepper and text-generation backend: signatures ``decode`` (1 token)
and ``prefill`` (``prefill_chunk`` tokens); state arrays go in as ``past_*`` and come back
as ``present_*`` (names with underscores). One interpreter per loaded artifact, built by
:class:`~staredge.runtimes.litert.LiteRtEngine` (``ai_edge_litert``, else ``tflite_runtime``,
as for images); calls are serialised by the engine's lock, the state arrays are per stream.
Export validation and ``Predictor.stream`` run the same class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from staredge.runtimes.base import TensorInfo
from staredge.runtimes.litert import LiteRtEngine
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.text import TextBackend


class LiteRTLM(LMStepper):
    """One decode stream over a ``.tflite`` LM artifact on a (shared) :class:`LiteRtEngine`."""

    flexible_tokens = False

    def __init__(self, path: str | Path | None, threads: int | None = None, metadata=None, *,
                 engine: LiteRtEngine | None = None, device: str = "auto") -> None:
        super().__init__(path, metadata)
        self.engine = engine or LiteRtEngine(self.path, device, threads, allocate=False)
        self.runners = {k: self.engine.runner(k) for k in ("decode", "prefill") if k in self.engine.signatures}

    def graph_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        if "decode" not in self.runners:
            from staredge.errors import MetadataError

            raise MetadataError(f"{self.path}: metadata says task 'text-generation' but the TFLite model has no "
                                f"'decode' signature (it has: {', '.join(self.engine.signatures) or 'none'}); it is "
                                "not a StarEdge language model")
        ins, outs = self.engine.signature_tensors("decode")
        return {t.name: t for t in ins}, {t.name: t for t in outs}

    def graph_prefill_tokens(self) -> int | None:
        if "prefill" not in self.runners:
            return None
        ins, _ = self.engine.signature_tensors("prefill")
        ids = next((t for t in ins if t.name == "input_ids"), None)
        return ids.shape[-1] if ids is not None and ids.shape else None

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        runner = self.runners["decode" if ids.shape[1] == 1 else "prefill"]
        feed = {"input_ids": ids, "position": np.array([position], dtype=np.int64)}
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = self.engine.call(runner, feed)
        self.state = [np.array(out[s["output"]]) for s in self.state_spec]
        return out["logits"]

    def release(self) -> None:
        """Drop the state arrays (the stream is over)."""
        self.state = []


#: Before issue 19 the served stepper had its own name; validation and serving are one class now.
LiteRtTextLM = LiteRTLM


class LiteRtTextBackend(TextBackend):
    """LiteRT text-generation backend: ``prefill`` (a chunk of ``prefill_chunk`` tokens) and
    ``decode`` (one token) signature runners; a prompt's remainder is fed one token at a time."""

    name = "litert"

    def load_text(self) -> None:
        self._metadata = self.read_artifact_metadata(self.path)
        self.check_lm_metadata()
        self.engine = LiteRtEngine(self.path, self.requested_device, self.threads, allocate=False)
        self._proto = LiteRTLM(self.path, metadata=self._metadata, engine=self.engine)
        self.check_lm_graph(self._proto)

    def describe_extra(self) -> dict[str, Any]:
        return {"signatures": sorted(self._proto.runners) if self._proto else [], "state_on": "numpy arrays per stream"}


__all__ = ["LiteRTLM", "LiteRtTextLM", "LiteRtTextBackend"]
