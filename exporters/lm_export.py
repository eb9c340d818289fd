"""Shared code of the STAR language-model exporters (``docs/lm-artifacts.md``).

Data flow: a :class:`~staredge.models.star.STARLanguageModel` -> :class:`LMDecodeGraph`
(:mod:`staredge.exporters.lm_graph`, static state) -> one artifact per format, each with the
:class:`~staredge.metadata.ArtifactMetadata` (``task="text-generation"``, the ``lm`` dict
with the state spec) inside it -> a stepper of :mod:`staredge.runtimes.lm` runs it.

One exporter module per format, named by :attr:`staredge.formats.FormatSpec.lm_exporter`:

* ``exporters/onnx_lm.py`` (:func:`export_lm_onnx`): one graph with a dynamic token axis;
* ``exporters/openvino_lm.py`` (:func:`export_lm_openvino`): a stateful IR;
* ``exporters/tflite_lm.py`` (:func:`export_lm_tflite`): ``decode`` / ``prefill`` signatures;
* ``exporters/coreml_lm.py`` (:func:`export_lm_coreml`): an iOS 18 stateful ML Program or
  the explicit iOS 16 past/present form.

This module holds what they share: :func:`as_graph`, :func:`lm_artifact_metadata`, the
converter-failure wrapper :func:`conversion_error` (an :class:`LMExportError` that names the
LIVs of the op the converter failed on), and re-exports from
:mod:`staredge.exporters.lm_source` how a language model is recognised and built by name
(:func:`is_lm_source`, :func:`resolve_lm`) and :func:`check_chunk`.
Exporting goes through :func:`staredge.exporters.export`, the one export function for every
task (naming, scratch staging, existence checks, validation, result rows);
:func:`export_lm` is its documented alias returning rows as dicts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from staredge.errors import ConfigError, ExportError
from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph, lm_metadata_dict
from staredge.exporters.lm_source import BASELINE_DEFAULTS, LM_NAMES, check_chunk, is_lm_source, resolve_lm
from staredge.formats import TEXT_GENERATION
from staredge.metadata import ArtifactMetadata
from staredge.models.star import STARLanguageModel


class LMExportError(ExportError):
    """A format could not express a decode graph; nothing was written.

    ``format`` is the format's title, ``livs`` the ``(index, class name)`` pairs the failure
    was traced to (empty when it could not be traced), ``reason`` the converter's one-line
    message.
    """

    def __init__(self, message: str, *, format: str = "", livs: list[tuple[int, str]] | None = None,
                 reason: str = "") -> None:
        super().__init__(message)
        self.format = format
        self.livs = list(livs or [])
        self.reason = reason


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


# ------------------------------------------------------------------ converter failures

#: Patterns that name an op in converter messages (``aten::fft_rfft``, ``aten._softmax.default``,
#: coremltools' ``converting 'softmax' op``, ``operator 'x'``, ``op type 'x'``).
_OP_PATTERNS = (
    re.compile(r"aten(?:::|\.)([A-Za-z_][A-Za-z0-9_]*)"),
    re.compile(r"converting '(?:aten::)?([A-Za-z_][A-Za-z0-9_.]*)' op"),
    re.compile(r"operator '(?:aten::)?([A-Za-z_][A-Za-z0-9_.]*)'"),
    re.compile(r"op(?:eration)? type '([A-Za-z_][A-Za-z0-9_.]*)'"),
)
#: A module path that names a LIV (``backbone.livs.3``, ONNX scopes ``/livs.3/``, FX ``livs_3``).
_LIV_PATTERN = re.compile(r"(?<![A-Za-z0-9])(?:livs|norms)[._/\[](\d+)")


def _op_key(name: str) -> str:
    """``aten._softmax.default`` / ``__matmul__`` / ``softmax`` -> ``softmax`` / ``matmul``."""
    return name.split("::")[-1].split(".")[0].strip("_").lower()


def failing_ops(text: str) -> list[str]:
    """Op names a converter message mentions (normalised, in order of appearance)."""
    found: list[str] = []
    for pattern in _OP_PATTERNS:
        for m in pattern.finditer(text):
            key = _op_key(m.group(1))
            if key and key not in found:
                found.append(key)
    return found


def ops_by_liv(graph: LMDecodeGraph) -> dict[int | None, set[str]]:
    """The ops (normalised names, Python-level and dispatcher-level) each LIV's part of the
    decode graph runs, from one eager call (T = 2); key ``None``: embedding and head."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: dict[int | None, set[str]] = {}
    current: list[int | None] = [None]

    def note(name: str) -> None:
        seen.setdefault(current[0], set()).add(_op_key(name))

    class _Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            note(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    class _Dispatch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            note(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    original = graph._mix

    def mix(liv, x, st, pos, shared, index):
        outer, current[0] = current[0], index
        try:
            return original(liv, x, st, pos, shared, index)
        finally:
            current[0] = outer

    graph._mix = mix  # an instance attribute shadows the method for this one call
    try:
        with torch.no_grad(), _Functions(), _Dispatch():
            graph(*graph.example_inputs(tokens=min(2, graph.max_context)))
    finally:
        del graph._mix
    return seen


def liv_classes(graph: LMDecodeGraph) -> list[tuple[int, str]]:
    """``(index, class name)`` of every LIV of the graph's genome."""
    return [(i, seg.name) for i, seg in enumerate(graph.model.backbone.genome)]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first non-empty line of the message`` (at most ``limit`` characters)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0].rstrip('.') if lines else '(no message)'}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def conversion_error(graph: LMDecodeGraph, title: str, exc: BaseException, log: str = "",
                     model: str | None = None) -> LMExportError:
    """The :class:`LMExportError` for a converter failure while writing ``graph`` as ``title``.

    The failure is traced to LIVs when it can be: a module path in the message or the
    converter's log (``livs.3``), else the op the converter names, looked up in the ops each
    LIV runs (:func:`ops_by_liv`). The message then names those LIVs (index and class), the
    op and the converter's one-line reason; otherwise it lists the genome's LIV classes.
    """
    classes = liv_classes(graph)
    names = dict(classes)
    # from the converter's log only its error lines (warnings may name any parameter)
    # and of the message its head (some converters append a dump of the whole graph)
    errors = [ln for ln in log.splitlines() if "error" in ln.lower()]
    text = "\n".join([*str(exc).splitlines()[:20], *errors])
    reason = one_line(exc)
    model = model or lm_metadata_dict(graph)["name"]
    hit = sorted({int(m.group(1)) for m in _LIV_PATTERN.finditer(text) if int(m.group(1)) in names})
    if len(hit) > 2 and len(hit) == len(names):
        hit = []  # every LIV named: a listing, not a location
    op = None
    if not hit:
        ops = failing_ops(text)
        if ops:
            try:
                used = ops_by_liv(graph)
            except Exception:  # noqa: BLE001 - tracing is best effort; the reason is still reported
                used = {}
            for candidate in ops:
                hit = sorted(i for i, s in used.items() if i is not None and candidate in s)
                if hit:
                    op = candidate
                    break
    if hit:
        where = ", ".join(f"LIV {i} ({names[i]})" for i in hit)
        via = f" (op '{op}')" if op else ""
        message = f"{title} cannot express {where}{via} of {model}'s decode graph: {reason}. Nothing was written."
    else:
        listing = ", ".join(f"{i} {n}" for i, n in classes)
        message = (f"{title} conversion of {model}'s decode graph failed: {reason}. The failure could not be "
                   f"traced to one LIV; the genome's LIVs: {listing}. Nothing was written.")
    return LMExportError(message, format=title, livs=[(i, names[i]) for i in hit], reason=reason)


