"""Reports from a result document: tables (terminal, Markdown, CSV) and plots.

Every figure a table prints is the median latency, with p90 and the mean beside it in the
per-runtime table; speed-ups are ratios of medians. A result whose timings are spread
too widely or that was measured on a busy machine is marked ``!`` (see
:mod:`staredge.bench.reliability`), and a star-vs-sum difference between such results
is printed as not a result.

The Table-6-style latency table (Markdown) has one row per model (and star/sum variant),
our params and MACs, the papers' top-1, one median column per measured backend and the
papers' latencies beside them, labelled with the papers' hardware. In the terminal
(100 columns at most) the same numbers are transposed: one row per model and runtime
(median, p90, mean, speed-ups), and the papers' figures in a table of their own.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Iterable

from staredge.bench.machine import compact_machine_label, short_machine_label
from staredge.bench.paper import PAPER_PLATFORMS, SHORT_LABELS, paper_figures, paper_latencies
from staredge.bench.reliability import CAPTION as UNRELIABLE_CAPTION, MARKER as UNRELIABLE_MARKER, assess_result
from staredge.bench.results import BenchDocument, BenchResult
from staredge.bench.specs import BASELINES
from staredge.formats import EAGER_RUNTIME

#: The widest a terminal table may be.
MAX_WIDTH = 100

MAC_NOTE = (
    "Params and MACs are ours (conv, linear and matmul multiply-accumulates at batch 1, "
    "see `staredge models`); top-1 is the papers' ImageNet-1k accuracy."
)


@dataclass(frozen=True)
class Column:
    """One latency column: a backend under one protocol on one machine."""

    machine: str
    protocol: str
    backend: str
    label: str = field(default="", compare=False)


@dataclass
class Cell:
    """One measured result as tables show it: median, p90, mean (ms), spread, verdict."""

    median: float | None
    p90: float | None
    mean: float | None
    speedups: dict[str, float]
    status: str
    flagged: bool
    reasons: list[str]
    spread: dict[str, float] | None
    reported: float | None


@dataclass
class Row:
    """One model (variant) with its figures and, per column, the protocol's reported figure
    (``latency``) and the median (``median``, what the tables print)."""

    model: str
    variant: str
    params_m: float | None
    macs_m: float | None
    paper_params_m: float | None
    paper_macs_m: float | None
    top1: float | None
    latency: dict[Column, float | None]
    speedups: dict[Column, dict[str, float]]
    status: dict[Column, str]
    paper: dict[str, float]
    cells: dict[Column, Cell] = field(default_factory=dict)
    median: dict[Column, float | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model name as tables print it (``(sum)`` marks the star→sum variant)."""
        return self.model if self.variant == "star" else f"{self.model} (sum)"


@dataclass
class Table:
    """A latency table built from a document."""

    columns: list[Column]
    rows: list[Row]
    paper_platforms: list[str]
    unavailable: dict[str, str]
    notes: list[str]


def _column_labels(columns: list[Column], doc: BenchDocument) -> list[Column]:
    """Columns labelled with only what varies: backend, plus threads/protocol and machine if needed."""
    machines = {c.machine for c in columns}
    protocols = {c.protocol for c in columns}
    thread_counts = {doc.protocols.get(c.protocol, {}).get("threads") for c in columns}
    labelled = []
    for c in columns:
        label = c.backend
        if len(protocols) > 1:
            proto = doc.protocols.get(c.protocol, {})
            others_same = len({_without_threads(doc.protocols.get(p, {})) for p in protocols}) == 1
            if others_same and len(thread_counts) > 1:
                label += f" ({proto.get('threads') or 'default'} thr)"
            else:
                label += f" [{c.protocol}]"
        if len(machines) > 1:
            label += f" — {short_machine_label(doc.machines.get(c.machine, {}))}"
        labelled.append(Column(c.machine, c.protocol, c.backend, label))
    return labelled


def _without_threads(protocol: dict[str, Any]) -> str:
    keep = {k: v for k, v in protocol.items() if k not in ("threads", "overrides", "description")}
    return repr(sorted(keep.items(), key=lambda kv: kv[0]))


