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

from staredge.errors import require
from staredge.metadata import ArtifactMetadata
from staredge.runtimes.base import ArtifactError, Backend, DeviceError, check_artifact_file, metadata_from_json

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def default_engine_cache_dir() -> Path:
    """Where TensorRT engines are cached (``$STAREDGE_CACHE`` or ``~/.cache/staredge``)."""
    root = os.environ.get("STAREDGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "staredge")
    return Path(root) / "tensorrt"


def select_providers(
    device: str,
    available: list[str],
    engine_cache_dir: str | os.PathLike | None = None,
    fp16: bool = False,
    device_id: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    """Execution providers (with options) for ``device``, most preferred first.

    ``auto`` prefers TensorRT, then CUDA, then CPU, using what ``available`` lists;
    ``cuda``/``gpu`` require at least the CUDA provider; ``cpu`` uses only the CPU. The CPU
    provider is always last, so ONNX Runtime can place unsupported nodes there.
    """
    has_cuda = CUDA in available
    has_trt = TENSORRT in available and has_cuda  # TensorRT EP falls back on CUDA for some nodes
    if device in ("cuda", "gpu") and not has_cuda:
        raise DeviceError(
            f"device={device!r} needs onnxruntime's CUDAExecutionProvider, but this onnxruntime offers "
            f"{', '.join(available) or 'none'}. Install the GPU build (pip install -c constraints.txt "
            f"'staredge[gpu]', which replaces onnxruntime) on a machine with CUDA, or use device='cpu'"
        )
    providers: list[tuple[str, dict[str, Any]]] = []
    if device != "cpu":
        if has_trt:
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
        if has_cuda:
            providers.append((CUDA, {"device_id": device_id}))
    providers.append((CPU, {}))
    return providers


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` file on ONNX Runtime.

    Options: ``engine_cache_dir`` (TensorRT), ``device_id`` (GPU index), ``graph_optimization``
    ("all" default, "extended", "basic", "disable"). ``InferenceSession.run`` is documented
    as safe to call from several threads, so no lock is needed.
    """

    name = "onnxruntime"
    formats = ("onnx",)
    module = "onnxruntime"
    extra = "onnx"
    thread_safe = True

    def load(self) -> None:
        ort = require("onnxruntime", self.extra, "the ONNX Runtime backend")
        assert self.path is not None
        check_artifact_file(self.path, "ONNX")
        if self.path.is_dir():
            raise ArtifactError(f"{self.path} is a directory; point at the .onnx file")
        so = ort.SessionOptions()
        # Explicit threads: the default (one per core) oversubscribes when several models
        # or processes share a machine, and makes timings wander.
        so.intra_op_num_threads = self.threads or 0
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.options.get("graph_optimization", "all")]
        so.graph_optimization_level = level
        self.providers = select_providers(
            self.requested_device,
            ort.get_available_providers(),
            engine_cache_dir=self.options.get("engine_cache_dir"),
            fp16=False,
            device_id=int(self.options.get("device_id", 0)),
        )
        if any(p == TENSORRT for p, _ in self.providers):
            Path(self.providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                sess_options=so,
                providers=[p for p, _ in self.providers],
                provider_options=[o for _, o in self.providers],
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ArtifactError(
                f"ONNX Runtime cannot load {self.path}: it is truncated, corrupt or not an ONNX model "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). Re-export it with `staredge export`"
            ) from exc
        used = self.session.get_providers()
        self.device = "cuda" if (CUDA in used or TENSORRT in used) else "cpu"
        meta_json = self.session.get_modelmeta().custom_metadata_map.get("staredge")
        self._metadata = metadata_from_json(meta_json, self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def supports_batch(self) -> bool:
        """True when the graph's batch axis is symbolic (what the file says, not only the metadata)."""
        dim0 = self.session.get_inputs()[0].shape[0]
        return not isinstance(dim0, int) or bool(self.metadata.dynamic_batch)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.device == "cuda":
            return self._run_io_binding(x)
        return self.session.run(self.output_names, {self.input_name: x})

    def _run_io_binding(self, x: np.ndarray) -> list[np.ndarray]:
        """GPU path: copy the input to the device once and let outputs stay there until read.

        A fresh binding per call keeps this safe across threads (a binding is not).
        """
        import onnxruntime as ort

        device_id = int(self.options.get("device_id", 0))
        binding = self.session.io_binding()
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_id)
        binding.bind_ortvalue_input(self.input_name, x_dev)
        for name in self.output_names:
            binding.bind_output(name, "cuda", device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus the providers in use."""
        d = super().describe()
        d["providers"] = self.session.get_providers()
        return d


def read_onnx_metadata(path: Path) -> ArtifactMetadata:
    """Metadata of an .onnx file without building a session (used by tests and tools)."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return metadata_from_json(props.get("staredge"), path)
