"""PyTorch backend: the reference every other runtime is compared with.

It runs a module eagerly under ``torch.inference_mode``, optionally in channels-last
memory format and/or through ``torch.compile``. It is built from a module, or from a
checkpoint path plus a registered model name. A safetensors checkpoint may carry the
StarEdge metadata JSON in its header (key ``staredge``, as ``staredge/data/digits.safetensors``
does), which names the model, its labels and preprocessing, so it loads with no other
argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from staredge.errors import CheckpointError, ConfigError, StarEdgeError, require
from staredge.errors import DeviceError
from staredge.formats import TEXT_GENERATION
from staredge.metadata import ArtifactMetadata, metadata_from_model, read_safetensors_text
from staredge.runtimes.base import ArtifactError, Backend, Engine, check_artifact_file
from staredge.runtimes.lm import LMStepper, StepperSession
from staredge.threads import resolve_threads


def metadata_for_module(module: Any, fmt: str = "pytorch") -> ArtifactMetadata:
    """Metadata describing a StarEdge model module (:func:`staredge.metadata.metadata_from_model`).

    Raises :class:`ConfigError` for a module without ``pretrained_cfg``: without it the
    input size, preprocessing and labels are unknown.
    """
    if getattr(module, "pretrained_cfg", None) is None:
        name = getattr(module, "staredge_name", type(module).__name__)
        raise ConfigError(
            f"module {name} has no pretrained_cfg (input size, preprocessing, labels); build it with "
            f"staredge.models.create(...) or set module.pretrained_cfg"
        )
    return metadata_from_model(module, fmt, dynamic_batch=True)


#: The ``create()`` keyword arguments a checkpoint's metadata may set (``extra.create_kwargs``),
#: with the range each value must be in. Everything else in a file is refused: the model's
#: architecture comes from its registered name, never from keys a file supplies.
CREATE_KWARGS_FROM_FILE = {"num_classes": (1, 1_000_000), "in_chans": (1, 64), "img_size": (1, 4096)}


def create_kwargs_from_metadata(meta: ArtifactMetadata | None, path: Any) -> dict[str, Any]:
    """The checked ``create_kwargs`` of a checkpoint's metadata: only the keys in
    :data:`CREATE_KWARGS_FROM_FILE`, each an integer in its range; else a MetadataError."""
    from staredge.metadata import MetadataError

    raw = (meta.extra.get("create_kwargs") or {}) if meta else {}
    if not isinstance(raw, dict):
        raise MetadataError(f"{path}: metadata extra.create_kwargs must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in CREATE_KWARGS_FROM_FILE)
    if unknown:
        raise MetadataError(
            f"{path}: metadata extra.create_kwargs holds {unknown}, which a file may not set (allowed: "
            f"{', '.join(CREATE_KWARGS_FROM_FILE)}); the file was edited or is damaged, re-export it")
    for key, value in raw.items():
        low, high = CREATE_KWARGS_FROM_FILE[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise MetadataError(f"{path}: metadata extra.create_kwargs.{key} must be an integer in {low}..{high}, "
                                f"got {value!r}")
    return dict(raw)


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


class PyTorchEngine(Engine):
    """A PyTorch module as an engine: the one place the PyTorch runtime places a module on
    its device and decides its threads (image and LM).

    Threads: :func:`staredge.threads.resolve_threads` like every engine, but torch's thread
    count is process-wide, so the engine never sets it for the process: :meth:`threads_scope`
    sets it around each of this engine's calls and restores the caller's value afterwards
    (nothing happens when the two agree, the usual case: torch's own default is the physical
    cores too). Two engines with different thread counts used from two threads at once
    share torch's one setting; give them the same count. ``move=False`` leaves the module
    where its weights are (a model handed to ``stream``).
    """

    runtime = "pytorch"

    def __init__(self, module: Any, device: str = "auto", threads: int | None = None, *, move: bool = True) -> None:
        torch = require("torch", "torch", "the PyTorch runtime")
        self._torch = torch
        self.threads = resolve_threads(threads)
        if move:
            self.device = select_torch_device(device, torch.cuda.is_available())
            module = module.eval().to(self.device)
            self.place: Any = self.device
        else:
            params = getattr(module, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            #: where inputs are created: the module's own device (e.g. ``cuda:1``)
            self.place = first.device if first is not None else torch.device("cpu")
            self.device = self.place.type
        self.module = module

    @contextmanager
    def threads_scope(self) -> Iterator[None]:
        """torch's intra-op threads set to this engine's for the duration (restored after)."""
        torch = self._torch
        before = torch.get_num_threads()
        if before == self.threads:
            yield
            return
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def run_failed(self, exc: BaseException) -> StarEdgeError:
        """A torch error during a call as InferenceError naming the module."""
        from staredge.errors import InferenceError

        text = str(exc).strip().splitlines()
        return InferenceError(f"pytorch failed running {type(self.module).__name__}: {type(exc).__name__}: "
                              f"{(text[0] if text else '')[:300]}")

    def threads_in_effect(self) -> int:
        """The threads torch runs this engine's calls with."""
        return self.threads

    def op_histogram(self) -> dict[str, int]:
        """Leaf module classes of the module (what eager mode runs), by count."""
        counts: dict[str, int] = {}
        for m in self.module.modules():
            if not any(True for _ in m.children()):
                counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class TorchLMStepper(LMStepper):
    """A decode stream over a PyTorch model with the step contract (``init_state``,
    ``step``): the PyTorch engine's stepper, so a PyTorch stream is prefilled and decoded by
    the same chunker and loop as every artifact. The state is the model's own (torch
    tensors); grad mode is entered around each model call only (a generator suspended inside
    ``torch.no_grad()`` would leak that mode into the caller's code)."""

    flexible_tokens = True

    def __init__(self, model: Any, metadata: ArtifactMetadata, engine: PyTorchEngine) -> None:
        super().__init__(None, metadata)
        self.model = model
        self.engine = engine

    def reset(self) -> None:
        """New stream: position 0, the model's initial state."""
        torch = self.engine._torch
        self.position = 0
        with torch.no_grad():
            self.state = self.model.init_state(1)

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        torch = self.engine._torch
        with torch.no_grad(), self.engine.threads_scope():
            chunk = torch.from_numpy(ids).to(self.engine.place)
            try:
                logits, self.state = self.model.step(chunk, self.state)
            except RuntimeError as exc:  # torch's kernel errors (shapes, devices, memory)
                raise self.engine.run_failed(exc) from exc
            return logits.detach().float().cpu().numpy()

    def release(self) -> None:
        """Drop the state."""
        self.state = None


