"""Weight-only low precision for LM artifacts, each format with the tool made for it, and
the accuracy of the result measured (held-out bits per byte, greedy agreement).

* ONNX: ONNX Runtime's ``MatMulNBitsQuantizer`` (``onnxruntime.quantization``): every
  weight MatMul becomes ``com.microsoft.MatMulNBits`` (int8 or int4, blockwise along the
  input axis, asymmetric by default); the embedding ``Gather`` becomes
  ``GatherBlockQuantized`` when ``embedding="quantized"``.
* TFLite: ai-edge-quantizer's ``weight_only_wi8_afp32`` / ``weight_only_wi4_afp32`` recipes
  (per-channel int8 / int4 weights of every supported op, dequantised to fp32 compute), or
  ``mode="dynamic"`` (``dynamic_wi8_afp32``: int8 weights and dynamically quantised int8
  activations in the fully connected layers, int8 only). The embedding and head options
  are not offered for TFLite (the recipe covers every supported op): ``"quantized"`` is
  recorded, and asking for ``"fp32"`` is refused.
* OpenVINO: NNCF ``compress_weights`` (``INT8_ASYM`` per channel, ``INT4_ASYM`` with a group
  size); ``embedding`` / ``head`` kept at fp32 by NNCF's ignored scope, or compressed.

Precisions a format's LM path cannot do are refused (:func:`check_lm_precision`) with the
reason, never ignored. What each format takes is :data:`LM_PRECISIONS`.

The embedding and the LM head are chosen explicitly (``embedding`` / ``head`` options,
``"fp32"`` or ``"quantized"``); the shipped model ties them (one ``[259, 128]`` table), and
both stay fp32 by default: they are 33 K of the model's 1.3 M parameters and the logits
are most sensitive to them.
"""

from __future__ import annotations

import math
from typing import Any

from staredge.errors import ConfigError, require

#: Weight precisions each format's LM exporter takes (weight-only: activations and state
#: stay fp32).
LM_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "int8", "int4"),
    "openvino": ("fp32", "int8", "int4"),
    "tflite": ("fp32", "int8", "int4"),
    "coreml": ("fp32",),
}
#: Why a format refuses a precision (shown in the error).
_REFUSALS: dict[tuple[str, str], str] = {
    ("coreml", "int8"): "CoreML LM weight quantisation (linear_quantize_weights) is not implemented yet",
    ("coreml", "int4"): "CoreML LM per-block int4 (iOS 18) is not implemented yet",
}
#: Embedding / head choices.
TABLE_PRECISIONS = ("fp32", "quantized")
#: ai.onnx opset of a quantised ONNX LM graph (what ONNX Runtime's quantiser stamps on it).
QUANT_OPSET = 21
#: Default block (ONNX) / group (OpenVINO int4) size along the input axis.
DEFAULT_BLOCK_SIZE = 32


def check_lm_precision(fmt: str, precision: str | None, cache_write: str | None = None) -> str:
    """``precision`` (default ``"fp32"``) if ``fmt``'s LM exporter can write it, else
    :class:`ConfigError` saying why and what the format takes."""
    p = (precision or "fp32").lower()
    takes = LM_PRECISIONS.get(fmt, ("fp32",))
    if p in takes:
        return p
    why = _REFUSALS.get((fmt, p), f"{fmt} language-model artifacts take weight precisions {', '.join(takes)}")
    raise ConfigError(f"cannot export a language model to {fmt} at precision {p!r}: {why}. "
                      f"Use one of: {', '.join(takes)}")


#: The ``quantization={...}`` keys each format's LM exporter takes.
QUANT_OPTIONS = {"onnx": ("block_size", "symmetric", "embedding", "head", "accuracy_level"),
                 "openvino": ("group_size", "embedding", "head", "symmetric"),
                 "tflite": ("mode", "embedding", "head")}


def check_quant_options(fmt: str, options: dict | None) -> dict:
    """``options`` (``quantization={...}``) if every key is one ``fmt`` takes, else
    :class:`ConfigError` naming the unknown keys and the known ones."""
    options = dict(options or {})
    known = QUANT_OPTIONS.get(fmt, ())
    bad = sorted(k for k in options if k not in known)
    if bad:
        raise ConfigError(f"{fmt} LM quantisation takes the options {', '.join(known) or 'none'}; "
                          f"unknown: {', '.join(bad)}")
    return options


def _check_table(name: str, value: str) -> str:
    if value not in TABLE_PRECISIONS:
        raise ConfigError(f"{name} must be one of {', '.join(TABLE_PRECISIONS)}, got {value!r}")
    return value


