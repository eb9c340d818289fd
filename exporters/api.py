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

import torch
import torch.nn as nn

from staredge.errors import ArtifactExistsError, ConfigError, StarEdgeError, require
from staredge.fileio import atomic_write_text
from staredge.exporters.passes import apply_passes, resolve_passes
from staredge.metadata import ArtifactMetadata

#: Every export format, in the order "all" exports them.
FORMATS = ("onnx", "openvino", "tflite", "coreml")

#: (module, pip extra) each format's converter needs; checked before any work starts.
REQUIREMENTS: dict[str, list[tuple[str, str]]] = {
    "onnx": [("onnx", "onnx"), ("onnxruntime", "onnx")],
    "openvino": [("openvino", "openvino")],
    "tflite": [("litert_torch", "tflite"), ("ai_edge_litert", "tflite")],
    "coreml": [("coremltools", "coreml")],
}

PRECISIONS = ("fp32", "fp16")

#: Formats whose artifacts can carry a symbolic batch axis (``dynamic_batch=True``).
DYNAMIC_BATCH_FORMATS = ("onnx", "openvino")


class ExportError(StarEdgeError):
    """A conversion failed; nothing was written for that format."""


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


def _publish(staged: Path, final: Path, scratch: Path) -> None:
    """Move ``staged`` (file or folder) to ``final``; an old folder is moved aside first."""
    if final.is_dir() and not final.is_symlink():
        aside = scratch / f"old-{final.name}"
        os.replace(final, aside)  # rename(2) cannot replace a non-empty folder
        try:
            os.replace(staged, final)
        except BaseException:
            os.replace(aside, final)
            raise
    else:
        os.replace(staged, final)


def path_size(path: Path) -> int:
    """Size in bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --------------------------------------------------------------------------- naming


def artifact_paths(out_dir: Path, stem: str, fmt: str) -> tuple[Path, Path]:
    """(unit, entry) for a format: the file/folder moved into place, and the path to load.

    OpenVINO's ``.xml`` and ``.bin`` travel as one folder so that they are replaced together.
    """
    if fmt == "onnx":
        p = out_dir / f"{stem}.onnx"
        return p, p
    if fmt == "openvino":
        unit = out_dir / f"{stem}_openvino"
        return unit, unit / f"{stem}.xml"
    if fmt == "tflite":
        p = out_dir / f"{stem}.tflite"
        return p, p
    if fmt == "coreml":
        p = out_dir / f"{stem}.mlpackage"
        return p, p
    raise ConfigError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"all"``, ``"onnx,tflite"`` or a list → validated format names (order kept)."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [str(f).strip().lower() for f in items if str(f).strip()]
    if not names:
        raise ConfigError(f"no export format given; choose from {', '.join(FORMATS)} or 'all'")
    if "all" in names:
        return list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)} or 'all'")
    return list(dict.fromkeys(names))


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
                    f"name it with --model NAME (model_name=...), e.g. --model starnet_s1"
                ) from exc
            model_name = base
        return create(model_name, checkpoint=checkpoint)
    if model_name is not None and model_name != text:
        raise ConfigError(f"model given twice: '{text}' and --model '{model_name}'")
    return create(text, checkpoint=checkpoint)


def model_identity(model: nn.Module) -> tuple[str, str]:
    """(registry name, family) of a model, or (class name, "custom") outside the registry."""
    name = getattr(model, "staredge_name", None)
    if name:
        from staredge.models import get_entry

        try:
            return name, get_entry(name).family
        except StarEdgeError:
            return name, "custom"
    return type(model).__name__.lower(), "custom"


def build_metadata(model: nn.Module, fmt: str, precision: str, rewrites: list[str], dynamic_batch: bool) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` an artifact of ``model`` carries."""
    name, family = model_identity(model)
    cfg = getattr(model, "pretrained_cfg", None)
    preprocessing: dict[str, Any] = {}
    labels: list[str] = []
    input_size = [3, 224, 224]
    if cfg is not None:
        input_size = [int(v) for v in cfg.input_size]
        preprocessing = {
            "resize_shorter": int(max(input_size[1:]) / float(cfg.crop_pct)),
            "crop_pct": float(cfg.crop_pct),
            "interpolation": str(cfg.interpolation),
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
        }
        labels = list(cfg.class_names())
    extra: dict[str, Any] = {"torch_version": torch.__version__}
    if fmt == "onnx":
        from staredge.exporters.onnx import OPSET

        extra["opset"] = OPSET
    return ArtifactMetadata(
        model=name,
        family=family,
        format=fmt,
        input_size=input_size,
        input_layout="NCHW",
        dynamic_batch=bool(dynamic_batch),
        preprocessing=preprocessing,
        labels=labels,
        precision=precision,
        rewrites=list(rewrites),
        checkpoint_sha256=getattr(model, "checkpoint_sha256", None),
        extra=extra,
    )


