"""ONNX Runtime backend: CPU with explicit intra-op threads; CUDA / TensorRT when present.

Provider choice is a pure function (:func:`select_providers`) of the requested device and
the providers the installed onnxruntime offers, so it is unit-tested without a GPU. On a
GPU the TensorRT provider keeps its engine cache on disk (building an engine takes
minutes; the cache makes the second start fast) and inputs/outputs go through IO binding.
The GPU paths are written to ONNX Runtime's documented API but have not been run here
(no GPU on the development machine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, DeviceError, require
from staredge.runtimes.base import ArtifactError, Backend, Engine, TensorInfo, check_artifact_file
from staredge.threads import resolve_threads

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def default_engine_cache_dir() -> Path:
    """Where TensorRT engines are cached (``$STAREDGE_CACHE`` or ``~/.cache/staredge``)."""
    root = os.environ.get("STAREDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "staredge")
    return Path(root) / "tensorrt"


#: The exact provider chain for each accelerator a caller can name (CPU is always last,
#: so ONNX Runtime can place nodes the accelerator lacks there).
PROVIDER_CHAINS = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}


def select_providers(
    device: str,
    available: list[str],
    engine_cache_dir: str | os.PathLike | None = None,
    fp16: bool = False,
    device_id: int = 0,
    accelerator: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Execution providers (with options) for ``device``, most preferred first.

    The one place provider chains are chosen (the Predictor, validation and the benchmark
    all come here). Without ``accelerator``: ``auto`` prefers TensorRT, then CUDA, then
    CPU, using what ``available`` lists; ``cuda``/``gpu`` require at least the CUDA
    provider; ``cpu`` uses only the CPU. ``accelerator`` ("cpu", "cuda", "tensorrt") asks
    for exactly that chain (a benchmark times CUDA and TensorRT separately), and every
    provider in it must be available. Raises :class:`DeviceError` naming what to install.
    """
    if accelerator is not None:
        if accelerator not in PROVIDER_CHAINS:
            raise ConfigError(
                f"unknown ONNX Runtime accelerator '{accelerator}': use one of {', '.join(PROVIDER_CHAINS)}"
            )
        chain = list(PROVIDER_CHAINS[accelerator])
        if device == "cpu" and accelerator != "cpu":
            raise DeviceError(f"accelerator '{accelerator}' runs on a GPU, but device='cpu' was asked for")
    else:
        has_cuda = CUDA in available
        has_trt = TENSORRT in available and has_cuda  # TensorRT EP falls back on CUDA for some nodes
        if device in ("cuda", "gpu") and not has_cuda:
            chain = [CUDA, CPU]  # reported as missing below
        elif device == "cpu":
            chain = [CPU]
        else:
            chain = ([TENSORRT] if has_trt else []) + ([CUDA] if has_cuda else []) + [CPU]
    missing = [p for p in chain if p != CPU and p not in available]
    if missing:
        raise DeviceError(
            f"device={device!r} needs onnxruntime's {', '.join(missing)}, but this onnxruntime offers "
            f"{', '.join(available) or 'none'}. Install the GPU build (pip install -c constraints.txt "
            f"'staredge[gpu]', which replaces onnxruntime) on a machine with an NVIDIA GPU, or use device='cpu'"
        )
    providers: list[tuple[str, dict[str, Any]]] = []
    for name in chain:
        if name == TENSORRT:
            cache = Path(engine_cache_dir) if engine_cache_dir is not None else default_engine_cache_dir()
            providers.append(
                (
                    TENSORRT,
                    {
                        "device_id": device_id,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(cache),
                        "trt_fp16_enable": bool(fp16),
                    },
                )
            )
        elif name == CUDA:
            providers.append((CUDA, {"device_id": device_id}))
        else:
            providers.append((CPU, {}))
    return providers


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
GRAPH_OPTIMIZATIONS = ("all", "extended", "basic", "disable")