def _bits(precision: str) -> int:
    return {"int8": 8, "int4": 4}[precision]


# ------------------------------------------------------------------ ONNX (MatMulNBits)


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


def quantize_onnx_lm(proto, precision: str, metadata, *, block_size: int = DEFAULT_BLOCK_SIZE,
                     symmetric: bool = False, embedding: str = "fp32", head: str = "fp32",
                     accuracy_level: int | None = None):
    """``proto`` (an ONNX decode graph) with its weight MatMuls as ``MatMulNBits``.

    ``precision`` ``int8`` / ``int4``; ``block_size`` a power of two >= 16 (weights are
    quantised in blocks of that many input channels); ``embedding="quantized"`` turns the
    embedding Gather into ``GatherBlockQuantized``; ``head="fp32"`` keeps the LM head MatMul
    in fp32. ``accuracy_level`` is MatMulNBits' compute type (None: the ORT default, fp32
    activations). The metadata entry is rewritten with ``precision`` and the choices.
    """
    require("onnxruntime", "onnx", "ONNX weight quantisation")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from staredge.metadata import METADATA_KEY

    bits = _bits(precision)
    _check_table("embedding", embedding)
    _check_table("head", head)
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


# ------------------------------------------------------------------ TFLite (ai-edge-quantizer)

#: TFLite LM quantisation modes.
TFLITE_MODES = ("weight_only", "dynamic")


def quantize_tflite_lm(flatbuffer: bytes, precision: str, metadata, *, mode: str = "weight_only",
                       embedding: str = "quantized", head: str = "quantized") -> bytes:
    """The converted LM flatbuffer with int8 / int4 weights (ai-edge-quantizer recipes, see
    the module doc); ``metadata`` records the recipe. Raises ConfigError for a combination
    the recipes cannot do."""
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
        "tool": "ai_edge_quantizer", "recipe": recipe.__name__, "bits": _bits(precision),
        "embedding": "quantized", "head": "quantized"}
    return out


# ------------------------------------------------------------------ OpenVINO (NNCF)


def compress_openvino_lm(ov_model, precision: str, metadata, *, group_size: int = DEFAULT_BLOCK_SIZE,
                         embedding: str = "fp32", head: str = "fp32", symmetric: bool = False):
    """NNCF ``compress_weights`` on a (stateful) OpenVINO LM model, in place; returns it.

    ``int8``: INT8 per output channel (``INT8_ASYM``, or ``INT8_SYM``); ``int4``: INT4 in
    groups of ``group_size`` input channels (``INT4_ASYM`` / ``INT4_SYM``) with every weight
    at int4 (``ratio=1``). ``embedding`` / ``head``: ``"fp32"`` puts the embedding Gather's
    table / the logits MatMul in NNCF's ignored scope.
    """
    nncf = require("nncf", "openvino", "OpenVINO weight compression")
    _check_table("embedding", embedding)
    _check_table("head", head)
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


# ------------------------------------------------------------------ accuracy


def held_out_bytes(limit: int | None = None) -> bytes:
    """The held-out text of the shipped model's training run: the last 10 % of CPython's
    ``pydoc_data`` help topics joined in sorted-key order (``scripts/train_star_lm.py``),
    the first ``limit`` bytes of it when given."""
    import pydoc_data.topics as topics_mod

    topics = topics_mod.topics
    data = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    held = data[int(len(data) * 0.9):]  # scripts/train_star_lm.py: HOLDOUT_FRACTION = 0.10
    return held if limit is None else held[:limit]


def bits_per_byte(stepper, data: bytes, window: int = 256, bos_id: int = 256) -> float:
    """Mean cross-entropy (bits) of ``stepper`` (an LM artifact's stepper) over ``data`` in
    non-overlapping windows of ``window`` bytes, each after a BOS, as the training script
    scores its held-out text."""
    import numpy as np

    if window > stepper.max_context:
        raise ConfigError(f"a {window}-byte window needs max_context >= {window}, the artifact has {stepper.max_context}")
    n = (len(data) // window) * window
    if n == 0:
        raise ConfigError(f"bits_per_byte needs at least {window} bytes of text, got {len(data)}")
    total, count = 0.0, 0
    for start in range(0, n, window):
        chunk = list(data[start:start + window])
        stepper.reset()
        logits = stepper.prefill([bos_id] + chunk[:-1]).astype(np.float64)
        mx = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - mx).sum(-1)) + mx[:, 0]
        total += float((logz - logits[np.arange(window), chunk]).sum())
        count += window
    return total / count / math.log(2)


