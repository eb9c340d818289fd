"""The language-model tables of ``staredge models``.

Exporting a language model is ``staredge export NAME`` like any model (one command for every
task: :mod:`staredge.commands.export` through :func:`staredge.exporters.export`); this module
keeps the list of language models ``staredge export`` takes by name.
"""

from __future__ import annotations

import json


def lm_rows() -> list[dict]:
    """Language models ``staredge export`` takes by name: parameters (no embeddings) and the
    decode cache at full context (fp16, as in ``staredge genome``; fp32 artifacts hold twice)."""
    from importlib import resources

    from staredge.commands._args import BASELINE_SIZE as BASELINE_DEFAULTS  # exporters' (tests keep them equal)
    from staredge.models.star import BASELINES
    from staredge.models.star.choices import MAX_SEQ_LEN
    from staredge.models.star.analysis import analyze_genome

    doc = json.loads(resources.files("staredge.data").joinpath("star_lm_pydoc.json").read_text("utf-8"))["model"]
    d, n = BASELINE_DEFAULTS["dim"], BASELINE_DEFAULTS["depth"]
    specs = [("star_lm_pydoc", doc["genome"], doc["dim"], doc["max_seq_len"], "shipped, trained on pydoc prose")]
    specs += [(name, str(BASELINES[name](d, n)), d, MAX_SEQ_LEN, f"untrained; --dim/--depth (default {d}/{n})")
              for name in ("transformer_pp", "striped_mamba")]
    rows = []
    for name, genome, dim, ctx, note in specs:
        a = analyze_genome(genome, dim, ctx, bytes_per_element=2)
        rows.append({"name": name, "dim": dim, "depth": len(a.rows), "params": a.total_params, "context": ctx,
                     "cache_bytes_fp16": a.total_cache_bytes, "note": note})
    return rows


def print_lm_table() -> None:
    """The language-model table of ``staredge models``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Language models (staredge export NAME --format all; docs/lm-artifacts.md)")
    for col in ("model", "dim", "LIVs", "params (no emb.)", "context", "cache at context (fp16)", "note"):
        table.add_column(col)
    for r in lm_rows():
        table.add_row(r["name"], str(r["dim"]), str(r["depth"]), f"{r['params']:,}", str(r["context"]),
                      f"{r['cache_bytes_fp16'] / 1e3:,.1f} kB", r["note"])
    Console(width=150).print(table)
