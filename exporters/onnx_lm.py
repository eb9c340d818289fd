"""ONNX exporter of STAR language models: the decode graph as one ONNX file.

One graph with a dynamic token axis (decode T = 1, prefill any T up to ``prefill_chunk``;
larger T also works, the recurrence's chunk scan is quadratic in T), exported with the
TorchScript exporter (``dynamo=False``), opset 17. By default new K/V (and long-conv
history) rows are written with ``ScatterElements`` (the T new rows only) and attention reads
only the rows ``0 .. position + T - 1`` (a dynamic length), so a decode step costs
O(context), not O(max_context); ``cache_write="blend", attend="buffer"`` gives the older
whole-buffer form (no scatter op, static attention shapes) for consumers that want it.
Attention LIVs that own their K/V are exported as ONNX Runtime's fused
``com.microsoft.GroupQueryAttention`` by default (``fused_attention=False``: standard ops
only); OpenVINO always gets the standard-op graph. Inputs ``input_ids``, ``position``,
``past_X``...; outputs ``logits``, ``present_X``... (``docs/lm-artifacts.md``). The format
table names :func:`export_lm_onnx` as ONNX's ``lm_exporter``; the OpenVINO exporter starts
from :func:`onnx_proto` too.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from staredge.errors import ConfigError, require
from staredge.exporters.lm_quantize import DEFAULT_BLOCK_SIZE
from staredge.exporters.lm_export import LMExportError, as_graph, check_chunk, conversion_error, lm_artifact_metadata
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph

#: The ONNX decode graph's default modes (:data:`staredge.exporters.lm_graph.CACHE_WRITES` /
#: ``ATTENDS``): O(T) cache writes, attention over the filled rows only.
ONNX_CACHE_WRITE, ONNX_ATTEND = "scatter", "prefix"
from staredge.fileio import atomic_write_bytes
from staredge.metadata import METADATA_KEY, ArtifactMetadata

ONNX_OPSET = 17


def onnx_proto(graph: LMDecodeGraph, metadata: ArtifactMetadata, title: str = "ONNX"):
    """The decode graph as an ONNX ModelProto with ``metadata`` embedded (not saved).

    A converter failure raises :class:`~staredge.exporters.lm_export.LMExportError` naming
    the LIVs it was traced to (``title`` is the format named in the message).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    names_in = ["input_ids", "position"] + [s.input_name for s in graph.spec]
    names_out = ["logits"] + [s.output_name for s in graph.spec]
    buffer = io.BytesIO()
    example = graph.example_inputs(tokens=min(3, graph.max_context), position=0)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(graph, example, buffer, opset_version=ONNX_OPSET, dynamo=False,
                              input_names=names_in, output_names=names_out,
                              custom_opsets={"com.microsoft": 1} if graph.fused_attention else None,
                              dynamic_axes={"input_ids": {1: "tokens"}, "logits": {1: "tokens"}},
                              do_constant_folding=True)
        proto = onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise conversion_error(graph, title, exc, model=metadata.model) from exc
    present = [i.name for i in proto.graph.input]
    # The exporter drops inputs the graph does not read (position, in a model without
    # attention or long convolution); the contract keeps every input, so add them back.
    for k, name in enumerate(names_in):
        if name not in present:
            kind = onnx.TensorProto.INT64 if k < 2 else onnx.TensorProto.FLOAT
            shape = ([1, "tokens"] if k == 0 else [1]) if k < 2 else list(graph.spec[k - 2].shape)
            proto.graph.input.insert(k, onnx.helper.make_tensor_value_info(name, kind, shape))
    order = {n: k for k, n in enumerate(names_in)}
    got = [i.name for i in proto.graph.input]
    if got != sorted(got, key=order.__getitem__) or [o.name for o in proto.graph.output] != names_out:
        raise LMExportError(f"ONNX export of {metadata.model} produced I/O {got} / {[o.name for o in proto.graph.output]}, "
                            "not the decode contract's order", format=title)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    proto.producer_name = "staredge"
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
        raise conversion_error(graph, title, exc, model=metadata.model) from exc
    return proto


def onnx_graph(model, max_context: int | None = None, cache_write: str = ONNX_CACHE_WRITE,
               attend: str = ONNX_ATTEND, fused_attention: bool = False) -> LMDecodeGraph:
    """The decode graph of ``model`` (a STAR LM or a graph) in the given modes (ONNX defaults;
    ``fused_attention``: ONNX Runtime's GroupQueryAttention for K/V producers)."""
    return as_graph(model, max_context).with_modes(cache_write, attend, fused_attention)


def export_lm_onnx(model, path: str | os.PathLike, *, max_context: int | None = None,
                   prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None, force: bool = True,
                   cache_write: str = ONNX_CACHE_WRITE, attend: str = ONNX_ATTEND, precision: str = "fp32",
                   quantization: dict | None = None, fused_attention: bool = True) -> Path:
    """Write the decode graph of ``model`` as one ONNX file (dynamic token axis) at ``path``.

    ``cache_write`` / ``attend``: see the module doc (``"blend"`` / ``"buffer"`` for the
    scatter-free, static-attention form). ``fused_attention`` (default): each attention LIV
    that owns its K/V (not differential, more than one head) becomes one ONNX Runtime
    ``com.microsoft.GroupQueryAttention`` (K/V append + attention over the filled rows);
    ``False`` keeps only standard ONNX ops (for other ONNX consumers). ``precision`` ``"int8"`` / ``"int4"``: weight-only
    MatMulNBits quantisation (:func:`quantize_onnx_lm`, options in
    ``quantization``); ``"fp32"`` writes the graph as traced.
    """
    from staredge.exporters.lm_quantize import check_lm_precision, check_quant_options

    precision = check_lm_precision("onnx", precision, cache_write)
    graph = onnx_graph(model, max_context, cache_write, attend, fused_attention)
    chunk = check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "onnx", name, chunk, {"onnx": {
        "opset": ONNX_OPSET, "dynamic_tokens": True, "cache_write": graph.cache_write, "attend": graph.attend,
        "fused_attention": graph.fused_attention}})
    proto = onnx_proto(graph, meta)
    if precision != "fp32":
        proto = quantize_onnx_lm(proto, precision, meta, **check_quant_options("onnx", quantization))
    return atomic_write_bytes(path, proto.SerializeToString(), force=force)


