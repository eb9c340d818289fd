"""Text-generation backends: one per runtime, each a factory of independent decode streams.

``load_backend`` returns one of these for an artifact whose metadata says
``task == "text-generation"`` (the format table names the class in
:attr:`staredge.formats.RuntimeSpec.text_backend`). A text backend loads the artifact once
(the session, compiled model or interpreter is shared) and hands out
:class:`~staredge.generation.DecodeSession` objects with :meth:`TextBackend.open_session`,
each with its own decode state, so several streams can run at once (from several threads
too). :func:`staredge.generation.stream` drives them; ``Predictor.stream`` /
``Predictor.generate`` are the user API.

The per-step work is the runtime-side steppers of :mod:`staredge.runtimes.lm` (the decode
contract of ``docs/lm-artifacts.md``); what is added here is what a server needs:

* ONNX Runtime: the state lives in ``OrtValue`` buffers bound with IO binding; each step
  writes ``present_*`` into the second buffer of a pair, which becomes the next step's
  ``past_*`` (no state tensor is copied by Python or re-allocated per step). On CUDA the
  buffers are device ``OrtValue`` s and only ids, the position and the logits row cross.
* OpenVINO: the stateful IR keeps the state in the infer request; one request per stream,
  ``reset_state()`` to start one.
* LiteRT: ``prefill`` / ``decode`` signature runners over one interpreter (calls are
  serialised with a lock: the interpreter is not re-entrant); the state arrays are per stream.
* CoreML: Apple's runtime with an ``MLState`` per stream on macOS; elsewhere the numpy MIL
  reference executor (validation, not speed; a notice says so).
* PyTorch: a STAR LM (a module, or a ``save_lm`` pair) stepped in eager mode.

No torch here, except in the PyTorch backend.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from staredge.errors import ConfigError, DeviceError, require
from staredge.generation import DecodeSession
from staredge.metadata import ArtifactMetadata
from staredge.runtimes.base import Backend, check_artifact_file
from staredge.runtimes.lm import LMStepper

TEXT_GENERATION = "text-generation"


class TextBackend(Backend):
    """A loaded text-generation artifact: :meth:`open_session` gives a new decode stream.

    ``max_seq_len`` is the artifact's fixed context; ``state_spec`` lists its state tensors;
    ``open_streams`` counts sessions not closed yet (a closed or garbage-collected stream
    frees its state). ``forward`` (the image path) is refused with a pointer to ``stream``.
    """

    thread_safe: ClassVar[bool] = True

    def load(self) -> None:
        if self.path is not None:
            check_artifact_file(self.path, self.spec().title)
        self._sessions: "weakref.WeakSet[StepperSession]" = weakref.WeakSet()
        self._proto: LMStepper | None = None
        self.load_text()

    # -- what each runtime implements -------------------------------------------------
    def load_text(self) -> None:
        """Load the artifact; set ``self._metadata``, ``self.device`` and ``self._proto``
        (a stepper whose loaded graph the streams share)."""
        raise NotImplementedError

    def new_stepper(self) -> LMStepper:
        """A stepper for one new stream: the loaded graph shared, its own state (reset)."""
        stepper = copy.copy(self._proto)
        stepper.reset()
        return stepper

    # -- shared -------------------------------------------------------------------------
    @property
    def lm(self) -> dict[str, Any]:
        """The ``lm`` dict of the metadata (the decode contract)."""
        return self.metadata.lm

    @property
    def max_seq_len(self) -> int:
        """The artifact's fixed context in tokens (BOS included)."""
        return int(self.lm["max_context"])

    @property
    def prefill_chunk(self) -> int:
        """Prompt tokens per prefill call of the graph."""
        return int(self.lm["prefill_chunk"])

    @property
    def state_spec(self) -> list[dict[str, Any]]:
        """One entry per state tensor: name, shape, dtype, kind, LIV index."""
        return list(self.lm.get("state", []))

    @property
    def state_bytes(self) -> int:
        """Bytes of decode state one stream holds."""
        return int(self.lm.get("state_bytes") or sum(
            int(np.prod(s["shape"])) * np.dtype(s.get("dtype", "float32")).itemsize for s in self.state_spec))

    @property
    def open_streams(self) -> int:
        """Sessions opened and not closed yet."""
        return sum(1 for s in list(self._sessions) if not s.closed)

    def open_session(self) -> "StepperSession":
        """A new decode stream (position 0, zero state)."""
        session = StepperSession(self.new_stepper(), self)
        self._sessions.add(session)
        return session

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise ConfigError(f"{self.path} is a text-generation artifact; use Predictor.stream()/generate() "
                          "(or staredge.generation.stream), not forward()/classify()")

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Refused: text artifacts are run with :meth:`open_session` (``Predictor.stream``)."""
        return self._run(x)

    def describe(self) -> dict[str, Any]:
        """Runtime facts plus the decode contract: context, prefill chunk, state tensors and bytes."""
        d = {
            "backend": self.name,
            "device": self.device,
            "threads": self.threads,
            "thread_safe": self.thread_safe,
            "task": TEXT_GENERATION,
            "max_context": self.max_seq_len,
            "prefill_chunk": self.prefill_chunk,
            "vocab_size": int(self.lm.get("vocab_size", 0)),
            "state_bytes": self.state_bytes,
            "state": [{k: s[k] for k in ("name", "shape", "dtype", "kind") if k in s} for s in self.state_spec],
            "open_streams": self.open_streams,
        }
        d.update(self.describe_extra())
        return d

    def describe_extra(self) -> dict[str, Any]:
        """Runtime-specific facts for :meth:`describe` (e.g. IO binding)."""
        return {}

    def close(self) -> None:
        for s in list(self._sessions):
            s.close()
        self._proto = None


class StepperSession(DecodeSession):
    """One decode stream over an :class:`LMStepper` (see :class:`TextBackend`)."""

    def __init__(self, stepper: LMStepper, backend: TextBackend) -> None:
        self.stepper: LMStepper | None = stepper
        self.backend_name = backend.name

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the state is gone)."""
        return self.stepper is None

    @property
    def position(self) -> int:
        """Tokens fed so far."""
        if self.stepper is None:
            raise ConfigError("this decode session is closed")
        return self.stepper.position

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        if self.stepper is None:
            raise ConfigError("this decode session is closed; open a new one")
        ids = [int(i) for i in ids]
        if len(ids) == 1:
            return self.stepper.step(ids)[0]
        return self.stepper.prefill(ids)[-1]

    def close(self) -> None:
        stepper, self.stepper = self.stepper, None
        if stepper is not None:
            release = getattr(stepper, "release", None)
            if callable(release):
                release()


