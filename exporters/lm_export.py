"""Exporters of STAR language models as decode-graph artifacts (``docs/lm-artifacts.md``).

Data flow: a :class:`~staredge.models.star.STARLanguageModel` -> :class:`LMDecodeGraph`
(:mod:`staredge.exporters.lm_graph`, static state) -> one artifact per format, each with the
:class:`~staredge.metadata.ArtifactMetadata` (``task="text-generation"``, the ``lm`` dict
with the state spec) inside it -> a stepper in :mod:`staredge.runtimes.lm` runs it.

* **ONNX**: one graph with a dynamic token axis (decode T = 1, prefill any T up to
  ``prefill_chunk``; larger T also works, the recurrence scan is quadratic in T), exported
  with the TorchScript exporter (``dynamo=False``), opset 17;
* **OpenVINO**: the ONNX graph read by OpenVINO, then made stateful (every
  ``past_X``/``present_X`` pair becomes a variable named ``past_X``): inputs ``input_ids`` and ``position``
  only; the runtime compiles it with ``INFERENCE_PRECISION_HINT = f32``;
* **TFLite**: ``decode`` (T = 1) and ``prefill`` (T = ``prefill_chunk``) signatures, names with
  underscores instead of dots;
* **CoreML**: an iOS 18 stateful ML Program (fp16 state buffers, one token per call) or the
  explicit iOS 16 past/present form (fp32), run here by the MIL reference executor.

``export_lm`` exports and validates several formats at once (``staredge export``).
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from staredge.errors import ConfigError, require
from staredge.exporters.api import ExportError
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph, lm_metadata_dict
from staredge.fileio import atomic_write_bytes
from staredge.metadata import METADATA_KEY, ArtifactMetadata
from staredge.models.star import STARLanguageModel

ONNX_OPSET = 17
TEXT_GENERATION = "text-generation"


def as_graph(model, max_context: int | None = None) -> LMDecodeGraph:
    """An :class:`LMDecodeGraph` for a STAR LM (or the graph itself, unchanged)."""
    if isinstance(model, LMDecodeGraph):
        if max_context is not None and max_context != model.max_context:
            raise ConfigError(f"the decode graph was built for max_context {model.max_context}, not {max_context}")
        return model
    if not isinstance(model, STARLanguageModel):
        raise ConfigError(f"LM export takes a STARLanguageModel, got {type(model).__name__}")
    return LMDecodeGraph(model, max_context)


def lm_artifact_metadata(graph: LMDecodeGraph, fmt: str, name: str | None = None,
                         prefill_chunk: int = DEFAULT_PREFILL_CHUNK, extra: dict[str, Any] | None = None) -> ArtifactMetadata:
    """The metadata every LM artifact carries (``task="text-generation"``, ``lm`` = contract)."""
    lm = lm_metadata_dict(graph, prefill_chunk, name)
    return ArtifactMetadata(
        model=lm["name"], family="star_lm", format=fmt, task=TEXT_GENERATION, input_name="input_ids",
        output_names=["logits"], input_size=[1, 1], input_layout="NT", dynamic_batch=False,
        precision="fp32", extra=dict(extra or {}), lm=lm)


def _check_chunk(graph: LMDecodeGraph, prefill_chunk: int) -> int:
    chunk = int(prefill_chunk)
    if chunk < 1 or chunk > graph.max_context:
        raise ConfigError(f"prefill_chunk must be in 1..max_context ({graph.max_context}), got {chunk}")
    return chunk


# ------------------------------------------------------------------------------------ ONNX


def onnx_proto(graph: LMDecodeGraph, metadata: ArtifactMetadata):
    """The decode graph as an ONNX ModelProto with ``metadata`` embedded (not saved)."""
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
                              dynamic_axes={"input_ids": {1: "tokens"}, "logits": {1: "tokens"}},
                              do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export of the decode graph of {metadata.model} failed: {type(exc).__name__}: {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
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
        raise ExportError(f"ONNX export of {metadata.model} produced I/O {got} / {[o.name for o in proto.graph.output]}, "
                          "not the decode contract's order")
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    proto.producer_name = "staredge"
    onnx.checker.check_model(proto)
    return proto


def export_lm_onnx(model, path: str | os.PathLike, *, max_context: int | None = None,
                   prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None, force: bool = True) -> Path:
    """Write the decode graph of ``model`` as one ONNX file (dynamic token axis) at ``path``."""
    graph = as_graph(model, max_context)
    chunk = _check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "onnx", name, chunk, {"onnx": {"opset": ONNX_OPSET, "dynamic_tokens": True}})
    proto = onnx_proto(graph, meta)
    return atomic_write_bytes(path, proto.SerializeToString(), force=force)


# -------------------------------------------------------------------------------- OpenVINO


def export_lm_openvino(model, path: str | os.PathLike, *, max_context: int | None = None,
                       prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None) -> Path:
    """Write a stateful OpenVINO IR (``.xml`` + ``.bin``): inputs ``input_ids`` and ``position``.

    Every ``past_X`` / ``present_X`` pair of the decode graph becomes an OpenVINO variable
    named ``past_X`` (zeros after ``reset_state()``); weights stay fp32.
    """
    ov = require("openvino", "openvino", "OpenVINO export")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"an OpenVINO IR path must end in .xml, got {path}")
    graph = as_graph(model, max_context)
    chunk = _check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "openvino", name, chunk,
                                {"openvino": {"stateful": True, "variables": [s.input_name for s in graph.spec],
                                              "inference_precision_hint": "f32"}})
    proto = onnx_proto(graph, dataclasses.replace(meta, format="onnx"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "graph.onnx"
            src.write_bytes(proto.SerializeToString())
            ov_model = ov.convert_model(str(src))
        _make_stateful(ov, ov_model, graph)
        left = [sorted(p.get_names()) for p in ov_model.inputs]
        if len(left) != 2 or not all(n in names for n, names in zip(("input_ids", "position"), left)):
            raise ExportError(f"the stateful OpenVINO model of {meta.model} kept inputs {left}, not input_ids and position")
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"OpenVINO export of {meta.model} failed: {type(exc).__name__}: {exc}") from exc
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


# ---------------------------------------------------------------------------------- TFLite

#: TFLite ops the decode graph must not contain (XNNPACK cannot run them; see lm_export notes).
TFLITE_FORBIDDEN_OPS = ("STABLEHLO_SCATTER", "SCATTER_ND")


def tflite_name(name: str) -> str:
    """Signature names cannot hold dots: ``past_key_values.2.key`` -> ``past_key_values_2_key``."""
    return name.replace(".", "_")


class _SignatureModule(torch.nn.Module):
    """Keyword I/O for litert-torch signatures: ``input_ids``, ``position``, ``past_*`` in;
    a dict ``logits``, ``present_*`` out (names with underscores)."""

    def __init__(self, graph: LMDecodeGraph) -> None:
        super().__init__()
        self.decoder = graph  # not "graph": torch.fx reserves that attribute name

    def forward(self, input_ids, position, **past):
        spec = self.decoder.spec
        out = self.decoder(input_ids, position, *[past[tflite_name(s.input_name)] for s in spec])
        return {"logits": out[0], **{tflite_name(s.output_name): o for s, o in zip(spec, out[1:])}}

    def sample(self, tokens: int) -> dict:
        ex = self.decoder.example_inputs(tokens)
        return {"input_ids": ex[0], "position": ex[1],
                **{tflite_name(s.input_name): t for s, t in zip(self.decoder.spec, ex[2:])}}


def export_lm_tflite(model, path: str | os.PathLike, *, max_context: int | None = None,
                     prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None, force: bool = True) -> Path:
    """Write a ``.tflite`` with signatures ``decode`` (T = 1) and ``prefill`` (T = ``prefill_chunk``).

    I/O names use underscores (``past_key_values_2_key``); ``input_ids`` and ``position`` stay
    int64. The file is refused if the converter emitted a scatter op.
    """
    litert_torch = require("litert_torch", "tflite", "TFLite export")
    from staredge.exporters.tflite import add_metadata

    graph = as_graph(model, max_context)
    chunk = _check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "tflite", name, chunk, {"tflite": {
        "signatures": {"decode": 1, **({"prefill": chunk} if chunk > 1 else {})},
        "names": "dots replaced by underscores: input past_X -> " + tflite_name("past_X.y")}})
    for s in meta.lm["state"]:
        s["input"], s["output"] = tflite_name(s["input"]), tflite_name(s["output"])
    module = _SignatureModule(graph).eval()
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conv = litert_torch.signature("decode", module, sample_kwargs=module.sample(1))
            if chunk > 1:
                conv = conv.signature("prefill", module, sample_kwargs=module.sample(chunk))
            flat = bytes(conv.convert(enable_x64=True).model_content())
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"TFLite conversion of the decode graph of {meta.model} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous
    bad = sorted(set(tflite_op_names(flat)) & set(TFLITE_FORBIDDEN_OPS))
    if bad:
        raise ExportError(f"the TFLite decode graph of {meta.model} contains {bad}, which XNNPACK cannot run; not written")
    data = add_metadata(flat, METADATA_KEY, meta.to_json().encode("utf-8"))
    return atomic_write_bytes(path, data, force=force)


def tflite_op_names(flatbuffer: bytes) -> list[str]:
    """Builtin op names used by a ``.tflite`` flatbuffer (custom ops by their custom code)."""
    schema = require("ai_edge_litert.schema_py_generated", "tflite", "reading TFLite files")
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for code in model.operatorCodes or []:
        op = max(code.builtinCode, code.deprecatedBuiltinCode)
        if op == schema.BuiltinOperator.CUSTOM and code.customCode:
            out.append(code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode))
        else:
            out.append(names.get(op, str(op)))
    return out


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
            raise ExportError(f"the OpenVINO graph lacks {s.input_name} or {s.output_name} (LIV {s.liv}); cannot make it stateful")
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


# ---------------------------------------------------------------------------------- CoreML


class _CoreMLStateful(torch.nn.Module):
    """The decode graph with its state as mutable fp16 buffers (``state_<k>`` in spec order):
    read (cast to fp32), run, write back by slice assignment -> ``read_state`` /
    ``coreml_update_state`` in the ML Program."""

    def __init__(self, graph: LMDecodeGraph) -> None:
        super().__init__()
        self.decoder = graph
        for k, t in enumerate(graph.zero_state()):
            self.register_buffer(f"state_{k}", t.half())

    def forward(self, input_ids, position):
        n = len(self.decoder.spec)
        past = [getattr(self, f"state_{k}").float() for k in range(n)]
        out = self.decoder(input_ids.long(), position.long(), *past)
        for k, new in enumerate(out[1:]):
            getattr(self, f"state_{k}")[0:1] = new.half()
        return out[0]


class _CoreMLExplicit(torch.nn.Module):
    """int32 ids/position in (CoreML has no int64 inputs), past/present tensors as in the contract."""

    def __init__(self, graph: LMDecodeGraph) -> None:
        super().__init__()
        self.decoder = graph

    def forward(self, input_ids, position, *past):
        return self.decoder(input_ids.long(), position.long(), *past)


def coreml_name(name: str) -> str:
    """CoreML feature names: dots become underscores (as for TFLite)."""
    return name.replace(".", "_")


def export_lm_coreml(model, path: str | os.PathLike, *, max_context: int | None = None, stateful: bool = True,
                     name: str | None = None, force: bool = True, prefill_chunk: int = 1) -> Path:
    """Write a CoreML ``.mlpackage`` ML Program of the decode graph (one token per call).

    ``stateful=True``: an iOS 18 stateful program, inputs ``input_ids`` and ``position``
    (int32), one state ``state_<k>`` per spec entry, stored as **fp16** (coremltools requires
    fp16 states; compute stays fp32, the state is rounded to fp16 after every step).
    ``stateful=False``: the explicit form for iOS 16+, ``past_*`` inputs / ``present_*``
    outputs in fp32. ``prefill_chunk`` is accepted for a uniform API; CoreML artifacts take
    one token per call (prefill runs token by token).
    """
    from staredge.exporters.coreml import _quiet_converter, _save_atomically

    with _quiet_converter():
        ct = require("coremltools", "coreml", "CoreML export")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ConfigError(f"a CoreML package path must end in .mlpackage, got {path}")
    graph = as_graph(model, max_context)
    target = "iOS18" if stateful else "iOS16"
    meta = lm_artifact_metadata(graph, "coreml", name, 1, {"coreml": {
        "deployment_target": target, "stateful": stateful, "ids_dtype": "int32",
        "state_dtype": "float16" if stateful else "float32",
        "states": [f"state_{k}" for k in range(len(graph.spec))] if stateful else []}})
    for k, st in enumerate(meta.lm["state"]):
        st["input"], st["output"] = coreml_name(st["input"]), coreml_name(st["output"])
        if stateful:
            st["coreml_state"] = f"state_{k}"
            st["dtype"] = "float16"
    if stateful:
        meta.lm["state_bytes"] = sum(s.numel * 2 for s in graph.spec)
    ids = ct.TensorType("input_ids", shape=(1, 1), dtype=np.int32)
    pos = ct.TensorType("position", shape=(1,), dtype=np.int32)
    ex = (torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    with _quiet_converter() as log:
        try:
            if stateful:
                module = _CoreMLStateful(graph).eval()
                with torch.no_grad():
                    program = torch.export.export(module, ex).run_decompositions({})
                pipeline = ct.PassPipeline.DEFAULT
                # coremltools 9's canonicalize_inplace_pattern fails on this graph (KeyError in
                # insert_op_before); the program is valid without it.
                pipeline.remove_passes({"common::canonicalize_inplace_pattern"})
                mlmodel = ct.convert(program, inputs=[ids, pos], outputs=[ct.TensorType("logits")],
                                     minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram",
                                     compute_precision=ct.precision.FLOAT32, skip_model_load=True,
                                     pass_pipeline=pipeline)
            else:
                module = _CoreMLExplicit(graph).eval()
                full = ex + tuple(graph.zero_state())
                with torch.no_grad():
                    traced = torch.jit.trace(module, full, check_trace=False)
                inputs = [ids, pos] + [ct.TensorType(coreml_name(s.input_name), shape=s.shape, dtype=np.float32)
                                       for s in graph.spec]
                outputs = [ct.TensorType("logits")] + [ct.TensorType(coreml_name(s.output_name)) for s in graph.spec]
                mlmodel = ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                     minimum_deployment_target=ct.target.iOS16,
                                     compute_precision=ct.precision.FLOAT32, skip_model_load=True)
        except Exception as exc:  # noqa: BLE001
            tail = "\n".join(log.getvalue().strip().splitlines()[-5:])
            raise ExportError(f"CoreML conversion ({'stateful' if stateful else 'explicit'}) of the decode graph of "
                              f"{meta.model} failed: {type(exc).__name__}: {exc}\n{tail}") from exc
    mlmodel.short_description = f"STAR language model {meta.model}: decode graph (docs/lm-artifacts.md)"
    mlmodel.user_defined_metadata[METADATA_KEY] = meta.to_json()
    return _save_atomically(mlmodel, path, force)


# ------------------------------------------------------------------------- orchestration

#: LM formats in the order ``all`` exports them, and the file suffix of each.
LM_FORMATS = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite", "coreml": ".mlpackage"}
#: Registry names of language models (besides saved-model paths).
LM_NAMES = ("star_lm_pydoc", "transformer_pp", "striped_mamba")
#: Width and depth of a baseline exported by name when none is given.
BASELINE_DEFAULTS = {"dim": 128, "depth": 10}


def is_lm_source(name_or_path) -> bool:
    """Whether ``staredge export`` should treat this as a language model: a registry LM
    name, a STARLanguageModel, or a saved STAR LM (``.json`` or its ``.safetensors``)."""
    if isinstance(name_or_path, (STARLanguageModel, LMDecodeGraph)):
        return True
    if not isinstance(name_or_path, (str, os.PathLike)):
        return False
    text = str(name_or_path)
    if text.lower() in LM_NAMES:
        return True
    p = Path(text)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    cfg = stem.with_suffix(".json")
    if cfg.is_file():
        try:
            import json

            return json.loads(cfg.read_text("utf-8")).get("format") == "staredge-star-lm"
        except (OSError, ValueError, AttributeError):
            return False
    return False


def resolve_lm(name_or_path, dim: int | None = None, depth: int | None = None) -> tuple[STARLanguageModel, str]:
    """(model, name) for a registry LM name, a saved STAR LM path, or a model."""
    if isinstance(name_or_path, STARLanguageModel):
        return name_or_path.eval(), getattr(name_or_path, "staredge_name", "star_lm")
    text = str(name_or_path)
    key = text.lower()
    if key in ("transformer_pp", "striped_mamba"):
        from staredge.models.star import BASELINES

        d = int(dim or BASELINE_DEFAULTS["dim"])
        n = int(depth or BASELINE_DEFAULTS["depth"])
        torch.manual_seed(0)
        model = STARLanguageModel(d, n, BASELINES[key](d, n)).eval()
        return model, f"{key}_d{d}_n{n}"
    from staredge.generation import load_lm

    lm = load_lm(text)
    return lm.model.eval(), lm.name


def export_lm(model_or_name, formats, out_dir: str | os.PathLike, *, max_context: int | None = None,
              prefill_chunk: int = DEFAULT_PREFILL_CHUNK, validate: bool = True, force: bool = False,
              dim: int | None = None, depth: int | None = None, progress=None,
              stateful_coreml: bool = True) -> list[dict[str, Any]]:
    """Export a STAR LM to each of ``formats`` under ``out_dir`` and validate each artifact
    through its runtime (:func:`staredge.exporters.lm_validate.validate_lm`).

    Returns one dict per format: format, path, size_bytes, export_s, state_bytes,
    analysis_state_bytes, validation (numbers), passed, error. A format that fails records
    its error and the others go on. CoreML is the iOS 18 stateful form (fp16 state, checked at
    its own tolerance and 32 identical greedy tokens) unless ``stateful_coreml=False``. An existing artifact raises ``ArtifactExistsError``
    unless ``force``.
    """
    import time

    from staredge.errors import ArtifactExistsError
    from staredge.exporters.lm_validate import FP16_MIN_GREEDY, FP16_STATE_ATOL, FP32_ATOL, validate_lm
    from staredge.models.star.analysis import analyze_genome
    from staredge.runtimes.lm import load_lm_artifact

    model, name = resolve_lm(model_or_name, dim, depth)
    unknown = [f for f in formats if f not in LM_FORMATS]
    if unknown:
        raise ConfigError(f"language models export to {', '.join(LM_FORMATS)}; not to {', '.join(unknown)}")
    graph = LMDecodeGraph(model, max_context)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_ctx{graph.max_context}"
    analysis = analyze_genome(model.genome, model.dim, graph.max_context, bytes_per_element=4,
                              configs=model.backbone.configs).total_cache_bytes
    writers = {"onnx": export_lm_onnx, "openvino": export_lm_openvino, "tflite": export_lm_tflite,
               "coreml": export_lm_coreml}
    results = []
    for fmt in formats:
        path = out / f"{stem}{LM_FORMATS[fmt]}"
        if path.exists() and not force:
            raise ArtifactExistsError(f"{path} exists; pass force=True (or --force) to replace it")
        row: dict[str, Any] = {"format": fmt, "path": str(path), "model": name, "max_context": graph.max_context,
                               "prefill_chunk": prefill_chunk, "state_bytes": sum(s.nbytes for s in graph.spec),
                               "analysis_state_bytes": analysis, "passed": None, "error": None}
        if progress:
            progress(fmt, "export")
        start = time.perf_counter()
        try:
            kwargs = {"stateful": stateful_coreml} if fmt == "coreml" else {}
            writers[fmt](graph, path, max_context=graph.max_context, prefill_chunk=prefill_chunk, name=name, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, the other formats go on
            row.update(path=None, error=f"{type(exc).__name__}: {exc}", passed=False)
            results.append(row)
            continue
        row["export_s"] = round(time.perf_counter() - start, 2)
        if fmt == "coreml":
            row["size_bytes"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            row["state_bytes"] = read_state_bytes(path)
        else:
            row["size_bytes"] = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
        if validate:
            if progress:
                progress(fmt, "validate")
            try:
                fp16_state = fmt == "coreml" and stateful_coreml
                row["validation"] = validate_lm(load_lm_artifact(path), model,
                                                atol=FP16_STATE_ATOL if fp16_state else FP32_ATOL,
                                                min_greedy=FP16_MIN_GREEDY if fp16_state else None)
                row["passed"] = row["validation"]["passed"]
            except Exception as exc:  # noqa: BLE001
                row.update(error=f"validation failed to run: {type(exc).__name__}: {exc}", passed=False)
        results.append(row)
    return results


def read_state_bytes(path) -> int:
    """``lm.state_bytes`` recorded in an artifact's metadata."""
    from staredge.metadata import read_metadata

    return int(read_metadata(path).lm["state_bytes"])


__all__ = ["export_lm", "export_lm_coreml", "coreml_name", "resolve_lm", "is_lm_source", "LM_FORMATS", "LM_NAMES", "export_lm_onnx", "export_lm_openvino", "export_lm_tflite", "tflite_op_names", "tflite_name", "lm_artifact_metadata", "as_graph", "TEXT_GENERATION"]
