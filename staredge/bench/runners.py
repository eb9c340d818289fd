"""Runners: one ready-to-time inference per backend spec, built through the runtime layer.

Every runner, the baselines included, is a :class:`staredge.runtimes.Backend` loaded with
:func:`staredge.runtimes.load_backend` and driven by :meth:`Backend.prepare`, so what is
timed is exactly what the Predictor runs (ONNX Runtime on a GPU binds input and outputs to
the device through the backend's IO binding).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from staredge.bench.artifacts import ArtifactCache
from staredge.bench.device import detect_ort_providers, detect_torch_cuda, resolve_device, torch_synchronizer
from staredge.bench.specs import BackendSpec, BackendUnavailable, runtime_installed
from staredge.errors import DeviceError
from staredge.formats import EAGER_RUNTIME, RUNTIMES


@dataclass
class Runner:
    """One ready-to-time inference: ``infer()`` runs batch 1 on a fixed input.

    ``sync`` waits for asynchronous devices; ``threads`` is the thread count the runtime
    reports being in effect; ``close()`` restores anything changed globally.
    """

    infer: Callable[[], Any]
    sync: Callable[[], None] | None = None
    threads: int | None = None
    device: str = "cpu"
    runtime_version: str | None = None
    rewrites: list[str] = field(default_factory=list)
    precision: str = "fp32"
    artifact: str | None = None
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def fixed_input(input_size: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The one batch-1 input every runtime is timed on: standard normal, float32, seeded."""
    return np.random.default_rng(seed).standard_normal((1, *input_size), dtype=np.float32)


def threads_in_effect(backend: Any) -> int | None:
    """The intra-op thread count a loaded runtime reports using (not just what was asked).

    ONNX Runtime: the session's ``intra_op_num_threads`` (0 = its default, one per core);
    OpenVINO: the compiled model's ``INFERENCE_NUM_THREADS``; others: the requested value.
    """
    session = getattr(backend, "session", None)
    if session is not None and hasattr(session, "get_session_options"):
        n = session.get_session_options().intra_op_num_threads
        return n if n > 0 else os.cpu_count()
    compiled = getattr(backend, "compiled", None)
    if compiled is not None and hasattr(compiled, "get_property"):
        try:
            return int(compiled.get_property("INFERENCE_NUM_THREADS"))
        except Exception:  # a device without the property (GPU plugin): fall back to the request
            pass
    return getattr(backend, "threads", None)


def apply_rewrites(model: Any, passes: tuple[str, ...]) -> Any:
    """Apply rewrite passes (validated by the pass registry) to a PyTorch module; a new module."""
    from staredge.exporters.passes import apply_passes

    return apply_passes(model, list(passes))