def build_table(doc: BenchDocument, results: Iterable[BenchResult] | None = None) -> Table:
    """The latency table of ``results`` (default: all of ``doc``'s)."""
    results = list(doc.results if results is None else results)
    order: list[Column] = []
    unavailable: dict[str, str] = {}
    for r in results:
        col = Column(r.machine, r.protocol, r.backend)
        if r.ok and col not in order:
            order.append(col)
        if not r.ok and r.error:
            unavailable.setdefault(r.backend, f"{r.status}: {r.error}")
    seen_ok = {c.backend for c in order}
    unavailable = {k: v for k, v in unavailable.items() if k not in seen_ok}
    columns = _column_labels(order, doc)
    by_key = {(c.machine, c.protocol, c.backend): c for c in columns}
    rows: dict[tuple[str, str], Row] = {}
    for r in results:
        key = (r.model, r.variant)
        if key not in rows:
            figs = paper_figures(r.model)
            rows[key] = Row(
                model=r.model, variant=r.variant, params_m=r.params_m, macs_m=r.macs_m,
                paper_params_m=figs["params_m"] if r.variant == "star" else None,
                paper_macs_m=figs["macs_m"] if r.variant == "star" else None,
                top1=figs["top1"] if r.variant == "star" else None,
                latency={}, speedups={}, status={}, paper=paper_latencies(r.model, r.variant),
            )
        row = rows[key]
        row.params_m = row.params_m if row.params_m is not None else r.params_m
        row.macs_m = row.macs_m if row.macs_m is not None else r.macs_m
        col = by_key.get((r.machine, r.protocol, r.backend))
        if col is not None and r.ok:
            cell = make_cell(r, doc.machines.get(r.machine, {}))
            row.cells[col] = cell
            row.latency[col] = r.latency_ms
            row.median[col] = cell.median
            row.speedups[col] = dict(cell.speedups)
            row.status[col] = r.status
    platforms = [p for p in PAPER_PLATFORMS if any(p in row.paper for row in rows.values())]
    notes = [n for n in doc.notes]
    if any(r.status == "interrupted" for r in results):
        notes.append("* = run interrupted by Ctrl-C: the figure covers only the inferences timed before it")
    for pid in dict.fromkeys(r.protocol for r in results):
        imitates = doc.protocols.get(pid, {}).get("imitates")
        if imitates and any(
            doc.machines.get(r.machine, {}).get("label") is None for r in results if r.protocol == pid
        ):
            notes.append(f"protocol {pid} copies the counts of {imitates}, but was timed on this host's CPU")
    return Table(columns, list(rows.values()), platforms, unavailable, notes)


def make_cell(r: BenchResult, machine: dict[str, Any]) -> Cell:
    """The table view of one result; the verdict is the recorded one, or judged now for older files."""
    verdict = r.reliability if r.reliability is not None else assess_result(r, machine).to_dict()
    # Ratios of medians; a file written before they were recorded has only the reported figures'.
    speedups = r.speedup_median_vs or r.speedup_vs
    return Cell(
        median=r.stat("median"), p90=r.stat("p90") if r.runs else None, mean=r.stat("mean") if r.runs else None,
        speedups=dict(speedups), status=r.status, flagged=bool(verdict.get("flagged")),
        reasons=list(verdict.get("reasons") or []), spread=r.spread_ms, reported=r.latency_ms,
    )


def flagged_cells(table: Table) -> list[tuple[str, Column, Cell]]:
    """Every (row name, column, cell) marked unreliable, in table order."""
    return [(row.name, c, row.cells[c]) for row in table.rows for c in table.columns if c in row.cells and row.cells[c].flagged]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _marks(row: Row, col: Column) -> str:
    cell = row.cells.get(col)
    mark = "*" if row.status.get(col) == "interrupted" else ""
    return mark + (UNRELIABLE_MARKER if cell is not None and cell.flagged else "")


def _cell(row: Row, col: Column) -> str:
    value = row.median.get(col)
    return _fmt(value) + (_marks(row, col) if value is not None else "")


def _speedup_cell(row: Row, col: Column) -> str:
    sp = row.speedups.get(col)
    if not sp:
        return "—"
    parts = [f"×{sp[b]:.2f}" if b in sp else "—" for b in BASELINES]
    return " / ".join(parts)


def _paper_label(platform: str, short: bool) -> str:
    return SHORT_LABELS.get(platform, platform) if short else platform


def latency_header(table: Table, short: bool = False) -> list[str]:
    """Header cells of the latency table (``short`` abbreviates the papers' hardware labels)."""
    return (
        ["model", "params (M)", "MACs (M)", "top-1 (paper)"]
        + [f"{c.label} (ms)" for c in table.columns]
        + [f"{_paper_label(p, short)} (ms)" for p in table.paper_platforms]
    )


