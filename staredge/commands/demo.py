"""``staredge demo``: the main job, end to end, on a model trained on real data.

The model is StarNet-050 (``starnet_s050`` widths and depths) with a 10-class head,
trained by ``scripts/train_digits.py`` on scikit-learn's handwritten digits (1,797 real
8x8 scans, shipped offline), upsampled to 32x32 by the same preprocessing every runtime
uses. Its weights (``staredge/data/digits.safetensors``, with the StarEdge metadata in
the safetensors header) and held-out split (``digits_heldout.json``) ship as package data.

The demo exports the model to every format this platform can produce, validates each
artifact against PyTorch, classifies every held-out digit with every artifact through
:class:`staredge.Predictor`, and prints one table: accuracy per runtime (which must equal
PyTorch's), agreement with PyTorch, and latency per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from staredge.commands import _args
from staredge.errors import StarEdgeError

#: The registry name of the digits model (:mod:`staredge.models.digits`).
DIGITS_MODEL = "starnet_digits"
#: Package data file names (defined with the digits model; kept here for old imports).
LABELS_FILE = "digits_labels.txt"
SPLIT_FILE = "digits_heldout.json"
#: Table note for the CoreML row off macOS (explained in the table caption).
REFERENCE_NOTE = "MIL reference*"
#: Table note for a format exported with BatchNorm folding only (its "auto" rewrites failed).
FALLBACK_NOTE = "fuse_batchnorm only**"
FALLBACK_REWRITES = ["fuse_batchnorm"]


class DemoError(StarEdgeError):
    """The demo cannot run (missing package data, a bad argument)."""


# ----------------------------------------------------------------------------- data
# The digits data set lives with the digits model (staredge.models.digits); these names are
# kept for old imports.


def digits_images():
    """All 1,797 scikit-learn digits (see :func:`staredge.models.digits.digits_images`)."""
    from staredge.models.digits import digits_images as images

    return images()


def heldout_indices() -> list[int]:
    """The held-out split (see :func:`staredge.models.digits.heldout_indices`)."""
    from staredge.models.digits import heldout_indices as indices

    return indices()


def weights_path() -> Path:
    """Path of the shipped digits weights (see :func:`staredge.models.digits.digits_weights`)."""
    from staredge.models.digits import digits_weights

    return digits_weights()


def build_digits_model(weights: str | Path | None = None):
    """The digits model by registry name, with ``weights`` loaded if given."""
    from staredge.models.digits import digits_model

    return digits_model(weights)


# ----------------------------------------------------------------------------- the job


@dataclass
class RuntimeRow:
    """One line of the demo table."""

    format: str
    backend: str
    path: str | None  # None when the artifact was in a temporary folder that is gone
    size_kb: float
    export_s: float | None
    max_abs_diff: float | None
    validated: bool | None
    accuracy: float
    agree_with_pytorch: float
    ms_per_image: float
    note: str = ""


def _time_per_image(predictor, x, repeats: int) -> float:
    """Median milliseconds of one batch-1 call (after a warm-up)."""
    import numpy as np

    predictor.warmup(1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(x)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def run_demo(
    out_dir: str | Path,
    limit: int | None = None,
    formats: list[str] | None = None,
    threads: int | None = None,
    repeats: int = 30,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Export, validate and run the digits model on every available format.

    Returns ``{"rows": [RuntimeRow...], "n_images": N, "pytorch_accuracy": a, "all_equal": ...,
    "all_validated": ..., "failed": {format: error}, "fallbacks": {format: error of the "auto"
    export that was retried with BatchNorm folding only}}``; the PyTorch row comes first.
    """
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from staredge.exporters import export
    from staredge.formats import CHECKPOINT_FORMAT, available_export_formats, parse_formats
    from staredge.predictor import Predictor

    if limit is not None and limit < 1:
        raise DemoError(f"limit must be a positive number of digits, got {limit}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, targets = digits_images()
    idx = heldout_indices()
    if limit is not None:
        idx = idx[:limit]
    held_images = [images[i] for i in idx]
    held_targets = targets[idx]

    model = build_digits_model(weights_path())
    if formats is None:
        formats = available_export_formats()
    formats = parse_formats(formats)
    t0 = time.perf_counter()
    if console is not None and not console.is_terminal:
        progress = False  # a log or a pipe: no bars (they would leave blank lines)
    with Progress(TextColumn("{task.description}"), transient=True, disable=not progress, console=console) as bar:
        task = bar.add_task("exporting")
        notify = lambda fmt, stage: bar.update(task, description=f"{fmt}: {stage}")  # noqa: E731
        # a dynamic batch wherever the format carries one (the Predictor batches lists of
        # images for those and loops for the others); a format whose "auto" rewrites break
        # its converter gets one more try with BatchNorm folding only (the table marks it)
        report = export(model, formats, out_dir, force=True, validate=True, dynamic_batch="auto",
                        fallback_rewrite=FALLBACK_REWRITES, progress=notify)
        results = list(report.artifacts)
        fallbacks = {a.format: a.fallback_error for a in results if a.fallback_error}
    export_total = time.perf_counter() - t0
    results.sort(key=lambda a: formats.index(a.format))
    failed = {a.format: a.error for a in results if a.path is None}

    # PyTorch first (the shipped checkpoint): the reference every artifact is compared with.
    candidates: list[tuple[str, str, Any]] = [(CHECKPOINT_FORMAT, str(weights_path()), None)]
    candidates += [(a.format, a.path, a) for a in results if a.path is not None]

    rows: list[RuntimeRow] = []
    reference_top1 = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  transient=True, disable=not progress, console=console) as bar:
        task = bar.add_task("classifying", total=len(candidates) * len(held_images))
        for fmt, path, res in candidates:
            bar.update(task, description=f"classifying with {fmt}")
            predictor = Predictor(path, device="cpu", threads=threads)
            reference_engine = predictor.info().get("engine") == "mil-reference"
            top1: list[int] = []
            step = predictor.batch_size if predictor.backend.supports_batch else 1
            for s in range(0, len(held_images), step):
                chunk = held_images[s : s + step]
                top1.extend(int(i) for i in predictor.probabilities(chunk).argmax(axis=1))
                bar.advance(task, len(chunk))
            top1_arr = np.asarray(top1)
            if reference_top1 is None:
                reference_top1 = top1_arr
            x = predictor.preprocess(held_images[0])[None]
            # the numpy MIL executor is slow by design: a few calls tell that well enough
            ms = _time_per_image(predictor, x, 3 if reference_engine else repeats)
            rows.append(
                RuntimeRow(
                    format=fmt,
                    backend=predictor.backend.name,
                    path=str(path),
                    size_kb=_size_bytes(Path(path)) / 1024.0,
                    export_s=None if res is None else res.export_s,
                    max_abs_diff=None if res is None else res.max_abs_diff,
                    validated=None if res is None else res.passed,
                    accuracy=float((top1_arr == held_targets).mean()),
                    agree_with_pytorch=float((top1_arr == reference_top1).mean()),
                    ms_per_image=ms,
                    note=" ".join(n for n in (REFERENCE_NOTE if reference_engine else "",
                                              FALLBACK_NOTE if fmt in fallbacks else "") if n),
                )
            )
    pytorch_acc = rows[0].accuracy
    summary = {
        "rows": rows,
        "n_images": len(held_images),
        "pytorch_accuracy": pytorch_acc,
        "export_total_s": export_total,
        "all_equal": all(r.accuracy == pytorch_acc for r in rows),
        "all_validated": all(r.validated is not False for r in rows) and not failed,
        "failed": failed,
        "fallbacks": fallbacks,
        "threads": threads,
    }
    return summary


