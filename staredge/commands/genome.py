"""``staredge genome``: parameters and decode-cache size per LIV of a STAR genome."""

from __future__ import annotations

import argparse

from staredge.commands import _args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``genome`` subcommand."""
    p = sub.add_parser(
        "genome",
        help="per-LIV parameters and decode cache of a STAR genome (or transformer_pp / striped_mamba)",
        description="Analyse a STAR backbone genome: parameters (without embeddings) and decode-cache "
                    "bytes per LIV and in total. MB = 10^6 bytes.",
    )
    p.add_argument("genome", help="genome such as 11111-91111-12121, or transformer_pp / striped_mamba")
    p.add_argument("--seq-len", type=_args.count_type("--seq-len", 0), required=True,
                   help="tokens held in the decode cache")
    _args.add_baseline_size(p, depth_help="number of LIVs: tiles a shorter genome (default: the genome's own); "
                                          "for transformer_pp / striped_mamba the LIV count")
    p.add_argument("--bytes-per-element", type=_args.count_type("--bytes-per-element"), default=2,
                   help="bytes per cached element (default 2: fp16/bf16)")
    p.add_argument("--repair", action="store_true",
                   help="repair an invalid genome (section 4.2 rules) and analyse the repaired one")
    _args.add_json(p, "the analysis", force=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the analysis table (or JSON)."""
    from staredge.models.star.analysis import analyze_genome
    from staredge.models.star.config import MAX_DIM, check_int
    from staredge.models.star.genome import check_depth

    # every size is checked before the genome is tiled or any module is built
    dim, depth = _args.baseline_size(args)
    check_int("--dim", dim, 1, MAX_DIM, "MAX_DIM")
    check_int("--seq-len", args.seq_len, 0)
    check_int("--bytes-per-element", args.bytes_per_element, 1, 64)
    if depth is not None:
        check_depth(depth)
    _args.check_json_target(args)
    report = analyze_genome(args.genome, dim, args.seq_len, args.bytes_per_element, depth=depth,
                            repair=args.repair)
    if _args.emit_json(args, report.to_dict()):
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"STAR genome at d={report.dim}, {report.seq_len} tokens, {report.bytes_per_element} B/element",
        caption=f"{report.genome}\nparameters exclude embedding and tied LM head (final norm included); "
                "cache = decode state of batch 1; MB = 10^6 bytes",
        caption_justify="left",
    )
    for col, just in [("#", "right"), ("segment", "left"), ("LIV", "left"), ("params", "right"),
                      ("cache (elements)", "right"), ("cache (MB)", "right"), ("sharing", "left")]:
        table.add_column(col, justify=just)
    for r in report.rows:
        table.add_row(str(r.index), r.segment, r.name, f"{r.params:,}", f"{r.cache_elements:,}",
                      f"{r.cache_bytes / 1e6:.3f}", r.sharing)
    table.add_section()
    table.add_row("", "total", f"{len(report.rows)} LIVs", f"{report.total_params:,}",
                  f"{sum(r.cache_elements for r in report.rows):,}", f"{report.total_cache_mb:.2f}", "")
    Console().print(table)
    return 0
