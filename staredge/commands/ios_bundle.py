"""``staredge ios-bundle``: CoreML packages for the iOS benchmark app, and its manifest.

Exports each MODEL to a validated ``.mlpackage`` with the ordinary exporter
(:func:`staredge.exporters.export`), then writes ``manifest.json`` beside the packages:
what the app (``ios_bench/``) lists and times, with the numbers it copies into its results
(params and MACs by our convention, precision, rewrites, how the package validated).
The manifest format is read by ``ios_bench/Sources/StarEdgeBenchCore/Manifest.swift``::

    staredge ios-bundle starnet_s1 starnet_s2 --out ios_bench/Models
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from staredge.commands import _args
from staredge.errors import ArtifactExistsError, ConfigError, StarEdgeError
from staredge.formats import TEXT_GENERATION, apple_format

#: Identifies a manifest; the Swift reader refuses other schemas and newer versions.
MANIFEST_SCHEMA = "staredge-ios-bundle"
MANIFEST_SCHEMA_VERSION = 1
#: The manifest's file name inside the models folder.
MANIFEST_NAME = "manifest.json"
#: Where the app's Xcode project picks the packages up.
DEFAULT_OUT = "ios_bench/Models"


class IOSBundleError(StarEdgeError):
    """A model could not be bundled, or a manifest is not one this version reads."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ios-bundle`` subcommand."""
    p = sub.add_parser(
        "ios-bundle",
        help="export CoreML packages and the manifest the iOS benchmark app (ios_bench/) reads",
        description=(
            "Export each MODEL to a validated CoreML .mlpackage and write manifest.json beside them; "
            "the iOS app and staredge-bench-mac time every package the manifest lists. The manifest "
            "lists the models of this call only. Exits 1 if any model failed (the others are bundled)."
        ),
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names (see `staredge models`)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"models folder (default: {DEFAULT_OUT})")
    _args.add_precision(p, multiple=False, default="fp32", choices=("fp32", "fp16"), help="package precision")
    _args.add_rewrite(p, what=" of every package")
    _args.add_weights(p, checkpoint_help="weights to load into the (single) MODEL")
    _args.add_force(p, "an existing manifest and packages")
    p.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch (not recommended)")
    p.set_defaults(func=run)


def manifest_entry(
    name: str,
    package: str | os.PathLike,
    metadata: Any,
    *,
    params_m: float | None = None,
    macs_m: float | None = None,
    validated: bool | None = None,
    max_abs_diff: float | None = None,
    size_bytes: int | None = None,
    variant: str = "star",
) -> dict[str, Any]:
    """One model of the manifest, from its package path and the metadata inside the package.

    ``metadata`` is the package's :class:`~staredge.metadata.ArtifactMetadata`. For a
    language model (``task="text-generation"``) the ``lm`` entry carries the decode contract
    the app needs (context, prefill chunk, token ids, input and output names).
    """
    lm_meta = getattr(metadata, "lm", None) or (metadata.extra or {}).get("lm") or {}
    lm = None
    if metadata.task == TEXT_GENERATION:
        inputs = list(lm_meta.get("inputs") or ["input_ids", "position"])
        outputs = list(lm_meta.get("outputs") or ["logits"])
        lm = {
            "max_context": lm_meta.get("max_context"),
            "prefill_chunk": lm_meta.get("prefill_chunk"),
            "bos_id": lm_meta.get("bos_id"),
            "vocab_size": lm_meta.get("vocab_size"),
            "input_ids_name": inputs[0],
            "position_name": inputs[1] if len(inputs) > 1 else "position",
            "logits_name": outputs[0],
            "state_bytes": lm_meta.get("state_bytes"),
        }
    return {
        "name": name,
        "variant": variant,
        "package": Path(package).name,
        "task": metadata.task,
        "precision": metadata.precision,
        "rewrites": list(metadata.rewrites),
        "input_name": metadata.input_name,
        "input_size": [int(v) for v in metadata.input_size],
        "params_m": params_m,
        "macs_m": macs_m,
        "validated": validated,
        "max_abs_diff": max_abs_diff,
        "size_bytes": size_bytes,
        "lm": lm,
    }


def build_manifest(entries: Iterable[dict[str, Any]], *, rewrite: str, created_utc: str, staredge_version: str) -> dict[str, Any]:
    """The manifest document (checked with :func:`validate_manifest`)."""
    doc = {
        "schema": MANIFEST_SCHEMA,
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created_utc": created_utc,
        "staredge_version": staredge_version,
        "rewrite": rewrite,
        "models": list(entries),
    }
    return validate_manifest(doc)


