"""Reports from a result document: Table-6-style tables (terminal, Markdown, CSV), plots.

The latency table has one row per model (and star/sum variant), our params and MACs,
the papers' top-1, one latency column per measured backend, and the papers' latencies
beside them, labelled with the papers' hardware. A second table gives every runtime's
speed-up over the two baselines (PyTorch eager and plain ONNX Runtime).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Iterable

from staredge.bench.machine import short_machine_label
from staredge.bench.paper import PAPER_PLATFORMS, SHORT_LABELS, paper_figures, paper_latencies
from staredge.bench.results import BenchDocument, BenchResult

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
class Row:
    """One model (variant) with its figures and one latency per column."""

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
            row.latency[col] = r.latency_ms
            row.speedups[col] = dict(r.speedup_vs)
            row.status[col] = r.status
    platforms = [p for p in PAPER_PLATFORMS if any(p in row.paper for row in rows.values())]
    notes = [n for n in doc.notes]
    if any(r.status == "interrupted" for r in results):
        notes.append("* = run interrupted by Ctrl-C: the figure covers only the inferences timed before it")
    return Table(columns, list(rows.values()), platforms, unavailable, notes)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(row: Row, col: Column) -> str:
    value = row.latency.get(col)
    mark = "*" if row.status.get(col) == "interrupted" else ""
    return _fmt(value) + mark


def _speedup_cell(row: Row, col: Column) -> str:
    sp = row.speedups.get(col)
    if not sp:
        return "—"
    parts = [f"×{sp[b]:.2f}" if b in sp else "—" for b in ("pytorch", "onnx-plain")]
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
        if c.backend not in ("pytorch", "onnx-plain") and any(row.speedups.get(c) for row in table.rows)
    ]


def speedup_rows(table: Table) -> list[list[str]]:
    """Body cells of the speed-up table: ``×vs PyTorch / ×vs plain ORT`` per column."""
    cols = speedup_columns(table)
    return [[row.name] + [_speedup_cell(row, c) for c in cols] for row in table.rows]


def star_sum_rows(table: Table) -> list[list[str]]:
    """Paper-Table-8 style rows: per model, ``sum / star (Δ sum−star)`` per column and paper platform."""
    pairs: dict[str, dict[str, Row]] = {}
    for row in table.rows:
        pairs.setdefault(row.model, {})[row.variant] = row
    out = []
    for model, variants in pairs.items():
        if "star" not in variants or "sum" not in variants:
            continue
        star, summ = variants["star"], variants["sum"]
        cells = [model]
        for col in table.columns:
            cells.append(_pair(summ.latency.get(col), star.latency.get(col), 2))
        for p in table.paper_platforms:
            cells.append(_pair(summ.paper.get(p), star.paper.get(p), 1))
        out.append(cells)
    return out


def _pair(sum_ms: float | None, star_ms: float | None, digits: int) -> str:
    if sum_ms is None or star_ms is None:
        return "—"
    return f"{sum_ms:.{digits}f} / {star_ms:.{digits}f} ({star_ms - sum_ms:+.{digits}f})"


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


def to_markdown(doc: BenchDocument, results: Iterable[BenchResult] | None = None, *, title: str | None = None) -> str:
    """Markdown: context lines, the latency table, the speed-up table (and star/sum if present)."""
    table = build_table(doc, results)
    parts = []
    if title:
        parts.append(f"### {title}\n")
    parts.append("\n".join(f"- {line}" for line in describe_context(doc, results)) + "\n")
    parts.append(_md_table(latency_header(table), latency_rows(table)) + "\n")
    cols = speedup_columns(table)
    if cols:
        parts.append(
            "Speed-up over the baselines (baseline latency / runtime latency; above 1 = faster): "
            "×vs PyTorch eager / ×vs plain ONNX Runtime.\n"
        )
        parts.append(_md_table(["model"] + [c.label for c in cols], speedup_rows(table)) + "\n")
    ss = star_sum_rows(table)
    if ss:
        parts.append("Star vs. sum (paper Table 8 style): sum / star (star − sum).\n")
        parts.append(_md_table(star_sum_header(table), ss) + "\n")
    footer = [MAC_NOTE] + table.notes + [f"`{b}` not measured: {why}" for b, why in table.unavailable.items()]
    parts.append("\n".join(f"- {n}" for n in footer) + "\n")
    return "\n".join(parts)


#: CSV columns, one line per result.
CSV_FIELDS = (
    "model", "variant", "backend", "runtime", "device", "protocol", "machine", "status", "threads_requested",
    "threads_in_effect", "latency_ms", "first_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "min_ms",
    "trimmed_mean_ms", "runs", "cpu_utilisation", "speedup_vs_pytorch", "speedup_vs_onnx_plain", "params_m",
    "macs_m", "paper_top1", "rewrites", "runtime_version", "error",
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
            "speedup_vs_pytorch": r.speedup_vs.get("pytorch"), "speedup_vs_onnx_plain": r.speedup_vs.get("onnx-plain"),
            "params_m": r.params_m, "macs_m": r.macs_m, "paper_top1": paper_figures(r.model)["top1"],
            "rewrites": "+".join(r.rewrites), "runtime_version": r.runtime_version, "error": r.error,
        }
        if run is not None:
            for key in ("first_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "min_ms",
                        "trimmed_mean_ms", "cpu_utilisation"):
                line[key] = getattr(run, key)
        writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    return buf.getvalue()


def print_tables(doc: BenchDocument, console: Any = None, results: Iterable[BenchResult] | None = None) -> None:
    """The latency and speed-up tables (and star/sum if present) in the terminal with rich."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    console = Console(width=max(160, console.width), file=console.file) if console.width < 160 else console
    results = list(doc.results if results is None else results)
    table = build_table(doc, results)

    def show(title: str, header: list[str], body: list[list[str]], caption: str | None = None) -> None:
        t = RichTable(title=title, caption=caption, caption_justify="left")
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
        for row in body:
            t.add_row(*row)
        console.print(t)

    context = "\n".join(describe_context(doc, results))
    show("Latency, batch 1 (ms)", latency_header(table, short=True), latency_rows(table), context)
    cols = speedup_columns(table)
    if cols:
        show(
            "Speed-up: ×vs PyTorch eager / ×vs plain ONNX Runtime (above 1 = faster)",
            ["model"] + [c.label for c in cols], speedup_rows(table),
        )
    ss = star_sum_rows(table)
    if ss:
        show("Star vs. sum: sum / star (star − sum), ms", star_sum_header(table, short=True), ss)
    for backend, why in table.unavailable.items():
        console.print(f"[yellow]{backend}[/] not measured: {why}")
    for note in table.notes:
        console.print(f"[yellow]note:[/] {note}")


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


