"""OpenVINO backend: an IR (``.xml`` + ``.bin``, or a folder holding one) on CPU or GPU.

On CPU the precision hint is **f32** by default: on CPUs with AVX512_BF16 (this one) the
runtime's own default is bf16, which moved StarNet logits by ~4e-3 from PyTorch; bf16
is available on request (``precision="bf16"``) when speed matters more. The latency
performance hint is used (one image at a time, as on an edge device), with explicit
inference threads. ``device="auto"`` picks an OpenVINO GPU device when one is listed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

import os

from staredge.errors import ConfigError, DeviceError, StarEdgeError, require
from staredge.runtimes.base import ArtifactError, Backend, Engine, TensorInfo, check_artifact_file
from staredge.threads import resolve_threads

_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def select_device(device: str, available: list[str]) -> str:
    """The OpenVINO device name for a StarEdge device given ``available`` (core.available_devices)."""
    gpus = [d for d in available if d.startswith("GPU")]
    if device == "cpu":
        return "CPU"
    if device in ("cuda", "gpu"):
        if not gpus:
            raise DeviceError(
                f"device={device!r}: OpenVINO lists no GPU device here (available: {', '.join(available) or 'none'}); "
                f"install the Intel GPU driver, or use device='cpu'"
            )
        return gpus[0]
    return gpus[0] if gpus else "CPU"


def find_ir_xml(path: Path) -> Path:
    """The ``.xml`` of an IR given the file or a folder holding exactly one IR."""
    if path.is_dir():
        xmls = [x for x in sorted(path.glob("*.xml")) if x.with_suffix(".bin").is_file()]
        if len(xmls) != 1:
            raise ArtifactError(
                f"{path} is not an OpenVINO IR folder: it must hold exactly one .xml with its .bin "
                f"(found {len(xmls)}); point at the .xml file"
            )
        return xmls[0]
    if not path.with_suffix(".bin").is_file():
        raise ArtifactError(
            f"OpenVINO IR {path} has no weights file {path.with_suffix('.bin').name} beside it; "
            f"copy the .bin together with the .xml"
        )
    return path


_OV_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i64": "int64",
              "i32": "int32", "i8": "int8", "u8": "uint8", "boolean": "bool"}


def precision_hint(precision: Any) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` value for a StarEdge precision name (fp32 default)."""
    hint = _PRECISIONS.get(str(precision if precision is not None else "fp32").lower())
    if hint is None:
        raise DeviceError(f"precision must be one of fp32, bf16, fp16 for OpenVINO, got {precision!r}")
    return hint


