"""What gets timed: backend specs and the runners built from them.

A backend spec is a string ``RUNTIME[:ACCELERATOR][@PASS+PASS...]`` (passes by name, or
``fuse`` for ``fuse_batchnorm`` and ``pwlinear`` for ``pointwise_conv_to_linear``):

- ``pytorch`` — the first baseline: PyTorch eager under ``torch.inference_mode()``,
  no rewrites (``pytorch@pointwise_conv_to_linear`` applies our passes to the module);
- ``onnx-plain`` — the second baseline: a plain ``torch.onnx.export`` (TorchScript
  exporter, opset 17) run by ONNX Runtime with its default session options; never
  rewritten, it is what a user gets without StarEdge;
- ``onnxruntime``, ``openvino``, ``tflite``, ``coreml`` — our exporter
  (:func:`staredge.exporters.export`) then our runtime (:func:`staredge.runtimes.load_backend`);
  the exporter's rewrites are the protocol's ``rewrite`` unless the spec names them;
- ``:cuda`` / ``:tensorrt`` select an accelerator (ONNX Runtime CUDA / TensorRT
  providers, PyTorch CUDA); ``all`` expands to every runtime for the device.

A :class:`Runner` is one ready-to-time inference on a fixed batch-1 input.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from staredge.bench.device import (
    DeviceUnavailableError,
    OrtIoBindingRunner,
    detect_ort_providers,
    detect_torch_cuda,
    ort_providers,
    resolve_device,
    torch_synchronizer,
)
from staredge.errors import ConfigError, StarEdgeError

#: The two baselines a user would otherwise use.
BASELINES = ("pytorch", "onnx-plain")
#: Runtimes reached through our exporters + runtimes, with the export format they run.
EXPORTED_RUNTIMES = {"onnxruntime": "onnx", "openvino": "openvino", "tflite": "tflite", "coreml": "coreml"}
RUNTIMES = BASELINES + tuple(EXPORTED_RUNTIMES)
#: Accelerators each runtime can be asked for.
ACCELERATORS = {
    "pytorch": ("cpu", "cuda"),
    "onnx-plain": ("cpu", "cuda", "tensorrt"),
    "onnxruntime": ("cpu", "cuda", "tensorrt"),
    "openvino": ("cpu",),
    "tflite": ("cpu",),
    "coreml": ("cpu",),
}
FUSE = "fuse_batchnorm"
POINTWISE = "pointwise_conv_to_linear"
#: Short pass names for labels (and accepted in specs): report columns stay readable.
PASS_ALIASES = {"fuse": FUSE, "pwlinear": POINTWISE}
_SHORT_NAMES = {v: k for k, v in PASS_ALIASES.items()}


class BackendUnavailable(StarEdgeError):
    """A backend cannot be timed on this machine (missing package, device or OS)."""


class BenchExportError(StarEdgeError):
    """Our exporter could not produce the artifact a backend spec needs."""


@dataclass(frozen=True)
class BackendSpec:
    """One parsed backend spec (see the module docstring for the syntax)."""

    runtime: str
    accelerator: str = "cpu"
    rewrites: tuple[str, ...] | None = None  # None: the protocol's rewrite setting

    @property
    def label(self) -> str:
        """The canonical spec string, used as the column name in reports."""
        text = self.runtime if self.accelerator == "cpu" else f"{self.runtime}:{self.accelerator}"
        if self.rewrites is not None:
            text += "@" + ("+".join(_SHORT_NAMES.get(p, p) for p in self.rewrites) if self.rewrites else "none")
        return text

    @property
    def device(self) -> str:
        """The device this spec runs on ("cpu" or "cuda")."""
        return "cpu" if self.accelerator == "cpu" else "cuda"

    @property
    def baseline(self) -> str | None:
        """Which baseline this is ("pytorch", "onnx-plain"), or None for our runtimes."""
        if self.runtime in BASELINES and not self.rewrites:
            return self.runtime
        return None


def parse_backend(text: str) -> BackendSpec:
    """Parse one spec like ``onnxruntime``, ``onnxruntime:cuda@fuse_batchnorm+pointwise_conv_to_linear``."""
    raw = text.strip()
    body, _, rewrite_text = raw.partition("@")
    runtime, _, accelerator = body.partition(":")
    runtime = runtime.strip().lower()
    accelerator = (accelerator.strip().lower() or "cpu")
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown backend '{raw}': runtimes are {', '.join(RUNTIMES)} (or 'all')")
    if accelerator not in ACCELERATORS[runtime]:
        raise ConfigError(
            f"backend '{raw}': {runtime} supports {', '.join(ACCELERATORS[runtime])}, not '{accelerator}'"
        )
    rewrites: tuple[str, ...] | None = None
    if "@" in raw:
        names = [PASS_ALIASES.get(n.strip(), n.strip()) for n in rewrite_text.split("+") if n.strip()]
        rewrites = () if names in ([], ["none"]) else tuple(names)
        if runtime == "onnx-plain" and rewrites:
            raise ConfigError("'onnx-plain' is the no-rewrite baseline; use 'onnxruntime@...' for rewrites")
    return BackendSpec(runtime, accelerator, rewrites)


def runtime_installed(runtime: str) -> str | None:
    """None when ``runtime`` can be timed on this machine, else the reason it cannot."""
    import importlib.util

    def has(mod: str) -> bool:
        return importlib.util.find_spec(mod) is not None

    if runtime == "pytorch":
        return None
    if runtime in ("onnx-plain", "onnxruntime"):
        return None if has("onnxruntime") else "onnxruntime is not installed (pip extra: staredge[onnx])"
    if runtime == "openvino":
        return None if has("openvino") else "openvino is not installed (pip extra: staredge[openvino])"
    if runtime == "tflite":
        if has("ai_edge_litert") or has("tflite_runtime"):
            return None
        return "no TFLite interpreter installed (pip extra: staredge[tflite])"
    if runtime == "coreml":
        if sys.platform != "darwin":
            return (
                "CoreML models run only on Apple platforms; off macOS StarEdge has a reference "
                "executor for validation, which is not meant to be timed"
            )
        return None if has("coremltools") else "coremltools is not installed (pip extra: staredge[coreml])"
    raise ConfigError(f"unknown runtime '{runtime}'")


def expand_backends(texts: list[str], device: str = "cpu") -> list[BackendSpec]:
    """Parse specs, expanding ``all`` for ``device`` and removing duplicates (order kept).

    On CPU ``all`` is both baselines and every exported runtime; on CUDA it is the
    baselines on CUDA plus ONNX Runtime CUDA and TensorRT, and PyTorch CUDA, each with and
    without the pointwise-conv→Linear rewrite (the StarNet paper's GPU setting).
    """
    specs: list[BackendSpec] = []
    for text in texts:
        for part in (p for p in text.split(",") if p.strip()):
            if part.strip().lower() != "all":
                specs.append(parse_backend(part))
            elif device == "cuda":
                specs += [
                    BackendSpec("pytorch", "cuda"),
                    BackendSpec("pytorch", "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnx-plain", "cuda"),
                    BackendSpec("onnxruntime", "cuda", (FUSE,)),
                    BackendSpec("onnxruntime", "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE,)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE, POINTWISE)),
                ]
            else:
                specs += [BackendSpec(r) for r in RUNTIMES]
    seen: set[BackendSpec] = set()
    unique = []
    for s in specs:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    if not unique:
        raise ConfigError("no backends to benchmark: pass --backends (e.g. all, or pytorch,onnxruntime)")
    return unique


def with_baselines(specs: list[BackendSpec], device: str = "cpu") -> list[BackendSpec]:
    """``specs`` with both baselines (on ``device``) in front, unless already present."""
    accel = "cuda" if device == "cuda" else "cpu"
    wanted = [BackendSpec("pytorch", accel), BackendSpec("onnx-plain", accel)]
    return [b for b in wanted if b not in specs] + list(specs)


def compare_rewrite_specs(specs: list[BackendSpec]) -> list[BackendSpec]:
    """Each exported runtime twice: BatchNorm fusing only, and fusing + pointwise→Linear.

    Used to decide, per runtime, whether ``--rewrite auto`` should pick the pointwise
    rewrite (it should only where it is not slower than fusing alone).
    """
    out: list[BackendSpec] = []
    for s in specs:
        if s.runtime in EXPORTED_RUNTIMES and s.rewrites is None:
            out += [BackendSpec(s.runtime, s.accelerator, (FUSE,)), BackendSpec(s.runtime, s.accelerator, (FUSE, POINTWISE))]
        else:
            out.append(s)
    return out


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


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class RunnerFactory:
    """Builds runners for one model, exporting each artifact once (cached in ``workdir``).

    ``torch_cuda`` and ``providers`` can be injected (tests); by default they are
    detected from torch and ONNX Runtime.
    """

    def __init__(
        self,
        model: Any,
        workdir: str | os.PathLike,
        default_rewrite: str = "auto",
        *,
        torch_cuda: bool | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.model = model
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.default_rewrite = default_rewrite
        self._torch_cuda = torch_cuda
        self._providers = providers
        self._artifacts: dict[tuple, Any] = {}
        self._fingerprint: str | None = None
        cfg = getattr(model, "pretrained_cfg", None)
        self.input_size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
        self.x = fixed_input(self.input_size)

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
        """Raise :class:`BackendUnavailable` / :class:`DeviceUnavailableError` if ``spec`` cannot run here."""
        reason = runtime_installed(spec.runtime)
        if reason:
            raise BackendUnavailable(reason)
        if spec.device == "cuda":
            if spec.runtime == "pytorch":
                if not self.torch_cuda:
                    raise DeviceUnavailableError(
                        "PyTorch has no CUDA device here (this torch build is CPU-only or no GPU is "
                        "visible); run pytorch:cuda on a machine with an NVIDIA GPU and a CUDA torch build"
                    )
            else:
                ort_providers(spec.accelerator, self.providers)
            resolve_device(spec.accelerator, self.cuda_available)

    def build(self, spec: BackendSpec, threads: int | None) -> Runner:
        """A runner for ``spec`` with ``threads`` intra-op threads (None: runtime default)."""
        self.check(spec)
        if spec.runtime == "pytorch":
            return self._pytorch(spec, threads)
        if spec.runtime == "onnx-plain":
            return self._onnx_plain(spec, threads)
        return self._exported(spec, threads)

    # -- baselines -------------------------------------------------------------------
    def _pytorch(self, spec: BackendSpec, threads: int | None) -> Runner:
        import torch

        model = self.model
        applied: list[str] = []
        if spec.rewrites:
            model = apply_rewrites(model, spec.rewrites)
            applied = list(spec.rewrites)
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        device = spec.device
        if device != "cpu" and model is self.model:
            import copy

            model = copy.deepcopy(model)  # .to() moves in place; exports still need the CPU model
        model = model.to(device).eval()
        x = torch.from_numpy(self.x).to(device)

        def infer() -> Any:
            with torch.inference_mode():
                return model(x)

        def close() -> None:
            torch.set_num_threads(previous)

        return Runner(
            infer=infer,
            sync=torch_synchronizer(device),
            threads=torch.get_num_threads() if device == "cpu" else None,
            device=device,
            runtime_version=torch.__version__,
            rewrites=applied,
            close=close,
        )

    def _onnx_plain(self, spec: BackendSpec, threads: int | None) -> Runner:
        ort = _require("onnxruntime", "onnx", "the onnx-plain baseline")
        path = self._plain_onnx_path()
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=ort_providers(spec.accelerator, self.providers))
        return self._ort_runner(session, spec, path, [], ort)

    def _plain_onnx_path(self) -> Path:
        key = ("onnx-plain",)
        if key not in self._artifacts:
            import torch

            out_dir = self.workdir / "onnx-plain"
            cached = self._cached(out_dir)
            if cached is not None:
                self._artifacts[key] = cached[0]
                return cached[0]
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "plain.onnx"
            tmp = path.with_suffix(".onnx.tmp")
            # dynamo=False: torch 2.13's default (dynamo) exporter needs onnxscript, which a
            # plain install lacks; the TorchScript exporter is what such a user ends up with.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    self.model, (torch.from_numpy(self.x),), str(tmp), dynamo=False, opset_version=17,
                    input_names=["input"], output_names=["logits"],
                )
            os.replace(tmp, path)
            self._remember(out_dir, path, [])
            self._artifacts[key] = path
        return self._artifacts[key]

    # An artifact directory holds a marker naming the artifact and the weights it was made
    # from, so a later run with the same --workdir reuses it instead of exporting again
    # (exports can take longer than the timing itself).
    _MARKER = ".staredge-bench-artifact.json"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the model's class and state_dict bytes: which weights an artifact holds."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256(type(self.model).__qualname__.encode())
            for name, tensor in self.model.state_dict().items():
                h.update(name.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _cached(self, out_dir: Path) -> tuple[Path, list[str]] | None:
        import json

        marker = out_dir / self._MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        path = out_dir / data.get("artifact", "")
        if data.get("fingerprint") != self.fingerprint or not data.get("artifact") or not path.exists():
            return None
        return path, list(data.get("rewrites", []))

    def _remember(self, out_dir: Path, path: Path, rewrites: list[str]) -> None:
        import json

        from staredge.bench.results import atomic_write_text

        record = {"artifact": str(Path(path).relative_to(out_dir)), "rewrites": rewrites, "fingerprint": self.fingerprint}
        atomic_write_text(out_dir / self._MARKER, json.dumps(record))

    def _ort_runner(self, session: Any, spec: BackendSpec, path: Path, rewrites: list[str], ort: Any) -> Runner:
        in_effect = session.get_session_options().intra_op_num_threads or None
        if spec.device == "cuda":
            bound = OrtIoBindingRunner(session, self.x, "cuda", ort)
            return Runner(
                infer=bound, sync=bound.sync, threads=in_effect, device="cuda",
                runtime_version=_version("onnxruntime-gpu") or ort.__version__, rewrites=rewrites,
                artifact=str(path), notes=[f"providers {session.get_providers()}"],
            )
        name = session.get_inputs()[0].name
        feed = {name: self.x}
        return Runner(
            infer=lambda: session.run(None, feed), threads=in_effect, device="cpu",
            runtime_version=ort.__version__, rewrites=rewrites, artifact=str(path),
        )

    # -- our exporters + runtimes ----------------------------------------------------
    def _exported(self, spec: BackendSpec, threads: int | None) -> Runner:
        path, rewrites = self._export(spec)
        if spec.device == "cuda":
            return self._exported_onnx_gpu(spec, path, rewrites)
        from staredge.runtimes import load_backend

        # device="cpu", not "auto": a spec without an accelerator is a CPU timing even on a GPU box.
        backend = load_backend(str(path), device="cpu", threads=threads)
        meta = backend.metadata
        x = self.x  # every Backend.forward takes NCHW float32, whatever the artifact's layout
        close = getattr(backend, "close", None)
        return Runner(
            # Backend.forward returns host numpy arrays, so each call is complete when it returns.
            infer=lambda: backend.forward(x),
            threads=threads_in_effect(backend),
            device=getattr(backend, "device", "cpu") or "cpu",
            runtime_version=_runtime_version(spec.runtime),
            rewrites=list(meta.rewrites or rewrites),
            precision=meta.precision or "fp32",
            artifact=str(path),
            close=close if callable(close) else (lambda: None),
        )

    def _exported_onnx_gpu(self, spec: BackendSpec, path: Path, rewrites: list[str]) -> Runner:
        """Our ONNX artifact on exactly the provider chain the spec names, timed with IO binding.

        The runtimes' ONNX backend prefers TensorRT whenever it is installed; a benchmark
        must time CUDA and TensorRT separately, so it builds its own session here.
        """
        ort = _require("onnxruntime", "gpu", "ONNX Runtime on CUDA")
        opts = ort.SessionOptions()
        session = ort.InferenceSession(str(path), opts, providers=ort_providers(spec.accelerator, self.providers))
        return self._ort_runner(session, spec, path, rewrites, ort)

    def _export(self, spec: BackendSpec) -> tuple[Path, list[str]]:
        from staredge.exporters.rewrite import resolve_passes

        rewrite = self.default_rewrite if spec.rewrites is None else (",".join(spec.rewrites) or "none")
        fmt = EXPORTED_RUNTIMES[spec.runtime]
        passes = resolve_passes(_rewrite_arg(rewrite), fmt)  # what "auto" means for this format today
        key = (fmt, tuple(passes))
        if key not in self._artifacts:
            from staredge.exporters import export

            out_dir = self.workdir / f"{fmt}-{'+'.join(passes) or 'none'}"
            cached = self._cached(out_dir)
            if cached is not None:
                self._artifacts[key] = cached
                return cached
            report = export(
                self.model, [fmt], str(out_dir), precision="fp32", rewrite=list(passes),
                force=True, validate=False,
            )
            artifact = report.artifacts[0]
            if artifact.error or not artifact.path:
                raise BenchExportError(f"exporting to {fmt} failed: {artifact.error}")
            path = Path(artifact.path)
            self._remember(out_dir, path, list(artifact.rewrites or passes))
            self._artifacts[key] = (path, list(artifact.rewrites or passes))
        return self._artifacts[key]


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


def _rewrite_arg(rewrite: str) -> Any:
    """The exporter's ``rewrite`` argument: "auto"/"none" as is, else a list of pass names."""
    if rewrite in ("auto", "none"):
        return rewrite
    return [p.strip() for p in rewrite.split(",") if p.strip()]


def apply_rewrites(model: Any, passes: tuple[str, ...]) -> Any:
    """Apply our rewrite passes (by name, in order) to a PyTorch module; returns a new module."""
    from staredge.exporters import rewrite as rewrite_passes

    for name in passes:
        fn = getattr(rewrite_passes, name, None)
        if fn is None:
            raise ConfigError(f"unknown rewrite pass '{name}': use {FUSE} or {POINTWISE}")
        model = fn(model)
    return model


def _runtime_version(runtime: str) -> str | None:
    dists = {
        "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
        "openvino": ("openvino",),
        "tflite": ("ai-edge-litert", "tflite-runtime"),
        "coreml": ("coremltools",),
    }[runtime]
    for d in dists:
        v = _version(d)
        if v:
            return f"{d} {v}"
    return None


def _require(module: str, extra: str, what: str) -> Any:
    from staredge.errors import require

    return require(module, extra, what)
