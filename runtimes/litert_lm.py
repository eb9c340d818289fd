"""LiteRT (TFLite) stepper for LM artifacts: signatures ``decode`` (1 token) and
``prefill`` (``prefill_chunk`` tokens); state arrays go in as ``past_*`` and come back as
``present_*`` (names with underscores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from staredge.errors import require
from staredge.runtimes.lm import LMStepper


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
