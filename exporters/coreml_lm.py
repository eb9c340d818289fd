"""CoreML exporter of STAR language models: an ``.mlpackage`` ML Program of the decode graph.

Two forms:

* ``stateful=True`` (default): an iOS 18 stateful program, inputs ``input_ids`` and
  ``position`` (int32), one state ``state_<k>`` per spec entry, updated in place
  (``read_state`` / ``coreml_update_state``). coremltools accepts only fp16 states, so the
  state is stored in fp16 while compute stays fp32 (the state is rounded after every call).
  With ``prefill_chunk`` > 1 the package is a **multifunction** package: ``main`` (the
  default function) takes T = 1 (decode), ``prefill`` takes T = ``prefill_chunk``; both
  declare the same states and share one weight file (coremltools deduplicates the consts);
* ``stateful=False``: the explicit iOS 16 form, ``past_*`` inputs / ``present_*`` outputs in
  fp32 (names with underscores), one token per call.

StarEdge runs both here with its MIL reference executor; Apple's runtime runs them on macOS.
The format table names :func:`export_lm_coreml` as CoreML's ``lm_exporter``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from staredge.errors import ConfigError, require
from staredge.exporters.lm_export import as_graph, check_chunk, conversion_error, lm_artifact_metadata
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph
from staredge.metadata import METADATA_KEY


#: Stored precisions of the stateful form's state (coremltools 9 accepts fp16 states only).
STATE_PRECISIONS = ("fp16", "fp16x2")
#: Function names of a multifunction (stateful, prefill_chunk > 1) package.
DECODE_FUNCTION, PREFILL_FUNCTION = "main", "prefill"


class _CoreMLStateful(torch.nn.Module):
    """The decode graph with its state as mutable fp16 buffers (``state_<k>`` in spec order):
    read (cast to fp32), run, write back by slice assignment -> ``read_state`` /
    ``coreml_update_state`` in the ML Program.

    ``split=True`` (``fp16x2``): each state tensor is held as two fp16 buffers, ``state_<k>``
    = fp16(x) and ``state_<k>_lo`` = fp16(x - fp16(x)); their fp32 sum carries 22 bits of
    mantissa, so the stored state is within ~1e-7 relative of fp32 at fp32's byte count.
    """

    def __init__(self, graph: LMDecodeGraph, split: bool = False) -> None:
        super().__init__()
        self.decoder = graph
        self.split = split
        for k, t in enumerate(graph.zero_state()):
            self.register_buffer(f"state_{k}", t.half())
            if split:
                self.register_buffer(f"state_{k}_lo", t.half())

    def forward(self, input_ids, position):
        n = len(self.decoder.spec)
        past = [getattr(self, f"state_{k}").float() for k in range(n)]
        if self.split:
            past = [p + getattr(self, f"state_{k}_lo").float() for k, p in enumerate(past)]
        out = self.decoder(input_ids.long(), position.long(), *past)
        for k, new in enumerate(out[1:]):
            hi = new.half()
            getattr(self, f"state_{k}")[0:1] = hi
            if self.split:
                getattr(self, f"state_{k}_lo")[0:1] = (new - hi.float()).half()
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
                     name: str | None = None, force: bool = True, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                     state_precision: str = "fp16", precision: str = "fp32") -> Path:
    """Write a CoreML ``.mlpackage`` ML Program of the decode graph.

    ``stateful=True``: an iOS 18 stateful program, inputs ``input_ids`` and ``position``
    (int32), one state ``state_<k>`` per spec entry, stored as **fp16** (coremltools requires
    fp16 states; compute stays fp32, the state is rounded to fp16 after every step).
    ``stateful=False``: the explicit form for iOS 16+, ``past_*`` inputs / ``present_*``
    outputs in fp32. ``state_precision="fp16x2"`` (stateful only) stores each state tensor as
    a pair of fp16 states (high and low part, ``state_<k>`` / ``state_<k>_lo``): fp32-class
    accuracy for twice the fp16 state bytes. Stateful with ``prefill_chunk`` > 1: a multifunction
    package, ``main`` (default, T = 1) and ``prefill`` (T = ``prefill_chunk``) over the same
    states and weights; the metadata's ``prefill_chunk`` records it. The explicit form takes
    one token per call (its ``prefill_chunk`` is 1).
    """
    from staredge.exporters.coreml import _quiet_converter, _save_atomically
    from staredge.exporters.lm_quantize import check_lm_precision

    check_lm_precision("coreml", precision)  # weight precision: fp32 only here (refused with the reason)

    with _quiet_converter():
        ct = require("coremltools", "coreml", "CoreML export")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ConfigError(f"a CoreML package path must end in .mlpackage, got {path}")
    if state_precision not in STATE_PRECISIONS:
        raise ConfigError(f"state_precision must be one of {', '.join(STATE_PRECISIONS)}, got {state_precision!r}")
    split = stateful and state_precision == "fp16x2"
    graph = as_graph(model, max_context)
    chunk = check_chunk(graph, prefill_chunk) if stateful else 1
    functions = {DECODE_FUNCTION: 1, PREFILL_FUNCTION: chunk} if chunk > 1 else {DECODE_FUNCTION: 1}
    target = "iOS18" if stateful else "iOS16"
    title = f"CoreML ({'iOS 18 stateful' + (', fp16x2 state' if split else '') if stateful else 'explicit iOS 16'})"
    meta = lm_artifact_metadata(graph, "coreml", name, chunk, {"coreml": {
        "deployment_target": target, "stateful": stateful, "ids_dtype": "int32", "functions": functions,
        "state_dtype": ("float16x2" if split else "float16") if stateful else "float32",
        "states": [f"state_{k}{tail}" for k in range(len(graph.spec)) for tail in ("", "_lo")[:1 + split]]
        if stateful else []}})
    for k, st in enumerate(meta.lm["state"]):
        st["input"], st["output"] = coreml_name(st["input"]), coreml_name(st["output"])
        if stateful:
            st["coreml_state"] = f"state_{k}"
            st["dtype"] = "float16"
            if split:
                st["coreml_state_lo"] = f"state_{k}_lo"
                st["dtype"] = "float16x2"
    if stateful:
        meta.lm["state_bytes"] = sum(s.numel * (4 if split else 2) for s in graph.spec)
    pos = ct.TensorType("position", shape=(1,), dtype=np.int32)
    with _quiet_converter() as log:
        try:
            if stateful:
                programs = {fn: _convert_stateful(ct, graph, split, t, pos) for fn, t in functions.items()}
                mlmodel = programs[DECODE_FUNCTION] if len(programs) == 1 else _multifunction(ct, programs)
            else:
                ids = ct.TensorType("input_ids", shape=(1, 1), dtype=np.int32)
                ex = (torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
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
            raise conversion_error(graph, title, exc, log=log.getvalue(), model=meta.model) from exc
    mlmodel.short_description = f"STAR language model {meta.model}: decode graph (docs/lm-artifacts.md)"
    mlmodel.user_defined_metadata[METADATA_KEY] = meta.to_json()
    try:
        return _save_atomically(mlmodel, path, force)
    finally:
        scratch = getattr(mlmodel, "_staredge_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _convert_stateful(ct, graph: LMDecodeGraph, split: bool, tokens: int, pos):
    """The stateful ML Program of the graph at T = ``tokens`` (fp32 compute, fp16 states)."""
    module = _CoreMLStateful(graph, split=split).eval()
    ex = (torch.zeros(1, tokens, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    with torch.no_grad():
        program = torch.export.export(module, ex).run_decompositions({})
    pipeline = ct.PassPipeline.DEFAULT
    # coremltools 9's canonicalize_inplace_pattern fails on this graph (KeyError in
    # insert_op_before); the program is valid without it.
    pipeline.remove_passes({"common::canonicalize_inplace_pattern"})
    ids = ct.TensorType("input_ids", shape=(1, tokens), dtype=np.int32)
    return ct.convert(program, inputs=[ids, pos], outputs=[ct.TensorType("logits")],
                      minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram",
                      compute_precision=ct.precision.FLOAT32, skip_model_load=True, pass_pipeline=pipeline)


def _multifunction(ct, programs: dict):
    """One package holding every program of ``programs`` (name -> MLModel) as a function,
    ``main`` the default; coremltools deduplicates their identical weights into one blob file.
    Built in a scratch folder (removed by the caller after saving: ``_staredge_scratch``)."""
    scratch = Path(tempfile.mkdtemp(prefix="staredge-coreml-mf-"))
    try:
        desc = ct.utils.MultiFunctionDescriptor()
        for fn, mlmodel in programs.items():
            single = scratch / f"{fn}.mlpackage"
            mlmodel.save(str(single))
            desc.add_function(str(single), src_function_name="main", target_function_name=fn)
        desc.default_function_name = DECODE_FUNCTION
        combined = scratch / "combined.mlpackage"
        ct.utils.save_multifunction(desc, str(combined))
        mlmodel = ct.models.MLModel(str(combined), skip_model_load=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    mlmodel._staredge_scratch = scratch
    return mlmodel


__all__ = ["export_lm_coreml", "coreml_name", "DECODE_FUNCTION", "PREFILL_FUNCTION"]
