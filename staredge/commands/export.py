"""``staredge export``: a model (registry name or checkpoint) → validated edge artifacts."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from staredge.formats import export_formats


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX / OpenVINO / TFLite / CoreML and validate each artifact against PyTorch",
        description=(
            "Export a model to edge formats with its metadata inside each artifact, then compare every "
            "artifact with the PyTorch model on real photos and random inputs. Exits 1 if any artifact "
            "fails validation or conversion."
        ),
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="registry name (see `staredge models`) or a checkpoint file")
    p.add_argument("--formats", "--format", dest="formats", default="onnx",
                   help=f"comma-separated: {','.join(export_formats())} (or aliases), or 'all' (default: onnx)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="artifact precision (default: fp32); int8 needs --calibration (docs/low-precision.md)")
    p.add_argument("--calibration", metavar="DIR",
                   help="int8: folder of representative images (the digits model uses its own training split)")
    p.add_argument("--calibration-samples", type=int, default=None, metavar="N",
                   help="int8: calibration images to use (default: 128)")
    p.add_argument(
        "--rewrite", default="auto",
        help="'auto' (fuse BN always; pointwise conv→Linear where measured to help), 'none', "
        "or a list: fuse_batchnorm,pointwise_conv_to_linear",
    )
    p.add_argument("--out", default="exports", help="output folder (default: ./exports)")
    p.add_argument("--force", action="store_true", help="replace artifacts that already exist")
    add_model_arguments(p)
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis where the format allows it (ONNX, OpenVINO)")
    p.add_argument("--no-validate", action="store_true", help="skip validation (not recommended)")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep an artifact that fails validation under its final name (default: <name>.failed.<suffix>)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the JSON report to FILE ('-' or no FILE: print it instead of the table)")
    p.add_argument("--report", dest="json", metavar="FILE", help=argparse.SUPPRESS)  # old spelling of --json FILE
    from staredge.commands.export_lm import add_lm_arguments

    add_lm_arguments(p)
    p.set_defaults(func=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say which model and weights: shared by every command that builds a model."""
    p.add_argument("--checkpoint", metavar="FILE", help="weights to load into the registry model")
    p.add_argument("--pretrained", action="store_true",
                   help="download the released weights into the cache (see `staredge models`) and load them")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="architecture (registry name) of a checkpoint given as MODEL_OR_CHECKPOINT")
    p.add_argument("--num-classes", type=int, metavar="N", help="classifier head size (e.g. of a fine-tuned checkpoint)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line in index order; carried in the artifacts")


def model_from_args(args: argparse.Namespace) -> Any:
    """The model the flags describe: a registry name or a checkpoint file, with ``--model``,
    ``--checkpoint``, ``--pretrained``, ``--num-classes`` and ``--labels``."""
    from staredge.errors import ConfigError
    from staredge.exporters.api import _CHECKPOINT_SUFFIXES
    from staredge.models import create, get_entry

    text, checkpoint, name = str(args.model), args.checkpoint, args.model_name
    if os.path.isfile(text):
        if checkpoint is not None:
            raise ConfigError("give the checkpoint either as MODEL_OR_CHECKPOINT or with --checkpoint, not both")
        checkpoint = text
        if name is None:
            base = os.path.basename(text)
            for suffix in _CHECKPOINT_SUFFIXES:
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
                    break
            try:
                name = get_entry(base).name
            except Exception as exc:
                raise ConfigError(f"cannot tell the architecture of checkpoint {text} from its file name; "
                                  f"name it with --model NAME, e.g. --model starnet_s1") from exc
    else:
        if name is not None and name != text:
            raise ConfigError(f"model given twice: '{text}' and --model '{name}'")
        name = text
    return create(name, checkpoint=checkpoint, num_classes=args.num_classes, labels=args.labels,
                  pretrained=args.pretrained, progress=True)


def weights_notice(model: Any) -> str | None:
    """The one-line notice for a randomly initialised model (None when it has weights)."""
    if getattr(model, "pretrained", True):
        return None
    from staredge.models import get_entry

    entry = get_entry(model.staredge_name)
    hint = ("--pretrained downloads the released weights" if entry.weights is not None
            else "--checkpoint FILE loads trained weights")
    return (f"{model.staredge_name} has random weights (seed {model.init_seed}, the same on every run): "
            f"predictions mean nothing; {hint}")