def _exporter(fmt: str) -> Callable[..., Any]:
    if fmt == "onnx":
        from staredge.exporters.onnx import export_onnx

        return export_onnx
    if fmt == "openvino":
        from staredge.exporters.openvino import export_openvino

        return export_openvino
    if fmt == "tflite":
        from staredge.exporters.tflite import export_tflite

        return export_tflite
    if fmt == "coreml":
        try:
            from staredge.exporters.coreml import export_coreml
        except ImportError as exc:
            if "staredge.exporters.coreml" not in str(exc):
                raise
            raise ExportError("CoreML export is not part of this build (staredge.exporters.coreml is missing)") from exc
        return export_coreml  # takes example_input; CoreML packages have batch 1
    raise ConfigError(f"unknown export format {fmt!r}")


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
    dynamic_batch: bool = False,
    *,
    model_name: str | None = None,
    progress: ProgressCallback | None = None,
) -> ExportReport:
    """Export a model to each format in ``formats`` and validate every artifact.

    ``model_or_name``: a module, a registry name, or a checkpoint path (then ``model_name``
    or the file name says which architecture). ``rewrite``: "auto" (``fuse_batchnorm``
    always, ``pointwise_conv_to_linear`` where measured to help the format), "none", or a
    list of pass names. Artifacts are compared with the original (un-rewritten) PyTorch
    model. Raises :class:`ArtifactExistsError` before any work if a target exists and
    ``force`` is False, and :class:`~staredge.errors.MissingDependencyError` (naming the
    pip extra) if a converter is missing. ``dynamic_batch`` applies to ONNX and OpenVINO;
    TFLite and CoreML artifacts keep batch 1. A conversion error is recorded in that format's
    result (``error``), nothing is left on disk for it, and the other formats go on.
    """
    fmts = parse_formats(formats)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    for fmt in fmts:
        for module, extra in REQUIREMENTS[fmt]:
            require(module, extra, f"{fmt} export")
    passes_by_format = {fmt: resolve_passes(rewrite, fmt) for fmt in fmts}
    model = resolve_model(model_or_name, checkpoint, model_name)
    name, family = model_identity(model)
    stem = name if precision == "fp32" else f"{name}_{precision}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    for fmt in fmts:
        passes = passes_by_format[fmt]
        notify(fmt, "rewrite")
        key = tuple(passes)
        if key not in rewritten:
            rewritten[key] = apply_passes(model, passes) if passes else model
        unit, entry = targets[fmt]
        # TFLite and CoreML artifacts have a static batch (LiteRT resizes at run time instead)
        fmt_dynamic = dynamic_batch and fmt in DYNAMIC_BATCH_FORMATS
        metadata = build_metadata(model, fmt, precision, passes, fmt_dynamic)
        scratch = Path(tempfile.mkdtemp(prefix=".staredge-tmp-", dir=out))
        try:
            staged_unit = scratch / unit.name
            staged_entry = scratch / entry.relative_to(out)
            staged_entry.parent.mkdir(parents=True, exist_ok=True)
            notify(fmt, "export")
            start = time.perf_counter()
            try:
                _exporter(fmt)(
                    rewritten[key], staged_entry, metadata, precision,
                    example_input=example, dynamic_batch=fmt_dynamic,
                )
            except StarEdgeError as exc:
                report.artifacts.append(_failed(fmt, precision, passes, start, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - converter internals; reported, not hidden
                msg = f"{fmt} conversion of {name} failed: {type(exc).__name__}: {str(exc).strip()[:500]}"
                report.artifacts.append(_failed(fmt, precision, passes, start, msg))
                continue
            export_s = time.perf_counter() - start
            result = ArtifactResult(
                format=fmt, path=str(entry), size_bytes=path_size(staged_unit), export_s=export_s,
                precision=precision, rewrites=list(passes),
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
                result.validate_s = time.perf_counter() - vstart
            _publish(staged_unit, unit, scratch)
            report.artifacts.append(result)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        notify(fmt, "done")
    return report


def _failed(fmt: str, precision: str, passes: list[str], start: float, message: str) -> ArtifactResult:
    return ArtifactResult(
        format=fmt, path=None, size_bytes=0, export_s=time.perf_counter() - start, passed=False,
        precision=precision, rewrites=list(passes), error=message,
    )


def _machine() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".replace("  ", " ").strip()