def validate_manifest(data: Any, source: str = "manifest") -> dict[str, Any]:
    """``data`` if it is a manifest this version reads, else :class:`IOSBundleError` saying why."""
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise IOSBundleError(f"{source} is not a '{MANIFEST_SCHEMA}' manifest (write one with `staredge ios-bundle`)")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise IOSBundleError(f"{source}: schema_version must be a positive integer, got {version!r}")
    if version > MANIFEST_SCHEMA_VERSION:
        raise IOSBundleError(f"{source} uses manifest schema_version {version}; this StarEdge reads up to "
                             f"{MANIFEST_SCHEMA_VERSION}: upgrade staredge")
    models = data.get("models")
    if not isinstance(models, list):
        raise IOSBundleError(f"{source} has no 'models' list")
    seen: set[str] = set()
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("package"), str):
            raise IOSBundleError(f"{source}: model {i} needs a 'name' and a 'package' (strings)")
        package = m["package"]
        if "/" in package or "\\" in package or package.startswith(".") or not package.endswith((*apple_format().suffixes, ".mlmodelc")):
            raise IOSBundleError(f"{source}: model {m['name']}: 'package' must be a .mlpackage or .mlmodelc file name "
                                 f"inside the models folder, got {package!r}")
        if package in seen:
            raise IOSBundleError(f"{source}: package {package} is listed twice")
        seen.add(package)
    return data


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a manifest (a folder means its ``manifest.json``)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IOSBundleError(f"cannot read {p}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise IOSBundleError(f"{p} is not valid JSON: {exc}") from exc
    return validate_manifest(data, str(p))


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any], force: bool = False) -> Path:
    """Write ``manifest.json`` into ``folder`` atomically; an existing one needs ``force``."""
    from staredge.fileio import atomic_write_text

    validate_manifest(manifest)
    return atomic_write_text(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n", force=force)


def bundle(
    models: Iterable[str],
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    precision: str = "fp32",
    rewrite: str = "auto",
    force: bool = False,
    validate: bool = True,
    progress: Callable[[str, str], None] | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """Export ``models`` to CoreML packages in ``out`` and write the manifest.

    ``pretrained`` bundles the released weights, ``checkpoint`` loads a weights file (one
    model only); by default the registry's seeded random weights are bundled.

    Returns (manifest, failures): the manifest lists every model whose package was written
    and did not fail validation; ``failures`` says why the others were left out. With no
    model bundled, nothing is written and :class:`IOSBundleError` is raised. An existing
    manifest (or package) is never replaced without ``force``: checked before any export.
    """
    from staredge._version import __version__
    from staredge.bench.results import utc_now

    names = list(dict.fromkeys(str(m) for m in models))
    if not names:
        raise ConfigError("name at least one model to bundle (see `staredge models`)")
    from staredge.models import get_entry

    for name in names:  # every name is checked before anything is exported
        get_entry(name)
    if checkpoint is not None and len(names) != 1:
        raise ConfigError("--checkpoint loads one weights file: name exactly one MODEL with it")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no such file")
    folder = Path(out)
    target = folder / MANIFEST_NAME
    if target.exists() and not force:
        raise ArtifactExistsError(f"{target} exists; pass --force to replace it (the new manifest lists only the models given now)")

    from staredge.exporters import export
    from staredge.metadata import read_metadata

    entries: list[dict[str, Any]] = []
    failures: list[str] = []
    for name in names:
        notify = (lambda fmt, stage, _n=name: progress(_n, stage)) if progress else None
        source: Any = name
        if pretrained or checkpoint is not None:
            from staredge.models import create

            source = create(name, checkpoint=None if checkpoint is None else str(checkpoint), pretrained=pretrained,
                            progress=True)
        report = export(source, [apple_format().name], folder, precision=precision, rewrite=rewrite, force=force,
                        validate=validate, progress=notify)
        art = report.artifacts[0]
        if art.path is None or art.error:
            failures.append(f"{name}: {art.error or 'no package was written'}")
            continue
        if art.passed is False:
            failures.append(f"{name}: the package failed validation against PyTorch (max |diff| {art.max_abs_diff})")
            continue
        metadata = read_metadata(art.path)
        params_m, macs_m = _counts(name, metadata)
        entries.append(manifest_entry(
            name, art.path, metadata, params_m=params_m, macs_m=macs_m, validated=art.passed,
            max_abs_diff=art.max_abs_diff, size_bytes=art.size_bytes,
        ))
    if not entries:
        raise IOSBundleError("no model was bundled: " + "; ".join(failures))
    manifest = build_manifest(entries, rewrite=rewrite, created_utc=utc_now(), staredge_version=__version__)
    write_manifest(folder, manifest, force=force)
    return manifest, failures


def _counts(name: str, metadata: Any) -> tuple[float | None, float | None]:
    """(params M, MACs M) of an image model by our convention (as `staredge bench` records them)."""
    if metadata.task != "image-classification":
        return None, None
    from staredge.profiler import profile

    prof = profile(name)
    return round(prof.params_m, 4), round(prof.macs_m, 2)


def run(args: argparse.Namespace) -> int:
    """Bundle, print what the manifest lists; 0 when every model was bundled, else 1."""
    from rich.console import Console

    capture = getattr(args, "capture", None)  # converter output is captured like export's
    console = Console(file=capture.stderr) if capture is not None else Console(stderr=True)

    def progress(model: str, stage: str) -> None:
        console.print(f"{model}: {stage}", highlight=False)

    manifest, failures = bundle(args.models, args.out, precision=args.precision, rewrite=args.rewrite,
                                force=args.force, validate=not args.no_validate, progress=progress,
                                pretrained=args.pretrained, checkpoint=args.checkpoint)
    for m in manifest["models"]:
        diff = "not validated" if m["validated"] is None else f"max |diff| {m['max_abs_diff']:.2e} vs PyTorch"
        print(f"{m['name']}: {m['package']} ({m['precision']}, {diff})")
    print(f"wrote {Path(args.out) / MANIFEST_NAME} ({len(manifest['models'])} model(s)); "
          "open ios_bench/App in Xcode (see ios_bench/README.md)")
    for f in failures:
        console.print(f"[red]{f}[/red]")
    return 1 if failures else 0
