"""ONNX exporter: opset 17 via the TorchScript exporter, weights inside the file.

``torch.onnx.export`` defaults to the dynamo exporter in torch 2.13, which needs
``onnxscript`` (not a dependency); the TorchScript path (``dynamo=False``) exports every
zoo model and matches PyTorch in ONNX Runtime (per-model differences: docs/exports.md).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

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
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` with ``metadata`` in ``metadata_props``.

    ``precision="fp16"`` stores float weights as fp16 followed by a ``Cast`` to fp32 (half
    the file, compute stays fp32 so that every ONNX Runtime CPU kernel still applies).
    ``dynamic_batch`` makes the first input/output axis symbolic (``batch``).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"ONNX export supports precision fp32 or fp16, not {precision!r}")
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