def _report_file(args: argparse.Namespace) -> str | None:
    """The report file the flags name (``--report FILE`` / ``--json FILE``), or None."""
    for name in ("report", "json"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value != "-":
            return value
    return None


def _check_outputs(args: argparse.Namespace) -> str | None:
    """Check ``--out`` and the report file before any work: a file in the way, a folder that
    cannot be written (``/proc/...``) or an existing report without ``--force`` is a typed
    error now, not a traceback (or a silently replaced report) after minutes of exporting."""
    from staredge.commands._outputs import check_output_file, check_output_folder

    report_file = _report_file(args)
    if report_file:  # first: a refused report leaves no new folder behind
        check_output_file(report_file, force=args.force, flag="--report")
    check_output_folder(args.out)
    return report_file


def _write_report(report: Any, path: str, force: bool) -> None:
    from staredge.errors import ConfigError, StarEdgeError

    try:
        report.write_json(path, force=force)
    except StarEdgeError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Export, show progress and a summary table; 0 if every artifact passed, else 1."""
    from staredge.commands.export_lm import is_lm, run_lm

    if is_lm(args):  # language models: decode-graph artifacts (docs/lm-artifacts.md)
        return run_lm(args)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from staredge.exporters import export
    from staredge.exporters.api import parse_formats
    from staredge.quiet import notice

    capture = getattr(args, "capture", None)
    report_file = _check_outputs(args)  # before any work
    formats = parse_formats(args.formats)
    console = Console(file=capture.stderr) if capture is not None else Console(stderr=True)
    model = model_from_args(args)
    message = weights_notice(model)
    if message:
        notice(message, capture)
    stages = ("rewrite", "export", "validate", "done")
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("preparing", total=len(formats) * len(stages))

        def progress(fmt: str, stage: str) -> None:
            bar.update(task, description=f"{fmt}: {stage}", advance=1)

        report = export(
            model, formats, args.out, precision=args.precision, rewrite=args.rewrite, force=args.force,
            validate=not args.no_validate, dynamic_batch=args.dynamic_batch, progress=progress,
            keep_failed=args.keep_failed, calibration=args.calibration,
            calibration_samples=args.calibration_samples,
        )
    if report_file:
        _write_report(report, report_file, args.force)
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        Console(width=max(140, Console().width)).print(summary_table(report))
        for a in report.artifacts:
            if a.error:
                console.print(f"[red]{a.format}: {a.error}[/red]")
    return 0 if report.passed else 1


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _relative(path: str | None, base: str) -> str:
    if not path:
        return "—"
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def summary_table(report: Any):
    """A rich table: format, file, size, export time, max |Δ|, rel. error, cosine, top-1, pass/fail."""
    from rich.table import Table

    from staredge.exporters.validate import TOLERANCES

    labels = {"max_abs_diff": "max |Δ| ≤ {:.0e}", "rel_error": "rel. err ≤ {:.0e}", "top1_agreement": "top-1 ≥ {:.0%}",
              "accuracy_drop": "accuracy drop ≤ {:.1%}", "cosine": "cosine ≥ {} (no labelled set)"}
    tol = ", ".join(labels.get(k, k + " ≤ {}").format(v) for k, v in TOLERANCES[report.precision].items())
    table = Table(
        title=f"staredge export: {report.model} ({report.precision}) → {report.out_dir}",
        caption=f"vs. PyTorch on scikit-image photos + random inputs; pass: {tol}",
        caption_justify="left",
    )
    for col, just in [
        ("format", "left"), ("file", "left"), ("size", "right"), ("export", "right"), ("max |Δ|", "right"),
        ("rel. err", "right"), ("cosine", "right"), ("top-1", "right"), ("result", "left"),
    ]:
        table.add_column(col, justify=just)
    for a in report.artifacts:
        if a.error and a.path is None:
            table.add_row(a.format, "—", "—", f"{a.export_s:.1f} s", "—", "—", "—", "—", "[red]FAILED (conversion)[/red]")
            continue
        fig = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
        result = "[yellow]not validated[/yellow]" if a.passed is None else ("[green]pass[/green]" if a.passed else "[red]FAIL[/red]")
        table.add_row(
            a.format, _relative(a.path, report.out_dir), _size(a.size_bytes), f"{a.export_s:.1f} s", fig(a.max_abs_diff, ".2e"),
            fig(a.rel_error, ".2e"), fig(a.cosine, ".6f"), fig(a.top1_agreement, ".0%"), result,
        )
    return table
