"""``staredge export``: one command for every task. An image classifier (registry name or
checkpoint) or a STAR language model (``star_lm_pydoc``, ``transformer_pp`` /
``striped_mamba``, a saved STAR LM) → validated edge artifacts, through
:func:`staredge.exporters.export`. The format flags (``--dynamic-batch``, ``--max-context``,
``--prefill-chunk``, ``--coreml-state``) are built from the format table's options schema
(:data:`staredge.formats.EXPORT_OPTIONS`); a flag that does not apply to the model is refused.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from staredge.formats import EXPORT_OPTIONS, PRECISIONS, export_formats


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    from staredge.commands import _args

    p = sub.add_parser(
        "export",
        help="export a model (image classifier or language model) to ONNX / OpenVINO / TFLite / CoreML and "
             "validate each artifact against PyTorch",
        description=(
            "Export a model to edge formats with its metadata inside each artifact, then compare every "
            "artifact with the PyTorch model (image classifiers: on real photos and random inputs; language "
            "models: token by token through the artifact's runtime). Exits 1 if any artifact fails "
            "validation or conversion."
        ),
    )
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="registry name (see `staredge models`, language models included) or a checkpoint file")
    default = export_formats()[0]
    _args.add_formats(p, default, help=f"comma-separated: {','.join(export_formats())} (or aliases), or 'all' (default: {default})")
    _args.add_precision(p, multiple=False, default="fp32", choices=PRECISIONS,
                        help="artifact precision; image models: fp32, fp16, int8 (int8 needs --calibration, "
                             "docs/low-precision.md); language models: fp32, and weight-only int8 / int4 for ONNX, "
                             "OpenVINO and TFLite (the format table says what each format exports per task)")
    _args.add_calibration(p)
    _args.add_rewrite(p, what=" of image models")
    _args.add_out(p, "exports", "output folder; artifacts are named after the model inside it")
    _args.add_force(p)
    _args.add_model_arguments(p)
    add_option_flags(p)
    _args.add_baseline_size(p, depth_help="number of LIVs of transformer_pp / striped_mamba (refused for other "
                                          "models)")
    p.add_argument("--no-validate", action="store_true", help="skip validation (not recommended)")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep an artifact that fails validation under its final name (default: <name>.failed.<suffix>)")
    _args.add_json(p, "the export report")
    p.add_argument("--report", dest="json", metavar="FILE", help=argparse.SUPPRESS)  # old spelling of --json FILE
    p.set_defaults(func=run)


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per entry of the format table's options schema that has a flag (default None:
    not given, so ``export()`` can refuse a flag that does not apply)."""
    from staredge.commands._args import count_type

    for opt in EXPORT_OPTIONS.values():
        if opt.flag is None:
            continue
        if opt.kind == "bool":
            p.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=opt.help)
        elif opt.kind == "choice":
            p.add_argument(opt.flag, dest=opt.name, choices=opt.choices, default=None, help=opt.help)
        else:
            p.add_argument(opt.flag, dest=opt.name, type=count_type(opt.flag, opt.minimum or 0), default=None,
                           metavar=opt.metavar, help=opt.help)


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


#: Image-model flags that say nothing about a language model (refused for one, naming the flag).
_IMAGE_ONLY_FLAGS = (("pretrained", "--pretrained"), ("labels", "--labels"), ("num_classes", "--num-classes"),
                     ("checkpoint", "--checkpoint"), ("model_name", "--model"), ("calibration", "--calibration"),
                     ("calibration_samples", "--calibration-samples"))