# ------------------------------------------------------------------------- orchestration

def lm_formats() -> dict[str, str]:
    """LM export formats in ``all`` order (those whose :class:`~staredge.formats.FormatSpec`
    names an ``lm_exporter``) and the file suffix of each artifact."""
    from staredge.formats import FORMATS

    return {name: spec.suffixes[0] for name, spec in FORMATS.items() if spec.lm_exporter}


def export_lm(model_or_name, formats, out_dir: str | os.PathLike, *, max_context: int | None = None,
              prefill_chunk: int | None = None, validate: bool = True, force: bool = False,
              dim: int | None = None, depth: int | None = None, progress=None,
              stateful_coreml: bool = True, format_options: dict[str, dict[str, Any]] | None = None,
              precision: str = "fp32") -> list[dict[str, Any]]:
    """Export a STAR LM to each of ``formats`` under ``out_dir``: a thin alias of
    :func:`staredge.exporters.export` (the one export function for every task), returning
    its rows as dicts.

    Each row: format, path, model, max_context, prefill_chunk, state_bytes,
    analysis_state_bytes, size_bytes, export_s, validation (the token-by-token numbers of
    :func:`staredge.exporters.lm_validate.validate_lm`), passed, error (and
    ``refused_livs`` when a converter refused a LIV). ``format_options`` passes a format's
    exporter options through the format table's options schema
    (``{"coreml": {"stateful": False}}`` or ``{"coreml": {"state_precision": "fp16x2"}}``;
    ``stateful_coreml=False`` is the same as the first); ``precision``: "fp32", or weight-only
    "int8" / "int4" where the format table lists them. Everything else is as
    :func:`~staredge.exporters.export` does it: scratch staging, a ``.failed.`` name for an
    artifact that fails validation, ``ArtifactExistsError`` for an existing artifact unless
    ``force``, a recorded error for a format that cannot be converted while the others go on.
    """
    from staredge.exporters.api import export
    from staredge.formats import EXPORT_OPTIONS

    options: dict[str, Any] = {}
    for fmt, kw in (format_options or {}).items():
        for key, value in dict(kw).items():
            opt = next((o for o in EXPORT_OPTIONS.values()
                        if fmt in o.formats and (o.exporter_keyword or o.name) == key), None)
            if opt is None:
                raise ConfigError(f"format_options: {fmt} takes no option {key!r} (the format table's options "
                                  f"schema, staredge.formats.EXPORT_OPTIONS)")
            options[opt.name] = value
    if not stateful_coreml:
        options.setdefault("coreml_stateful", False)
    report = export(model_or_name, formats, out_dir, precision=precision, force=force, validate=validate,
                    progress=progress,
                    max_context=max_context, prefill_chunk=prefill_chunk, dim=dim, depth=depth, **options)
    rows = []
    for r in report.artifacts:
        row = {"format": r.format, "path": r.path, "model": report.model, "max_context": r.max_context,
               "prefill_chunk": r.prefill_chunk, "state_bytes": r.state_bytes,
               "analysis_state_bytes": r.analysis_state_bytes, "size_bytes": r.size_bytes,
               "export_s": round(r.export_s, 2), "passed": r.passed, "error": r.error}
        if r.validation is not None:
            row["validation"] = r.validation
        if r.refused_livs is not None:
            row["refused_livs"] = r.refused_livs
        rows.append(row)
    return rows


def read_state_bytes(path) -> int:
    """``lm.state_bytes`` recorded in an artifact's metadata."""
    from staredge.metadata import read_metadata

    return int(read_metadata(path).lm["state_bytes"])


__all__ = ["export_lm", "resolve_lm", "is_lm_source", "lm_formats", "LM_NAMES", "BASELINE_DEFAULTS",
           "lm_artifact_metadata", "as_graph", "check_chunk", "conversion_error", "failing_ops", "ops_by_liv",
           "liv_classes", "LMExportError", "TEXT_GENERATION"]
