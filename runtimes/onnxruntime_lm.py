"""ONNX Runtime LM stepper and text-generation backend.

:class:`OnnxRuntimeLM` is the one ONNX decode stream: the state lives in ``OrtValue``
buffers bound with IO binding; each step writes ``present_*`` into the second buffer of a
pair, which becomes the next step's ``past_*`` (no state tensor is copied by Python or
re-allocated per step). On CUDA the buffers are device ``OrtValue`` s and only ids, the
position and the logits cross. Export validation (``load_lm_artifact``) and
``Predictor.stream`` both get it from :class:`OnnxRuntimeTextBackend`, over a session built
by :class:`~staredge.runtimes.onnxruntime.OnnxRuntimeEngine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from staredge.metadata import ArtifactMetadata
from staredge.runtimes.base import TensorInfo
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.onnxruntime import TENSORRT, OnnxRuntimeEngine, select_providers
from staredge.runtimes.text import TextBackend


def lm_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for an LM artifact: CUDA then CPU when a GPU is asked for (or
    ``auto`` finds the CUDA provider), else CPU. TensorRT is left out (the token axis is
    dynamic and every prompt length would build an engine). Raises :class:`DeviceError`
    when ``cuda`` is asked for and the provider is missing."""
    return [name for name, _ in select_providers(device, available) if name != TENSORRT]


class OnnxRuntimeLM(LMStepper):
    """One decode stream over an ONNX LM artifact, state in IO-bound OrtValue pairs (see the
    module doc). ``engine`` is shared by the streams of one backend; without it one is built
    (``device``, ``threads`` as :class:`OnnxRuntimeEngine` takes them, TensorRT left out)."""

    flexible_tokens = True

    def __init__(self, path: str | Path | None, threads: int | None = None, metadata: ArtifactMetadata | None = None,
                 *, engine: OnnxRuntimeEngine | None = None, device: str = "auto") -> None:
        super().__init__(path, metadata)
        self.engine = engine or OnnxRuntimeEngine(self.path, device, threads, tensorrt=False)
        self.device = self.engine.device
        self._inputs = [s["input"] for s in self.state_spec]
        self._outputs = [s["output"] for s in self.state_spec]
        self._binding = None
        self._buffers: list[list[Any]] = []  # two lists of OrtValues: [past, present]
        self._host: list[list[np.ndarray]] = []  # CPU: the numpy arrays behind the OrtValues
        self._logits1 = None

    @property
    def session(self) -> Any:
        """The engine's ``InferenceSession``."""
        return self.engine.session

    def graph_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        return {t.name: t for t in self.engine.inputs()}, {t.name: t for t in self.engine.outputs()}

    def _alloc(self) -> None:
        engine, v = self.engine, self.vocab_size
        self._binding = engine.io_binding()
        if self.device == "cuda":
            self._host = []
            self._buffers = [[engine.ortvalue(np.zeros(s["shape"], np.float32), "cuda") for s in self.state_spec]
                             for _ in range(2)]
        else:
            self._host = [[np.zeros(s["shape"], np.float32) for s in self.state_spec] for _ in range(2)]
            self._buffers = [[engine.ortvalue(a) for a in pair] for pair in self._host]
        self._logits_host = np.zeros((1, 1, v), np.float32)
        self._logits1 = engine.ortvalue(self._logits_host)

    def reset(self) -> None:
        """New stream: position 0, both buffer sets zero (allocated on first use)."""
        self.position = 0
        self.state = []
        if self._binding is None or self.device == "cuda":
            self._alloc()  # device buffers start as fresh zero copies
        else:
            for pair in self._host:
                for a in pair:
                    a.fill(0.0)

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        b = self._binding
        past, present = self._buffers
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("position", np.array([position], dtype=np.int64))
        for name, value in zip(self._inputs, past):
            b.bind_ortvalue_input(name, value)
        single = ids.shape[1] == 1
        # logits is bound first, so it is output 0 (a re-bound name keeps its place)
        if single:
            b.bind_ortvalue_output("logits", self._logits1)
        else:
            b.bind_output("logits", "cpu")
        for name, value in zip(self._outputs, present):
            b.bind_ortvalue_output(name, value)
        self.engine.run_with_iobinding(b)
        self._buffers = [present, past]  # this step's present is the next step's past
        if single:
            return self._logits_host.copy()
        return b.get_outputs()[0].numpy()

    def state_arrays(self) -> list[np.ndarray]:
        """The current state tensors (copies; for tests and inspection)."""
        return [v.numpy() for v in self._buffers[0]]

    def release(self) -> None:
        """Drop the buffers and the binding (the stream is over)."""
        self._binding, self._buffers, self._host, self._logits1 = None, [], [], None


#: Before issue 19 the served stepper had its own name; validation and serving are one class now.
OnnxRuntimeTextLM = OnnxRuntimeLM


class OnnxRuntimeTextBackend(TextBackend):
    """ONNX Runtime text-generation backend (CPU, or CUDA with device-resident state)."""

    name = "onnxruntime"
    OPTIONS = ("graph_optimization",)

    def load_text(self) -> None:
        self._metadata = self.read_artifact_metadata(self.path)
        self.check_lm_metadata()
        self.engine = OnnxRuntimeEngine(self.path, self.requested_device, self.threads, tensorrt=False,
                                        graph_optimization=self.options.get("graph_optimization", "all"))
        self.providers = self.engine.session.get_providers()
        self.device = self.engine.device
        self._proto = OnnxRuntimeLM(self.path, metadata=self._metadata, engine=self.engine)
        self.check_lm_graph(self._proto)

    def describe_extra(self) -> dict[str, Any]:
        return {"providers": list(self.providers), "io_binding": True,
                "state_on": "device OrtValues" if self.device == "cuda" else "CPU OrtValues"}


__all__ = ["OnnxRuntimeLM", "OnnxRuntimeTextLM", "OnnxRuntimeTextBackend", "lm_providers"]