def latency_rows(table: Table) -> list[list[str]]:
    """Body cells of the latency table (strings)."""
    body = []
    for row in table.rows:
        body.append(
            [row.name, _fmt(row.params_m), _fmt(row.macs_m, 1), _fmt(row.top1, 1)]
            + [_cell(row, c) for c in table.columns]
            + [_fmt(row.paper.get(p), 1) for p in table.paper_platforms]
        )
    return body


def speedup_columns(table: Table) -> list[Column]:
    """Columns for the speed-up table: every non-baseline column with a measured baseline."""
    return [
        c for c in table.columns
        if c.backend not in BASELINES and any(row.speedups.get(c) for row in table.rows)
    ]


def speedup_rows(table: Table) -> list[list[str]]:
    """Body cells of the speed-up table: ``×vs PyTorch / ×vs plain ORT`` per column."""
    cols = speedup_columns(table)
    return [[row.name] + [_speedup_cell(row, c) for c in cols] for row in table.rows]


def _star_sum_pairs(table: Table) -> list[tuple[str, Row, Row]]:
    """(model, star row, sum row) for every model timed in both variants, in table order."""
    pairs: dict[str, dict[str, Row]] = {}
    for row in table.rows:
        pairs.setdefault(row.model, {})[row.variant] = row
    return [(model, v["star"], v["sum"]) for model, v in pairs.items() if "star" in v and "sum" in v]


def star_sum_rows(table: Table) -> list[list[str]]:
    """Paper-Table-8 style rows: per model, ``sum / star (Δ sum−star)`` per column and paper platform."""
    out = []
    for model, star, summ in _star_sum_pairs(table):
        cells = [model]
        for col in table.columns:
            cells.append(_pair(summ.median.get(col), star.median.get(col), 2, _pair_flagged(star, summ, col)))
        for p in table.paper_platforms:
            cells.append(_pair(summ.paper.get(p), star.paper.get(p), 1))
        out.append(cells)
    return out


#: What a star-vs-sum cell says instead of a difference when either run is unreliable.
NOT_A_RESULT = "not a result!"
STAR_SUM_CAPTION = (
    f"'{NOT_A_RESULT}': the star or the sum run is unreliable (spread or machine load), so their "
    "difference says nothing about star vs. sum; rerun on a quiet machine"
)


def _pair_flagged(star: Row, summ: Row, col: Column) -> bool:
    return any(r.cells.get(col) is not None and r.cells[col].flagged for r in (star, summ))


def _pair(sum_ms: float | None, star_ms: float | None, digits: int, unreliable: bool = False) -> str:
    if sum_ms is None or star_ms is None:
        return "—"
    delta = NOT_A_RESULT if unreliable else f"{star_ms - sum_ms:+.{digits}f}"
    return f"{sum_ms:.{digits}f} / {star_ms:.{digits}f} ({delta})"


def star_sum_header(table: Table, short: bool = False) -> list[str]:
    """Header of the star-vs-sum table."""
    return ["model"] + [f"{c.label}: sum / star (ms)" for c in table.columns] + [
        f"{_paper_label(p, short)}: sum / star" for p in table.paper_platforms
    ]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def describe_context(doc: BenchDocument, results: Iterable[BenchResult] | None = None) -> list[str]:
    """One line per machine and protocol used by ``results``: what the numbers were measured with."""
    results = list(doc.results if results is None else results)
    lines = []
    for mid in dict.fromkeys(r.machine for r in results):
        m = doc.machines.get(mid, {})
        versions = m.get("versions", {})
        vtext = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "staredge")
        load = m.get("load_average")
        lines.append(
            f"Machine: {short_machine_label(m)}; flags {', '.join(m.get('cpu_flags') or []) or 'n/a'}"
            + (f"; load average at start {load}" if load else "")
            + (f"; {vtext}" if vtext else "")
        )
    for pid in dict.fromkeys(r.protocol for r in results):
        p = doc.protocols.get(pid, {})
        trim = f", drop {p.get('trim_low')} lowest/{p.get('trim_high')} highest" if p.get("trim_low") or p.get("trim_high") else ""
        lines.append(
            f"Protocol {pid}: {p.get('threads') or 'default'} threads, {p.get('warmup')} warm-up, "
            f"{p.get('iters')} timed × {p.get('repeats')} run(s){trim}, reported: {p.get('statistic')} of "
            f"{'the last run' if p.get('reduce') == 'last' else 'all runs (mean)'}; rewrite {p.get('rewrite')}; batch 1"
        )
    return lines


