"""ONNX exporter: opset 17 via the TorchScript exporter, weights inside the file.

``torch.onnx.export`` defaults to the dynamo exporter in torch 2.13, which needs
``onnxscript`` (not a dependency); the TorchScript path (``dynamo=False``) exports every
zoo model and matches PyTorch in ONNX Runtime (per-model differences: docs/exports.md).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from staredge.errors import ConfigError, require
from staredge.metadata import METADATA_KEY, ArtifactMetadata

OPSET = 17


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: ArtifactMetadata,
    precision: str = "fp32",
    *,
    example_input: torch.Tensor,
    dynamic_batch: bool = False,
    calibration: np.ndarray | None = None,
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` with ``metadata`` in ``metadata_props``.

    ``precision="fp16"`` stores float weights as fp16 followed by a ``Cast`` to fp32 (half
    the file, compute stays fp32 so that every ONNX Runtime CPU kernel still applies).
    ``precision="int8"`` is ONNX Runtime static quantisation (:func:`quantize_qdq`): QDQ
    format, per-channel symmetric int8 weights, uint8 activations with ranges from
    ``calibration`` (an (N, C, H, W) array of prepared inputs, required).
    ``dynamic_batch`` makes the first input/output axis symbolic (``batch``).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"ONNX export supports precision fp32, fp16 or int8, not {precision!r}")
    if precision == "int8" and calibration is None:
        raise ConfigError("ONNX int8 export needs calibration inputs (calibration=...)")
    input_name = metadata.input_name
    output_names = list(metadata.output_names)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in output_names}}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example_input,),
            buffer,
            opset_version=OPSET,
            dynamo=False,
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if precision == "fp16":
        _store_weights_fp16(proto)
    if precision == "int8":
        proto = quantize_qdq(proto, calibration, input_name)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    metadata.extra.setdefault("opset", OPSET)
    entry.value = metadata.to_json()
    proto.producer_name = "staredge"
    onnx.checker.check_model(proto)
    path = Path(path)
    # save_model with a path keeps small models in one file; the zoo is far below 2 GB.
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path


class _CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over an array, one sample per call."""

    def __init__(self, input_name: str, calibration: np.ndarray) -> None:
        self._items = iter([{input_name: calibration[i : i + 1]} for i in range(len(calibration))])

    def get_next(self):
        return next(self._items, None)


def quantize_qdq(proto, calibration: np.ndarray, input_name: str):
    """The fp32 model ``proto`` quantised by ONNX Runtime's static quantiser (QDQ format).

    Weights: int8, symmetric, per output channel. Activations: uint8 with min/max ranges
    collected on ``calibration``. Runs ``quant_pre_process`` (shape inference and graph
    simplification) first, as ONNX Runtime recommends. Returns a new ``ModelProto``.
    """
    import tempfile

    import onnx

    quantization = require("onnxruntime.quantization", "onnx", "ONNX int8 quantisation")
    with tempfile.TemporaryDirectory(prefix="staredge-qdq-") as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save_model(proto, src)
        try:
            quantization.quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the plain graph instead
            pre = src
        quantization.quantize_static(
            pre, dst, _CalibrationReader(input_name, np.asarray(calibration, dtype=np.float32)),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        return onnx.load(dst)


def _store_weights_fp16(proto) -> None:
    """Turn every float32 initializer into fp16 storage plus a Cast back to float32."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 16:  # scalars/shapes: not worth a Cast node
            continue
        half_name = f"{init.name}__fp16"
        half = numpy_helper.from_array(arr.astype(np.float16), half_name)
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}__cast"))
    # Casts must precede their consumers in the node list (ONNX graphs are topologically sorted).
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
