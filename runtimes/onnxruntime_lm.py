"""ONNX Runtime stepper for LM artifacts: state tensors go in as ``past_X`` and come back
as ``present_X`` (numpy arrays, ping-ponged between calls)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from staredge.errors import require
from staredge.runtimes.lm import LMStepper


class OnnxRuntimeLM(LMStepper):
    """Decode stream over an ONNX LM artifact on the CPU execution provider."""

    flexible_tokens = True

    def __init__(self, path: str | Path, threads: int | None = 1, metadata=None) -> None:
        super().__init__(path, metadata)
        ort = require("onnxruntime", "onnx", "running ONNX LM artifacts")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or 0)
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self._inputs = [s["input"] for s in self.state_spec]
        self._outputs = ["logits"] + [s["output"] for s in self.state_spec]

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        feed = {"input_ids": ids, "position": np.array([position], dtype=np.int64)}
        feed.update(zip(self._inputs, self.state))
        out = self.session.run(self._outputs, feed)
        self.state = out[1:]
        return out[0]