def _threads(threads: int | None) -> int:
    return int(threads) if threads else 1


# ------------------------------------------------------------------------------ ONNX Runtime


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


# ------------------------------------------------------------------------------ OpenVINO


def _openvino_text_stepper_class():
    from staredge.formats import get_runtime

    class OpenVinoTextLM(get_runtime("openvino").lm_stepper_class()):
        """OpenVINO stepper over a compiled model shared by the streams; one infer request each."""

        def __init__(self, path, compiled, metadata=None):  # noqa: D107 - shares ``compiled``
            LMStepper.__init__(self, path, metadata)
            self.compiled = compiled
            self.request = compiled.create_infer_request()

        def fork(self):
            other = copy.copy(self)
            other.request = self.compiled.create_infer_request()
            other.reset()
            return other

        def release(self) -> None:
            self.request = None

    return OpenVinoTextLM


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
        self._proto = _openvino_text_stepper_class()(xml, compiled, metadata=self._metadata)

    def new_stepper(self) -> LMStepper:
        return self._proto.fork()

    def describe_extra(self) -> dict[str, Any]:
        return {"ov_device": self.ov_device, "stateful": True, "state_on": "infer request (one per stream)"}


# ------------------------------------------------------------------------------ LiteRT


def _litert_text_stepper_class():
    from staredge.formats import get_runtime

    class LiteRtTextLM(get_runtime("litert").lm_stepper_class()):
        """LiteRT stepper sharing one interpreter (calls under a lock); its own state arrays."""

        def __init__(self, path, threads, lock, metadata=None):  # noqa: D107
            super().__init__(path, threads=threads, metadata=metadata)
            self.lock = lock

        def _run(self, ids, position):
            with self.lock:
                return super()._run(ids, position)

        def release(self) -> None:
            self.state = []

    return LiteRtTextLM