def plot_latency_vs_top1(
    doc: BenchDocument,
    path: str,
    results: Iterable[BenchResult] | None = None,
    *,
    title: str | None = None,
    include_paper: bool = True,
    force: bool = True,
) -> list[str]:
    """Latency vs. ImageNet top-1 (the papers' accuracies), one series per runtime, like Figure 4.

    Only models whose paper gives a top-1 are plotted; the papers' own latencies are drawn
    as dashed series labelled with their hardware. Returns the series labels drawn.
    Written atomically with matplotlib's Agg backend (no display needed).
    """
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from staredge.errors import ConfigError

    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    table = build_table(doc, results)
    rows = [r for r in table.rows if r.top1 is not None]
    if not rows:
        raise ConfigError("nothing to plot: none of the measured models has a published top-1 accuracy")
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    drawn = []
    markers = "os^Dv<>pPX*h"
    families = {row.model: _family(row.model) for row in rows}

    def draw(points: list[tuple[float, float, str]], label: str, **style: Any) -> None:
        # One line per model family (StarNet, EfficientFormerV2): a line across families
        # would suggest a trade-off curve that does not exist. Same colour, one legend entry.
        colour = None
        for family in dict.fromkeys(families[m] for _, _, m in points):
            pts = sorted(p for p in points if families[p[2]] == family)
            xs, ys, _ = zip(*pts)
            (line,) = ax.plot(xs, ys, color=colour, label=label if colour is None else None, **style)
            colour = line.get_color()
        drawn.append(label)

    for i, col in enumerate(table.columns):
        pts = [(row.latency[col], row.top1, row.model) for row in rows if row.latency.get(col) is not None]
        if pts:
            draw(pts, col.label, marker=markers[i % len(markers)])
    if include_paper:
        for platform in table.paper_platforms:
            pts = [(row.paper[platform], row.top1, row.model) for row in rows if platform in row.paper]
            if pts:
                draw(pts, platform, linestyle="--", marker="x", alpha=0.6)
    for row in rows:  # name each model once, at its fastest measured point
        xs = [row.latency[c] for c in table.columns if row.latency.get(c) is not None]
        if xs:
            ax.annotate(_short_name(row.model), (min(xs), row.top1), textcoords="offset points",
                        xytext=(-6, 5), fontsize=7, ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("latency, batch 1 (ms, log scale)")
    ax.set_ylabel("ImageNet-1k top-1 (%), as published")
    ax.set_title(title or "Latency vs. ImageNet top-1")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    from staredge.fileio import atomic_write_with

    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    finally:
        plt.close(fig)
    return drawn