class RunnerFactory:
    """Builds runners for one model, exporting each artifact once (cached in ``workdir``).

    ``torch_cuda`` and ``providers`` can be injected (tests); by default they are
    detected from torch and ONNX Runtime. ``calibration`` / ``calibration_samples``: the
    int8 calibration data for specs like ``onnxruntime@int8`` (see
    :func:`staredge.bench.artifacts.calibration_for`; resolved on the first int8 spec).
    """

    def __init__(
        self,
        model: Any,
        workdir: str | os.PathLike,
        default_rewrite: str = "auto",
        *,
        torch_cuda: bool | None = None,
        providers: list[str] | None = None,
        calibration: Any = None,
        calibration_samples: int | None = None,
    ) -> None:
        self.model = model
        self.calibration = calibration
        self.calibration_samples = calibration_samples
        self._calibration: tuple[np.ndarray, str] | None = None
        self.cache = ArtifactCache(model, workdir)
        self.workdir = self.cache.workdir
        self.default_rewrite = default_rewrite
        self._torch_cuda = torch_cuda
        self._providers = providers
        cfg = getattr(model, "pretrained_cfg", None)
        self.input_size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
        self.x = fixed_input(self.input_size)

    @property
    def fingerprint(self) -> str:
        """Which weights this factory's artifacts hold (see :func:`model_fingerprint`)."""
        return self.cache.fingerprint

    @property
    def torch_cuda(self) -> bool:
        """Whether PyTorch sees a CUDA device (detected once unless injected)."""
        if self._torch_cuda is None:
            self._torch_cuda = detect_torch_cuda()
        return self._torch_cuda

    @property
    def cuda_available(self) -> bool:
        """Whether any runtime here can use CUDA (PyTorch or ONNX Runtime's CUDA provider)."""
        return self.torch_cuda or "CUDAExecutionProvider" in self.providers

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime's available providers (detected once unless injected)."""
        if self._providers is None:
            self._providers = detect_ort_providers()
        return self._providers

    def check(self, spec: BackendSpec) -> None:
        """Raise :class:`BackendUnavailable` / :class:`DeviceError` if ``spec`` cannot run here."""
        reason = runtime_installed(spec.runtime)
        if reason:
            raise BackendUnavailable(reason)
        if spec.device == "cuda":
            if spec.runtime == EAGER_RUNTIME:
                if not self.torch_cuda:
                    raise DeviceError(
                        "PyTorch has no CUDA device here (this torch build is CPU-only or no GPU is "
                        "visible); run pytorch:cuda on a machine with an NVIDIA GPU and a CUDA torch build"
                    )
            else:
                from staredge.runtimes.onnxruntime import select_providers

                select_providers("cuda", self.providers, accelerator=spec.accelerator)
            resolve_device(spec.accelerator, self.cuda_available)

    def build(self, spec: BackendSpec, threads: int | None) -> Runner:
        """A runner for ``spec`` with ``threads`` intra-op threads (None: runtime default)."""
        self.check(spec)
        if spec.runtime == EAGER_RUNTIME:
            return self._pytorch(spec, threads)
        if spec.runtime == "onnx-plain":
            path = self.cache.plain_onnx(self.x)
            return self._artifact(spec, "onnxruntime", path, [], threads, foreign=True)
        path, rewrites = self._export(spec)
        runner = self._artifact(spec, spec.runtime, path, rewrites, threads)
        if spec.precision == "int8" and self._calibration is not None:
            runner.notes.append(self._calibration[1])
        return runner

    # -- runners -----------------------------------------------------------------------

    def _pytorch(self, spec: BackendSpec, threads: int | None) -> Runner:
        import torch

        from staredge.runtimes import load_backend

        model = self.model
        applied: list[str] = []
        if spec.rewrites:
            model = apply_rewrites(model, spec.rewrites)
            applied = list(spec.rewrites)
        if spec.device != "cpu" and model is self.model:
            model = copy.deepcopy(model)  # .to() moves in place; exports still need the CPU model
        previous = torch.get_num_threads()
        backend = load_backend(model, backend=EAGER_RUNTIME, device=spec.device, threads=threads,
                               metadata=self._metadata())
        infer = backend.prepare(self.x)

        def close() -> None:
            torch.set_num_threads(previous)

        return Runner(
            infer=infer,
            sync=torch_synchronizer(spec.device),
            threads=torch.get_num_threads() if spec.device == "cpu" else None,
            device=spec.device,
            runtime_version=torch.__version__,
            rewrites=applied,
            close=close,
        )

    def _artifact(self, spec: BackendSpec, runtime: str, path: Any, rewrites: list[str], threads: int | None,
                  foreign: bool = False) -> Runner:
        """Our runtime layer on an artifact; ``foreign``: a file without StarEdge metadata."""
        from staredge.runtimes import load_backend

        options: dict[str, Any] = {}
        if foreign:
            options["metadata"] = self._metadata()
        if spec.device == "cuda":
            # exactly the provider chain the spec names (CUDA and TensorRT are timed apart),
            # with input and outputs bound to the device
            options.update(accelerator=spec.accelerator, io_binding=True)
        # device="cpu", not "auto": a spec without an accelerator is a CPU timing even on a GPU box.
        backend = load_backend(str(path), backend=runtime, device=spec.device, threads=threads, **options)
        infer = backend.prepare(self.x)
        meta = backend.metadata
        notes = [f"providers {backend.session.get_providers()}"] if spec.device == "cuda" else []
        return Runner(
            infer=infer,
            sync=getattr(infer, "sync", None),
            threads=threads_in_effect(backend),
            device=backend.device or "cpu",
            runtime_version=RUNTIMES[runtime].version(),
            rewrites=[] if foreign else list(meta.rewrites or rewrites),
            precision=meta.precision or "fp32",
            artifact=str(path),
            notes=notes,
            close=backend.close,
        )

    def _metadata(self):
        """Metadata for an artifact or module that carries none (input size is what matters)."""
        from staredge.metadata import ArtifactMetadata

        return ArtifactMetadata(model=type(self.model).__name__.lower(), family="custom",
                                input_size=list(self.input_size), dynamic_batch=False)

    def _export(self, spec: BackendSpec) -> tuple[Any, list[str]]:
        from staredge.exporters.passes import resolve_passes

        rewrite = self.default_rewrite if spec.rewrites is None else (",".join(spec.rewrites) or "none")
        fmt = spec.format
        passes = resolve_passes(_rewrite_arg(rewrite), fmt)  # what "auto" means for this format today
        calibration = None
        if spec.precision == "int8":
            if self._calibration is None:
                from staredge.bench.artifacts import calibration_for

                self._calibration = calibration_for(self.model, self.calibration, self.calibration_samples)
            calibration = self._calibration[0]
        return self.cache.exported(fmt, list(passes), spec.precision, calibration)


def _rewrite_arg(rewrite: str) -> Any:
    """The exporter's ``rewrite`` argument: "auto"/"none" as is, else a list of pass names."""
    if rewrite in ("auto", "none"):
        return rewrite
    return [p.strip() for p in rewrite.split(",") if p.strip()]