class LiteRtTextBackend(TextBackend):
    """LiteRT text-generation backend: ``prefill`` (a chunk of ``prefill_chunk`` tokens) and
    ``decode`` (one token) signature runners; a prompt's remainder is fed one token at a time."""

    name = "litert"

    def load_text(self) -> None:
        self._metadata = self.read_artifact_metadata(self.path)
        if self.requested_device in ("cuda", "gpu"):
            raise DeviceError("the LiteRT backend runs on the CPU here (XNNPACK); use device='cpu' or 'auto'")
        self._proto = _litert_text_stepper_class()(self.path, _threads(self.threads), threading.Lock(),
                                                   metadata=self._metadata)

    def describe_extra(self) -> dict[str, Any]:
        return {"signatures": sorted(self._proto.runners) if self._proto else [], "state_on": "numpy arrays per stream"}


# ------------------------------------------------------------------------------ CoreML


class CoreMLAppleLM(LMStepper):  # pragma: no cover - macOS only
    """Decode stream over a CoreML LM package on Apple's runtime: the stateful form keeps its
    state in an ``MLState`` (``model.make_state()``, one per stream); the explicit form passes
    ``past_*`` arrays in and gets ``present_*`` back. One token per call."""

    flexible_tokens = False

    def __init__(self, path, model, metadata=None):  # noqa: D107 - ``model`` is a loaded MLModel
        super().__init__(path, metadata)
        self.model = model
        self.stateful = bool(self.metadata.extra.get("coreml", {}).get("stateful"))
        self.ml_state = None

    def reset(self) -> None:
        super().reset()
        if self.stateful:
            self.ml_state = self.model.make_state()
            self.state = []

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int32), "position": np.array([position], dtype=np.int32)}
        if self.stateful:
            return np.asarray(self.model.predict(feed, state=self.ml_state)["logits"])
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = self.model.predict(feed)
        self.state = [np.asarray(out[s["output"]], dtype=np.float32) for s in self.state_spec]
        return np.asarray(out["logits"])

    def release(self) -> None:
        self.ml_state, self.state = None, []


class CoreMLTextBackend(TextBackend):
    """CoreML text-generation backend: Apple's runtime with ``MLState`` on macOS; elsewhere
    (or with ``reference=True``) StarEdge's numpy MIL executor, with the usual one-time notice
    that it is for validation, not speed. The stateful (iOS 18) packages keep fp16 state, so
    their greedy text may part from fp32 runtimes after some tokens; the explicit form
    (``stateful=False`` at export) keeps fp32 state."""

    name = "coreml"
    OPTIONS = ("compute_units", "reference")

    def load_text(self) -> None:
        from staredge.runtimes.coreml import COMPUTE_UNITS, _notify_reference_once

        self._metadata = self.read_artifact_metadata(self.path)
        units = self.options.get("compute_units", "all")
        if units not in COMPUTE_UNITS:
            raise ConfigError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {units!r}")
        use_reference = bool(self.options.get("reference", False)) or sys.platform != "darwin"
        if self.requested_device in ("cuda", "gpu") and use_reference:
            raise DeviceError("CoreML runs on Apple hardware only; off macOS use device='cpu' (reference executor)")
        self.stateful = bool(self._metadata.extra.get("coreml", {}).get("stateful"))
        if use_reference:
            from staredge.runtimes.coreml_lm import CoreMLReferenceLM

            self._proto = CoreMLReferenceLM(self.path, threads=_threads(self.threads), metadata=self._metadata)
            self.engine_name, self.device = "mil-reference", "cpu"
            _notify_reference_once()
        else:  # pragma: no cover - macOS only
            ct = require("coremltools", "coreml", "the CoreML backend")
            model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[units]))
            self._proto = CoreMLAppleLM(self.path, model, metadata=self._metadata)
            self.engine_name, self.device = "coreml", ("cpu" if units == "cpuOnly" else "apple")

    def new_stepper(self) -> LMStepper:
        stepper = copy.copy(self._proto)
        stepper.states = {}
        stepper.reset()  # the stateful reference form gets its own zero state buffers here
        return stepper

    def describe_extra(self) -> dict[str, Any]:
        return {"engine": self.engine_name, "stateful": self.stateful,
                "state_on": ("MLState per stream" if self.engine_name == "coreml" else "numpy buffers per stream")
                + (" (fp16)" if self.stateful else "")}


# ------------------------------------------------------------------------------ PyTorch


