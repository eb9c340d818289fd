"""TFLite exporter via litert-torch (no TensorFlow needed), metadata inside the flatbuffer.

litert-torch converts through ``torch.export`` and keeps the PyTorch signature (NCHW
input). The StarEdge metadata JSON is added afterwards as a ``Model.metadata`` entry named
``staredge`` pointing at a new buffer: the standard TFLite slot for named metadata, which
interpreters ignore and :func:`staredge.metadata.read_metadata` reads back.
``precision="fp16"`` stores constant float tensors as fp16 followed by ``DEQUANTIZE``
(the layout TensorFlow's own fp16 post-training option produces; compute stays fp32 on CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from staredge.errors import ConfigError, StarEdgeError, require
from staredge.metadata import METADATA_KEY, ArtifactMetadata


def export_tflite(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: ArtifactMetadata,
    precision: str = "fp32",
    *,
    example_input: torch.Tensor,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``model`` as a ``.tflite`` flatbuffer at ``path`` with ``metadata`` inside.

    The batch size is fixed by ``example_input`` (``dynamic_batch`` is refused: LiteRT
    resizes inputs at run time instead, and validation checks that it works).
    """
    if dynamic_batch:
        raise ConfigError(
            "TFLite artifacts have a static batch; leave dynamic_batch off (the LiteRT interpreter "
            "can still resize the input at run time)"
        )
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"TFLite export supports precision fp32 or fp16, not {precision!r}")
    litert_torch = require("litert_torch", "tflite", "TFLite export")
    # litert-torch prints its own progress lines; the caller shows one progress display.
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with torch.no_grad():
            edge_model = litert_torch.convert(model.eval(), (example_input,))
        flatbuffer = edge_model.model_content()
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous
    data = add_metadata(bytes(flatbuffer), METADATA_KEY, metadata.to_json().encode("utf-8"), fp16=precision == "fp16")
    path = Path(path)
    path.write_bytes(data)
    return path


def _schema():
    return require("ai_edge_litert.schema_py_generated", "tflite", "TFLite metadata writing")


def add_metadata(flatbuffer: bytes, name: str, payload: bytes, fp16: bool = False) -> bytes:
    """A copy of ``flatbuffer`` with a metadata entry ``name`` holding ``payload``.

    An existing entry of the same name is replaced. With ``fp16`` the float32 constant
    tensors are also stored as fp16 behind ``DEQUANTIZE`` ops.
    """
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    if fp16:
        _weights_to_fp16(model, schema)
    model.buffers = model.buffers or []
    model.metadata = [m for m in (model.metadata or []) if _name(m) != name]
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(meta) -> str:
    n = meta.name
    return n.decode("utf-8") if isinstance(n, bytes) else str(n)


def _weights_to_fp16(model, schema) -> None:
    """Store float32 constant tensors (weights, biases) as fp16 + DEQUANTIZE to float32."""
    float32, float16 = schema.TensorType.FLOAT32, schema.TensorType.FLOAT16
    dequant = schema.BuiltinOperator.DEQUANTIZE
    codes = model.operatorCodes or []
    op_index = next((i for i, c in enumerate(codes) if max(c.builtinCode, c.deprecatedBuiltinCode) == dequant), None)
    if op_index is None:
        code = schema.OperatorCodeT()
        code.builtinCode = dequant
        code.deprecatedBuiltinCode = min(dequant, 127)
        code.version = 2  # DEQUANTIZE from fp16 needs op version 2
        codes.append(code)
        model.operatorCodes = codes
        op_index = len(codes) - 1
    for sub in model.subgraphs or []:
        new_ops = []
        for t_index, tensor in enumerate(list(sub.tensors or [])):
            if tensor.type != float32 or not tensor.buffer:
                continue
            buf = model.buffers[tensor.buffer]
            if buf.data is None or len(buf.data) < 64:  # scalars stay as they are
                continue
            values = np.frombuffer(np.asarray(buf.data, dtype=np.uint8).tobytes(), dtype=np.float32)
            half_buf = schema.BufferT()
            half_buf.data = np.frombuffer(values.astype(np.float16).tobytes(), dtype=np.uint8).copy()
            model.buffers.append(half_buf)
            half = schema.TensorT()
            half.shape = tensor.shape
            half.type = float16
            half.buffer = len(model.buffers) - 1
            half.name = (tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)) + "_fp16"
            sub.tensors.append(half)
            # The float32 tensor becomes the DEQUANTIZE output; its old buffer is emptied.
            buf.data = None
            tensor.buffer = 0
            op = schema.OperatorT()
            op.opcodeIndex = op_index
            op.inputs = [len(sub.tensors) - 1]
            op.outputs = [t_index]
            new_ops.append(op)
        if new_ops:
            sub.operators = new_ops + list(sub.operators or [])
    if model.buffers and model.buffers[0].data is not None:  # buffer 0 must stay the empty sentinel
        raise StarEdgeError("unexpected TFLite layout: buffer 0 is not empty")