def torch_lm_metadata(model: Any, prefill_chunk: int) -> ArtifactMetadata:
    """Metadata of a PyTorch model with the step contract, for :class:`TorchLMStepper`."""
    n = int(model.max_seq_len)
    return ArtifactMetadata(
        model=getattr(model, "staredge_name", None) or type(model).__name__, family="star_lm", format="pytorch",
        task=TEXT_GENERATION, input_name="input_ids", input_size=[1, 1], input_layout="NT",
        lm={"vocab_size": int(getattr(model, "vocab_size", 259)), "max_context": n,
            "prefill_chunk": max(1, min(int(prefill_chunk), n)), "state": []})


def torch_lm_session(model: Any, prefill_chunk: int) -> Any:
    """One decode session over a PyTorch model with the step contract, where its weights
    are and with torch's current thread count (what :func:`staredge.generation.stream` runs
    for a module the caller built: the caller's torch settings stand, nothing is changed)."""
    torch = require("torch", "torch", "the PyTorch runtime")
    engine = PyTorchEngine(model, threads=torch.get_num_threads(), move=False)
    stepper = TorchLMStepper(model, torch_lm_metadata(model, prefill_chunk), engine)
    stepper.reset()
    return StepperSession(stepper)


class PyTorchBackend(Backend):
    """A PyTorch module (given, or built from a checkpoint) run eagerly in inference mode.

    Options: ``model`` (a registered name or an ``nn.Module``; needed for checkpoints that
    carry no StarEdge metadata), ``channels_last`` (bool), ``compile`` (True for
    ``torch.compile`` with its default backend, or a backend name such as "eager").
    Eager inference does not mutate the module, so calls from several threads are safe;
    with ``compile=True`` the backend asks for a lock (compilation is not re-entrant).
    """

    name = "pytorch"
    thread_safe = True
    OPTIONS = ("model", "channels_last", "compile")

    def __init__(self, path_or_module: Any, device: str = "auto", threads: int | None = None, **options: Any):
        import torch.nn as nn

        if isinstance(path_or_module, nn.Module):
            options = {**options, "model": path_or_module}
            path_or_module = None
        super().__init__(path_or_module, device=device, threads=threads, **options)

    def load(self) -> None:
        import torch
        import torch.nn as nn

        model_opt = self.options.get("model")
        if self.path is not None:
            check_artifact_file(self.path, "PyTorch checkpoint")
            if self.path.is_dir():
                raise ArtifactError(f"{self.path} is a directory; point at the checkpoint file")
            meta_json = read_safetensors_text(self.path)
            if meta_json is None and model_opt is None:
                raise ArtifactError(
                    f"{self.path} is a PyTorch checkpoint without StarEdge metadata, so the model it "
                    f"belongs to is unknown; name it: --model starnet_s1 on the command line, Predictor(path, model='starnet_s1') in Python"
                )
            module, meta = self._build_from_checkpoint(model_opt, meta_json)
        else:
            if not isinstance(model_opt, nn.Module):
                raise ConfigError("the PyTorch backend needs a checkpoint path or an nn.Module")
            module = model_opt
            meta = self.options.get("metadata") or metadata_for_module(module)
        want_cuda = self.requested_device in ("cuda", "gpu")
        if want_cuda and not torch.cuda.is_available():
            raise DeviceError(
                f"device={self.requested_device!r} but this torch has no CUDA device "
                f"(torch {torch.__version__}); use device='cpu'"
            )
        # torch's thread count is process-wide: the engine applies it around its calls only
        self.engine = PyTorchEngine(module, self.requested_device, self.threads)
        dev = self.engine.device
        module = self.engine.module
        self.channels_last = bool(self.options.get("channels_last", False))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        compile_opt = self.options.get("compile", False)
        self.compiled = bool(compile_opt)
        if self.compiled:
            # True: torch's default (inductor) backend; a string names another backend
            module = torch.compile(module) if compile_opt is True else torch.compile(module, backend=str(compile_opt))
            self.thread_safe = False  # instance-level: compiled graphs are built lazily
        self.torch_module = module
        self.device = dev
        self._metadata = meta

    def _build_from_checkpoint(self, model_opt: Any, meta_json: str | None):
        import torch.nn as nn

        from staredge.models import create

        assert self.path is not None
        meta = ArtifactMetadata.from_json(meta_json) if meta_json is not None else None
        if isinstance(model_opt, nn.Module):
            from staredge.models.checkpoint import load_checkpoint

            load_checkpoint(model_opt, str(self.path))
            module = model_opt
        else:
            name = model_opt or meta.model  # type: ignore[union-attr]
            kwargs = create_kwargs_from_metadata(meta, self.path)
            if meta and meta.labels and "num_classes" not in kwargs:
                kwargs["num_classes"] = len(meta.labels)
            try:
                # drop_head=False: a checkpoint that describes itself has the head its labels say
                module = create(name, checkpoint=str(self.path), drop_head=False, **kwargs)
            except CheckpointError as exc:
                raise ArtifactError(f"cannot load checkpoint {self.path}: {exc}") from exc
        if meta is None:
            meta = metadata_for_module(module)
        meta.format = "pytorch"
        return module, meta

    @property
    def supports_batch(self) -> bool:
        """True: a module takes any batch size."""
        return True

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        t = torch.from_numpy(x).to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.engine.threads_scope():
            try:
                out = self.torch_module(t)
            except RuntimeError as exc:  # torch's kernel errors (shapes, devices, memory)
                raise self.engine.run_failed(exc) from exc
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().float().cpu().numpy() for o in outs]

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus channels-last and compile flags."""
        d = super().describe()
        d.update(channels_last=self.channels_last, compiled=self.compiled, thread_safe=self.thread_safe)
        return d

    def __repr__(self) -> str:
        src = str(self.path) if self.path is not None else type(self.torch_module).__name__
        return f"PyTorchBackend({src!r}, device={self.device!r})"

