"""``staredge models``: every registered model with our params/MACs beside the papers'.

The listing reads package data, so it needs no torch: params/MACs from ``model_figures.json``
(``scripts/model_figures.py``) and each model's family, paper figures and released weights
from ``model_catalog.json`` (``python -m staredge.commands.models``). Both are checked
against the registry by the tests; without them the registry is read (torch).
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

from staredge.commands import _args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    p = sub.add_parser("models", help="list registered models with params/MACs beside the papers' figures")
    p.add_argument("--family", help="only this family (starnet, demonet, efficientformer_v2, ...); "
                   "an unknown family is an error that lists them")
    _args.add_json(p, "the model tables", force=True)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    p.set_defaults(func=run)


#: Package data written by ``scripts/model_figures.py`` (checked against the profiler by
#: ``tests/test_model_figures.py``): params and MACs of every registered model.
FIGURES_FILE = "model_figures.json"


#: Package data written by ``python -m staredge.commands.models`` (checked against the
#: registry by ``tests/test_cli_imports.py``): what the listing shows of every model.
CATALOG_FILE = "model_catalog.json"


def _data(name: str) -> dict:
    from importlib import resources

    return json.loads(resources.files("staredge").joinpath("data", name).read_text("utf-8"))


def stored_figures() -> dict[str, dict]:
    """``{name: {"params", "params_no_bn", "macs", "input_size"}}`` from the package data ({} if absent)."""
    try:
        return dict(_data(FIGURES_FILE)["models"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def mac_convention() -> str:
    """The counting convention the stored figures were made with (the profiler's)."""
    try:
        return str(_data(FIGURES_FILE)["convention"])
    except (OSError, ValueError, KeyError, TypeError):
        from staredge.profiler import MAC_CONVENTION

        return MAC_CONVENTION


def catalog() -> dict:
    """What the listing shows of every registered model, in listing order, from the registry
    (torch): name, family, the paper's figures and the released weights."""
    import dataclasses

    from staredge.models import get_entry, list_models

    def entry(name: str) -> dict:
        e = get_entry(name)
        return {"name": name, "family": e.family, "paper": dataclasses.asdict(e.paper),
                "weights": None if e.weights is None else dataclasses.asdict(e.weights)}

    return {"models": [entry(name) for name in list_models()]}


def stored_catalog() -> list[dict] | None:
    """The catalog from the package data (None if absent or damaged)."""
    try:
        models = _data(CATALOG_FILE)["models"]
        return models if isinstance(models, list) and all({"name", "family", "paper", "weights"} <= set(m)
                                                           for m in models) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _entries(family: str | None) -> list[SimpleNamespace]:
    """(name, family, paper, weights) of the models to list: the registry when this process
    has it loaded already (what Python callers registered or changed is listed as it is now),
    else the stored catalog (the CLI, no torch), else the registry (which also names the
    families when ``family`` is unknown)."""
    import sys

    stored = None if "staredge.models.registry" in sys.modules else stored_catalog()
    if stored is not None and (family is None or any(m["family"] == family for m in stored)):
        from staredge.models.hub import WeightsSource

        return [SimpleNamespace(name=m["name"], family=m["family"], paper=SimpleNamespace(**m["paper"]),
                                weights=None if m["weights"] is None else WeightsSource(**m["weights"]))
                for m in stored if family is None or m["family"] == family]
    from staredge.models import get_entry, list_models

    return [SimpleNamespace(name=n, family=e.family, paper=e.paper, weights=e.weights)
            for n in list_models(family) for e in [get_entry(n)]]


def _figures(name: str, stored: dict[str, dict]) -> dict:
    """A model's params/MACs: the stored figures, or the profiler for a model they lack."""
    if name in stored:
        return stored[name]
    from staredge.profiler import profile

    res = profile(name)
    return {"params": res.params, "params_no_bn": res.params_no_bn, "macs": res.macs,
            "input_size": list(res.input_size)}


def model_rows(family: str | None = None) -> list[dict]:
    """One dict per registered model: ours and the paper's params/MACs, deltas, notes and
    the released weights (URL, whether and where they are cached)."""
    from staredge.models.hub import describe

    stored = stored_figures()
    rows = []
    for entry in _entries(family):
        name = entry.name
        fig = _figures(name, stored)
        paper = entry.paper
        macs_m = fig["macs"] / 1e6
        input_size = tuple(fig["input_size"])
        row = {
            "name": name,
            "family": entry.family,
            "input": "2-D points" if entry.family == "demonet" and input_size[0] == 2
            else "x".join(map(str, input_size[1:])),
            # ours under the paper's convention (e.g. without BN), so the columns compare
            "params_m": (fig["params_no_bn"] if paper.params_convention == "no_bn" else fig["params"]) / 1e6,
            "params_convention": paper.params_convention,
            "paper_params_m": paper.params_m,
            "macs_m": macs_m,
            "paper_macs_m": paper.macs_m,
            "macs_delta_pct": (100 * (macs_m - paper.macs_m) / paper.macs_m) if paper.macs_m else None,
            "top1": paper.top1,
            "source": paper.source,
            "note": paper.note,
            "weights": describe(name, entry.weights),
        }
        rows.append(row)
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
    lines.append("")
    lines.append(f"Convention: {mac_convention()} {_NO_BN}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the model table (or JSON)."""
    MAC_CONVENTION = mac_convention()
    _args.check_json_target(args)
    rows = model_rows(args.family)
    if args.json:
        from staredge.commands.export_lm import lm_rows

        from staredge.models.star.families import lm_families

        doc = {"convention": MAC_CONVENTION, "models": rows, "language_models": lm_rows(),
               "lm_families": [r.to_dict() for r in lm_families()]}
        if _args.emit_json(args, doc):
            return 0
    if args.markdown:
        print(markdown_table(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="StarEdge model zoo: ours vs. the papers", caption=f"{MAC_CONVENTION} {_NO_BN}", caption_justify="left")
    for col, just in [
        ("model", "left"), ("input", "right"), ("params (M)", "right"), ("paper", "right"),
        ("MACs (M)", "right"), ("paper", "right"), ("Δ MACs", "right"), ("top-1", "right"), ("weights", "left"),
        ("note", "left"),
    ]:
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(
            r["name"], r["input"], _f(r["params_m"], ".3f") + _mark(r), _f(r["paper_params_m"], "g"),
            _f(r["macs_m"], ".1f"), _f(r["paper_macs_m"], "g"),
            "—" if r["macs_delta_pct"] is None else f"{r['macs_delta_pct']:+.1f}%",
            _f(r["top1"], ".1f"), _weights_cell(r["weights"]), r["note"],
        )
    Console(width=max(150, Console().width)).print(table)
    from staredge.commands.export_lm import print_lm_table

    print_lm_table()
    print_lm_family_table()
    released = [r["weights"] for r in rows if r["weights"]["released"]]
    if released:
        from staredge.paths import weights_dir

        print(f"weights: 'release' = released ImageNet-1k weights, fetched by --pretrained / create(name, "
              f"pretrained=True) into {weights_dir()}; 'cached' = already there; '—' = random init (seeded by name).")
    return 0


def print_lm_family_table() -> None:
    """The LM families table of ``staredge models``: STAR genomes, the paper's baselines and
    LFM2 sizes as genomes, with parameters and decode state at one context (analytic: nothing
    is allocated; :mod:`staredge.models.star.families`)."""
    from rich.console import Console
    from rich.table import Table

    from staredge.models.star.families import DEFAULT_STATE_CONTEXT, lm_families

    table = Table(title=f"Language-model families (decode state of one stream at {DEFAULT_STATE_CONTEXT:,} tokens, fp16; "
                        "import LFM2 folders with staredge export FOLDER)")
    for col, just in (("model", "left"), ("family", "left"), ("genome", "left"), ("dim", "right"), ("LIVs", "right"),
                      ("vocab", "right"), ("params (no emb.)", "right"), ("params", "right"), ("state", "right")):
        table.add_column(col, justify=just)
    for r in lm_families():
        table.add_row(r.name, r.family, r.genome, str(r.dim), str(r.livs), f"{r.vocab_size:,}", f"{r.params:,}",
                      f"{r.params_with_embeddings:,}", f"{r.state_bytes / 1e6:,.2f} MB")
    Console(width=max(150, Console().width)).print(table)


def _weights_cell(w: dict) -> str:
    if not w["released"]:
        return "—"
    return "cached" if w["cached"] else "release"


def write_catalog() -> None:
    """Write the catalog package data from the registry (after adding or changing a model)."""
    from pathlib import Path

    from staredge.fileio import atomic_write_json

    target = Path(__file__).resolve().parents[1] / "data" / CATALOG_FILE
    atomic_write_json(target, catalog())
    print(f"wrote {target}")


if __name__ == "__main__":
    write_catalog()