def _context_columns(table: Table, doc: BenchDocument) -> tuple[bool, str | None]:
    """Whether the per-runtime table needs a machine column, and its protocol column's header.

    The protocol column is ``threads`` when protocols differ only in their thread count.
    """
    machines = {c.machine for c in table.columns}
    protocols = {c.protocol for c in table.columns}
    proto_header = None
    if len(protocols) > 1:
        same = len({_without_threads(doc.protocols.get(p, {})) for p in protocols}) == 1
        proto_header = "threads" if same else "protocol"
    return len(machines) > 1, proto_header


def runtime_header(table: Table, doc: BenchDocument, grouped: bool = False) -> list[str]:
    """Header of the per-runtime table (runtimes as rows).

    ``grouped`` (the terminal): one ``model / runtime`` column, the model on a row of its
    own, and machine and protocol together in one ``measured on`` column.
    """
    machine, proto = _context_columns(table, doc)
    if grouped:
        header = ["model / runtime"] + (["measured on"] if machine or proto else [])
    else:
        header = ["model", "runtime"] + (["machine"] if machine else []) + ([proto] if proto else [])
    header += ["median", "p90", "mean"]
    if speedup_columns(table):
        header += ["×PyTorch", "×ORT"]
    return header


def runtime_rows(table: Table, doc: BenchDocument, grouped: bool = False) -> list[list[str]]:
    """One row per model and measured column: median (marked), p90, mean, speed-ups of medians.

    Without ``grouped`` the model name is printed on the first row of its group only; with
    it, on a row of its own above its runtimes (see :func:`runtime_header`).
    """
    machine, proto = _context_columns(table, doc)
    with_speedups = bool(speedup_columns(table))
    width = len(runtime_header(table, doc, grouped))
    body = []
    for row in table.rows:
        first = True
        for col in table.columns:
            cell = row.cells.get(col)
            if cell is None:
                continue
            where = []
            if machine:
                where.append(compact_machine_label(doc.machines.get(col.machine, {})))
            if proto == "threads":
                where.append(f"{doc.protocols.get(col.protocol, {}).get('threads') or 'default'} thr")
            elif proto:
                where.append(col.protocol)
            if grouped:
                if first:
                    body.append([row.name] + [""] * (width - 1))
                line = [f"  {col.backend}"] + ([" · ".join(where)] if where else [])
            else:
                line = [row.name if first else "", col.backend] + where
            line += [_fmt(cell.median) + _marks(row, col), _fmt(cell.p90), _fmt(cell.mean)]
            if with_speedups:
                line += [f"×{cell.speedups[b]:.2f}" if b in cell.speedups else "—" for b in BASELINES]
            body.append(line)
            first = False
    return body


def paper_header(table: Table) -> list[str]:
    """Header of the models table: our counts, the papers' top-1 and latencies (short labels)."""
    return ["model", "params (M)", "MACs (M)", "top-1"] + [SHORT_LABELS.get(p, p) for p in table.paper_platforms]


def paper_rows(table: Table) -> list[list[str]]:
    """One row per model (variant): params, MACs, the papers' top-1 and published latencies."""
    return [
        [row.name, _fmt(row.params_m), _fmt(row.macs_m, 1), _fmt(row.top1, 1)]
        + [_fmt(row.paper.get(p), 1) for p in table.paper_platforms]
        for row in table.rows
    ]


def star_sum_long_rows(table: Table, doc: BenchDocument) -> list[list[str]]:
    """Star vs. sum with runtimes as rows (model rows above): sum, star (medians, ms), star − sum.

    The difference reads ``not a result!`` when either run is unreliable.
    """
    machine, _ = _context_columns(table, doc)
    out = []
    for model, star, summ in _star_sum_pairs(table):
        first = True
        for col in table.columns:
            a, b = summ.median.get(col), star.median.get(col)
            if a is None or b is None:
                continue
            if first:
                out.append([model, "", "", ""])
                first = False
            runtime = col.backend + (f" · {compact_machine_label(doc.machines.get(col.machine, {}))}" if machine else "")
            delta = NOT_A_RESULT if _pair_flagged(star, summ, col) else f"{b - a:+.2f}"
            out.append([f"  {runtime}", _fmt(a) + _marks(summ, col), _fmt(b) + _marks(star, col), delta])
    return out