# ------------------------------------------------------------------ weight-only int8 / int4 (MatMulNBits)

#: ai.onnx opset of a quantised ONNX LM graph (what ONNX Runtime's quantiser stamps on it).
QUANT_OPSET = 21


def _onnx_head_nodes(proto) -> list[str]:
    """Names of the MatMul nodes that produce ``logits`` (the LM head)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    node = producer.get("logits")
    out = []
    while node is not None and node.op_type != "MatMul" and node.input:
        node = producer.get(node.input[0])
    if node is not None and node.op_type == "MatMul":
        out.append(node.name)
    return out


#: MatMulNBits' ``accuracy_level`` of StarEdge's int8/int4 ONNX LM artifacts: 4 (int8
#: activations). Measured on the shipped model (docs/low-precision.md): int8 decode 3.4–3.8 →
#: 0.61 ms/token, held-out bits per byte −0.02 % (int8) and +0.07 % (int4) against fp32.
DEFAULT_ACCURACY_LEVEL = 4


def quantize_onnx_lm(proto, precision: str, metadata, *, block_size: int = DEFAULT_BLOCK_SIZE,
                     symmetric: bool = False, embedding: str = "fp32", head: str = "fp32",
                     accuracy_level: int | None = DEFAULT_ACCURACY_LEVEL):
    """``proto`` (an ONNX decode graph) with its weight MatMuls as ``MatMulNBits``.

    ``precision`` ``int8`` / ``int4``; ``block_size`` a power of two >= 16 (weights are
    quantised in blocks of that many input channels); ``embedding="quantized"`` turns the
    embedding Gather into ``GatherBlockQuantized``; ``head="fp32"`` keeps the LM head MatMul
    in fp32. ``accuracy_level`` is MatMulNBits' compute type: 4 (default,
    :data:`DEFAULT_ACCURACY_LEVEL`: int8 activations, as ONNX Runtime GenAI's builder writes
    for CPU; without it ONNX Runtime's 8-bit MatMulNBits took a slow fp32 path, 5× slower
    than the fp32 graph, docs/low-precision.md), 1 or None for fp32 activations. The
    metadata entry is rewritten with ``precision`` and the choices.
    """
    require("onnxruntime", "onnx", "ONNX weight quantisation")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from staredge.metadata import METADATA_KEY

    from staredge.exporters.lm_quantize import check_table_choice, weight_bits

    bits = weight_bits(precision)
    check_table_choice("embedding", embedding)
    check_table_choice("head", head)
    if block_size < 16 or block_size & (block_size - 1):
        raise ConfigError(f"block_size must be a power of two >= 16, got {block_size}")
    if embedding == "quantized" and bits != 4:
        raise ConfigError("ONNX Runtime quantises an embedding Gather (GatherBlockQuantized) to 4 bits only; "
                          "use embedding='fp32' with int8, or precision 'int4'")
    ops = ("MatMul", "Gather") if embedding == "quantized" else ("MatMul",)
    exclude = [] if head == "quantized" else _onnx_head_nodes(proto)
    # only the token embedding's Gather: rotary tables and long-conv taps stay fp32
    exclude += [n.name for n in proto.graph.node if n.op_type == "Gather" and "input_ids" not in n.input]
    # The quantiser stamps the model as opset 21 (int4/int8 initializers need it) without
    # converting the ops; convert first, so ops whose form changed (ReduceMean's axes
    # became an input in opset 18) stay valid.
    onnx = require("onnx", "onnx", "ONNX weight quantisation")
    from onnx import version_converter

    proto = version_converter.convert_version(proto, QUANT_OPSET)
    # Gather (embedding) is quantised along its row axis (1: the hidden dim).
    quant = MatMulNBitsQuantizer(proto, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                 accuracy_level=accuracy_level, nodes_to_exclude=exclude,
                                 op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)))
    quant.process()
    out = quant.model.model
    kinds = {n.op_type for n in out.graph.node}
    if "MatMulNBits" not in kinds:
        raise ConfigError(f"ONNX Runtime's quantiser left no MatMulNBits in {metadata.model}'s decode graph "
                          "(no weight MatMul qualified); nothing was written")
    metadata.precision = precision
    metadata.extra.setdefault("onnx", {})["weights"] = {
        "tool": "onnxruntime.quantization.MatMulNBitsQuantizer", "bits": bits, "block_size": block_size,
        "symmetric": symmetric, "embedding": embedding, "head": head, "accuracy_level": accuracy_level,
        "matmul_nbits": sum(n.op_type == "MatMulNBits" for n in out.graph.node)}
    del out.metadata_props[:]
    entry = out.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    return out


__all__ = ["export_lm_onnx", "quantize_onnx_lm", "DEFAULT_ACCURACY_LEVEL", "onnx_proto", "onnx_graph", "ONNX_OPSET", "ONNX_CACHE_WRITE", "ONNX_ATTEND"]
