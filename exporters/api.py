"""``export()``: one entry point for every task: model → artifact per format → validation.

:func:`export` dispatches on the model's task (:func:`task_of`): an image classifier goes
through the rewrite passes and each format's ``exporter``; a STAR language model through its
decode graph and each format's ``lm_exporter`` (:mod:`staredge.exporters.lm_export`). What
both share lives here once: the checks before any work (formats, precision and options
against the format table's schema, NaN/Inf weights, the output folder, existing artifacts),
naming (:meth:`staredge.formats.FormatSpec.task_paths`), scratch staging, validation
bookkeeping, result rows (:class:`ArtifactResult`) and the report (:class:`ExportReport`).

Writes are atomic: each artifact is written into a private scratch folder inside
``out_dir`` (:mod:`staredge.exporters.scratch`), validated there, then moved into place with
``os.replace`` (a folder artifact replaces an old one by moving the old one aside first).
A conversion that fails halfway leaves nothing behind, an artifact that fails validation is
kept only under a ``.failed.`` name, and existing artifacts are never touched without
``force=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from staredge.quiet import quiet_api
from staredge.errors import ArtifactExistsError, CheckpointError, ConfigError, NonFiniteWeightsError, StarEdgeError
from staredge.errors import ExportError  # noqa: F401 - re-exported: defined in staredge.errors for every exporter
from staredge.fileio import atomic_write_text, replace_folder_or_file
from staredge.exporters.passes import apply_passes, check_pass_names, resolve_passes
from staredge.exporters.scratch import (converter_tempdir, failed_units, interrupt_guard, interrupted, make_scratch,
                                        redirect_converter_caches, remove_stale_scratch)
from staredge.formats import (FORMATS as FORMAT_TABLE, IMAGE_CLASSIFICATION, IMAGE_PRECISIONS, TEXT_GENERATION,
                              check_export_options, check_precision, checkpoint_suffixes, export_formats, get_format,
                              parse_formats)
from staredge.metadata import ArtifactMetadata, metadata_from_model

#: Every export format, in the order "all" exports them (from :data:`staredge.formats.FORMATS`).
FORMATS = export_formats()
#: Image artifact precisions (the format table's; what each format exports per task is
#: :meth:`staredge.formats.FormatSpec.precisions_for`).
PRECISIONS = IMAGE_PRECISIONS
#: Weight-only LM artifacts pass validation when their held-out bits per byte are within
#: this fraction of the fp32 PyTorch model's (the bounds tests/test_lm_quant.py holds the
#: shipped model to); token-by-token logits are not expected to match at 1e-4 then.
LM_BPB_BOUND = {"int8": 0.01, "int4": 0.05}

__all__ = ["ArtifactResult", "ExportReport", "PRECISIONS", "export", "task_of", "check_finite_weights",
           "resolve_model", "artifact_paths", "path_size", "check_out_dir", "STAGES"]


@dataclass
class ArtifactResult:
    """What one format produced: where, how big, how long, and how close to PyTorch.

    ``passed`` is None when validation was skipped; ``error`` is set (and ``path`` None)
    when the conversion failed. Language-model rows (``task == "text-generation"``) also
    carry ``max_context``, ``prefill_chunk``, ``state_bytes`` (the artifact's decode state),
    ``analysis_state_bytes`` (the genome analysis' figure) and, when a converter refused a
    LIV, ``refused_livs`` (``[index, class]`` pairs); ``validation`` then holds the
    token-by-token numbers.
    """

    format: str
    path: str | None
    size_bytes: int
    export_s: float
    max_abs_diff: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None
    passed: bool | None = None
    precision: str = "fp32"
    rewrites: list[str] = field(default_factory=list)
    rel_error: float | None = None
    validate_s: float | None = None
    validation: dict[str, Any] | None = None
    error: str | None = None
    dynamic_batch: bool = False
    fallback_error: str | None = None
    task: str = IMAGE_CLASSIFICATION
    max_context: int | None = None
    prefill_chunk: int | None = None
    state_bytes: int | None = None
    analysis_state_bytes: int | None = None
    refused_livs: list[list[Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


@dataclass
class ExportReport:
    """One export run: the model, its task and an :class:`ArtifactResult` per format."""

    model: str
    family: str
    precision: str
    out_dir: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    machine: str = ""
    task: str = IMAGE_CLASSIFICATION

    @property
    def passed(self) -> bool:
        """True when every artifact was written and none failed validation."""
        return all(a.error is None and a.passed is not False for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``passed`` included)."""
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d

    def write_json(self, path: str | os.PathLike, force: bool = True) -> Path:
        """Write the report as JSON (atomically)."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n", force=force)


# --------------------------------------------------------------------------- atomic writes


def path_size(path: Path) -> int:
    """Size in bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --------------------------------------------------------------------------- naming


def artifact_paths(out_dir: Path, stem: str, fmt: str) -> tuple[Path, Path]:
    """(unit, entry) for a format: the file/folder moved into place, and the path to load.

    The format table says how each format names its artifact (OpenVINO's ``.xml`` and
    ``.bin`` travel as one folder so that they are replaced together).
    """
    return get_format(fmt, exportable=True).artifact_paths(Path(out_dir), stem)


# --------------------------------------------------------------------------- model & metadata


_CHECKPOINT_SUFFIXES = checkpoint_suffixes()


def resolve_model(model_or_name: nn.Module | str, checkpoint: str | None = None, model_name: str | None = None, *,
                  pretrained: bool = False, num_classes: int | None = None, labels: Any = None,
                  positional: str = "MODEL_OR_CHECKPOINT", img_size: int | None = None) -> nn.Module:
    """A model from a module, a registry name, or a checkpoint path (+ ``model_name``): the one
    implementation behind ``export()``, ``tune()`` and the CLI's model flags
    (``staredge.commands._args.model_from_args`` passes ``--checkpoint``, ``--model``,
    ``--pretrained``, ``--num-classes`` and ``--labels`` here).

    A checkpoint path's architecture is ``model_name``, else the one its StarEdge metadata names
    (safetensors), else its file name (``starnet_s1.pth.tar`` → ``starnet_s1``). A path that does
    not exist is a :class:`CheckpointError` saying so. A registry model whose weights ship with
    the package (``starnet_digits``) loads them unless a checkpoint is given, never random ones.
    ``positional`` is how error messages name the model argument. ``img_size``: the input
    height and width to build the model for (:func:`with_input_size`).
    """
    from staredge.models import create, get_entry

    if isinstance(model_or_name, nn.Module):
        for flag, value in (("--pretrained (pretrained=)", pretrained), ("--num-classes (num_classes=)", num_classes),
                            ("--labels (labels=)", labels)):
            if value not in (None, False):
                raise ConfigError(f"{flag} applies to a registry name or checkpoint, not to a model object")
        if checkpoint is not None:
            from staredge.models.checkpoint import load_checkpoint

            load_checkpoint(model_or_name, checkpoint)
        return with_input_size(model_or_name, img_size).eval()
    text = str(model_or_name)
    if os.path.isfile(text):
        if checkpoint is not None:
            raise ConfigError(f"give the checkpoint either as {positional} or with --checkpoint, not both")
        checkpoint = text
        name = model_name if model_name is not None else _architecture_of(text, get_entry)
    elif text.endswith(_CHECKPOINT_SUFFIXES) or "/" in text or os.sep in text:
        raise CheckpointError(f"checkpoint not found: {text}: no such file; check the path (registry names such as "
                              f"starnet_s1 have no '/' and no file suffix: see `staredge models`)")
    else:
        if model_name is not None and model_name != text:
            raise ConfigError(f"model given twice: {positional} '{text}' and --model '{model_name}'")
        name = text
    if checkpoint is None and not pretrained and get_entry(name).packaged_weights is not None:
        pretrained = True  # weights that ship with the package (the digits model): never random ones
    extra = {} if img_size is None else {"img_size": img_size}
    return create(name, checkpoint=checkpoint, num_classes=num_classes, labels=labels, pretrained=pretrained, **extra)


def with_input_size(model: nn.Module, img_size: int | None) -> nn.Module:
    """``model`` with ``pretrained_cfg.input_size`` set to ``img_size`` × ``img_size`` (a
    shallow copy: the caller's module is not changed; None: ``model`` itself). A model built for one size (EfficientFormerV2's attention grids) must be built
    for the new one instead (``create(name, img_size=...)``: a :class:`ConfigError` says so);
    a model that takes points, not images, refuses it."""
    import copy
    import dataclasses

    if img_size is None:
        return model
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(getattr(cfg, "input_size", ()) or ())
    name = getattr(model, "staredge_name", type(model).__name__)
    if len(size) != 3 or size[1:] == (1, 1):
        raise ConfigError(f"--img-size (img_size=) applies to models that take images; {name} takes inputs of "
                          f"shape {size or 'unknown'}: drop the option")
    built = getattr(model, "img_size", None)
    if built is not None and int(built) != int(img_size):
        raise ConfigError(f"{name} was built for {built}x{built} inputs; build it for {img_size} "
                          f"(create('{name}', img_size={img_size})) or pass the registry name with --img-size")
    sized = copy.copy(model)  # the caller's module keeps its own config (weights are shared, not copied)
    sized.pretrained_cfg = dataclasses.replace(cfg, input_size=(size[0], int(img_size), int(img_size)))
    return sized


def _architecture_of(path: str, get_entry) -> str:
    """The registry name of a checkpoint: from its StarEdge metadata, else its file name."""
    from staredge.metadata import read_safetensors_text

    try:
        text = read_safetensors_text(path)
        model = json.loads(text).get("model") if text else None
        if model:
            return get_entry(model).name
    except (OSError, ValueError, AttributeError, StarEdgeError):  # a damaged header: the file name decides
        pass
    base = Path(path).name
    for suffix in _CHECKPOINT_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    try:
        return get_entry(base).name
    except StarEdgeError as exc:
        raise ConfigError(f"cannot tell the architecture of checkpoint {path} from its file name or metadata; "
                          f"name it with --model NAME (model_name= in Python), e.g. --model starnet_s1") from exc


def model_identity(model: nn.Module) -> tuple[str, str]:
    """(registry name, family) of a model, or (class name, "custom") outside the registry."""
    meta = metadata_from_model(model, family=_family(model))
    return meta.model, meta.family


def build_metadata(model: nn.Module, fmt: str, precision: str, rewrites: list[str], dynamic_batch: bool) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` an artifact of ``model`` carries (the one builder,
    :func:`staredge.metadata.metadata_from_model`; each exporter adds its own version facts)."""
    return metadata_from_model(model, fmt, precision=precision, rewrites=rewrites, dynamic_batch=dynamic_batch,
                               family=_family(model))


def _family(model: nn.Module) -> str:
    """The registry family of a registry model, else "custom" (the exporters may ask the
    registry; the core metadata builder does not import it)."""
    name = getattr(model, "staredge_name", None)
    if not name:
        return "custom"
    family = getattr(model, "staredge_family", None)
    if family:
        return family
    from staredge.models import get_entry

    try:
        return get_entry(name).family
    except StarEdgeError:
        return "custom"


# --------------------------------------------------------------------------- checks


def task_of(model_or_name: Any) -> str:
    """The task of what :func:`export` was given: ``model.staredge_task`` when a model says,
    else a STAR language model (a module, a registry LM name such as ``star_lm_pydoc``, a
    saved STAR LM) is ``"text-generation"`` and everything else ``"image-classification"``."""
    task = getattr(model_or_name, "staredge_task", None)
    if task in (IMAGE_CLASSIFICATION, TEXT_GENERATION):
        return task
    from staredge.exporters.lm_source import is_lm_source

    return TEXT_GENERATION if is_lm_source(model_or_name) else IMAGE_CLASSIFICATION


def check_finite_weights(model: nn.Module, name: str | None = None) -> None:
    """Raise :class:`~staredge.errors.NonFiniteWeightsError` naming the first parameter or
    buffer that holds NaN or Inf (an artifact of such a model computes garbage)."""
    import torch

    for key, tensor in model.state_dict().items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            raise NonFiniteWeightsError(
                f"{name or type(model).__name__} holds {bad:,} NaN/Inf value(s) in '{key}' "
                f"(shape {list(tensor.shape)}); nothing was exported. Load trained weights or fix the training run")


def check_out_dir(out: Path) -> None:
    """ConfigError unless ``out`` can be the output folder: ``out`` must be a folder (or not exist yet); a name with an artifact suffix that is not
    an existing folder is refused: it would become a folder called ``model.onnx/``."""
    suffixes = {s for spec in FORMAT_TABLE.values() for s in spec.suffixes}
    if not out.is_dir() and out.suffix.lower() in suffixes:
        raise ConfigError(
            f"--out (out_dir=) {out} looks like a file name, but it is the output folder: artifacts are named "
            f"after the model inside it (e.g. exports/starnet_s1.onnx). Give a folder, e.g. --out {out.parent / 'exports'}")


# --------------------------------------------------------------------------- task adapters
# A task adapter does the task's part of an export; export() does the rest. Its interface:
# ``task``, ``name``, ``family``, ``precision``, ``stem`` (artifact name before the suffix);
# ``start()`` (shared work once the checks passed); ``variants(fmt)`` (what to try first, e.g.
# the rewrite passes) and ``fallback_variant(fmt, first)`` (a retry after a failed conversion,
# or None); ``result(fmt, variant)`` (a fresh ArtifactResult); ``convert(fmt, variant, entry,
# result)`` (write the artifact at ``entry`` in the scratch folder); ``error_text(fmt, exc,
# result)``; ``converted(fmt, entry, result)`` (read back what was written); ``validate(fmt,
# entry, result)`` (fill in the numbers and ``passed``).


class _ImageJob:
    """Image classifiers: rewrite passes, each format's ``exporter``, validation against the
    PyTorch logits on photos and random inputs (:mod:`staredge.exporters.validate`)."""

    task = IMAGE_CLASSIFICATION

    def __init__(self, model_or_name, fmts, precision, rewrite, checkpoint, model_name, dynamic_batch,
                 fallback_rewrite, calibration, calibration_samples, validate, *, img_size: int | None = None,
                 batch: int = 1) -> None:
        self.passes = {fmt: resolve_passes(rewrite, fmt) for fmt in fmts}
        self.fallback = check_pass_names(fallback_rewrite) if fallback_rewrite is not None else None
        self.model = resolve_model(model_or_name, checkpoint, model_name, img_size=img_size)
        self.batch = batch
        self.name, self.family = model_identity(self.model)
        check_finite_weights(self.model, self.name)
        self.precision = precision
        self.dynamic_batch = dynamic_batch if dynamic_batch is not None else False
        self.calib = None
        if precision == "int8":
            from staredge.exporters.quantize import resolve_calibration

            self.calib = resolve_calibration(self.model, calibration, calibration_samples)
        self.stem = self.name if precision == "fp32" else f"{self.name}_{precision}"
        self.validate_on = validate
        self.rewritten: dict[tuple[str, ...], nn.Module] = {}

    def start(self) -> None:
        """Work shared by every format, done once the checks have passed."""
        from staredge.exporters.passes import example_input
        from staredge.exporters.validate import validation_inputs

        self.example = example_input(self.model, batch=self.batch)
        self.inputs = validation_inputs(self.model) if self.validate_on else None
        self.references: dict[str, Any] = {}  # PyTorch logits per input set, shared by every format
        self.labelled = None
        if self.validate_on and self.precision == "int8":  # int8 is also judged on a labelled set, if any
            from staredge.exporters.quantize import labelled_set

            self.labelled = labelled_set(self.model)

    def variants(self, fmt: str) -> list[Any]:
        return [self.passes[fmt]]

    def fallback_variant(self, fmt: str, first: list[str]) -> list[str] | None:
        return self.fallback if self.fallback is not None and list(first) != self.fallback else None

    def result(self, fmt: str, passes: list[str]) -> ArtifactResult:
        return ArtifactResult(format=fmt, path=None, size_bytes=0, export_s=0.0, precision=self.precision,
                              rewrites=list(passes), dynamic_batch=_wants_dynamic(self.dynamic_batch, fmt))

    def convert(self, fmt: str, passes: list[str], entry: Path, result: ArtifactResult) -> None:
        key = tuple(passes)
        if key not in self.rewritten:
            self.rewritten[key] = apply_passes(self.model, passes) if passes else self.model
        metadata = build_metadata(self.model, fmt, self.precision, passes, result.dynamic_batch)
        quant_kw: dict[str, Any] = {}
        if self.calib is not None:
            quant_kw["calibration"] = self.calib
            metadata.extra["calibration_samples"] = int(len(self.calib))
        get_format(fmt).exporter_function()(
            self.rewritten[key], entry, metadata, self.precision,
            example_input=self.example, dynamic_batch=result.dynamic_batch, **quant_kw,
        )

    def error_text(self, fmt: str, exc: Exception, result: ArtifactResult) -> str:
        if isinstance(exc, StarEdgeError):
            return str(exc)
        return f"{fmt} conversion of {self.name} failed: {type(exc).__name__}: {str(exc).strip()[:500]}"

    def converted(self, fmt: str, entry: Path, result: ArtifactResult) -> None:
        pass

    def validate(self, fmt: str, entry: Path, result: ArtifactResult) -> None:
        from staredge.exporters.validate import validate_artifact

        check = validate_artifact(
            self.model, entry, fmt, self.precision, export_batch=self.example.shape[0],
            dynamic_batch=result.dynamic_batch, inputs=self.inputs, references=self.references,
            labelled=self.labelled,
        )
        result.max_abs_diff = check.max_abs_diff
        result.rel_error = check.rel_error
        result.cosine = check.cosine
        result.top1_agreement = check.top1_agreement
        result.passed = check.passed
        result.validation = check.to_dict()
        if any(v is not None and v != v for v in (check.max_abs_diff, check.rel_error, check.cosine)):
            result.passed = False  # NaN compares false with every tolerance: say so
            result.error = "validation measured NaN: the artifact's (or the model's) outputs are not finite"


class _LanguageModelJob:
    """STAR language models: the decode graph (:class:`~staredge.exporters.lm_graph.LMDecodeGraph`),
    each format's ``lm_exporter``, token-by-token validation through the artifact's runtime
    (:func:`staredge.exporters.lm_validate.validate_lm`)."""

    task = TEXT_GENERATION

    def __init__(self, model_or_name, fmts, options: dict[str, Any], dim, depth, validate,
                 precision: str = "fp32") -> None:
        from staredge.exporters.lm_source import check_chunk, resolve_lm
        from staredge.exporters.lm_graph import DEFAULT_PREFILL_CHUNK, LMDecodeGraph
        from staredge.formats import EXPORT_OPTIONS
        from staredge.models.star.analysis import analyze_genome

        self.model, self.name = resolve_lm(model_or_name, dim, depth)
        check_finite_weights(self.model, self.name)
        self.family = "star_lm"
        self.precision = precision
        self.graph = LMDecodeGraph(self.model, options.get("max_context"))
        ctx = self.graph.max_context
        self.chunk = check_chunk(self.graph, options.get("prefill_chunk", min(DEFAULT_PREFILL_CHUNK, ctx)))
        self.stem = f"{self.name}_ctx{ctx}" if precision == "fp32" else f"{self.name}_{precision}_ctx{ctx}"
        self.validate_on = validate
        self.format_kw: dict[str, dict[str, Any]] = {fmt: {} for fmt in fmts}
        for key, value in options.items():
            opt = EXPORT_OPTIONS[key]
            for fmt in (opt.formats or fmts):
                if fmt in self.format_kw and opt.formats:
                    self.format_kw[fmt][opt.exporter_keyword or key] = value
        self.analysis = analyze_genome(self.model.genome, self.model.dim, ctx, bytes_per_element=4,
                                       configs=self.model.backbone.configs).total_cache_bytes

    def start(self) -> None:
        pass

    def variants(self, fmt: str) -> list[Any]:
        return [None]

    def fallback_variant(self, fmt: str, first: Any) -> None:
        return None

    def result(self, fmt: str, variant: Any) -> ArtifactResult:
        return ArtifactResult(format=fmt, path=None, size_bytes=0, export_s=0.0, precision=self.precision,
                              task=TEXT_GENERATION, max_context=self.graph.max_context, prefill_chunk=self.chunk,
                              state_bytes=sum(s.nbytes for s in self.graph.spec),
                              analysis_state_bytes=self.analysis)

    def convert(self, fmt: str, variant: Any, entry: Path, result: ArtifactResult) -> None:
        writer = get_format(fmt).lm_exporter_function()
        kw = dict(self.format_kw.get(fmt, {}))
        if self.precision != "fp32":  # weight-only int8 / int4 (the table says which formats take it)
            kw["precision"] = self.precision
        writer(self.graph, entry, max_context=self.graph.max_context, prefill_chunk=self.chunk, name=self.name, **kw)

    def error_text(self, fmt: str, exc: Exception, result: ArtifactResult) -> str:
        livs = getattr(exc, "livs", None)  # an LMExportError names the LIVs a converter refused
        if isinstance(livs, list):
            result.refused_livs = [list(p) for p in livs]
        return f"{type(exc).__name__}: {exc}"

    def converted(self, fmt: str, entry: Path, result: ArtifactResult) -> None:
        from staredge.metadata import read_metadata

        lm = read_metadata(entry).lm
        result.state_bytes = int(lm["state_bytes"])
        result.prefill_chunk = int(lm.get("prefill_chunk", self.chunk))
        self._fp16_state = any(s.get("dtype") == "float16" for s in lm.get("state", []))

    def validate(self, fmt: str, entry: Path, result: ArtifactResult) -> None:
        from staredge.exporters.lm_validate import FP16_MIN_GREEDY, FP16_STATE_ATOL, FP32_ATOL, validate_lm
        from staredge.runtimes.lm import load_lm_artifact

        if self.precision != "fp32":
            return self._validate_weight_only(entry, result)
        fp16 = getattr(self, "_fp16_state", False)
        check = validate_lm(load_lm_artifact(entry), self.model, atol=FP16_STATE_ATOL if fp16 else FP32_ATOL,
                            min_greedy=FP16_MIN_GREEDY if fp16 else None)
        result.validation = check
        result.max_abs_diff = check["max_abs_diff"]
        result.passed = bool(check["passed"])
        if not result.passed:
            result.error = (f"validation failed: max |Δ| {check['max_abs_diff']:.2e} (atol {check['atol']:.0e}), "
                            f"{check['greedy_agree']}/{check['greedy_tokens']} greedy tokens identical to PyTorch, "
                            f"{check['decode_steps']} decode steps")


    def _validate_weight_only(self, entry: Path, result: ArtifactResult) -> None:
        """A weight-only int8 / int4 artifact against the fp32 PyTorch model: held-out bits per
        byte within :data:`LM_BPB_BOUND` (greedy agreement is measured and reported too;
        :func:`staredge.exporters.lm_quantize.lm_quality`), in windows that fit the context."""
        from staredge.exporters.lm_quantize import lm_quality
        from staredge.exporters.lm_validate import validation_budget, validation_prompt
        from staredge.runtimes.lm import load_lm_artifact

        ctx = self.graph.max_context
        window = min(256, ctx - 1)
        prompt_bytes, steps = validation_budget(ctx)
        check = lm_quality(load_lm_artifact(entry), self.model, held_bytes=4 * window, window=window,
                           greedy_tokens=min(64, steps + 1), prompt=validation_prompt()[:prompt_bytes])
        bound = LM_BPB_BOUND[self.precision]
        check.update(bpb_bound=bound, passed=abs(check["bpb_change"]) <= bound)
        result.validation = check
        result.passed = bool(check["passed"])
        if not result.passed:
            result.error = (f"validation failed: held-out bits per byte {check['bits_per_byte']} vs fp32 "
                            f"{check['fp32_bits_per_byte']} ({check['bpb_change']:+.2%}, bound ±{bound:.0%})")


# --------------------------------------------------------------------------- export


#: Called as progress(fmt, stage) with stage in "rewrite", "export", "validate", "done".
ProgressCallback = Callable[[str, str], None]
#: The stages progress() is called with for each format, in order.
STAGES = ("rewrite", "export", "validate", "done")


@quiet_api("export")  # converter chatter goes to the log (staredge.quiet.set_verbose shows it)
def export(
    model_or_name: nn.Module | str,
    formats: str | Iterable[str],
    out_dir: str | os.PathLike,
    precision: str = "fp32",
    rewrite: str | Iterable[str] | None = "auto",
    force: bool = False,
    checkpoint: str | None = None,
    validate: bool = True,
    dynamic_batch: bool | str | None = False,
    *,
    model_name: str | None = None,
    progress: ProgressCallback | None = None,
    fallback_rewrite: str | Iterable[str] | None = None,
    keep_failed: bool = False,
    calibration: Any = None,
    calibration_samples: int | None = None,
    max_context: int | None = None,
    prefill_chunk: int | None = None,
    coreml_state: str | None = None,
    coreml_stateful: bool | None = None,
    dim: int | None = None,
    depth: int | None = None,
    img_size: int | None = None,
    batch: int | None = None,
) -> ExportReport:
    """Export a model to each format in ``formats`` and validate every artifact: the one
    export function for every task.

    ``model_or_name``: a module, a registry name, or a checkpoint path (then ``model_name``
    or the file name says which architecture); a STAR language model (a
    ``STARLanguageModel``, ``star_lm_pydoc``, ``transformer_pp`` / ``striped_mamba`` with
    ``dim``/``depth``, or a saved STAR LM) is exported as decode-graph artifacts
    (``docs/lm-artifacts.md``) named ``<name>_ctx<max_context>.<suffix>``, validated token by
    token through its runtime. ``formats``: names, aliases, a comma list or "all" (every
    format the task exports to).

    Options come from the format table's schema (:data:`staredge.formats.EXPORT_OPTIONS`);
    one that does not apply to the model's task or to the formats asked for is a
    :class:`~staredge.errors.ConfigError` naming its flag, never silently ignored:
    ``dynamic_batch`` (images: True or "auto" gives every format that can carry a symbolic
    batch axis one, ONNX and OpenVINO; the others keep batch 1), ``img_size`` (images: the
    artifact's input height and width instead of the model's default; a registry model is
    built for it, e.g. EfficientFormerV2's attention biases) and ``batch`` (images: the batch
    the graph is traced with; a static artifact then runs exactly that batch), ``max_context`` /
    ``prefill_chunk`` (language models; default the model's ``max_seq_len`` and
    ``min(16, max_context)``), ``coreml_state`` ("fp16" / "fp16x2") and ``coreml_stateful``
    (CoreML language models). ``precision`` must be one every format asked for exports for
    the task (:meth:`staredge.formats.FormatSpec.precisions_for`; language models: fp32, and
    weight-only "int8" / "int4" for ONNX, OpenVINO and TFLite, named
    ``<name>_<precision>_ctx<N>`` and validated by held-out bits per byte within
    :data:`LM_BPB_BOUND` of the fp32 model).

    Images: ``rewrite`` is "auto" (``fuse_batchnorm`` always, ``pointwise_conv_to_linear``
    where measured to help the format), "none", or a list of pass names; artifacts are
    compared with the original (un-rewritten) PyTorch model; ``fallback_rewrite`` (pass names,
    e.g. ``["fuse_batchnorm"]``) retries a format whose conversion failed with those passes,
    and the result keeps the first error in ``fallback_error``. ``precision="int8"``
    quantises with each format's own tool and needs ``calibration`` (a folder of images or an
    (N, C, H, W) array; the digits model uses its training split), up to
    ``calibration_samples`` of them (:func:`staredge.exporters.quantize.resolve_calibration`).

    Before any work: a model with NaN/Inf weights raises
    :class:`~staredge.errors.NonFiniteWeightsError`; an existing target raises
    :class:`ArtifactExistsError` unless ``force``; a missing converter raises
    :class:`~staredge.errors.MissingDependencyError` naming the pip extra. Each artifact is
    written and validated in a scratch folder inside ``out_dir`` and moved into place only
    then; one that fails validation is kept for inspection as ``<name>.failed.<suffix>``,
    never under its final name, unless ``keep_failed=True``. A conversion error is recorded
    in that format's result (``error``), nothing is left on disk for it, and the other formats
    go on. Ctrl-C ends the export (``KeyboardInterrupt``), whatever a converter makes of it.
    Scratch folders a killed export left in ``out_dir`` are removed first
    (:mod:`staredge.exporters.scratch`).
    """
    redirect_converter_caches()  # before anything can make torch pick its cache folder
    task = task_of(model_or_name)
    fmts = parse_formats(formats, task)
    options = check_export_options(task, fmts, {
        "dynamic_batch": dynamic_batch, "max_context": max_context, "prefill_chunk": prefill_chunk,
        "coreml_state": coreml_state, "coreml_stateful": coreml_stateful, "img_size": img_size, "batch": batch,
    }, model=str(getattr(model_or_name, "staredge_name", None) or
                 (model_or_name if isinstance(model_or_name, (str, os.PathLike)) else "this model")))
    check_precision(task, fmts, precision)
    single = [get_format(f).title for f in fmts if options.get("batch", 1) > 1 and not get_format(f).static_batch]
    if single:
        raise ConfigError(f"--batch (batch=) {options['batch']}: {', '.join(single)} image inputs take one image per "
                          f"call; export {', '.join(single)} without --batch (or with --batch 1)")
    for fmt in fmts:
        get_format(fmt).require_export()
    out = Path(out_dir)
    check_out_dir(out)
    if task == TEXT_GENERATION:
        _refuse_for_language_models(rewrite=rewrite, checkpoint=checkpoint, model_name=model_name,
                                    fallback_rewrite=fallback_rewrite, calibration=calibration,
                                    calibration_samples=calibration_samples)
        job: Any = _LanguageModelJob(model_or_name, fmts, options, dim, depth, validate, precision)
    else:
        for flag, value in (("--dim (dim=)", dim), ("--depth (depth=)", depth)):
            if value is not None:
                raise ConfigError(f"{flag} builds the transformer_pp / striped_mamba language models only; drop it")
        job = _ImageJob(model_or_name, fmts, precision, rewrite, checkpoint, model_name, dynamic_batch,
                        fallback_rewrite, calibration, calibration_samples, validate,
                        img_size=options.get("img_size"), batch=options.get("batch", 1))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, /proc, a read-only or missing parent
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}; choose a folder "
                          f"you can write to") from exc
    remove_stale_scratch(out)
    targets = {fmt: get_format(fmt).task_paths(task, out, job.stem) for fmt in fmts}
    existing = [str(unit) for units, _ in targets.values() for unit in units if unit.exists() or unit.is_symlink()]
    if existing and not force:
        raise ArtifactExistsError(
            f"{', '.join(existing)} already exist(s); nothing was written. Pass force=True (--force) to replace, "
            f"or choose another output folder"
        )
    job.start()
    report = ExportReport(model=job.name, family=job.family, precision=job.precision, out_dir=str(out),
                          machine=_machine(), task=task)
    notify = progress or (lambda fmt, stage: None)

    def one(fmt: str, variant: Any, guard) -> ArtifactResult:
        notify(fmt, "rewrite")
        units, entry = targets[fmt]
        result = job.result(fmt, variant)
        scratch = make_scratch(out)
        try:
            staged = [scratch / u.relative_to(out) for u in units]
            staged_entry = scratch / entry.relative_to(out)
            staged_entry.parent.mkdir(parents=True, exist_ok=True)
            notify(fmt, "export")
            start = time.perf_counter()
            try:
                with converter_tempdir(scratch):
                    job.convert(fmt, variant, staged_entry, result)
                # issue 23 (H6): the weight digest goes into the metadata before validation and the move
                from staredge.integrity import seal

                seal(staged_entry, fmt)
            except Exception as exc:  # noqa: BLE001 - converter internals; reported, not hidden (never Ctrl-C)
                if interrupted(exc):
                    raise KeyboardInterrupt from exc
                guard.check()
                result.export_s = time.perf_counter() - start
                result.passed = False
                result.error = job.error_text(fmt, exc, result)
                return result
            guard.check()
            result.export_s = time.perf_counter() - start
            result.path = str(entry)
            result.size_bytes = sum(path_size(p) for p in staged if p.exists())
            job.converted(fmt, staged_entry, result)
            if validate:
                notify(fmt, "validate")
                vstart = time.perf_counter()
                try:
                    job.validate(fmt, staged_entry, result)
                except Exception as exc:  # noqa: BLE001 - a runtime refusing the file is a failed check
                    if interrupted(exc):
                        raise KeyboardInterrupt from exc
                    result.passed = False
                    result.error = f"validation could not run: {type(exc).__name__}: {str(exc).strip()[:500]}"
                guard.check()
                result.validate_s = time.perf_counter() - vstart
            final_units = units
            if result.passed is False and not keep_failed:
                final_units, failed_entry = failed_units(units, entry)
                result.path = str(failed_entry)
                note = (f"failed validation: kept as {failed_entry.name} for inspection, not under its final name "
                        f"(pass keep_failed=True / --keep-failed to keep it there)")
                result.error = f"{result.error}; {note}" if result.error else note
            for src, dst in zip(staged, final_units):  # companions first, the entry a runtime loads last
                if src.exists():
                    replace_folder_or_file(src, dst, scratch)
            return result
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            notify(fmt, "done")

    with interrupt_guard() as guard:
        for fmt in fmts:
            first = job.variants(fmt)[0]
            result = one(fmt, first, guard)
            alternative = job.fallback_variant(fmt, first) if result.path is None else None
            if alternative is not None:
                # the rewrites broke this format's converter: one more try with the fallback passes
                retry = one(fmt, alternative, guard)
                if retry.path is not None:
                    retry.fallback_error = result.error or "export failed"
                    result = retry
            report.artifacts.append(result)
    return report


def _refuse_for_language_models(**given: Any) -> None:
    """ConfigError naming the flag of an image-only argument given for a language model."""
    flags = {"rewrite": "--rewrite", "checkpoint": "--checkpoint", "model_name": "--model",
             "fallback_rewrite": "fallback_rewrite", "calibration": "--calibration",
             "calibration_samples": "--calibration-samples"}
    for key, value in given.items():
        if value is None or (key == "rewrite" and value == "auto"):
            continue
        raise ConfigError(f"{flags[key]} ({key}=) applies to image classifiers only; language models are exported "
                          f"from their decode graph (docs/lm-artifacts.md): drop it")


def _wants_dynamic(dynamic_batch: bool | str, fmt: str) -> bool:
    """Whether ``fmt``'s artifact gets a symbolic batch axis: only where the format can
    carry one (:attr:`FormatSpec.dynamic_batch`); ``"auto"`` means wherever it can."""
    if dynamic_batch not in (True, False, "auto"):
        raise ConfigError(f"dynamic_batch must be True, False or 'auto', got {dynamic_batch!r}")
    return bool(dynamic_batch) and get_format(fmt).dynamic_batch


def _machine() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".replace("  ", " ").strip()