def greedy_agreement(stepper, reference: list[int], prompt: list[int]) -> int:
    """How many of ``reference`` (greedy tokens of the fp32 model after ``prompt``) the
    stepper reproduces before its first different token."""
    got = stepper.greedy(prompt, len(reference))
    k = 0
    while k < len(reference) and got[k] == reference[k]:
        k += 1
    return k


def lm_quality(stepper, model, *, held_bytes: int | None = 4096, window: int = 256, greedy_tokens: int = 256,
               prompt: bytes | None = None) -> dict[str, Any]:
    """Accuracy of an LM artifact against the fp32 PyTorch ``model``: held-out bits per
    byte of both (first ``held_bytes`` of the held-out text; None: all of it) and greedy
    token agreement over ``greedy_tokens`` tokens after the validation prompt."""
    import torch

    from staredge.exporters.lm_graph import LMDecodeGraph
    from staredge.exporters.lm_validate import GraphStepper, prompt_ids, validation_prompt

    data = held_out_bytes(held_bytes)
    if len(data) < window:
        raise ConfigError(f"held_bytes must be at least one window ({window} bytes), got {held_bytes}")
    ids = prompt_ids(prompt if prompt is not None else validation_prompt()[:64])
    tokens = min(greedy_tokens, stepper.max_context - len(ids) + 1)
    with torch.no_grad():  # fp32 reference: the eager decode graph (equal to the parallel forward, tests/test_lm_graph.py)
        graph = LMDecodeGraph(model, stepper.max_context, cache_write="scatter", attend="prefix")
        ref_tokens = GraphStepper(graph).greedy(ids, tokens)
    with torch.no_grad():
        ref_bpb = _torch_bits_per_byte(model, data, window)
    bpb = bits_per_byte(stepper, data, window)
    agree = greedy_agreement(stepper, ref_tokens, ids)
    return {"held_out_bytes": (len(data) // window) * window, "bits_per_byte": round(bpb, 5),
            "fp32_bits_per_byte": round(ref_bpb, 5), "bpb_change": round(bpb / ref_bpb - 1.0, 5),
            "greedy_tokens": tokens, "greedy_agree": agree}


#: Largest held-out bits-per-byte increase a quantised LM artifact may show (issue 21:
#: int8 within 1 %; int4 is reported, and judged against a looser 5 %).
QUALITY_BOUNDS = {"int8": 0.01, "int4": 0.05}
#: Greedy tokens an int8 artifact must reproduce before its first difference.
INT8_MIN_GREEDY = 32


def validate_quantized(stepper, model, precision: str, **quality_options) -> dict[str, Any]:
    """Pass/fail of a weight-quantised LM artifact (the export report's validation): its
    :func:`lm_quality` numbers plus ``passed`` (bits/byte within ± :data:`QUALITY_BOUNDS`, and
    for int8 at least :data:`INT8_MIN_GREEDY` greedy tokens equal to fp32's) and ``bound``.
    fp32 artifacts are validated by ``lm_validate.validate_lm`` (1e-4) instead."""
    if precision not in QUALITY_BOUNDS:
        raise ConfigError(f"validate_quantized judges {', '.join(QUALITY_BOUNDS)} artifacts, got {precision!r}")
    q = lm_quality(stepper, model, **quality_options)
    bound = QUALITY_BOUNDS[precision]
    greedy_ok = precision != "int8" or q["greedy_agree"] >= min(INT8_MIN_GREEDY, q["greedy_tokens"])
    return {**q, "precision": precision, "bound": bound, "passed": bool(abs(q["bpb_change"]) <= bound and greedy_ok)}


def _torch_bits_per_byte(model, data: bytes, window: int, bos_id: int = 256) -> float:
    import torch
    import torch.nn.functional as F

    n = (len(data) // window) * window
    arr = torch.tensor(list(data[:n]), dtype=torch.long).view(-1, window)
    x = torch.cat([torch.full((arr.shape[0], 1), bos_id, dtype=torch.long), arr[:, :-1]], dim=1)
    model.eval()
    logits = model(x).double()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), arr.reshape(-1), reduction="sum").item() / n / math.log(2)


__all__ = ["QUANT_OPTIONS", "check_quant_options", "LM_PRECISIONS", "TABLE_PRECISIONS", "DEFAULT_BLOCK_SIZE", "check_lm_precision", "quantize_onnx_lm",
           "quantize_tflite_lm", "TFLITE_MODES", "validate_quantized", "QUALITY_BOUNDS", "INT8_MIN_GREEDY",
           "compress_openvino_lm", "held_out_bytes", "bits_per_byte", "greedy_agreement", "lm_quality"]
