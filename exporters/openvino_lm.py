"""OpenVINO exporter of STAR language models: a stateful IR (``.xml`` + ``.bin``).

The ONNX decode graph (:func:`staredge.exporters.onnx_lm.onnx_proto`) is read by OpenVINO,
then every ``past_X`` / ``present_X`` pair becomes a variable named ``past_X``: the model's
inputs are ``input_ids`` and ``position`` only, the state lives in the infer request
(``reset_state()`` starts a stream), and the runtime compiles it with
``INFERENCE_PRECISION_HINT = f32``. The graph is the ONNX one's default form: new K/V rows
written by ``ScatterElementsUpdate`` on the variable (T rows, not the whole buffer) and
attention over the filled rows only. Weights are fp32, or NNCF-compressed int8 / int4
(``precision``; :func:`compress_openvino_lm`). The format table names :func:`export_lm_openvino` as
OpenVINO's ``lm_exporter``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, require
from staredge.exporters.lm_export import LMExportError, as_graph, check_chunk, conversion_error, lm_artifact_metadata
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph
from staredge.exporters.lm_quantize import DEFAULT_BLOCK_SIZE
from staredge.exporters.onnx_lm import onnx_graph, onnx_proto
from staredge.metadata import METADATA_KEY

TITLE = "OpenVINO"

#: OpenVINO's default cache write / attention form: the scatter-free blend over the whole
#: buffer. Measured side by side on the shipped model (context 1024, 64-token prompt, 256
#: greedy tokens, 1 thread, 2-vCPU EPYC, load ~1, 5 interleaved rounds): blend 0.69-1.44
#: ms/token vs ScatterElements + filled-prefix attention 1.06-1.98, blend faster in every
#: round (OpenVINO's CPU plugin runs the scatter and the dynamic prefix slice as reference
#: ops with shape inference per call). ``cache_write="scatter", attend="prefix"`` stays available.
OPENVINO_CACHE_WRITE, OPENVINO_ATTEND = "blend", "buffer"


def export_lm_openvino(model, path: str | os.PathLike, *, max_context: int | None = None,
                       prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None,
                       cache_write: str = OPENVINO_CACHE_WRITE, attend: str = OPENVINO_ATTEND,
                       precision: str = "fp32", quantization: dict | None = None) -> Path:
    """Write a stateful OpenVINO IR (``.xml`` + ``.bin``): inputs ``input_ids`` and ``position``.

    Every ``past_X`` / ``present_X`` pair of the decode graph becomes an OpenVINO variable
    named ``past_X`` (zeros after ``reset_state()``). ``precision`` ``"int8"`` / ``"int4"``:
    NNCF weight compression (options in ``quantization``: ``group_size``, ``embedding``,
    ``head``, ``symmetric``); ``cache_write`` / ``attend`` as for ONNX (default here: the
    blend form, :data:`OPENVINO_CACHE_WRITE`).
    """
    from staredge.exporters.lm_quantize import check_lm_precision, check_quant_options

    ov = require("openvino", "openvino", "OpenVINO export")
    precision = check_lm_precision("openvino", precision)
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR path must end in .xml, got {path}")
    graph = onnx_graph(model, max_context, cache_write, attend)
    chunk = check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "openvino", name, chunk,
                                {"openvino": {"stateful": True, "variables": [s.input_name for s in graph.spec],
                                              "inference_precision_hint": "f32", "cache_write": graph.cache_write,
                                              "attend": graph.attend}})
    proto = onnx_proto(graph, dataclasses.replace(meta, format="onnx"), title=TITLE)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "graph.onnx"
            src.write_bytes(proto.SerializeToString())
            ov_model = ov.convert_model(str(src))
        _make_stateful(ov, ov_model, graph)
        left = [sorted(p.get_names()) for p in ov_model.inputs]
        if len(left) != 2 or not all(n in names for n, names in zip(("input_ids", "position"), left)):
            raise LMExportError(f"the stateful OpenVINO model of {meta.model} kept inputs {left}, not input_ids and "
                                "position", format=TITLE)
    except LMExportError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise conversion_error(graph, TITLE, exc, model=meta.model) from exc
    if precision != "fp32":
        ov_model = compress_openvino_lm(ov_model, precision, meta, **check_quant_options("openvino", quantization))
    for port, tensor_name in zip(ov_model.inputs, ("input_ids", "position")):
        port.get_tensor().set_names({tensor_name})  # drop names merged from no-op nodes
    ov_model.set_friendly_name(meta.model)
    ov_model.set_rt_info(meta.to_json(), [METADATA_KEY])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    return path


def _make_stateful(ov, ov_model, graph: LMDecodeGraph) -> None:
    """Turn every ``past_X`` parameter / ``present_X`` result pair into one variable named
    ``past_X`` (ReadValue initialised to zeros -> graph -> Assign).

    OpenVINO's ``MakeStateful`` pass does the same but names the variable after both tensors
    (``past_Xpresent_X``); building the pair here keeps the contract's name.
    """
    from openvino import opset6
    from openvino.op.util import Variable, VariableInfo

    params = {p.get_friendly_name(): p for p in ov_model.get_parameters()}
    results = {r.input_value(0).get_any_name(): r for r in ov_model.get_results()}
    sinks = []
    for s in graph.spec:
        if s.input_name not in params or s.output_name not in results:
            raise LMExportError(f"the OpenVINO graph lacks {s.input_name} or {s.output_name} (LIV {s.liv}); "
                                "cannot make it stateful", format=TITLE,
                                livs=[(s.liv, graph.model.backbone.genome.segments[s.liv].name)])
        param, result = params[s.input_name], results[s.output_name]
        info = VariableInfo()
        info.data_shape, info.data_type, info.variable_id = param.get_partial_shape(), param.get_element_type(), s.input_name
        var = Variable(info)
        zeros = opset6.broadcast(opset6.constant(np.float32(0.0)), opset6.constant(np.array(s.shape, dtype=np.int64)))
        read = opset6.read_value(zeros, var)
        for target in list(param.output(0).get_target_inputs()):
            target.replace_source_output(read.output(0))
        src = result.input_value(0)
        node = src.get_node() if src.get_node().get_output_size() == 1 else opset6.convert(src, "f32")
        sinks.append(opset6.assign(node, var))
        ov_model.remove_result(result)
        ov_model.remove_parameter(param)
    if sinks:
        ov_model.add_sinks(sinks)
    ov_model.validate_nodes_and_infer_types()


# ------------------------------------------------------------------ weight-only int8 / int4 (NNCF)


def compress_openvino_lm(ov_model, precision: str, metadata, *, group_size: int = DEFAULT_BLOCK_SIZE,
                         embedding: str = "fp32", head: str = "fp32", symmetric: bool = False):
    """NNCF ``compress_weights`` on a (stateful) OpenVINO LM model, in place; returns it.

    ``int8``: INT8 per output channel (``INT8_ASYM``, or ``INT8_SYM``); ``int4``: INT4 in
    groups of ``group_size`` input channels (``INT4_ASYM`` / ``INT4_SYM``) with every weight
    at int4 (``ratio=1``). ``embedding`` / ``head``: ``"fp32"`` puts the embedding Gather's
    table / the logits MatMul in NNCF's ignored scope.
    """
    from staredge.exporters.lm_quantize import check_table_choice

    nncf = require("nncf", "openvino", "OpenVINO weight compression")
    check_table_choice("embedding", embedding)
    check_table_choice("head", head)
    mode = {("int8", False): nncf.CompressWeightsMode.INT8_ASYM, ("int8", True): nncf.CompressWeightsMode.INT8_SYM,
            ("int4", False): nncf.CompressWeightsMode.INT4_ASYM, ("int4", True): nncf.CompressWeightsMode.INT4_SYM}[
        (precision, bool(symmetric))]
    ignored = []
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Gather" and embedding == "fp32" and _reads_constant_table(op):
            ignored.append(op.get_friendly_name())
    if head == "fp32":
        ignored += _openvino_head_nodes(ov_model)
    kwargs: dict[str, Any] = {"mode": mode}
    if precision == "int4":
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

        # a weight whose input width is not a multiple of group_size (the recurrence's
        # 8-wide dt projection) gets the largest group that divides it (NNCF's ADJUST)
        kwargs.update(group_size=int(group_size), ratio=1.0, all_layers=True,
                      advanced_parameters=AdvancedCompressionParameters(
                          group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST, min_adjusted_group_size=8))
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    import contextlib
    import sys

    # NNCF's bit-width table and progress bar write to stdout, where a command's tables and
    # JSON go: send them to stderr (the CLI's converter log), as the image int8 path does
    with contextlib.redirect_stdout(sys.stderr):
        out = nncf.compress_weights(ov_model, **kwargs)
    metadata.precision = precision
    metadata.extra.setdefault("openvino", {})["weights"] = {
        "tool": "nncf.compress_weights", "mode": str(mode.value), "group_size": int(group_size) if precision == "int4" else -1,
        "embedding": embedding, "head": head}
    return out


def _reads_constant_table(op) -> bool:
    src = op.input_value(0).get_node()
    while src.get_type_name() == "Convert":
        src = src.input_value(0).get_node()
    return src.get_type_name() == "Constant"


def _openvino_head_nodes(ov_model) -> list[str]:
    """Friendly names of the MatMul(s) that produce ``logits``."""
    for res in ov_model.get_results():
        if "logits" in res.input_value(0).get_names():
            node = res.input_value(0).get_node()
            while node.get_type_name() != "MatMul" and node.get_input_size():
                node = node.input_value(0).get_node()
            return [node.get_friendly_name()] if node.get_type_name() == "MatMul" else []
    return []


__all__ = ["export_lm_openvino", "compress_openvino_lm"]