class OpenVinoEngine(Engine):
    """The one place an OpenVINO model is read and compiled (image and LM).

    Settings, the same for every task: the device from :func:`select_device`, the LATENCY
    performance hint, ``INFERENCE_PRECISION_HINT`` f32 unless ``precision`` says otherwise
    (OpenVINO's CPU default is bf16 on CPUs that have it, which moves logits by ~1e-2), and
    on the CPU ``INFERENCE_NUM_THREADS`` = :func:`staredge.threads.resolve_threads`.
    ``batch`` re-shapes a static batch axis before compiling. Capabilities: named feeds,
    and for a stateful IR (variables) ``stateful`` and ``reset`` (``request.reset_state()``).
    Requests: :meth:`request` is one per calling thread (images), :meth:`new_request` one
    per stream (LM state lives in the request).
    """

    runtime = "openvino"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None, *,
                 precision: Any = "fp32", batch: int | None = None, extra: str = "openvino") -> None:
        ov = require("openvino", extra, "the OpenVINO backend")
        self.path = Path(path)
        check_artifact_file(self.path, "OpenVINO")
        xml = find_ir_xml(self.path)
        check_artifact_file(xml, "OpenVINO")
        check_artifact_file(xml.with_suffix(".bin"), "OpenVINO")
        self.xml = xml
        self.precision = precision_hint(precision)
        self.threads = resolve_threads(threads)
        core = ov.Core()
        self.ov_device = select_device(device, list(core.available_devices))
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # OpenVINO raises RuntimeError with C++ traces for bad files
            raise ArtifactError(
                f"OpenVINO cannot read {xml}: it is truncated, corrupt or not an IR "
                f"({_ov_message(exc)}). Re-export it with `staredge export`"
            ) from exc
        shape = model.inputs[0].get_partial_shape()
        self.dynamic_batch = bool(len(shape) and shape[0].is_dynamic)
        if batch is not None and len(shape) and not self.dynamic_batch and shape[0].get_length() != batch:
            try:
                model.reshape({model.inputs[0]: ov.PartialShape([batch, *list(shape)[1:]])})
            except Exception as exc:
                raise ArtifactError(f"OpenVINO cannot re-shape {xml} for batch {batch}: {_ov_message(exc)}") from exc
        self._variables: dict[str, TensorInfo] = {}
        for var in (model.get_variables() if hasattr(model, "get_variables") else []):
            info = var.get_info()
            shape = info.data_shape
            dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else None for d in shape)
            self._variables[info.variable_id] = TensorInfo(info.variable_id, dims,
                                                           _OV_DTYPES.get(info.data_type.get_type_name()))
        self.variables = list(self._variables)
        self.capabilities = frozenset({"named_feeds"} | ({"stateful", "reset"} if self.variables else set()))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if self.ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self.compiled = core.compile_model(model, self.ov_device, config)
        except Exception as exc:
            raise ArtifactError(f"OpenVINO cannot compile {xml} for {self.ov_device}: {_ov_message(exc)}") from exc
        self.device = "cpu" if self.ov_device == "CPU" else "gpu"
        self._local = threading.local()

    def new_request(self) -> Any:
        """A new infer request (its own state for a stateful IR)."""
        return self.compiled.create_infer_request()

    def request(self) -> Any:
        """This thread's infer request (requests are not thread-safe; the compiled model is)."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.new_request()
        return req

    def infer(self, request: Any, feeds: Any) -> Any:
        """``request.infer(feeds)`` with runtime failures as InferenceError."""
        try:
            return request.infer(feeds)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with C++ traces
            raise self.run_failed(exc) from exc

    def run_feeds(self, feeds: dict[str, Any], signature: str | None = None) -> dict[str, np.ndarray]:
        """Every output of one call on this thread's request, by name (a stateful IR keeps its
        variables in that request between calls)."""
        req = self.request()
        self.infer(req, feeds)
        return {port.get_any_name(): np.array(req.get_tensor(port).data, copy=True) for port in self.compiled.outputs}

    def run_failed(self, exc: BaseException) -> StarEdgeError:
        from staredge.errors import InferenceError

        return InferenceError(f"openvino failed running {self.xml}: {_ov_message(exc)}")

    @staticmethod
    def _info(port: Any) -> TensorInfo:
        shape = port.get_partial_shape()
        dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else None for d in shape)
        names = port.get_names()
        name = port.get_any_name() if names else ""
        return TensorInfo(name, dims, _OV_DTYPES.get(port.get_element_type().get_type_name()))

    def inputs(self) -> list[TensorInfo]:
        """The compiled model's inputs (dynamic dimensions as None)."""
        return [self._info(p) for p in self.compiled.inputs]

    def outputs(self) -> list[TensorInfo]:
        """The compiled model's outputs."""
        return [self._info(p) for p in self.compiled.outputs]

    def variable_infos(self) -> dict[str, TensorInfo]:
        """Variables of a stateful IR (the LM state), by variable id."""
        return dict(self._variables)

    def threads_in_effect(self) -> int | None:
        """``INFERENCE_NUM_THREADS`` of the compiled model (None off the CPU)."""
        if self.ov_device != "CPU":
            return None
        try:
            return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        except Exception:  # noqa: BLE001 - a plugin without the property
            return self.threads

    def op_histogram(self) -> dict[str, int]:
        """Layer types of the compiled (runtime) model, i.e. what the plugin executes."""
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            value = info["layerType"] if "layerType" in info else None
            kind = str(getattr(value, "value", value)) if value is not None else op.get_type_name()
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class OpenVinoBackend(Backend):
    """An OpenVINO IR.

    Options: ``precision`` ("fp32" default, "bf16" or "fp16": the inference precision hint;
    the artifact's weights stay as exported); ``batch`` re-shapes an IR with a static batch
    axis for that batch size before compiling. The compiled model is shared; each thread gets
    its own infer request (requests are not thread-safe, the compiled model is), so several
    threads run without a lock.
    """

    name = "openvino"
    thread_safe = True
    OPTIONS = ("precision",)

    def load(self) -> None:
        assert self.path is not None
        self.engine = OpenVinoEngine(self.path, self.requested_device, self.threads, extra=self.spec().extra,
                                     precision=self.options.get("precision", "fp32"), batch=self.options.get("batch"))
        self._metadata = self.read_artifact_metadata(self.engine.xml)
        self._dynamic_batch = self.engine.dynamic_batch
        self.compiled = self.engine.compiled
        self.ov_device = self.engine.ov_device
        self.precision = self.engine.precision
        self.device = self.engine.device

    def graph_input_shape(self) -> tuple[int | None, ...]:
        """The compiled IR's input shape (dynamic dimensions as None)."""
        shape = self.compiled.inputs[0].get_partial_shape()
        return tuple(d.get_length() if d.is_static else None for d in shape)

    @property
    def supports_batch(self) -> bool:
        """True when the IR's batch dimension is dynamic."""
        return bool(self._dynamic_batch or self.metadata.dynamic_batch)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        req = self.engine.request()
        self.engine.infer(req, {0: x})
        # copy: the request reuses its output buffers on the next call
        return [np.array(req.get_output_tensor(i).data, copy=True) for i in range(len(self.compiled.outputs))]

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus the OpenVINO device and precision hint."""
        d = super().describe()
        d.update(ov_device=self.ov_device, precision_hint=self.precision)
        return d


def _ov_message(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (its first lines are C++ source locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return (lines[0] if lines else type(exc).__name__)[:300]
