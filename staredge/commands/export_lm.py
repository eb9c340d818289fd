"""``staredge export`` for language models: registry LM names (``star_lm_pydoc``,
``transformer_pp``, ``striped_mamba``), saved STAR LMs (``.json`` / ``.safetensors``) →
decode-graph artifacts validated token by token (docs/lm-artifacts.md)."""

from __future__ import annotations

import argparse
import json


def add_lm_arguments(p: argparse.ArgumentParser) -> None:
    """Flags that apply to language models only."""
    p.add_argument("--max-context", type=int, metavar="N",
                   help="language models: fixed context of the artifacts (default: the model's max_seq_len)")
    p.add_argument("--prefill-chunk", type=int, default=16, metavar="T",
                   help="language models: tokens per prefill call (ONNX: the validated chunk of its dynamic token axis; TFLite: the prefill signature's length; CoreML stateful: the prefill function's length)")
    p.add_argument("--dim", type=int, metavar="D", help="transformer_pp / striped_mamba: width (default 128)")
    p.add_argument("--depth", type=int, metavar="N", help="transformer_pp / striped_mamba: LIVs (default 10)")
    p.add_argument("--coreml-state", choices=("fp16", "fp16x2"), default="fp16",
                   help="language models, CoreML stateful: state stored as fp16, or as fp16 high/low pairs "
                        "(fp32-class accuracy, twice the bytes); docs/lm-artifacts.md")


def is_lm(args: argparse.Namespace) -> bool:
    """Whether MODEL names a language model."""
    from staredge.exporters.lm_export import is_lm_source

    return is_lm_source(args.model)


def run_lm(args: argparse.Namespace) -> int:
    """Export an LM to the requested formats; 0 if every artifact passed, else 1."""
    from rich.console import Console
    from rich.table import Table

    from staredge.exporters.lm_export import export_lm, lm_formats

    text = str(args.formats).lower()
    formats = list(lm_formats()) if text == "all" else [f.strip() for f in text.split(",") if f.strip()]
    rows = export_lm(args.model, formats, args.out, max_context=args.max_context,
                     prefill_chunk=args.prefill_chunk, validate=not args.no_validate, force=args.force,
                     dim=args.dim, depth=args.depth,
                     format_options={"coreml": {"state_precision": getattr(args, "coreml_state", None) or "fp16"}})
    json_arg = getattr(args, "json", None)
    if json_arg:
        doc = json.dumps({"task": "text-generation", "artifacts": rows}, indent=2)
        if json_arg == "-":
            print(doc)
        else:
            from staredge.fileio import atomic_write_text

            atomic_write_text(json_arg, doc, force=True)
    if json_arg != "-":
        table = Table(title=f"{rows[0]['model'] if rows else args.model}: LM artifacts")
        for col in ("format", "path", "size", "state bytes", "analysis", "max |Δ|", "greedy", "passed"):
            table.add_column(col)
        for r in rows:
            v = r.get("validation") or {}
            table.add_row(r["format"], str(r.get("path")), f"{r.get('size_bytes', 0) / 1e6:.2f} MB",
                          str(r["state_bytes"]), str(r["analysis_state_bytes"]),
                          f"{v['max_abs_diff']:.2e}" if v else "-",
                          f"{v['greedy_agree']}/{v['greedy_tokens']}" if v else "-", str(r.get("passed")))
        Console(width=160).print(table)
        for r in rows:
            if r.get("error"):
                Console(stderr=True).print(f"[red]{r['format']}: {r['error']}[/red]")
    return 0 if rows and all(r.get("passed") is not False for r in rows) else 1


def lm_rows() -> list[dict]:
    """Language models ``staredge export`` takes by name: parameters (no embeddings) and the
    decode cache at full context (fp16, as in ``staredge genome``; fp32 artifacts hold twice)."""
    from importlib import resources

    from staredge.exporters.lm_export import BASELINE_DEFAULTS
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