def reliability_notes(table: Table, limit: int = 8) -> list[str]:
    """One line per unreliable result (at most ``limit``, then a count): what was wrong."""
    flagged = flagged_cells(table)
    lines = [f"{name} · {col.label}: {'; '.join(cell.reasons)}" for name, col, cell in flagged[:limit]]
    if len(flagged) > limit:
        lines.append(f"... and {len(flagged) - limit} more (see 'reliability' in the JSON)")
    return lines


def _median_caption() -> str:
    return "median, p90 and mean of the timed inferences (ms); ×: baseline median / this median (above 1 = faster)"


def to_markdown(doc: BenchDocument, results: Iterable[BenchResult] | None = None, *, title: str | None = None) -> str:
    """Markdown: context, the Table-6-style table of medians, the per-runtime table, speed-ups, star/sum."""
    table = build_table(doc, results)
    parts = []
    if title:
        parts.append(f"### {title}\n")
    parts.append("\n".join(f"- {line}" for line in describe_context(doc, results)) + "\n")
    parts.append("Median latency, batch 1 (ms), next to the papers' published figures.\n")
    parts.append(_md_table(latency_header(table), latency_rows(table)) + "\n")
    if table.columns:
        parts.append(f"Per runtime: {_median_caption()}.\n")
        parts.append(_md_table(runtime_header(table, doc), runtime_rows(table, doc)) + "\n")
    cols = speedup_columns(table)
    if cols:
        parts.append(
            "Speed-up over the baselines (baseline median / runtime median; above 1 = faster): "
            "×vs PyTorch eager / ×vs plain ONNX Runtime.\n"
        )
        parts.append(_md_table(["model"] + [c.label for c in cols], speedup_rows(table)) + "\n")
    ss = star_sum_rows(table)
    if ss:
        parts.append("Star vs. sum (paper Table 8 style): sum / star (star − sum), medians.\n")
        parts.append(_md_table(star_sum_header(table), ss) + "\n")
    footer = [MAC_NOTE] + table.notes + [f"`{b}` not measured: {why}" for b, why in table.unavailable.items()]
    footer += precision_notes(doc.results if results is None else results)
    if flagged_cells(table):
        footer.append(UNRELIABLE_CAPTION)
        footer += reliability_notes(table, limit=50)
        if ss:
            footer.append(STAR_SUM_CAPTION)
    parts.append("\n".join(f"- {n}" for n in footer) + "\n")
    return "\n".join(parts)


def precision_notes(results: Iterable[BenchResult]) -> list[str]:
    """One line per backend timed at another precision than fp32: which, and its calibration."""
    lines: dict[str, str] = {}
    for r in results:
        if r.precision != "fp32" and r.backend not in lines:
            calib = [n for n in r.notes if "calibrated" in n]
            lines[r.backend] = f"`{r.backend}`: {r.precision} artifact" + (f"; {calib[0]}" if calib else "")
    return list(lines.values())


#: CSV columns, one line per result.
CSV_FIELDS = (
    "model", "variant", "backend", "runtime", "device", "protocol", "machine", "status", "threads_requested",
    "threads_in_effect", "latency_ms", "first_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "min_ms",
    "trimmed_mean_ms", "runs", "cpu_utilisation", "speedup_vs_pytorch", "speedup_vs_onnx_plain", "params_m",
    "macs_m", "paper_top1", "rewrites", "runtime_version", "error", "speedup_median_vs_pytorch",
    "speedup_median_vs_onnx_plain", "unreliable", "unreliable_reasons", "weights", "precision",
)