def _size_bytes(path: Path) -> int:
    from staredge.formats import detect_format

    return sum(f.stat().st_size for f in detect_format(path).artifact_files(path))


# ----------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="export the digits StarNet to every format and classify held-out digits with each")
    _args.add_out(p, None, "folder for the artifacts (default: a temporary folder, removed at the end)")
    p.add_argument("--limit", type=_args.count_type("--limit"), help="only the first N held-out digits")
    _args.add_formats(p, None, help="comma-separated formats (default: every one available here)")
    _args.add_threads(p, default=1, help="intra-op threads per runtime (default 1: a tiny model on a shared machine)")
    p.add_argument("--iters", type=_args.count_type("--iters"), default=30, metavar="N",
                   help="timed calls per runtime; the median is shown (default 30)")
    p.add_argument("--repeats", dest="iters", type=_args.count_type("--repeats"), help=argparse.SUPPRESS)  # old name
    _args.add_json(p, "the demo results", force=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table; exit 1 if any runtime's accuracy differs from PyTorch's."""
    # Converter and runtime messages are captured by the CLI (staredge.quiet; -v shows them);
    # the CoreML reference-executor notice is in the table's caption.
    import warnings

    _args.check_json_target(args)  # before any work
    if args.out:
        from staredge.fileio import check_output_folder

        check_output_folder(args.out)
    warnings.filterwarnings("ignore", message="CoreML: Apple's runtime runs only on macOS")
    formats = [f.strip() for f in args.formats.split(",")] if args.formats else None
    with tempfile.TemporaryDirectory(prefix="staredge-demo-") as tmp:
        summary = run_demo(args.out or tmp, limit=args.limit, formats=formats, threads=args.threads,
                           repeats=args.iters, progress=args.json != _args.STDOUT, console=_console(args))
        if not args.out:
            # the artifacts were in a temporary folder that is removed now: report no paths into it
            for row in summary["rows"]:
                if row.path.startswith(tmp):
                    row.path = None
            summary["out_dir"] = None
            summary["artifacts_kept"] = "no: pass --out DIR to keep the exported artifacts"
        else:
            summary["out_dir"] = str(Path(args.out).resolve())
            summary["artifacts_kept"] = "yes"
    doc = dict(summary, iters=args.iters, rows=[dataclasses.asdict(r) for r in summary["rows"]])
    if not _args.emit_json(args, doc):
        print_table(summary)
    return 0 if summary["all_equal"] and summary["all_validated"] else 1


def _console(args: argparse.Namespace):
    """A rich console on the real stderr (the CLI captures descriptor 2 for converter messages)."""
    from rich.console import Console

    capture = getattr(args, "capture", None)
    return Console(file=capture.stderr) if capture is not None else Console(stderr=True)


def print_table(summary: dict[str, Any]) -> None:
    """The demo table (rich)."""
    from rich.console import Console
    from rich.table import Table

    rows: list[RuntimeRow] = summary["rows"]
    table = Table(
        title=f"StarNet-050 digits: {summary['n_images']} held-out scans, every runtime through Predictor",
        caption=(
            f"{_machine()}; {summary.get('threads') or 'default'} intra-op thread(s) per runtime.\n"
            f"ms / image: median of batch-1 calls after warm-up (shared machine: expect noise).\n"
            f"max|diff|: artifact vs PyTorch logits in export validation; = PyTorch: same top-1 as PyTorch."
            + ("\n* no Apple runtime off macOS: StarEdge's numpy MIL reference executor ran the .mlpackage;"
               " it checks the numbers, its speed means nothing."
               if any(REFERENCE_NOTE in r.note for r in rows) else "")
        ),
        caption_justify="left",
    )
    for col, just in [("format", "left"), ("runtime", "left"), ("size (KB)", "right"), ("export (s)", "right"),
                      ("max|diff|", "right"), ("valid", "center"), ("accuracy", "right"),
                      ("= PyTorch", "right"), ("ms / image", "right"), ("note", "left")]:
        table.add_column(col, justify=just, no_wrap=True)
    for r in rows:
        table.add_row(
            r.format, r.backend, f"{r.size_kb:,.0f}",
            "—" if r.export_s is None else f"{r.export_s:.1f}",
            "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
            "—" if r.validated is None else ("yes" if r.validated else "NO"),
            f"{100 * r.accuracy:.2f}%", f"{100 * r.agree_with_pytorch:.1f}%",
            f"{r.ms_per_image:.2f}", r.note,
        )
    console = Console(width=max(140, Console().width))
    console.print(table)
    verdict = "every runtime matches PyTorch's accuracy" if summary["all_equal"] else "ACCURACY DIFFERS FROM PYTORCH"
    console.print(f"PyTorch held-out accuracy {100 * summary['pytorch_accuracy']:.2f}%: {verdict}.")
    for fmt, err in (summary.get("fallbacks") or {}).items():
        console.print(f"** {fmt}: the default ('auto') rewrites failed to convert, so it was exported with "
                      f"BatchNorm folding only. The converter said: {err}")
    for fmt, err in (summary.get("failed") or {}).items():
        console.print(f"[red]{fmt} export failed[/red]: {err}")


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
