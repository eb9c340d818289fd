"""PyTorch backend: the reference every other runtime is compared with.

It runs a module eagerly under ``torch.inference_mode``, optionally in channels-last
memory format and/or through ``torch.compile``. It is built from a module, or from a
checkpoint path plus a registered model name. A safetensors checkpoint may carry the
StarEdge metadata JSON in its header (key ``staredge``, as ``staredge/data/digits.safetensors``
does), which names the model, its labels and preprocessing, so it loads with no other
argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from staredge.errors import CheckpointError, ConfigError
from staredge.errors import DeviceError
from staredge.metadata import ArtifactMetadata, metadata_from_model, read_safetensors_text
from staredge.runtimes.base import ArtifactError, Backend, check_artifact_file


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
        if self.threads is not None:
            # torch's thread count is process-wide; set it only when asked.
            torch.set_num_threads(self.threads)
        want_cuda = self.requested_device in ("cuda", "gpu")
        if want_cuda and not torch.cuda.is_available():
            raise DeviceError(
                f"device={self.requested_device!r} but this torch has no CUDA device "
                f"(torch {torch.__version__}); use device='cpu'"
            )
        dev = "cuda" if (want_cuda or (self.requested_device == "auto" and torch.cuda.is_available())) else "cpu"
        module = module.eval().to(dev)
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
        with torch.inference_mode():
            out = self.torch_module(t)
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

