"""ONNX Runtime stepper for LM artifacts: state tensors go in as ``past_X`` and come back
as ``present_X`` (numpy arrays, ping-ponged between calls); and the text-generation backend
(:class:`OnnxRuntimeTextBackend`, state in IO-bound ``OrtValue`` pairs; see
:mod:`staredge.runtimes.text`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import require
from staredge.metadata import ArtifactMetadata
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.text import TextBackend, _threads


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


# ------------------------------------------------------------------ text generation


def lm_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for an LM artifact: CUDA then CPU when a GPU is asked for (or
    ``auto`` finds the CUDA provider), else CPU. TensorRT is left out (the token axis is
    dynamic and every prompt length would build an engine). Raises :class:`DeviceError`
    when ``cuda`` is asked for and the provider is missing."""
    from staredge.runtimes.onnxruntime import select_providers

    chain = [name for name, _ in select_providers(device, available)]
    return [p for p in chain if p != "TensorrtExecutionProvider"]


class OnnxRuntimeTextLM(LMStepper):
    """ONNX Runtime stepper with the state in OrtValues bound by IO binding (see the module
    doc). ``device`` is "cpu" or "cuda" (the session's first provider)."""

    flexible_tokens = True

    def __init__(self, path: str | Path, session: Any, device: str = "cpu", metadata: ArtifactMetadata | None = None):
        super().__init__(path, metadata)
        self.ort = require("onnxruntime", "onnx", "running ONNX LM artifacts")
        self.session = session
        self.device = device
        self._inputs = [s["input"] for s in self.state_spec]
        self._outputs = [s["output"] for s in self.state_spec]
        self._binding = None
        self._buffers: list[list[Any]] = []  # two lists of OrtValues: [past, present]
        self._host: list[list[np.ndarray]] = []  # CPU: the numpy arrays behind the OrtValues
        self._logits1 = None

    def _alloc(self) -> None:
        ort, v = self.ort, self.vocab_size
        self._binding = self.session.io_binding()
        if self.device == "cuda":
            self._host = []
            self._buffers = [[ort.OrtValue.ortvalue_from_numpy(np.zeros(s["shape"], np.float32), "cuda", 0)
                              for s in self.state_spec] for _ in range(2)]
        else:
            self._host = [[np.zeros(s["shape"], np.float32) for s in self.state_spec] for _ in range(2)]
            self._buffers = [[ort.OrtValue.ortvalue_from_numpy(a) for a in pair] for pair in self._host]
        self._logits_host = np.zeros((1, 1, v), np.float32)
        self._logits1 = ort.OrtValue.ortvalue_from_numpy(self._logits_host)

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
        self.session.run_with_iobinding(b)
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


class OnnxRuntimeTextBackend(TextBackend):
    """ONNX Runtime text-generation backend (CPU, or CUDA with device-resident state)."""

    name = "onnxruntime"
    OPTIONS = ("graph_optimization",)

    def load_text(self) -> None:
        ort = require("onnxruntime", "onnx", "running ONNX LM artifacts")
        self._metadata = self.read_artifact_metadata(self.path)
        providers = lm_providers(self.requested_device, ort.get_available_providers())
        so = ort.SessionOptions()
        so.intra_op_num_threads = _threads(self.threads)
        so.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - a corrupt graph
            from staredge.errors import ArtifactError

            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.providers = session.get_providers()
        self.device = "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self._proto = OnnxRuntimeTextLM(self.path, session, self.device, metadata=self._metadata)

    def describe_extra(self) -> dict[str, Any]:
        return {"providers": list(self.providers), "io_binding": True,
                "state_on": "device OrtValues" if self.device == "cuda" else "CPU OrtValues"}


__all__ = ["OnnxRuntimeLM", "OnnxRuntimeTextLM", "OnnxRuntimeTextBackend", "lm_providers"]
