"""``export()``: model → rewritten model → one artifact per format → validation report.

Writes are atomic: each artifact is written into a private temporary folder inside
``out_dir`` under its final name, validated there, then moved into place with
``os.replace`` (a folder artifact replaces an old one by moving the old one aside first).
A conversion that fails halfway leaves nothing behind, and existing artifacts are never
touched without ``force=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from staredge.errors import ArtifactExistsError, CheckpointError, ConfigError, StarEdgeError
from staredge.errors import ExportError  # noqa: F401 - re-exported: defined in staredge.errors for every exporter
from staredge.fileio import atomic_write_text, replace_folder_or_file
from staredge.exporters.passes import apply_passes, check_pass_names, resolve_passes
from staredge.exporters.scratch import failed_paths, make_scratch, remove_stale_scratch
from staredge.formats import export_formats, get_format, parse_formats
from staredge.metadata import ArtifactMetadata, metadata_from_model

#: Every export format, in the order "all" exports them (from :data:`staredge.formats.FORMATS`).
FORMATS = export_formats()

#: Artifact precisions: fp32, fp16 weights, int8 (needs calibration data: exporters/quantize.py).
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ArtifactResult:
    """What one format produced: where, how big, how long, and how close to PyTorch.

    ``passed`` is None when validation was skipped; ``error`` is set (and ``path`` None)
    when the conversion failed.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


@dataclass
class ExportReport:
    """One export run: the model and an :class:`ArtifactResult` per format."""

    model: str
    family: str
    precision: str
    out_dir: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    machine: str = ""

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


_CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".safetensors", ".bin")


def resolve_model(model_or_name: nn.Module | str, checkpoint: str | None = None, model_name: str | None = None) -> nn.Module:
    """A model from a module, a registry name, or a checkpoint path (+ ``model_name``).

    For a checkpoint path without ``model_name``, the registry name is taken from the file
    name (``starnet_s1.pth.tar`` → ``starnet_s1``).
    """
    from staredge.models import create, get_entry

    if isinstance(model_or_name, nn.Module):
        if checkpoint is not None:
            from staredge.models.checkpoint import load_checkpoint

            load_checkpoint(model_or_name, checkpoint)
        return model_or_name.eval()
    text = str(model_or_name)
    if os.path.isfile(text):
        if checkpoint is not None:
            raise ConfigError("give the checkpoint either as MODEL_OR_CHECKPOINT or with --checkpoint, not both")
        checkpoint = text
        if model_name is None:
            base = Path(text).name
            for suffix in _CHECKPOINT_SUFFIXES:
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
                    break
            try:
                get_entry(base)
            except StarEdgeError as exc:
                raise ConfigError(
                    f"cannot tell the architecture of checkpoint {text} from its file name; "
                    f"name it with --model NAME (model_name= in Python), e.g. --model starnet_s1"
                ) from exc
            model_name = base
        return create(model_name, checkpoint=checkpoint)
    if text.endswith(_CHECKPOINT_SUFFIXES) or "/" in text or os.sep in text:
        raise CheckpointError(f"checkpoint not found: {text}; check the path (registry names such as starnet_s1 "
                              f"have no '/' and no file suffix: see `staredge models`)")
    if model_name is not None and model_name != text:
        raise ConfigError(f"model given twice: '{text}' and --model '{model_name}'")
    return create(text, checkpoint=checkpoint)


def model_identity(model: nn.Module) -> tuple[str, str]:
    """(registry name, family) of a model, or (class name, "custom") outside the registry."""
    meta = metadata_from_model(model)
    return meta.model, meta.family