def run(args: argparse.Namespace) -> int:
    """Export, show progress and a summary table; 0 if every artifact passed, else 1."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from staredge.commands import _args
    from staredge.errors import ConfigError
    from staredge.exporters import export
    from staredge.exporters.api import STAGES, check_out_dir, task_of
    from staredge.fileio import check_output_folder
    from staredge.formats import TEXT_GENERATION, check_export_options, check_precision, parse_formats
    from staredge.quiet import notice

    capture = getattr(args, "capture", None)
    # every check before any work (and before the output folder is created)
    _args.check_json_target(args)
    check_out_dir(Path(args.out))
    task = task_of(args.model)
    formats = parse_formats(args.formats, task)
    options = {opt.name: getattr(args, opt.name, None) for opt in EXPORT_OPTIONS.values() if opt.flag}
    check_export_options(task, formats, options, model=str(args.model))
    check_precision(task, formats, args.precision or "fp32")
    for flag, value in (("--calibration", args.calibration), ("--calibration-samples", args.calibration_samples)):
        if value is not None and (args.precision or "fp32") != "int8":
            raise ConfigError(f"{flag} applies to int8 only, and --precision is {args.precision or 'fp32'}: add "
                              f"--precision int8 or drop {flag}")
    if args.keep_failed and args.no_validate:
        raise ConfigError("--keep-failed keeps an artifact that fails validation, and --no-validate validates "
                          "nothing: drop one of them")
    if task == TEXT_GENERATION:
        for key, flag in _IMAGE_ONLY_FLAGS:
            if getattr(args, key, None) not in (None, False):
                raise ConfigError(f"{flag} applies to image classifiers only; {args.model} is a language model: drop it")
    check_output_folder(args.out)
    console = Console(file=capture.stderr) if capture is not None else Console(stderr=True)
    if task == TEXT_GENERATION:
        model: Any = args.model
    else:
        model = _args.model_from_args(args, positional="MODEL_OR_CHECKPOINT")
        message = weights_notice(model)
        if message:
            notice(message, capture)
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    ) as bar:
        bar_task = bar.add_task("preparing", total=len(formats) * len(STAGES))

        def progress(fmt: str, stage: str) -> None:
            bar.update(bar_task, description=f"{fmt}: {stage}", advance=1)

        report = export(
            model, formats, args.out, precision=args.precision or "fp32", rewrite=args.rewrite, force=args.force,
            validate=not args.no_validate, progress=progress, keep_failed=args.keep_failed,
            calibration=args.calibration, calibration_samples=args.calibration_samples,
            dim=args.dim, depth=args.depth, **options,
        )
    if not _args.emit_json(args, report.to_dict()):
        table = lm_summary_table(report) if report.task == TEXT_GENERATION else summary_table(report)
        Console(width=max(140, Console().width)).print(table)
    for a in report.artifacts:  # the reason of every failure, on the terminal (not only in the log)
        if a.error:
            console.print(f"[red]{a.format}: {a.error}[/red]", soft_wrap=True)
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


def lm_summary_table(report: Any):
    """A rich table of a language-model export: format, file, size, state bytes (artifact and
    genome analysis), max |Δ| of the logits (weight-only int8/int4: the held-out bits-per-byte
    change), identical greedy tokens, pass/fail."""
    from rich.table import Table

    table = Table(title=f"staredge export: {report.model} (language model, {report.precision}) → {report.out_dir}",
                  caption="token by token vs. PyTorch through each artifact's runtime (docs/lm-artifacts.md)",
                  caption_justify="left")
    for col, just in [("format", "left"), ("file", "left"), ("size", "right"), ("export", "right"),
                      ("state bytes", "right"), ("analysis", "right"), ("max |Δ|", "right"), ("greedy", "right"),
                      ("result", "left")]:
        table.add_column(col, justify=just)
    for a in report.artifacts:
        v = a.validation or {}
        if a.path is None:
            result = "[red]FAILED (conversion)[/red]"
        elif a.passed is None:
            result = "[yellow]not validated[/yellow]"
        else:
            result = "[green]pass[/green]" if a.passed else "[red]FAIL[/red]"
        table.add_row(a.format, _relative(a.path, report.out_dir), _size(a.size_bytes) if a.path else "—",
                      f"{a.export_s:.1f} s", f"{a.state_bytes:,}" if a.state_bytes is not None else "—",
                      f"{a.analysis_state_bytes:,}" if a.analysis_state_bytes is not None else "—",
                      (f"{v['max_abs_diff']:.2e}" if "max_abs_diff" in v else
                       f"bpb {v['bpb_change']:+.2%}" if "bpb_change" in v else "—"),
                      f"{v['greedy_agree']}/{v['greedy_tokens']}" if v else "—", result)
    return table
