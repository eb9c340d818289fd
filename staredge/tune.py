"""The fastest artifact that passes accuracy on this machine (``staredge tune`` is its CLI).

For every format this machine can export and run (:func:`staredge.formats.available_export_formats`)
and every precision asked for (fp32, fp16, int8), :func:`tune` exports and validates the
artifact (:func:`staredge.exporters.export`: int8 accuracy on the labelled held-out set where
the model has one, else agreement with fp32 PyTorch on real photos), times it at batch 1 with
the benchmark's own measurement code (:func:`staredge.bench.measure.time_run` over the
runtime layer's ``prepare`` callable, on the bench's fixed input), and copies the fastest
artifact that passed validation to ``OUT/``, with a table (``tune.md``) and ``tune.json`` of
everything tried. Timing is round-robin: every artifact is loaded, then each round times them
all one after another (``rounds``, default 3), and the median of the round medians is
reported, so that load from other processes hits every candidate alike. CoreML packages are exported and validated off macOS (MIL reference
executor) but not timed there: that executor is a numpy reference, not Apple's runtime.

int8 is calibrated as ``staredge bench`` does (:func:`staredge.bench.artifacts.calibration_for`):
the ``calibration`` given, else the model's own data (digits), else scikit-image photos
outside the validation set; :attr:`TuneReport.calibration` says which. Nothing already in
``out_dir`` (a winner, ``tune.json``, ``tune.md``, ``candidates/``) is replaced without
``force``, and every input is checked before the first export.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from staredge.errors import ConfigError

#: Precisions tried when none are given.
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8")
#: Timing defaults (batch 1): warm-up calls and timed calls per artifact.
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 50
#: Round-robin timing rounds (each times every artifact once).
DEFAULT_ROUNDS = 3


@dataclass
class Candidate:
    """One tried (format, precision): its artifact, validation figures and timing."""

    format: str
    precision: str
    runtime: str
    path: str | None
    size_bytes: int
    passed: bool | None
    error: str | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    round_medians_ms: list[float] = field(default_factory=list)
    threads: int | None = None
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    cosine: float | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None
    labelled_set: str | None = None
    note: str = ""


@dataclass
class TuneReport:
    """Everything tried, and the winner (index into ``candidates``) copied to ``out_dir``."""

    model: str
    out_dir: str
    threads: int
    machine: str
    rounds: int = 1
    calibration: str | None = None
    #: untimed and timed calls per candidate and round (``--warmup``, ``--iters``)
    warmup: int | None = None
    iters: int | None = None
    #: the rewrite setting the candidates were exported with (``--rewrite``)
    rewrite: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    winner: int | None = None
    winner_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def _parse_list(text: str | list[str] | tuple[str, ...] | None, choices: tuple[str, ...], what: str) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text or ())
    names = [str(s).strip().lower() for s in items if str(s).strip()]
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise ConfigError(f"{what} must be a comma-separated list of {', '.join(choices)}; got {text!r}")
    return list(dict.fromkeys(names))


def _check_out(out: Path, force: bool) -> None:
    """Before any work: ``out`` is a writable folder and holds no earlier tune output unless ``force``."""
    from staredge.fileio import check_output_folder
    from staredge.errors import ArtifactExistsError

    if not force and out.is_dir():
        earlier = [p.name for p in (out / "tune.json", out / "tune.md", out / "candidates") if p.exists()]
        if earlier:
            raise ArtifactExistsError(f"{out} already holds the output of an earlier tune ({', '.join(earlier)}); "
                                      f"nothing was done. Pass --force (force=True) to replace it, or choose "
                                      f"another --out folder")
    check_output_folder(out, flag="--out")


def _timeable(fmt: str) -> str:
    """'' when this machine can time ``fmt`` with its deployment runtime, else why not (the
    runtime's own :meth:`~staredge.formats.RuntimeSpec.timing_refusal`)."""
    from staredge.formats import runtime_for_format

    reason = runtime_for_format(fmt).timing_refusal()
    return f"not timed: {reason}" if reason else ""


def time_artifact(path: str, runtime: str, input_size: tuple[int, ...], threads: int,
                  warmup: int = DEFAULT_WARMUP, iters: int = DEFAULT_ITERS):
    """(RunStats, threads in effect) for ``path`` at batch 1: the bench's fixed input and
    timing loop over :func:`staredge.runtimes.load_backend`'s ``prepare`` callable."""
    result = time_round_robin([(path, runtime)], input_size, threads, warmup, iters, rounds=1)[0]
    if isinstance(result, Exception):
        raise result
    (stats,), used = result
    return stats, used


def time_round_robin(artifacts: list[tuple[str, str]], input_size: tuple[int, ...], threads: int,
                     warmup: int = DEFAULT_WARMUP, iters: int = DEFAULT_ITERS, rounds: int = DEFAULT_ROUNDS):
    """Per (path, runtime): ([RunStats per round], threads in effect), or the exception that
    stopped it. Every artifact is loaded first; each round times them all in turn (the bench's
    fixed input and timing loop over the runtime layer's ``prepare`` callable)."""
    from staredge.bench.measure import time_run
    from staredge.bench.runners import fixed_input, threads_in_effect
    from staredge.runtimes import load_backend

    x = fixed_input(tuple(input_size))
    loaded: dict[int, tuple[Any, Any]] = {}
    out: list[Any] = [None] * len(artifacts)
    try:
        for i, (path, runtime) in enumerate(artifacts):
            try:
                backend = load_backend(path, backend=runtime, device="cpu", threads=threads)
                loaded[i] = (backend, backend.prepare(x))
                out[i] = ([], threads_in_effect(backend))
            except Exception as exc:  # noqa: BLE001 - a runtime refusing the artifact is reported
                out[i] = exc
        for _ in range(rounds):
            for i, (backend, infer) in list(loaded.items()):
                try:
                    out[i][0].append(time_run(infer, warmup, iters, sync=getattr(infer, "sync", None)))
                except Exception as exc:  # noqa: BLE001
                    out[i] = exc
                    loaded.pop(i)[0].close()
    finally:
        for backend, _ in loaded.values():
            backend.close()
    return out


def tune(
    model_or_name: Any,
    out_dir: str | os.PathLike,
    formats: str | list[str] | None = None,
    precisions: str | list[str] | None = None,
    *,
    threads: int | None = None,
    calibration: Any = None,
    calibration_samples: int | None = None,
    warmup: int = DEFAULT_WARMUP,
    iters: int = DEFAULT_ITERS,
    rounds: int = DEFAULT_ROUNDS,
    force: bool = False,
    progress: Any = None,
    rewrite: Any = "auto",
) -> TuneReport:
    """Export, validate and time every (format, precision); copy the fastest passing artifact
    to ``out_dir`` and write ``tune.json`` and ``tune.md`` there. ``formats``: default every
    format this machine can export and run. int8 is calibrated on ``calibration`` (a folder of
    images or an array), else as the benchmark does (the model's own data, else photos).
    ``rewrite`` is the exporter's. ``threads=None`` times with ``staredge bench``'s default:
    the machine's physical cores, at most 4. Raises before any export for a bad argument, missing
    calibration data, or earlier output in ``out_dir`` without ``force``."""
    from staredge.exporters import export
    from staredge.exporters.api import PRECISIONS, path_size, resolve_model
    from staredge.fileio import atomic_write_text, replace_folder_or_file
    from staredge.formats import available_export_formats, get_format, parse_formats
    from staredge.limits import check_iters, check_repeats, check_threads, check_warmup

    here = available_export_formats()
    fmts = here if formats in (None, "", "all") else parse_formats(formats)
    missing = [f for f in fmts if f not in here]
    if missing:
        raise ConfigError(f"{', '.join(missing)} cannot be exported and run on this machine; available: {', '.join(here)}")
    precs = _parse_list(precisions or ",".join(DEFAULT_PRECISIONS), PRECISIONS, "precision (--precision)")
    if threads is None:  # the benchmark's rule: this machine's physical cores, at most the paper's 4
        from staredge.bench.machine import physical_cores
        from staredge.bench.protocols import default_threads, get_protocol

        threads = default_threads(get_protocol("paper-cpu"), physical_cores()) or 1
    threads = check_threads(threads, "threads (--threads)")
    warmup = check_warmup(warmup, "warmup (--warmup)")
    iters = check_iters(iters, "iters (--iters)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer (--repeats on the command line), got {rounds!r}")
    rounds = check_repeats(rounds, "rounds (--repeats)")
    out = Path(out_dir)
    _check_out(out, force)
    model = resolve_model(model_or_name)  # a model whose weights ship (digits) loads them, never random ones
    calibration_note = None
    if "int8" in precs:  # fail before any export when int8 has no calibration data; the bench's fallback
        from staredge.bench.artifacts import calibration_for

        calibration, calibration_note = calibration_for(model, calibration, calibration_samples)
        calibration_samples = len(calibration)
        (progress or (lambda text: None))(calibration_note)
    out.mkdir(parents=True, exist_ok=True)
    candidates_dir = out / "candidates"
    report = TuneReport(model=getattr(model, "staredge_name", type(model).__name__), out_dir=str(out),
                        threads=threads, machine=f"{platform.machine()} {os.cpu_count()} cores", rounds=rounds,
                        calibration=calibration_note, warmup=warmup, iters=iters, rewrite=str(rewrite))
    input_size = tuple(int(v) for v in model.pretrained_cfg.input_size)
    notify = progress or (lambda text: None)
    for precision in precs:
        notify(f"{precision}: export + validate {', '.join(fmts)}")
        exported = export(model, fmts, candidates_dir / precision, precision=precision, force=True,
                          calibration=calibration if precision == "int8" else None,
                          calibration_samples=calibration_samples if precision == "int8" else None,
                          rewrite=rewrite)
        for a in exported.artifacts:
            v = a.validation or {}
            fmt_spec = get_format(a.format)
            cand = Candidate(
                format=a.format, precision=precision, runtime=fmt_spec.runtime, path=a.path, size_bytes=a.size_bytes,
                passed=a.passed, error=a.error, top1_agreement=a.top1_agreement, top5_agreement=v.get("top5_agreement"),
                cosine=a.cosine, accuracy=v.get("accuracy"), reference_accuracy=v.get("reference_accuracy"),
                labelled_set=v.get("labelled_set"),
            )
            why_not = _timeable(a.format)
            if why_not:
                cand.note = why_not
            report.candidates.append(cand)
    timeable = [c for c in report.candidates if c.path and os.path.exists(c.path) and not _timeable(c.format)]
    if timeable:
        notify(f"timing {len(timeable)} artifacts round-robin, {rounds} round(s)")
        timings = time_round_robin([(c.path, c.runtime) for c in timeable], input_size, threads, warmup, iters, rounds)
        for cand, result in zip(timeable, timings):
            if isinstance(result, Exception):
                cand.note = f"timing failed: {type(result).__name__}: {str(result)[:200]}"
                continue
            runs, used = result
            cand.round_medians_ms = [round(r.median_ms, 5) for r in runs]
            cand.median_ms = float(statistics.median(r.median_ms for r in runs))
            cand.p90_ms = float(statistics.median(r.p90_ms for r in runs))
            cand.threads = used
    timed = [i for i, c in enumerate(report.candidates) if c.passed and c.median_ms is not None]
    if timed:
        best = min(timed, key=lambda i: report.candidates[i].median_ms)
        report.winner = best
        win = report.candidates[best]
        unit, _ = get_format(win.format).artifact_paths(candidates_dir / win.precision, _stem(report.model, win.precision))
        final = out / unit.name
        if (final.exists() or final.is_symlink()) and not force:
            from staredge.errors import ArtifactExistsError

            raise ArtifactExistsError(f"{final} exists; pass --force (force=True) to replace it")
        scratch = Path(tempfile.mkdtemp(prefix=".staredge-tmp-", dir=out))
        try:
            staged = scratch / unit.name
            (shutil.copytree if unit.is_dir() else shutil.copy2)(unit, staged)
            replace_folder_or_file(staged, final, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        report.winner_path = str(final / Path(win.path).relative_to(unit)) if unit.is_dir() else str(final)
        win.note = (win.note + "; " if win.note else "") + f"winner, size on disk {path_size(final)} B"
    atomic_write_text(out / "tune.json", json.dumps(report.to_dict(), indent=2) + "\n", force=force)
    atomic_write_text(out / "tune.md", markdown_table(report), force=force)
    return report


def _stem(model: str, precision: str) -> str:
    return model if precision == "fp32" else f"{model}_{precision}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _md_cell(text: str) -> str:
    """``text`` whole, as one Markdown table cell (pipes escaped, lines joined); it used to be
    cut at 120 characters, mid-sentence."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(report: TuneReport) -> str:
    """All candidates as a Markdown table, fastest passing first; the winner marked."""
    order = sorted(range(len(report.candidates)), key=lambda i: (
        not report.candidates[i].passed, report.candidates[i].median_ms is None,
        report.candidates[i].median_ms or 0.0))
    lines = [
        f"# staredge tune: {report.model} ({report.machine}, batch 1, {report.threads} threads"
        + (f", median of {report.rounds} round-robin rounds)" if report.rounds > 1 else ")"), "",
        "| format | precision | median ms | p90 ms | size KB | accuracy (fp32) | top-1 agree | top-5 agree | "
        "min cosine | validation | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for i in order:
        c = report.candidates[i]
        acc = "—" if c.accuracy is None else f"{_pct(c.accuracy)} ({_pct(c.reference_accuracy)})"
        verdict = "error" if c.error and not c.path else ("pass" if c.passed else "FAIL")
        ms = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        mark = " **(winner)**" if i == report.winner else ""
        lines.append(
            f"| {c.format}{mark} | {c.precision} | {ms(c.median_ms)} | {ms(c.p90_ms)} | {c.size_bytes / 1024:.0f} | {acc} | "
            f"{_pct(c.top1_agreement)} | {_pct(c.top5_agreement)} | "
            f"{'—' if c.cosine is None else f'{c.cosine:.4f}'} | {verdict} | {_md_cell(c.note or c.error or '')} |")
    lines.append("")
    if report.calibration:
        lines.append(f"Calibration: {report.calibration}")
    lines.append(f"Winner: {report.winner_path or 'none (no artifact both passed validation and was timed)'}")
    return "\n".join(lines) + "\n"
