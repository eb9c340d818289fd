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

Each quantiser lives in its format's LM exporter (``exporters/<format>_lm.py``); this module
holds what they share. Precisions a format's LM path cannot do are refused
(:func:`check_lm_precision`) with the reason, never ignored: what each format takes is the
format table's precisions for text generation (``FormatSpec.precisions_for``), the options
its quantiser takes its spec's ``lm_quant_options``.

The embedding and the LM head are chosen explicitly (``embedding`` / ``head`` options,
``"fp32"`` or ``"quantized"``); the shipped model ties them (one ``[259, 128]`` table), and
both stay fp32 by default: they are 33 K of the model's 1.3 M parameters and the logits
are most sensitive to them.
"""

from __future__ import annotations

import math
from typing import Any

from staredge.errors import ConfigError

#: Embedding / head choices.
TABLE_PRECISIONS = ("fp32", "quantized")
#: Default block (ONNX) / group (OpenVINO int4) size along the input axis.
DEFAULT_BLOCK_SIZE = 32


def check_lm_precision(fmt: str, precision: str | None, cache_write: str | None = None) -> str:
    """``precision`` (default ``"fp32"``) if ``fmt``'s LM exporter can write it (the format
    table's precisions for text generation), else :class:`ConfigError` saying why (the
    spec's ``lm_precision_refusals``) and what the format takes."""
    from staredge.formats import TEXT_GENERATION, get_format

    spec = get_format(fmt)
    p = (precision or "fp32").lower()
    takes = spec.precisions_for(TEXT_GENERATION)
    if p in takes:
        return p
    raise ConfigError(f"cannot export a language model to {spec.name} at precision {p!r}: "
                      f"{spec.lm_precision_refusal(p)}. Use one of: {', '.join(takes)}")


def check_quant_options(fmt: str, options: dict | None) -> dict:
    """``options`` (``quantization={...}``) if every key is one ``fmt``'s LM quantiser takes
    (the format spec's ``lm_quant_options``), else :class:`ConfigError` naming the unknown
    keys and the known ones."""
    from staredge.formats import get_format

    spec = get_format(fmt)
    options = dict(options or {})
    known = spec.lm_quant_options
    bad = sorted(k for k in options if k not in known)
    if bad:
        raise ConfigError(f"{spec.name} LM quantisation takes the options {', '.join(known) or 'none'}; "
                          f"unknown: {', '.join(bad)}")
    return options


def check_table_choice(name: str, value: str) -> str:
    """``value`` if it is one of :data:`TABLE_PRECISIONS` (the ``embedding`` / ``head``
    options), else :class:`ConfigError` naming the option."""
    if value not in TABLE_PRECISIONS:
        raise ConfigError(f"{name} must be one of {', '.join(TABLE_PRECISIONS)}, got {value!r}")
    return value


def weight_bits(precision: str) -> int:
    """Bits per weight of a weight-only precision (``"int8"`` 8, ``"int4"`` 4)."""
    return {"int8": 8, "int4": 4}[precision]


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


__all__ = ["check_quant_options", "check_table_choice", "weight_bits", "TABLE_PRECISIONS", "DEFAULT_BLOCK_SIZE",
           "check_lm_precision", "validate_quantized", "QUALITY_BOUNDS", "INT8_MIN_GREEDY", "held_out_bytes",
           "bits_per_byte", "greedy_agreement", "lm_quality"]
