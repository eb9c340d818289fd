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

from staredge.errors import DeviceError, require
from staredge.runtimes.base import ArtifactError, Backend, check_artifact_file

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
        ov = require("openvino", self.spec().extra, "the OpenVINO backend")
        assert self.path is not None
        check_artifact_file(self.path, "OpenVINO")
        xml = find_ir_xml(self.path)
        check_artifact_file(xml, "OpenVINO")
        check_artifact_file(xml.with_suffix(".bin"), "OpenVINO")
        precision = str(self.options.get("precision", "fp32")).lower()
        if precision not in _PRECISIONS:
            raise DeviceError(f"precision must be one of fp32, bf16, fp16 for OpenVINO, got {precision!r}")
        core = ov.Core()
        ov_device = select_device(self.requested_device, list(core.available_devices))
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # OpenVINO raises RuntimeError with C++ traces for bad files
            raise ArtifactError(
                f"OpenVINO cannot read {xml}: it is truncated, corrupt or not an IR "
                f"({_ov_message(exc)}). Re-export it with `staredge export`"
            ) from exc
        self._metadata = self.read_artifact_metadata(xml)
        shape = model.inputs[0].get_partial_shape()
        self._dynamic_batch = shape[0].is_dynamic
        batch = self.options.get("batch")
        if batch is not None and not self._dynamic_batch and shape[0].get_length() != batch:
            try:
                model.reshape({model.inputs[0]: ov.PartialShape([batch, *list(shape)[1:]])})
            except Exception as exc:
                raise ArtifactError(f"OpenVINO cannot re-shape {xml} for batch {batch}: {_ov_message(exc)}") from exc
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _PRECISIONS[precision],
        }
        if self.threads is not None and ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            self.compiled = core.compile_model(model, ov_device, config)
        except Exception as exc:
            raise ArtifactError(
                f"OpenVINO cannot compile {xml} for {ov_device}: {_ov_message(exc)}"
            ) from exc
        self.ov_device = ov_device
        self.precision = _PRECISIONS[precision]
        self.device = "cpu" if ov_device == "CPU" else "gpu"
        self._local = threading.local()

    def graph_input_shape(self) -> tuple[int | None, ...]:
        """The compiled IR's input shape (dynamic dimensions as None)."""
        shape = self.compiled.inputs[0].get_partial_shape()
        return tuple(d.get_length() if d.is_static else None for d in shape)

    @property
    def supports_batch(self) -> bool:
        """True when the IR's batch dimension is dynamic."""
        return bool(self._dynamic_batch or self.metadata.dynamic_batch)

    def _request(self):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        req = self._request()
        req.infer({0: x})
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