def to_csv(doc: BenchDocument, results: Iterable[BenchResult] | None = None) -> str:
    """CSV text, one line per result; run statistics are those of the reported (or last) run."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in (doc.results if results is None else results):
        run = None
        if r.runs:
            run = r.runs[r.reported_run] if r.reported_run is not None else r.runs[-1]
        line = {
            "model": r.model, "variant": r.variant, "backend": r.backend, "runtime": r.runtime, "device": r.device,
            "protocol": r.protocol, "machine": short_machine_label(doc.machines.get(r.machine, {})),
            "status": r.status, "threads_requested": r.threads_requested, "threads_in_effect": r.threads_in_effect,
            "latency_ms": r.latency_ms, "runs": len(r.runs),
            "speedup_vs_pytorch": r.speedup_vs.get(EAGER_RUNTIME), "speedup_vs_onnx_plain": r.speedup_vs.get("onnx-plain"),
            "params_m": r.params_m, "macs_m": r.macs_m, "paper_top1": paper_figures(r.model)["top1"],
            "rewrites": "+".join(r.rewrites), "runtime_version": r.runtime_version, "error": r.error,
            "speedup_median_vs_pytorch": r.speedup_median_vs.get(EAGER_RUNTIME),
            "speedup_median_vs_onnx_plain": r.speedup_median_vs.get("onnx-plain"), "weights": r.weights,
            "precision": r.precision,
        }
        if r.ok:
            verdict = r.reliability if r.reliability is not None else assess_result(
                r, doc.machines.get(r.machine, {})).to_dict()
            line["unreliable"] = int(bool(verdict.get("flagged")))
            line["unreliable_reasons"] = "; ".join(verdict.get("reasons") or [])
        if run is not None:
            for key in ("first_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "min_ms",
                        "trimmed_mean_ms", "cpu_utilisation"):
                line[key] = getattr(run, key)
        writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    return buf.getvalue()


def print_tables(
    doc: BenchDocument, console: Any = None, results: Iterable[BenchResult] | None = None, *, width: int | None = None
) -> None:
    """The tables in the terminal with rich, never wider than 100 columns.

    The Table-6 layout (one column per runtime, the papers' columns beside them) does not
    fit 100 columns beyond two or three runtimes, so the terminal gets it transposed:
    runtimes as rows under each model (median, p90, mean, speed-ups of medians), and the
    papers' figures in a table of their own. The Markdown keeps the Table-6 layout.
    Unreliable figures carry ``!`` and a caption says why.
    """
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable
    from rich.text import Text

    console = console or Console()
    if width is None:
        width = min(console.width, MAX_WIDTH) if console.is_terminal else MAX_WIDTH
    width = min(width, MAX_WIDTH)
    out = Console(width=width, file=console.file, force_terminal=console.is_terminal,
                  color_system=console.color_system and "auto", highlight=False)
    results = list(doc.results if results is None else results)
    table = build_table(doc, results)

    def build(title: str, header: list[str], body: list[list[str]], caption: str | None = None,
              group_first: bool = False, wrap_headers: bool = False) -> tuple[RichTable, str | None]:
        # group_first: rows whose cells after the first are empty name a model; a rule above each.
        # The caption is printed under the table at the full width, not squeezed to the table's.
        t = RichTable(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
        for i, h in enumerate(header):
            # Names and numbers are never broken; only the "measured on" column wraps.
            t.add_column(h, justify="left" if i == 0 or h == "measured on" else "right", overflow="fold",
                         no_wrap=h not in ("measured on", "machine", "protocol") and not (wrap_headers and i))
        for k, row in enumerate(body):
            heading = group_first and not any(row[1:])
            next_heading = group_first and k + 1 < len(body) and not any(body[k + 1][1:])
            t.add_row(*row, style="bold" if heading else None, end_section=next_heading)
        return t, caption

    def show(built: tuple[RichTable, str | None]) -> None:
        t, caption = built
        out.print(t)
        if caption:
            out.print(Text(caption, style="dim"))
        out.print()

    flagged = bool(flagged_cells(table))
    context = "\n".join(describe_context(doc, results))
    if table.columns:
        show(build(
            "Latency, batch 1 (ms), one row per runtime", runtime_header(table, doc, grouped=True),
            runtime_rows(table, doc, grouped=True),
            _median_caption() + "\n" + context + ("\n" + UNRELIABLE_CAPTION if flagged else ""),
            group_first=True,
        ))
    show(build(
        "Models: our params and MACs; the papers' top-1 and latencies (ms)", paper_header(table), paper_rows(table),
        "; ".join(f"{SHORT_LABELS.get(p, p)} = {p}" for p in table.paper_platforms) or None,
        wrap_headers=True,  # headers break at spaces (two lines), never mid-word: the numbers are short
    ))
    ss_long = star_sum_long_rows(table, doc)
    if ss_long:
        show(build(
            "Star vs. sum, medians (ms)", ["model / runtime", "sum", "star", "star − sum"], ss_long,
            STAR_SUM_CAPTION if any(r[-1] == NOT_A_RESULT for r in ss_long) else None, group_first=True,
        ))
    for line in reliability_notes(table):
        out.print(f"[yellow]{UNRELIABLE_MARKER}[/] {escape(line)}")
    for backend, why in table.unavailable.items():
        out.print(f"[yellow]{escape(backend)}[/] not measured: {escape(why)}")
    for note in table.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


def _family(model: str) -> str:
    from staredge.errors import UnknownModelError
    from staredge.models import get_entry

    try:
        return get_entry(model).family
    except UnknownModelError:
        return "other"


def _short_name(model: str) -> str:
    """``starnet_s1`` → ``S1``, ``efficientformerv2_l`` → ``EFv2-L`` (plot labels)."""
    if model.startswith("starnet_s"):
        return "S" + model[len("starnet_s"):]
    if model.startswith("efficientformerv2_"):
        return "EFv2-" + model[len("efficientformerv2_"):].upper()
    return model


#: At most this many legend entries; beyond it the papers' series share one entry.
MAX_LEGEND = 8
ACCURACY_PLOT_TITLE = "Papers' published ImageNet top-1 vs. latency measured here"


def _weights_text(results: list[BenchResult]) -> str:
    kinds = sorted({r.weights for r in results if r.weights})
    return "; ".join(kinds) if kinds else "as recorded (not stated in the results file)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: str, plt: Any) -> None:
    from staredge.fileio import atomic_write_with

    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)


def plot_latency_vs_top1(
    doc: BenchDocument,
    path: str,
    results: Iterable[BenchResult] | None = None,
    *,
    title: str | None = None,
    include_paper: bool = True,
    force: bool = True,
) -> list[str]:
    """The papers' published top-1 against the median latency we measured, one series per runtime.

    The accuracies are the papers' (their released weights); the latencies are of the
    models benchmarked here, with the weights the results record (``random init`` for
    ``staredge bench``: latency does not depend on the weights' values, accuracy does) —
    the axis labels and a footnote say so. Only models whose paper gives a top-1 are
    plotted; the papers' own latencies are dashed series labelled with their hardware.
    The legend keeps to 8 entries: past that the papers' series share one entry, and with
    still too many runtime columns each runtime gets one colour and entry (its settings
    told apart by marker). Returns the legend labels. Written atomically (Agg backend).
    """
    import os

    from staredge.errors import ConfigError

    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    results = list(doc.results if results is None else results)
    table = build_table(doc, results)
    rows = [r for r in table.rows if r.top1 is not None]
    if not rows:
        raise ConfigError("nothing to plot: none of the measured models has a published top-1 accuracy")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    drawn = []
    markers = "os^Dv<>pPX*h"
    families = {row.model: _family(row.model) for row in rows}

    def draw(points: list[tuple[float, float, str]], label: str | None, **style: Any) -> None:
        # One line per model family (StarNet, EfficientFormerV2): a line across families
        # would suggest a trade-off curve that does not exist. Same colour, one legend entry.
        colour = style.pop("color", None)
        first = True
        for family in dict.fromkeys(families[m] for _, _, m in points):
            pts = sorted(p for p in points if families[p[2]] == family)
            xs, ys, _ = zip(*pts)
            (line,) = ax.plot(xs, ys, color=colour, label=label if first else None, **style)
            colour = line.get_color()
            first = False
        if label:
            drawn.append(label)

    measured = [c for c in table.columns if any(row.median.get(c) is not None for row in rows)]
    platforms = [p for p in table.paper_platforms if any(p in row.paper for row in rows)] if include_paper else []
    # Too many series for a readable legend: one entry (and colour) per runtime, its settings
    # (accelerator, rewrites, machine, protocol) told apart by marker.
    by_runtime = len(measured) + min(len(platforms), 1) > MAX_LEGEND
    colours: dict[str, Any] = {}
    for i, col in enumerate(measured):
        pts = [(row.median[col], row.top1, row.model) for row in rows if row.median.get(col) is not None]
        if not by_runtime:
            draw(pts, col.label, marker=markers[i % len(markers)])
            continue
        runtime = col.backend.split("@")[0].split(":")[0]
        members = sum(1 for c in measured if c.backend.split("@")[0].split(":")[0] == runtime)
        label = None if runtime in colours else (runtime if members == 1 else f"{runtime} ({members} settings)")
        colour = colours.setdefault(runtime, f"C{len(colours) % 10}")
        draw(pts, label, marker=markers[i % len(markers)], color=colour)
    if platforms:
        grouped = len(drawn) + len(platforms) > MAX_LEGEND
        for k, platform in enumerate(platforms):
            pts = [(row.paper[platform], row.top1, row.model) for row in rows if platform in row.paper]
            label = platform if not grouped else ("papers' own latencies (their hardware)" if k == 0 else None)
            style = {"color": "0.55"} if grouped else {}
            draw(pts, label, linestyle="--", marker="x", alpha=0.6, **style)
    for row in rows:  # name each model once, at its fastest measured point
        xs = [row.median[c] for c in table.columns if row.median.get(c) is not None]
        if xs:
            ax.annotate(_short_name(row.model), (min(xs), row.top1), textcoords="offset points",
                        xytext=(-6, 5), fontsize=7, ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("median latency measured here, batch 1 (ms, log scale)")
    ax.set_ylabel("ImageNet-1k top-1 (%) published in the papers")
    ax.set_title(title or ACCURACY_PLOT_TITLE)
    fig.text(
        0.01, 0.01,
        "Accuracies: the papers' (their released weights), not measured here. Latencies: the models timed here, "
        f"weights: {_weights_text(results)}.",
        fontsize=7, ha="left", va="bottom",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              ncol=1 if len(drawn) <= MAX_LEGEND else 2)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save_png(fig, path, plt)
    return drawn


def plot_latency_bars(
    doc: BenchDocument,
    path: str,
    results: Iterable[BenchResult] | None = None,
    *,
    title: str | None = None,
    force: bool = True,
) -> list[str]:
    """A bar per runtime and model: the median latency, with whiskers from p10 to p90.

    Bars are grouped by model, one colour per runtime column. Results recorded without
    their timings' p10 (files from other tools, older files) get whiskers from the min
    instead, and the note under the chart says so. Unreliable results are hatched. Returns
    the legend labels. Written atomically (PNG).
    """
    import os

    from staredge.errors import ConfigError

    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    results = list(doc.results if results is None else results)
    table = build_table(doc, results)
    rows = [row for row in table.rows if row.cells]
    if not rows:
        raise ConfigError("nothing to plot: no result has a latency")
    by_key = {(r.model, r.variant, r.machine, r.protocol, r.backend): r for r in results if r.ok}
    plt = _pyplot()
    cols = table.columns
    n = len(cols)
    legend_rows = n if n <= 3 else (n + 1) // 2
    fig, ax = plt.subplots(figsize=(max(9.0, 1.2 + len(rows) * (0.5 + 0.32 * n)), 5.0 + 0.22 * legend_rows), dpi=120)
    group = 0.84
    width = group / max(n, 1)
    used_min = False
    highs: list[float] = []
    lows: list[float] = []
    for j, col in enumerate(cols):
        xs, meds, lo, hi, hatches = [], [], [], [], []
        for i, row in enumerate(rows):
            cell = row.cells.get(col)
            if cell is None or cell.median is None:
                continue
            r = by_key.get((row.model, row.variant, col.machine, col.protocol, col.backend))
            spread = cell.spread or {}
            low = spread.get("p10")
            if low is None:
                used_min = True
                low = r.stat("min") if r is not None and r.runs else cell.median
            high = spread.get("p90", cell.p90 if cell.p90 is not None else cell.median)
            xs.append(i - group / 2 + width * (j + 0.5))
            meds.append(cell.median)
            lo.append(max(0.0, cell.median - low))
            hi.append(max(0.0, high - cell.median))
            hatches.append("//" if cell.flagged else "")
            highs.append(high)
            lows.append(max(low, 1e-9))
        if not xs:
            continue
        bars = ax.bar(xs, meds, width=width * 0.92, label=col.label, yerr=[lo, hi], capsize=2,
                      error_kw={"elinewidth": 0.8, "ecolor": "0.2"})
        for bar, hatch in zip(bars, hatches):
            if hatch:
                bar.set_hatch(hatch)
                bar.set_edgecolor("0.15")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([_short_name(r.model) + (" (sum)" if r.variant == "sum" else "") for r in rows],
                       rotation=0 if len(rows) <= 8 else 30)
    if highs and lows and max(highs) / max(min(lows), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_ylabel("median latency, batch 1 (ms)\nwhiskers: p10–p90")
    ax.set_title(title or "Median latency per runtime, with spread")
    ax.grid(True, axis="y", alpha=0.3)
    # Below the axes, so that long labels (runtime, protocol, machine) never squeeze the bars.
    ax.legend(fontsize=8, ncol=1 if n <= 3 else 2, loc="upper center", bbox_to_anchor=(0.5, -0.12),
              borderaxespad=0.0, frameon=False)
    note = "Hatched: unreliable (spread or machine load, see the table). "
    if used_min:
        note += "Some results were recorded without p10: their lower whisker is the fastest inference. "
    fig.text(0.01, 0.01, note, fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save_png(fig, path, plt)
    return [c.label for c in cols]
