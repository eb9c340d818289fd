"""OpenVINO stepper for stateful LM artifacts: the state lives in the infer request
(``reset_state()`` starts a stream); inputs are ``input_ids`` and ``position`` only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from staredge.errors import require
from staredge.runtimes.lm import LMStepper


class OpenVINOLM(LMStepper):
    """Decode stream over a stateful OpenVINO IR, compiled on CPU with an f32 precision hint
    (OpenVINO's CPU default here is bf16, which moves logits by ~1e-2). One infer request
    per stepper: make one stepper per stream."""

    flexible_tokens = True

    def __init__(self, path: str | Path, threads: int | None = 1, precision_hint: str = "f32", metadata=None) -> None:
        super().__init__(path, metadata)
        ov = require("openvino", "openvino", "running OpenVINO LM artifacts")
        config = {"INFERENCE_PRECISION_HINT": precision_hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def reset(self) -> None:
        """New stream: every variable back to zeros (static shapes, so reset gives zeros)."""
        self.position = 0
        self.request.reset_state()
        self.state = []

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        out = self.request.infer({"input_ids": ids, "position": np.array([position], dtype=np.int64)})
        return np.asarray(out[self.compiled.output("logits")])

    def variables(self) -> dict[str, np.ndarray]:
        """Current state tensors by variable name (copies)."""
        return {s.name: np.array(s.state.data) for s in self.request.query_state()}
