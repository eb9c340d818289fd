"""Text-generation backends: one per runtime, each a factory of independent decode streams.

``load_backend`` returns one of these for an artifact whose metadata says
``task == "text-generation"`` (the format table names the class in
:attr:`staredge.formats.RuntimeSpec.text_backend`). A text backend checks the metadata
(:func:`staredge.runtimes.lm.check_lm_metadata`), builds the runtime's engine once (the
session, compiled model or interpreter is shared), checks the metadata against the graph
(:meth:`LMStepper.check_graph`) and hands out :class:`~staredge.decoding.DecodeSession`
objects (:class:`~staredge.runtimes.lm.StepperSession`) with :meth:`TextBackend.open_session`,
each with its own decode state, so several streams can run at once (from several threads
too). The one decode loop (:func:`staredge.decoding.decode_tokens`, behind
:func:`staredge.generation.stream`) drives them; ``Predictor.stream`` /
``Predictor.generate`` are the user API, and export validation uses
:meth:`TextBackend.new_stepper` through ``load_lm_artifact``.

This module holds what they share (:class:`TextBackend`) and the PyTorch backend; each exported format's backend lives beside its stepper in the runtime's
LM module (``runtimes/onnxruntime_lm.py``, ``openvino_lm.py``, ``litert_lm.py``,
``coreml_lm.py``) and is named by the format table, so a new runtime is one module.
The per-step work is the runtime-side steppers of :mod:`staredge.runtimes.lm` (the decode
contract of ``docs/lm-artifacts.md``); what the backends add is what a server needs:

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
import weakref
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from staredge.decoding import EAGER_PREFILL_CHUNK, DecodeSession  # noqa: F401 - DecodeSession re-exported
from staredge.errors import ConfigError
from staredge.formats import CHECKPOINT_FORMAT, EAGER_RUNTIME, TEXT_GENERATION, checkpoint_format
from staredge.metadata import ArtifactMetadata
from staredge.runtimes.base import Backend, check_artifact_file
from staredge.runtimes.lm import LMStepper, StepperSession, check_lm_metadata


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
        self.engine = None
        self._proto: LMStepper | None = None
        self.load_text()

    # -- what each runtime implements -------------------------------------------------
    def load_text(self) -> None:
        """Load the artifact; set ``self._metadata``, ``self.engine``, ``self.device`` and
        ``self._proto`` (a stepper whose engine the streams share). Call
        :meth:`check_lm_metadata` before building the engine and :meth:`check_lm_graph`
        before any state is allocated."""
        raise NotImplementedError

    def check_lm_metadata(self) -> None:
        """The metadata's ``lm`` section checked on its own (types, ranges, sizes), before the
        graph is loaded: :func:`staredge.runtimes.lm.check_lm_metadata`."""
        check_lm_metadata(self._metadata, self.path)

    def check_lm_graph(self, stepper: LMStepper) -> None:
        """The metadata checked against the loaded graph (:meth:`LMStepper.check_graph`),
        before any stream's state is allocated."""
        stepper.check_graph()

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

    def open_session(self) -> StepperSession:
        """A new decode stream (position 0, zero state); :class:`StreamError` once the backend is closed."""
        if self._proto is None:
            from staredge.errors import StreamError

            raise StreamError(f"this {self.name} text backend was closed ({self.path}); load the artifact again "
                              "(Predictor(path)) to start new streams")
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
            "threads": in_effect if (in_effect := self.threads_in_effect()) is not None else self.threads,
            "threads_requested": self.threads,
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


# ------------------------------------------------------------------------------ PyTorch


def _lm_pair_config(path: Path) -> Path | None:
    """The ``.json`` of a ``save_lm`` pair for a ``.safetensors``/``.json`` path, else None."""
    stem = path.with_suffix("") if path.suffix in (checkpoint_format().primary_suffix, ".json") else path
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

    name = EAGER_RUNTIME

    def __init__(self, path_or_module: Any, device: str = "auto", threads: int | None = None, **options: Any):
        self._module = None if isinstance(path_or_module, (str, Path)) or hasattr(path_or_module, "__fspath__") \
            else path_or_module
        super().__init__(None if self._module is not None else path_or_module, device=device, threads=threads,
                         **options)

    def load(self) -> None:
        self._sessions = weakref.WeakSet()
        self._proto = None
        self.load_text()

    @classmethod
    def session_for(cls, model: Any, prefill_chunk: int = EAGER_PREFILL_CHUNK) -> DecodeSession:
        """One decode session over a PyTorch model with the step contract, where its weights
        are and with torch's current threads (what ``stream(model, ...)`` runs; the format
        table names this class, so the core decode loop reaches it without an import)."""
        from staredge.runtimes.pytorch import torch_lm_session

        return torch_lm_session(model, prefill_chunk)

    def load_text(self) -> None:
        from staredge.models.star.lm import LanguageModel, load_lm
        from staredge.runtimes.pytorch import PyTorchEngine, TorchLMStepper

        lm = LanguageModel(self._module) if self._module is not None else load_lm(self.path)
        self.engine = PyTorchEngine(lm.model, self.requested_device, self.threads)
        self.device = self.engine.device
        self.model = self.engine.module
        self.name_ = lm.name
        self._metadata = ArtifactMetadata(
            model=lm.name, family="star_lm", format=CHECKPOINT_FORMAT, task=TEXT_GENERATION, input_name="input_ids",
            input_size=[1, 1], input_layout="NT", lm=self._lm_dict())
        self._proto = TorchLMStepper(self.model, self._metadata, self.engine)

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
                "prefill_chunk": min(EAGER_PREFILL_CHUNK, int(m.max_seq_len)), "state": [],
                "state_bytes": state_bytes,
                "state_note": "grows with the context (KV caches are appended); state_bytes is at max_context"}

    @property
    def state_bytes(self) -> int:
        return int(self.lm.get("state_bytes") or 0)

    def describe_extra(self) -> dict[str, Any]:
        return {"eager": True}


def select_torch_device(requested: str, cuda_available: bool) -> str:
    """Re-exported from :mod:`staredge.runtimes.pytorch` (its one definition)."""
    from staredge.runtimes.pytorch import select_torch_device as select

    return select(requested, cuda_available)


__all__ = [
    "PyTorchTextBackend",
    "StepperSession",
    "TextBackend",
    "is_text_module",
    "select_torch_device",
]
