"""TFLite exporter of STAR language models: a ``.tflite`` with ``decode`` and ``prefill``
signatures (litert-torch).

``decode`` takes T = 1, ``prefill`` T = ``prefill_chunk`` (absent when it is 1); I/O names
use underscores instead of dots (``past_key_values_2_key``); ``input_ids`` and ``position``
stay int64. New K/V (and long-conv history) rows are written with ``DYNAMIC_UPDATE_SLICE``
(the T new rows, not a blend over the whole buffer; ``cache_write="blend"`` gives the older
form); attention reads the whole fixed buffer, masked (static shapes). A file holding a
scatter op (which XNNPACK cannot run) is refused. The format
table names :func:`export_lm_tflite` as TFLite's ``lm_exporter``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from staredge.errors import ConfigError, require
from staredge.exporters.lm_export import LMExportError, as_graph, check_chunk, conversion_error, lm_artifact_metadata
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph
from staredge.fileio import atomic_write_bytes
from staredge.metadata import METADATA_KEY

TITLE = "TFLite"
#: The TFLite decode graph's default cache write (:data:`staredge.exporters.lm_graph.CACHE_WRITES`).
TFLITE_CACHE_WRITE = "dynamic_update_slice"
#: TFLite ops the decode graph must not contain (XNNPACK cannot run them).
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
                     prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None, force: bool = True,
                     cache_write: str = TFLITE_CACHE_WRITE, precision: str = "fp32",
                     quantization: dict | None = None) -> Path:
    """Write a ``.tflite`` with signatures ``decode`` (T = 1) and ``prefill`` (T = ``prefill_chunk``).

    I/O names use underscores (``past_key_values_2_key``); ``input_ids`` and ``position`` stay
    int64. The file is refused if the converter emitted a scatter op. ``cache_write``:
    ``"dynamic_update_slice"`` (default) or ``"blend"``. ``precision`` ``"int8"`` / ``"int4"``:
    ai-edge-quantizer weight quantisation (:func:`quantize_tflite_lm`,
    options in ``quantization``).
    """
    from staredge.exporters.lm_quantize import check_lm_precision, check_quant_options

    precision = check_lm_precision("tflite", precision)
    quant = check_quant_options("tflite", quantization)  # before the (slow) conversion
    if cache_write not in ("dynamic_update_slice", "blend"):
        raise ConfigError(f"TFLite cache_write must be 'dynamic_update_slice' or 'blend', got {cache_write!r}")
    litert_torch = require("litert_torch", "tflite", "TFLite export")
    from staredge.exporters.tflite import add_metadata

    graph = as_graph(model, max_context).with_modes(cache_write, "buffer")
    chunk = check_chunk(graph, prefill_chunk)
    meta = lm_artifact_metadata(graph, "tflite", name, chunk, {"tflite": {"cache_write": graph.cache_write,
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
        raise conversion_error(graph, TITLE, exc, model=meta.model) from exc
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous
    bad = sorted(set(tflite_op_names(flat)) & set(TFLITE_FORBIDDEN_OPS))
    if bad:
        # traced like a converter failure: the LIVs whose part of the graph scatters
        err = conversion_error(graph, TITLE, LMExportError(
            f"the converted graph contains {bad} (aten::scatter / aten::index_put), which XNNPACK cannot run"),
            model=meta.model)
        raise err
    if precision != "fp32":
        try:
            flat = quantize_tflite_lm(flat, precision, meta, **quant)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantiser raises many types
            raise conversion_error(graph, f"{TITLE} {precision}", exc, model=meta.model) from exc
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


# ------------------------------------------------------------------ weight-only int8 / int4 (ai-edge-quantizer)

#: TFLite LM quantisation modes.
TFLITE_MODES = ("weight_only", "dynamic")


def quantize_tflite_lm(flatbuffer: bytes, precision: str, metadata, *, mode: str = "weight_only",
                       embedding: str = "quantized", head: str = "quantized") -> bytes:
    """The converted LM flatbuffer with int8 / int4 weights (ai-edge-quantizer recipes, see
    the module doc); ``metadata`` records the recipe. Raises ConfigError for a combination
    the recipes cannot do."""
    from staredge.exporters.lm_quantize import weight_bits

    aeq = require("ai_edge_quantizer", "tflite", "TFLite weight quantisation")
    if mode not in TFLITE_MODES:
        raise ConfigError(f"TFLite LM quantisation mode must be one of {', '.join(TFLITE_MODES)}, got {mode!r}")
    if mode == "dynamic" and precision != "int8":
        raise ConfigError("ai-edge-quantizer's dynamic-range recipe (dynamic_wi8_afp32) is int8 only; "
                          "use mode='weight_only' for int4")
    if "fp32" in (embedding, head):
        raise ConfigError("TFLite LM quantisation covers every supported op (embedding and head included); "
                          "embedding/head 'fp32' is not offered for TFLite: use ONNX or OpenVINO for that")
    recipe = {("weight_only", "int8"): aeq.recipe.weight_only_wi8_afp32, ("weight_only", "int4"): aeq.recipe.weight_only_wi4_afp32,
              ("dynamic", "int8"): aeq.recipe.dynamic_wi8_afp32}[(mode, precision)]
    import contextlib
    import sys

    quantizer = aeq.Quantizer(bytearray(flatbuffer), recipe())
    with contextlib.redirect_stdout(sys.stderr):  # its size/time summary is printed on stdout
        out = bytes(quantizer.quantize().quantized_model)
    metadata.precision = precision
    metadata.extra.setdefault("tflite", {})["weights"] = {
        "tool": "ai_edge_quantizer", "recipe": recipe.__name__, "bits": weight_bits(precision),
        "embedding": "quantized", "head": "quantized"}
    return out


__all__ = ["export_lm_tflite", "quantize_tflite_lm", "TFLITE_MODES", "tflite_op_names", "tflite_name", "TFLITE_FORBIDDEN_OPS"]
