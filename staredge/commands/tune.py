"""``staredge tune``: the fastest artifact that passes accuracy on this machine.

The work is the library's :func:`staredge.tune.tune`; this module is its command line (and
keeps ``from staredge.commands.tune import tune`` working).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from staredge.commands import _args
from staredge.errors import ConfigError
from staredge.tune import (  # noqa: F401 - the library API, re-exported for old imports
    DEFAULT_ITERS, DEFAULT_PRECISIONS, DEFAULT_ROUNDS, DEFAULT_WARMUP, Candidate, TuneReport, markdown_table,
    time_artifact, time_round_robin, tune,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand."""
    p = sub.add_parser(
        "tune",
        help="export every format x precision this machine runs, validate, time, keep the fastest that passes",
        description=(
            "Export MODEL to every format this machine can run, in each precision, validate each artifact "
            "(int8: accuracy on a labelled set or agreement with fp32 PyTorch on photos), time it at batch 1 "
            "with the benchmark's timing loop, and copy the fastest artifact that passed to --out with a "
            "table (tune.md) and tune.json of everything tried. int8 is calibrated as in staredge bench: "
            "--calibration DIR, else the model's own data, else scikit-image photos. Exit 1 if nothing passed."),
    )
    p.add_argument("model", metavar="MODEL",
                   help="registry name (see `staredge models`), a checkpoint file, or an exported artifact "
                        "(its architecture is read from its metadata; pass --checkpoint for the weights)")
    _args.add_formats(p, "all", help="comma-separated formats (default: every one this machine runs)")
    _args.add_precision(p, multiple=True, default=list(DEFAULT_PRECISIONS),
                        help="comma list of the precisions to try")
    p.add_argument("--precisions", dest="precision", type=_old_precisions, help=argparse.SUPPRESS)  # old spelling
    _args.add_out(p, None, "output folder (default: ./tune-MODEL)")
    _args.add_threads(p, help="intra-op threads for timing (default: as staredge bench, this machine's physical "
                              "cores, at most 4)")
    _args.add_timing(p, warmup=DEFAULT_WARMUP, iters=DEFAULT_ITERS, repeats=DEFAULT_ROUNDS,
                     repeats_help="round-robin timing rounds over all artifacts (the median of the round medians "
                                  "is reported)", old_repeats="--rounds")
    _args.add_calibration(p)
    _args.add_rewrite(p, what=" of every candidate")
    _args.add_model_arguments(p)
    _args.add_force(p, "earlier tune output in --out (winner, tune.json, tune.md, candidates/)")
    _args.add_json(p, "tune.json's document")
    p.set_defaults(func=run)


def _old_precisions(text: str) -> list[str]:
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def _model(args: argparse.Namespace):
    """The model to tune: a registry name, a checkpoint (with the model flags), or the
    architecture an exported artifact's metadata names."""
    text = str(args.model)
    if Path(text).exists():
        from staredge.formats import CHECKPOINT_FORMAT, detect_format
        from staredge.metadata import MetadataError

        try:
            fmt = detect_format(text).name
        except MetadataError:
            fmt = CHECKPOINT_FORMAT
        if fmt != CHECKPOINT_FORMAT:  # an exported artifact: tune the architecture it was made from
            from staredge.runtimes import load_backend

            if args.model_name:
                name = args.model_name
            else:
                backend = load_backend(text, device="cpu", threads=1)
                try:
                    name = backend.metadata.model
                finally:
                    backend.close()
            from staredge.quiet import notice

            notice(f"{text} is an exported {fmt} artifact: tuning its architecture {name} "
                   + ("with --checkpoint" if args.checkpoint else
                      "with --pretrained weights" if args.pretrained else
                      "(random weights; pass --checkpoint FILE or --pretrained for real ones)"),
                   getattr(args, "capture", None))
            args = argparse.Namespace(**{**vars(args), "model": name, "model_name": None})
    return _args.model_from_args(args)  # a model whose weights ship (digits) gets them there


def run(args: argparse.Namespace) -> int:
    """Run :func:`tune`, print the table; 0 when an artifact passed and was timed, else 1."""
    from rich.console import Console

    json_file = _args.check_json_target(args)
    capture = getattr(args, "capture", None)
    console = Console(file=capture.stderr) if capture is not None else Console(stderr=True)
    out = args.out or f"tune-{Path(str(args.model)).name.split('.')[0]}"
    if json_file and Path(json_file).resolve() == (Path(out) / "tune.json").resolve():
        raise ConfigError(f"--json {json_file} is the tune.json that tune writes into --out anyway; give --json "
                          f"another file, or none")
    if "int8" not in (args.precision or []):
        for flag, value in (("--calibration", args.calibration), ("--calibration-samples", args.calibration_samples)):
            if value is not None:
                raise ConfigError(f"{flag} applies to int8 only, and --precision has no int8; add it or drop {flag}")
    model = _model(args)
    with console.status("tuning") as status:
        def progress(text: str) -> None:
            status.update(text)
            if text.startswith("int8 calibrated"):
                console.print(text)
        report = tune(
            model, out, args.formats, args.precision, threads=args.threads, calibration=args.calibration,
            calibration_samples=args.calibration_samples, warmup=args.warmup, iters=args.iters,
            rounds=args.repeats, force=args.force, rewrite=args.rewrite, progress=progress,
        )
    if not _args.emit_json(args, report.to_dict()):
        Console(width=max(150, Console().width)).print(rich_table(report))
    return 0 if report.winner is not None else 1


def rich_table(report: TuneReport):
    """All candidates as a rich table (as every other command prints), fastest passing first."""
    from rich.table import Table

    order = sorted(range(len(report.candidates)), key=lambda i: (
        not report.candidates[i].passed, report.candidates[i].median_ms is None,
        report.candidates[i].median_ms or 0.0))
    rounds = f", median of {report.rounds} round-robin rounds" if report.rounds > 1 else ""
    caption = [f"Winner: {report.winner_path or 'none (no artifact both passed validation and was timed)'}"]
    if report.calibration:
        caption.insert(0, report.calibration)
    table = Table(title=f"staredge tune: {report.model} ({report.machine}, batch 1, {report.threads} threads{rounds})",
                  caption="\n".join(caption), caption_justify="left")
    for col, just in [("format", "left"), ("precision", "left"), ("median ms", "right"), ("p90 ms", "right"),
                      ("size KB", "right"), ("accuracy (fp32)", "right"), ("top-1 agree", "right"),
                      ("min cosine", "right"), ("validation", "left"), ("note", "left")]:
        table.add_column(col, justify=just, overflow="fold")
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    ms = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for i in order:
        c = report.candidates[i]
        acc = "—" if c.accuracy is None else f"{pct(c.accuracy)} ({pct(c.reference_accuracy)})"
        verdict = "error" if c.error and not c.path else ("[green]pass[/]" if c.passed else "[red]FAIL[/]")
        table.add_row(c.format + (" [bold](winner)[/]" if i == report.winner else ""), c.precision, ms(c.median_ms),
                      ms(c.p90_ms), f"{c.size_bytes / 1024:.0f}", acc, pct(c.top1_agreement),
                      "—" if c.cosine is None else f"{c.cosine:.4f}", verdict, c.note or c.error or "")
    return table