class OnnxRuntimeEngine(Engine):
    """The one place an ONNX Runtime ``InferenceSession`` is constructed (image and LM).

    Settings, the same for every task: intra-op threads = :func:`staredge.threads.resolve_threads`
    (``None``: the physical cores this process may use), one inter-op thread, sequential
    execution, ``graph_optimization`` ("all" default), providers from
    :func:`select_providers` (``tensorrt=False`` drops TensorRT, for graphs with a dynamic
    token axis where every prompt length would build an engine), ``profile_prefix`` turns
    ONNX Runtime's profiler on. Capabilities: named feeds and IO binding.
    """

    runtime = "onnxruntime"
    capabilities = frozenset({"named_feeds", "io_binding"})

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None, *,
                 accelerator: str | None = None, engine_cache_dir: Any = None, device_id: int = 0,
                 graph_optimization: str = "all", profile_prefix: str | None = None, tensorrt: bool = True,
                 extra: str = "onnx") -> None:
        ort = require("onnxruntime", extra, "the ONNX Runtime backend")
        self.ort = ort
        self.path = Path(path)
        check_artifact_file(self.path, "ONNX")
        if self.path.is_dir():
            raise ArtifactError(f"{self.path} is a directory; point at the .onnx file")
        self.threads = resolve_threads(threads)
        so = ort.SessionOptions()
        # Explicit threads: ONNX Runtime's own default (one per core) is not reported back,
        # and several models or processes sharing a machine then oversubscribe it.
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise ConfigError(
                f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATIONS)}, got {graph_optimization!r}")
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[graph_optimization]
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = str(profile_prefix)
        self.device_id = int(device_id)
        providers = select_providers(device, ort.get_available_providers(), engine_cache_dir=engine_cache_dir,
                                     fp16=False, device_id=self.device_id, accelerator=accelerator)
        if not tensorrt:
            providers = [p for p in providers if p[0] != TENSORRT]
        if any(p == TENSORRT for p, _ in providers):
            Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        self.providers = providers
        try:
            names = [p for p, _ in providers]
            options = [o for _, o in providers]
            if all(not o or o == {"device_id": 0} for o in options):  # every provider on its defaults
                self.session = ort.InferenceSession(str(self.path), so, providers=names)
            else:
                self.session = ort.InferenceSession(str(self.path), so, providers=names, provider_options=options)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ArtifactError(
                f"ONNX Runtime cannot load {self.path}: it is truncated, corrupt or not an ONNX model "
                f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}). Re-export it with `staredge export`"
            ) from exc
        used = self.session.get_providers()
        self.device = "cuda" if (CUDA in used or TENSORRT in used) else "cpu"

    def run(self, outputs: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
        """``session.run`` with runtime failures as :class:`~staredge.errors.InferenceError`."""
        try:
            return self.session.run(outputs, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise self.run_failed(exc) from exc

    def run_feeds(self, feeds: dict[str, Any], signature: str | None = None) -> dict[str, np.ndarray]:
        """Every output of one ``session.run`` by name."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.run(names, feeds)))

    def io_binding(self) -> Any:
        """A new IO binding of the session (one per stream or timing loop: a binding is not thread-safe)."""
        return self.session.io_binding()

    def run_with_iobinding(self, binding: Any) -> None:
        """Run a prepared binding, with runtime failures as InferenceError."""
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # noqa: BLE001
            raise self.run_failed(exc) from exc

    def ortvalue(self, array: np.ndarray, where: str = "cpu") -> Any:
        """An ``OrtValue`` over ``array`` (CPU: shares its memory) or a copy on the device."""
        if where == "cpu":
            return self.ort.OrtValue.ortvalue_from_numpy(array)
        return self.ort.OrtValue.ortvalue_from_numpy(array, where, self.device_id)

    @staticmethod
    def _info(arg: Any) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape) if arg.shape is not None else None
        return TensorInfo(arg.name, shape, _ORT_DTYPES.get(arg.type))

    def inputs(self) -> list[TensorInfo]:
        """The session's inputs (symbolic axes as None; empty for a session that cannot list them)."""
        listed = getattr(self.session, "get_inputs", None)
        return [self._info(a) for a in listed()] if callable(listed) else []

    def outputs(self) -> list[TensorInfo]:
        """The session's outputs (symbolic axes as None)."""
        listed = getattr(self.session, "get_outputs", None)
        return [self._info(a) for a in listed()] if callable(listed) else []

    def threads_in_effect(self) -> int:
        """Intra-op threads, as the session reports its options."""
        options = getattr(self.session, "get_session_options", None)
        return int((options().intra_op_num_threads if callable(options) else 0) or self.threads)

    def op_histogram(self) -> dict[str, int]:
        """Op types of the ONNX file's graph (needs the ``onnx`` package: ONNX Runtime does not
        list the nodes of a loaded session)."""
        onnx = require("onnx", "onnx", "counting the ops of an ONNX model")
        model = onnx.load(str(self.path), load_external_data=False)
        counts: dict[str, int] = {}
        for node in model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def describe(self) -> dict[str, Any]:
        """Providers in use, threads in effect."""
        return {"providers": self.session.get_providers(), "threads": self.threads_in_effect()}


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` file on ONNX Runtime.

    Options: ``accelerator`` (exactly "cpu", "cuda" or "tensorrt"; default: chosen from
    ``device``), ``engine_cache_dir`` (TensorRT), ``device_id`` (GPU index),
    ``graph_optimization`` ("all" default, "extended", "basic", "disable"), ``io_binding``
    (True: :meth:`prepare` binds input and outputs once, on the device for CUDA;
    ``forward`` on a GPU always binds), ``profile_prefix`` (ONNX Runtime's profiler on, its
    JSON written at ``self.session.end_profiling()`` under this prefix). ``InferenceSession.run`` is documented as safe to
    call from several threads, so no lock is needed.
    """

    name = "onnxruntime"
    thread_safe = True
    OPTIONS = ("accelerator", "engine_cache_dir", "device_id", "graph_optimization", "io_binding", "profile_prefix")
    GRAPH_OPTIMIZATIONS = GRAPH_OPTIMIZATIONS

    def load(self) -> None:
        assert self.path is not None
        self.engine = OnnxRuntimeEngine(
            self.path, self.requested_device, self.threads, extra=self.spec().extra,
            accelerator=self.options.get("accelerator"), engine_cache_dir=self.options.get("engine_cache_dir"),
            device_id=int(self.options.get("device_id", 0)),
            graph_optimization=self.options.get("graph_optimization", "all"),
            profile_prefix=self.options.get("profile_prefix"))
        self.session = self.engine.session
        self.providers = self.engine.providers
        self.device = self.engine.device
        self._metadata = self.read_artifact_metadata(self.path)
        self.input_name = self.session.get_inputs()[0].name  # more than one input: check_graph_input refuses it
        self.output_names = [o.name for o in self.session.get_outputs()]

    def graph_input_shape(self) -> tuple[int | None, ...]:
        """The ONNX graph's declared input shape (symbolic axes as None)."""
        return tuple(d if isinstance(d, int) and d > 0 else None for d in self.session.get_inputs()[0].shape)

    @property
    def supports_batch(self) -> bool:
        """True when the graph's batch axis is symbolic (what the file says, not only the metadata)."""
        dim0 = self.session.get_inputs()[0].shape[0]
        return not isinstance(dim0, int) or bool(self.metadata.dynamic_batch)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.device == "cuda":
            return self._run_io_binding(x)
        return self.engine.run(self.output_names, {self.input_name: x})

    def prepare(self, x: np.ndarray):
        """A callable running ``x`` once; with ``io_binding`` (or on a GPU) input and outputs
        are bound once and stay on the device, and the callable's ``sync()`` waits for them."""
        x = self.check_input(x)
        if not (self.options.get("io_binding") or self.device == "cuda"):
            return lambda: self.engine.run(self.output_names, {self.input_name: x})
        where = "cuda" if self.device == "cuda" else "cpu"
        device_id = int(self.options.get("device_id", 0))
        binding = self.engine.io_binding()
        x_bound = self.engine.ortvalue(x, where)
        binding.bind_ortvalue_input(self.input_name, x_bound)
        for name in self.output_names:
            binding.bind_output(name, where, device_id)

        def run() -> None:
            self.engine.run_with_iobinding(binding)

        run.sync = binding.synchronize_outputs  # type: ignore[attr-defined]
        run.outputs = lambda: [v.numpy() for v in binding.get_outputs()]  # type: ignore[attr-defined]
        run.keep = x_bound  # type: ignore[attr-defined]  # the bound input must outlive the binding
        return run

    def _run_io_binding(self, x: np.ndarray) -> list[np.ndarray]:
        """GPU path: copy the input to the device once and let outputs stay there until read.

        A fresh binding per call keeps this safe across threads (a binding is not).
        """
        device_id = int(self.options.get("device_id", 0))
        binding = self.engine.io_binding()
        x_dev = self.engine.ortvalue(x, "cuda")
        binding.bind_ortvalue_input(self.input_name, x_dev)
        for name in self.output_names:
            binding.bind_output(name, "cuda", device_id)
        self.engine.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus the providers in use."""
        d = super().describe()
        d["providers"] = self.session.get_providers()
        return d
