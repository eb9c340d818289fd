"""``staredge models``: every registered model with our params/MACs beside the papers'."""

from __future__ import annotations

import argparse
import json



def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    p = sub.add_parser("models", help="list registered models with params/MACs beside the papers' figures")
    p.add_argument("--family", help="only this family (starnet, demonet, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    p.set_defaults(func=run)


def model_rows(family: str | None = None) -> list[dict]:
    """One dict per registered model: ours and the paper's params/MACs, deltas and notes."""
    from rich.progress import Progress, TextColumn, BarColumn, MofNCompleteColumn
    from staredge.models import get_entry, list_models
    from staredge.profiler import profile

    rows = []
    names = list_models(family)
    from rich.console import Console

    progress = Progress(
        TextColumn("profiling {task.description}"), BarColumn(), MofNCompleteColumn(),
        transient=True, console=Console(stderr=True),
    )
    with progress as bar:
        task = bar.add_task("", total=len(names))
        for name in names:
            bar.update(task, description=name)
            entry = get_entry(name)
            res = profile(name)
            paper = entry.paper
            row = {
                "name": name,
                "family": entry.family,
                "input": "2-D points" if entry.family == "demonet" and res.input_size[0] == 2
                else "x".join(map(str, res.input_size[1:])),
                # ours under the paper's convention (e.g. without BN), so the columns compare
                "params_m": (res.params_no_bn if paper.params_convention == "no_bn" else res.params) / 1e6,
                "params_convention": paper.params_convention,
                "paper_params_m": paper.params_m,
                "macs_m": res.macs_m,
                "paper_macs_m": paper.macs_m,
                "macs_delta_pct": (100 * (res.macs_m - paper.macs_m) / paper.macs_m) if paper.macs_m else None,
                "top1": paper.top1,
                "source": paper.source,
                "note": paper.note,
            }
            rows.append(row)
            bar.advance(task)
    return rows


_NO_BN = "† BatchNorm parameters left out, as the paper counts them (BN is fused for inference)."


def _mark(row: dict) -> str:
    return " †" if row.get("params_convention") == "no_bn" else ""


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown_table(rows: list[dict]) -> str:
    """The model table as Markdown, with the counting convention underneath."""
    lines = [
        "| model | input | params (M) | paper | MACs (M) | paper | Δ MACs | top-1 (paper) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "—" if r["macs_delta_pct"] is None else f"{r['macs_delta_pct']:+.1f}%"
        lines.append(
            f"| {r['name']} | {r['input']} | {_f(r['params_m'], '.3f')}{_mark(r)} | {_f(r['paper_params_m'], 'g')} "
            f"| {_f(r['macs_m'], '.1f')} | {_f(r['paper_macs_m'], 'g')} | {delta} | {_f(r['top1'], '.1f')} | {r['note']} |"
        )
    from staredge.profiler import MAC_CONVENTION

    lines.append("")
    lines.append(f"Convention: {MAC_CONVENTION} {_NO_BN}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the model table (or JSON)."""
    from staredge.profiler import MAC_CONVENTION

    rows = model_rows(args.family)
    if args.json:
        print(json.dumps({"convention": MAC_CONVENTION, "models": rows}, indent=2))
        return 0
    if args.markdown:
        print(markdown_table(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="StarEdge model zoo: ours vs. the papers", caption=f"{MAC_CONVENTION} {_NO_BN}", caption_justify="left")
    for col, just in [
        ("model", "left"), ("input", "right"), ("params (M)", "right"), ("paper", "right"),
        ("MACs (M)", "right"), ("paper", "right"), ("Δ MACs", "right"), ("top-1", "right"), ("note", "left"),
    ]:
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(
            r["name"], r["input"], _f(r["params_m"], ".3f") + _mark(r), _f(r["paper_params_m"], "g"),
            _f(r["macs_m"], ".1f"), _f(r["paper_macs_m"], "g"),
            "—" if r["macs_delta_pct"] is None else f"{r['macs_delta_pct']:+.1f}%",
            _f(r["top1"], ".1f"), r["note"],
        )
    Console(width=max(150, Console().width)).print(table)
    return 0
