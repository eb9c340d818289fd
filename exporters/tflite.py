"""TFLite exporter via litert-torch (no TensorFlow needed), metadata inside the flatbuffer.

litert-torch converts through ``torch.export`` and keeps the PyTorch signature (NCHW
input). The StarEdge metadata JSON is added afterwards as a ``Model.metadata`` entry named
``staredge`` pointing at a new buffer: the standard TFLite slot for named metadata, which
interpreters ignore and :func:`staredge.metadata.read_metadata` reads back.
``precision="fp16"`` stores constant float tensors as fp16 followed by ``DEQUANTIZE``
(the layout TensorFlow's own fp16 post-training option produces; compute stays fp32 on CPU).
``precision="int8"`` is full-integer static quantisation by ai-edge-quantizer (Google's
quantiser for LiteRT models, recipe ``static_wi8_ai8``: int8 weights per channel and int8
activations calibrated on real inputs) applied to the converted fp32 flatbuffer. It was
chosen over litert-torch 0.10's own PT2E path because it works on the flatbuffer
litert-torch already produces (one conversion, the same graph as fp32) rather than on a
second ``torch.export`` capture through torch's PT2E quantisation APIs.
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
    calibration: np.ndarray | None = None,
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
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"TFLite export supports precision fp32, fp16 or int8, not {precision!r}")
    if precision == "int8" and calibration is None:
        raise ConfigError("TFLite int8 export needs calibration inputs (calibration=...)")
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
    flatbuffer = bytes(flatbuffer)
    if precision == "int8":
        flatbuffer = quantize_static_int8(flatbuffer, calibration, batch=int(example_input.shape[0]))
    data = add_metadata(flatbuffer, METADATA_KEY, metadata.to_json().encode("utf-8"), fp16=precision == "fp16")
    path = Path(path)
    path.write_bytes(data)
    return path


def quantize_static_int8(flatbuffer: bytes, calibration: np.ndarray, batch: int = 1) -> bytes:
    """The fp32 ``flatbuffer`` quantised by ai-edge-quantizer (recipe ``static_wi8_ai8``).

    Calibration runs the float model on every sample of ``calibration`` (in arrays of the
    model's static ``batch``) through the model's one signature.
    """
    aeq = require("ai_edge_quantizer", "tflite", "TFLite int8 quantisation")
    from staredge.exporters.quantize import batches
    from staredge.runtimes.litert import signature_inputs

    signatures = signature_inputs(flatbuffer)
    if len(signatures) != 1:
        raise StarEdgeError(f"expected one signature in the converted TFLite model, found {sorted(signatures)}")
    key, inputs = next(iter(signatures.items()))
    if len(inputs) != 1:
        raise StarEdgeError(f"expected one input in signature {key}, found {inputs}")
    input_name = inputs[0]
    data = {key: [{input_name: x} for x in batches(np.asarray(calibration, dtype=np.float32), batch)]}
    quantizer = aeq.Quantizer(bytearray(flatbuffer), _float_io_int8_recipe(aeq))
    # calibrate() draws its own tqdm bar on stderr (no option turns it off); the CLI's
    # converter capture (staredge.quiet) sends it to the log
    result = quantizer.quantize(quantizer.calibrate(data, num_threads=os.cpu_count() or 1),
                                enable_progress_report=False, enable_progress_bar=False)
    return bytes(result.quantized_model)


def _float_io_int8_recipe(aeq):
    """``static_wi8_ai8`` with the graph input and output left in float32 (the quantiser
    then adds QUANTIZE / DEQUANTIZE at the edges), so the artifact takes and returns the
    same float32 tensors as every other StarEdge artifact."""
    manager = aeq.recipe_manager.RecipeManager()
    manager.add_static_config(
        regex=".*", operation_name=aeq.qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8, weight_num_bits=8,
        algorithm_key=aeq.algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT,
    )
    for io in (aeq.qtyping.TFLOperationName.INPUT, aeq.qtyping.TFLOperationName.OUTPUT):
        manager.add_quantization_config(".*", io, algorithm_key=aeq.algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


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
    _inline_offset_buffers(model, flatbuffer)
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


def write_tflite_text(path, text: str) -> None:
    """Replace the ``staredge`` metadata entry of a ``.tflite`` file with ``text`` (the format
    table's metadata writer for TFLite; written atomically)."""
    from staredge.fileio import atomic_write_bytes

    atomic_write_bytes(path, add_metadata(Path(path).read_bytes(), METADATA_KEY, text.encode("utf-8")), force=True)


def _inline_offset_buffers(model, flatbuffer: bytes) -> None:
    """Move buffers stored after the flatbuffer (``offset``/``size``, as ai-edge-quantizer
    writes them) into the flatbuffer itself, so that re-packing the model keeps them."""
    for buf in model.buffers or []:
        offset, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
        if offset > 1 and size > 0:
            buf.data = np.frombuffer(flatbuffer[offset : offset + size], dtype=np.uint8).copy()
            buf.offset = 0
            buf.size = 0


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