def build_metadata(model: nn.Module, fmt: str, precision: str, rewrites: list[str], dynamic_batch: bool) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` an artifact of ``model`` carries (the one builder,
    :func:`staredge.metadata.metadata_from_model`; each exporter adds its own version facts)."""
    return metadata_from_model(model, fmt, precision=precision, rewrites=rewrites, dynamic_batch=dynamic_batch)


# --------------------------------------------------------------------------- export


#: Called as progress(fmt, stage) with stage in "rewrite", "export", "validate", "done".
ProgressCallback = Callable[[str, str], None]


def export(
    model_or_name: nn.Module | str,
    formats: str | Iterable[str],
    out_dir: str | os.PathLike,
    precision: str = "fp32",
    rewrite: str | Iterable[str] | None = "auto",
    force: bool = False,
    checkpoint: str | None = None,
    validate: bool = True,
    dynamic_batch: bool | str = False,
    *,
    model_name: str | None = None,
    progress: ProgressCallback | None = None,
    fallback_rewrite: str | Iterable[str] | None = None,
    keep_failed: bool = False,
    calibration: Any = None,
    calibration_samples: int | None = None,
) -> ExportReport:
    """Export a model to each format in ``formats`` and validate every artifact.

    ``model_or_name``: a module, a registry name, or a checkpoint path (then ``model_name``
    or the file name says which architecture). ``rewrite``: "auto" (``fuse_batchnorm``
    always, ``pointwise_conv_to_linear`` where measured to help the format), "none", or a
    list of pass names. Artifacts are compared with the original (un-rewritten) PyTorch
    model; one that fails validation (NaN included) is kept for inspection as
    ``<name>.failed.<suffix>``, never under its final name, unless ``keep_failed=True``.
    Scratch folders a killed export left in ``out_dir`` are removed first
    (:mod:`staredge.exporters.scratch`). Raises :class:`ArtifactExistsError` before any work if a target exists and
    ``force`` is False, and :class:`~staredge.errors.MissingDependencyError` (naming the
    pip extra) if a converter is missing. ``dynamic_batch`` (True or "auto": every format
    that can carry a symbolic batch axis, per the format table: ONNX and OpenVINO; the
    others keep batch 1). A conversion error is recorded in that format's result
    (``error``), nothing is left on disk for it, and the other formats go on;
    ``fallback_rewrite`` (pass names, e.g. ``["fuse_batchnorm"]``) retries a format whose
    conversion failed with those passes, and the result keeps the first error in
    ``fallback_error``. ``precision="int8"`` quantises with each format's own tool and
    needs ``calibration`` (a folder of images or an (N, C, H, W) array; the digits model
    uses its training split), up to ``calibration_samples`` of them
    (:func:`staredge.exporters.quantize.resolve_calibration`; none is a ``CalibrationError``).
    """
    fmts = parse_formats(formats)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    for fmt in fmts:
        get_format(fmt).require_export()
    passes_by_format = {fmt: resolve_passes(rewrite, fmt) for fmt in fmts}
    model = resolve_model(model_or_name, checkpoint, model_name)
    name, family = model_identity(model)
    calib = None
    if precision == "int8":
        from staredge.exporters.quantize import resolve_calibration

        calib = resolve_calibration(model, calibration, calibration_samples)
    stem = name if precision == "fp32" else f"{name}_{precision}"
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, /proc, a read-only or missing parent
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}; choose a folder "
                          f"you can write to") from exc
    remove_stale_scratch(out)
    targets = {fmt: artifact_paths(out, stem, fmt) for fmt in fmts}
    existing = [str(unit) for unit, _ in targets.values() if unit.exists() or unit.is_symlink()]
    if existing and not force:
        raise ArtifactExistsError(
            f"{', '.join(existing)} already exist(s); nothing was written. Pass force=True (--force) to replace, "
            f"or choose another output folder"
        )

    from staredge.exporters.passes import example_input as _example_input
    from staredge.exporters.validate import validate_artifact, validation_inputs

    example = _example_input(model, batch=1)
    inputs = validation_inputs(model) if validate else None
    references: dict[str, Any] = {}  # PyTorch logits per input set, shared by every format
    report = ExportReport(model=name, family=family, precision=precision, out_dir=str(out), machine=_machine())
    rewritten: dict[tuple[str, ...], nn.Module] = {}
    notify = progress or (lambda fmt, stage: None)
    fallback = check_pass_names(fallback_rewrite) if fallback_rewrite is not None else None

    def one(fmt: str, passes: list[str]) -> ArtifactResult:
        notify(fmt, "rewrite")
        key = tuple(passes)
        if key not in rewritten:
            rewritten[key] = apply_passes(model, passes) if passes else model
        unit, entry = targets[fmt]
        # formats without a symbolic batch axis keep batch 1 (LiteRT resizes at load time instead)
        fmt_dynamic = _wants_dynamic(dynamic_batch, fmt)
        metadata = build_metadata(model, fmt, precision, passes, fmt_dynamic)
        quant_kw: dict[str, Any] = {}
        if calib is not None:
            quant_kw["calibration"] = calib
            metadata.extra["calibration_samples"] = int(len(calib))
        scratch = make_scratch(out)
        try:
            staged_unit = scratch / unit.name
            staged_entry = scratch / entry.relative_to(out)
            staged_entry.parent.mkdir(parents=True, exist_ok=True)
            notify(fmt, "export")
            start = time.perf_counter()
            try:
                get_format(fmt).exporter_function()(
                    rewritten[key], staged_entry, metadata, precision,
                    example_input=example, dynamic_batch=fmt_dynamic, **quant_kw,
                )
            except StarEdgeError as exc:
                return _failed(fmt, precision, passes, start, str(exc))
            except Exception as exc:  # noqa: BLE001 - converter internals; reported, not hidden
                msg = f"{fmt} conversion of {name} failed: {type(exc).__name__}: {str(exc).strip()[:500]}"
                return _failed(fmt, precision, passes, start, msg)
            export_s = time.perf_counter() - start
            result = ArtifactResult(
                format=fmt, path=str(entry), size_bytes=path_size(staged_unit), export_s=export_s,
                precision=precision, rewrites=list(passes), dynamic_batch=fmt_dynamic,
            )
            if validate:
                notify(fmt, "validate")
                vstart = time.perf_counter()
                try:
                    check = validate_artifact(
                        model, staged_entry, fmt, precision, export_batch=example.shape[0],
                        dynamic_batch=fmt_dynamic, inputs=inputs, references=references,
                    )
                except Exception as exc:  # noqa: BLE001 - a runtime refusing the file is a failed check
                    result.passed = False
                    result.error = f"validation could not run: {type(exc).__name__}: {str(exc).strip()[:500]}"
                else:
                    result.max_abs_diff = check.max_abs_diff
                    result.rel_error = check.rel_error
                    result.cosine = check.cosine
                    result.top1_agreement = check.top1_agreement
                    result.passed = check.passed
                    result.validation = check.to_dict()
                    if any(v is not None and v != v for v in (check.max_abs_diff, check.rel_error, check.cosine)):
                        result.passed = False  # NaN compares false with every tolerance: say so
                        result.error = "validation measured NaN: the artifact's (or the model's) outputs are not finite"
                result.validate_s = time.perf_counter() - vstart
            if result.passed is False and not keep_failed:
                unit, entry = failed_paths(unit, entry)
                result.path = str(entry)
                note = (f"failed validation: kept as {unit.name} for inspection, not under its final name "
                        f"(pass keep_failed=True / --keep-failed to keep it there)")
                result.error = f"{result.error}; {note}" if result.error else note
            replace_folder_or_file(staged_unit, unit, scratch)
            return result
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            notify(fmt, "done")

    for fmt in fmts:
        result = one(fmt, passes_by_format[fmt])
        if result.path is None and fallback is not None and result.rewrites != fallback:
            # the rewrites broke this format's converter: one more try with the fallback passes
            retry = one(fmt, fallback)
            if retry.path is not None:
                retry.fallback_error = result.error or "export failed"
                result = retry
        report.artifacts.append(result)
    return report


def _wants_dynamic(dynamic_batch: bool | str, fmt: str) -> bool:
    """Whether ``fmt``'s artifact gets a symbolic batch axis: only where the format can
    carry one (:attr:`FormatSpec.dynamic_batch`); ``"auto"`` means wherever it can."""
    if dynamic_batch not in (True, False, "auto"):
        raise ConfigError(f"dynamic_batch must be True, False or 'auto', got {dynamic_batch!r}")
    return bool(dynamic_batch) and get_format(fmt).dynamic_batch


def _failed(fmt: str, precision: str, passes: list[str], start: float, message: str) -> ArtifactResult:
    return ArtifactResult(
        format=fmt, path=None, size_bytes=0, export_s=time.perf_counter() - start, passed=False,
        precision=precision, rewrites=list(passes), error=message,
    )


def _machine() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".replace("  ", " ").strip()
