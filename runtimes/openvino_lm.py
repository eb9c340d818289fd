"""OpenVINO stepper for stateful LM artifacts: the state lives in the infer request
(``reset_state()`` starts a stream); inputs are ``input_ids`` and ``position`` only; and the text-generation backend
(:class:`OpenVinoTextBackend`: one compiled model, one infer request per stream)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, require
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.text import TextBackend


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


# ------------------------------------------------------------------ text generation


class OpenVinoTextLM(OpenVINOLM):
    """OpenVINO stepper over a compiled model shared by the streams; one infer request each."""

    def __init__(self, path, compiled, metadata=None):  # noqa: D107 - shares ``compiled``
        LMStepper.__init__(self, path, metadata)
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def fork(self):
        """A new stream over the same compiled model (its own infer request, reset)."""
        other = copy.copy(self)
        other.request = self.compiled.create_infer_request()
        other.reset()
        return other

    def release(self) -> None:
        """Drop the infer request (the stream is over)."""
        self.request = None


class OpenVinoTextBackend(TextBackend):
    """OpenVINO text-generation backend: the stateful IR compiled once (f32 hint), one infer
    request per stream, ``reset_state()`` at the start of each."""

    name = "openvino"
    OPTIONS = ("precision",)

    def load_text(self) -> None:
        ov = require("openvino", "openvino", "running OpenVINO LM artifacts")
        from staredge.runtimes.openvino import find_ir_xml, select_device

        xml = find_ir_xml(self.path)
        self._metadata = self.read_artifact_metadata(xml)
        core = ov.Core()
        dev = select_device(self.requested_device, core.available_devices)
        precision = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}.get(
            str(self.options.get("precision") or "f32").lower())
        if precision is None:
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {self.options.get('precision')!r}")
        config = {"INFERENCE_PRECISION_HINT": precision}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.device = "cpu" if dev == "CPU" else dev.lower()
        self.ov_device = dev
        compiled = core.compile_model(str(xml), dev, config)
        self._proto = OpenVinoTextLM(xml, compiled, metadata=self._metadata)

    def new_stepper(self) -> LMStepper:
        return self._proto.fork()

    def describe_extra(self) -> dict[str, Any]:
        return {"ov_device": self.ov_device, "stateful": True, "state_on": "infer request (one per stream)"}


__all__ = ["OpenVINOLM", "OpenVinoTextLM", "OpenVinoTextBackend"]
