"""OpenVINO LM stepper and text-generation backend: the stateful IR keeps the state in the
infer request (``reset_state()`` starts a stream); inputs are ``input_ids`` and ``position``
only. The IR is compiled once by :class:`~staredge.runtimes.openvino.OpenVinoEngine` (the
same device, LATENCY hint, f32 precision hint and threads as an image model); each stream
(:class:`OpenVINOLM`) has its own infer request. Export validation and
``Predictor.stream`` run the same class."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from staredge.runtimes.base import TensorInfo
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.openvino import OpenVinoEngine
from staredge.runtimes.text import TextBackend


class OpenVINOLM(LMStepper):
    """One decode stream over a stateful OpenVINO IR: its own infer request on a shared
    :class:`OpenVinoEngine` (built here when none is given)."""

    flexible_tokens = True

    def __init__(self, path: str | Path | None, threads: int | None = None, precision_hint: str = "fp32",
                 metadata=None, *, engine: OpenVinoEngine | None = None, device: str = "auto") -> None:
        super().__init__(path, metadata)
        self.engine = engine or OpenVinoEngine(self.path, device, threads, precision=precision_hint)
        self.compiled = self.engine.compiled
        self.request = self.engine.new_request()
        self._logits = self.compiled.output("logits")

    def graph_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        ins = {t.name: t for t in self.engine.inputs()}
        ins.update(self.engine.variable_infos())
        return ins, {t.name: t for t in self.engine.outputs()}

    def reset(self) -> None:
        """New stream: every variable back to zeros (static shapes, so reset gives zeros)."""
        self.position = 0
        self.request.reset_state()
        self.state = []

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        out = self.engine.infer(self.request, {"input_ids": ids, "position": np.array([position], dtype=np.int64)})
        return np.asarray(out[self._logits])

    def variables(self) -> dict[str, np.ndarray]:
        """Current state tensors by variable name (copies)."""
        return {s.name: np.array(s.state.data) for s in self.request.query_state()}

    def fork(self) -> "OpenVINOLM":
        """A new stream over the same compiled model (its own infer request, reset)."""
        other = copy.copy(self)
        other.request = self.engine.new_request()
        other.reset()
        return other

    def release(self) -> None:
        """Drop the infer request (the stream is over)."""
        self.request = None


#: Before issue 19 the served stepper had its own name; validation and serving are one class now.
OpenVinoTextLM = OpenVINOLM


class OpenVinoTextBackend(TextBackend):
    """OpenVINO text-generation backend: the stateful IR compiled once, one infer request
    per stream, ``reset_state()`` at the start of each."""

    name = "openvino"
    OPTIONS = ("precision",)

    def load_text(self) -> None:
        from staredge.runtimes.openvino import find_ir_xml

        xml = find_ir_xml(self.path)
        self._metadata = self.read_artifact_metadata(xml)
        self.check_lm_metadata()
        self.engine = OpenVinoEngine(xml, self.requested_device, self.threads,
                                     precision=self.options.get("precision") or "fp32")
        self.device = self.engine.device if self.engine.ov_device == "CPU" else self.engine.ov_device.lower()
        self.ov_device = self.engine.ov_device
        self._proto = OpenVINOLM(xml, metadata=self._metadata, engine=self.engine)
        self.check_lm_graph(self._proto)

    def new_stepper(self) -> LMStepper:
        return self._proto.fork()

    def describe_extra(self) -> dict[str, Any]:
        return {"ov_device": self.ov_device, "stateful": True, "state_on": "infer request (one per stream)"}


__all__ = ["OpenVINOLM", "OpenVinoTextLM", "OpenVinoTextBackend"]