def _lm_pair_config(path: Path) -> Path | None:
    """The ``.json`` of a ``save_lm`` pair for a ``.safetensors``/``.json`` path, else None."""
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    cfg = stem.with_name(stem.name + ".json")
    if not cfg.is_file():
        return None
    try:
        doc = json.loads(cfg.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(doc, dict) and doc.get("format") == "staredge-star-lm" else None


def is_text_module(obj: Any) -> bool:
    """A PyTorch module with the step contract (a STAR language model)."""
    return callable(getattr(obj, "init_state", None)) and callable(getattr(obj, "step", None)) \
        and isinstance(getattr(obj, "max_seq_len", None), int)


class PyTorchTextBackend(TextBackend):
    """PyTorch text-generation backend: a STAR LM (a module, or a ``save_lm`` ``.safetensors`` +
    ``.json`` pair) stepped in eager mode on the CPU or a CUDA device."""

    name = "pytorch"

    def __init__(self, path_or_module: Any, device: str = "auto", threads: int | None = None, **options: Any):
        self._module = None if isinstance(path_or_module, (str, Path)) or hasattr(path_or_module, "__fspath__") \
            else path_or_module
        super().__init__(None if self._module is not None else path_or_module, device=device, threads=threads,
                         **options)

    def load(self) -> None:
        self._sessions = weakref.WeakSet()
        self._proto = None
        self.load_text()

    def load_text(self) -> None:
        torch = require("torch", "torch", "running PyTorch language models")
        from staredge.generation import LanguageModel, load_lm

        if self._module is not None:
            lm = LanguageModel(self._module)
        else:
            lm = load_lm(self.path)
        self.device = select_torch_device(self.requested_device, torch.cuda.is_available())
        self.model = lm.model.to(self.device).eval()
        self.name_ = lm.name
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self._metadata = ArtifactMetadata(
            model=lm.name, family="star_lm", format="pytorch", task=TEXT_GENERATION, input_name="input_ids",
            input_size=[1, 1], input_layout="NT", lm=self._lm_dict())

    def _lm_dict(self) -> dict[str, Any]:
        m = self.model
        try:
            from staredge.models.star.analysis import analyze_genome

            state_bytes = analyze_genome(m.genome, m.dim, m.max_seq_len, bytes_per_element=4,
                                         configs=m.backbone.configs).total_cache_bytes
        except Exception:  # noqa: BLE001 - a model with the contract but not a STAR LM
            state_bytes = None
        return {"name": getattr(m, "staredge_name", None) or type(m).__name__, "genome": getattr(m, "genome", None),
                "vocab_size": int(getattr(m, "vocab_size", 259)), "max_context": int(m.max_seq_len),
                "prefill_chunk": 128, "state": [], "state_bytes": state_bytes,
                "state_note": "grows with the context (KV caches are appended); state_bytes is at max_context"}

    @property
    def state_bytes(self) -> int:
        return int(self.lm.get("state_bytes") or 0)

    def open_session(self) -> DecodeSession:
        session = _TorchSession(self.model, self.prefill_chunk)
        self._sessions.add(session)
        return session

    def describe_extra(self) -> dict[str, Any]:
        return {"eager": True}


def select_torch_device(requested: str, cuda_available: bool) -> str:
    """"cuda" or "cpu" for a requested StarEdge device; DeviceError when a GPU is asked for
    and torch has none."""
    if requested in ("cuda", "gpu"):
        if not cuda_available:
            raise DeviceError(f"device={requested!r} but this torch has no CUDA device; use device='cpu'")
        return "cuda"
    if requested == "cpu":
        return "cpu"
    return "cuda" if cuda_available else "cpu"


def _torch_session_class():
    from staredge.generation import TorchStepSession

    return TorchStepSession


class _TorchSession(DecodeSession):
    """A TorchStepSession with the ``closed`` flag the backend counts."""

    def __init__(self, model: Any, prefill_chunk: int) -> None:
        self.inner = _torch_session_class()(model, prefill_chunk)

    @property
    def closed(self) -> bool:
        return self.inner is None

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        if self.inner is None:
            raise ConfigError("this decode session is closed; open a new one")
        return self.inner.feed(ids)

    def close(self) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.close()


__all__ = [
    "CoreMLTextBackend",
    "LiteRtTextBackend",
    "OnnxRuntimeTextBackend",
    "OnnxRuntimeTextLM",
    "OpenVinoTextBackend",
    "PyTorchTextBackend",
    "StepperSession",
    "TextBackend",
    "is_text_module",
    "lm_providers",
    "select_torch_device",
]
