"""``staredge bench``: time models on every runtime the way the papers did, and report.

Examples::

    staredge bench starnet_s1 starnet_s2 --protocol paper-cpu --threads 2,4 --out results.json
    staredge bench starnet_s1 --backends pytorch,onnx-plain,onnxruntime --iters 100 --markdown t.md
    staredge bench starnet_s1 --compare-star-sum --plot fig.png --out r.json
    staredge bench --merge linux.json iphone.json --markdown merged.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from staredge.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    from staredge.bench.protocols import PRESETS

    p = sub.add_parser(
        "bench",
        help="time models on every runtime under a paper's protocol; Table-6-style reports and plots",
        description=(
            "Time MODEL(s) at batch 1 on each backend (the baselines pytorch and onnx-plain, and our "
            "exports on onnxruntime, openvino, litert, coreml) under a protocol preset whose every "
            "setting can be overridden. Presets: "
            + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items())
        ),
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered model names (see `staredge models`)")
    p.add_argument("--backends", help="comma-separated backend specs RUNTIME[:ACCEL][@PASS+PASS] or 'all' "
                   "(default: the protocol's)")
    p.add_argument("--protocol", default="paper-cpu", choices=sorted(PRESETS), help="measurement preset (default paper-cpu)")
    p.add_argument("--threads", help="intra-op threads; a comma list (e.g. 2,4) times each setting")
    p.add_argument("--warmup", type=int, help="untimed inferences before each run (overrides the preset)")
    p.add_argument("--iters", type=int, help="timed inferences per run (overrides the preset)")
    p.add_argument("--repeats", type=int, help="runs per backend (overrides the preset)")
    p.add_argument("--statistic", choices=["mean", "median", "p90", "p99", "min", "trimmed_mean"],
                   help="per-run statistic reported (overrides the preset)")
    p.add_argument("--reduce", choices=["last", "mean"], help="report the last run or the mean over runs (overrides the preset)")
    p.add_argument("--interleave", action="store_true",
                   help="time backends round-robin, one run each per repeat (fairer on a shared machine; use --repeats > 1)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="device for 'all' and the protocol (overrides the preset)")
    p.add_argument("--rewrite", help="rewrites for exported artifacts: auto, none, or a comma list of passes")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not add the pytorch and onnx-plain baselines (they are timed by default)")
    p.add_argument("--compare-rewrites", action="store_true",
                   help="time each exported runtime with fuse_batchnorm and with fuse_batchnorm+pointwise_conv_to_linear")
    p.add_argument("--compare-star-sum", action="store_true",
                   help="also time StarNet with every star replaced by a sum (paper Table 8)")
    p.add_argument("--out", help="results JSON (written as results come in; kept on Ctrl-C)")
    p.add_argument("--markdown", help="write the tables as Markdown")
    p.add_argument("--csv", help="write one CSV line per result")
    p.add_argument("--plot", help="write latency vs. ImageNet top-1 (PNG)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine result files into one table instead of measuring")
    p.add_argument("--keep-samples", action="store_true", help="store every timed inference in the JSON")
    p.add_argument("--workdir", help="keep exported artifacts here (default: a temporary directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def _threads(text: str | None) -> list[int | None]:
    if text is None:
        return [None]
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--threads takes integers like 4 or 2,4, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--threads needs positive integers, got '{text}'")
    return values


def build_protocols(args: argparse.Namespace) -> list:
    """The protocol(s) the arguments ask for: the preset with overrides, one per thread count."""
    from staredge.bench.protocols import get_protocol

    protocols = []
    for threads in _threads(args.threads):
        protocols.append(
            get_protocol(
                args.protocol, threads=threads, warmup=args.warmup, iters=args.iters, repeats=args.repeats,
                device=args.device, rewrite=args.rewrite, statistic=args.statistic, reduce=args.reduce,
            )
        )
    return protocols


def _outputs(args: argparse.Namespace) -> list[str]:
    return [p for p in (args.out, args.markdown, args.csv, args.plot) if p]


def write_reports(doc, args: argparse.Namespace, console) -> None:
    """Terminal tables, then the Markdown, CSV and plot files asked for."""
    from staredge.bench import report
    from staredge.bench.results import atomic_write_text

    report.print_tables(doc, console)
    if args.markdown:
        atomic_write_text(args.markdown, report.to_markdown(doc, title="StarEdge latency benchmark"), force=True)
        console.print(f"wrote {args.markdown}")
    if args.csv:
        atomic_write_text(args.csv, report.to_csv(doc), force=True)
        console.print(f"wrote {args.csv}")
    if args.plot:
        try:
            report.plot_latency_vs_top1(doc, args.plot)
            console.print(f"wrote {args.plot}")
        except ConfigError as exc:
            console.print(f"[yellow]no plot:[/] {exc}")


def run(args: argparse.Namespace) -> int:
    """Measure (or merge), print the tables, write the files; 130 after Ctrl-C (results kept)."""
    from rich.console import Console

    from staredge.bench.specs import compare_rewrite_specs, expand_backends, with_baselines
    from staredge.bench.harness import run_bench
    from staredge.bench.results import load, merge, save

    console = Console(stderr=False)
    if not args.force:
        existing = [p for p in _outputs(args) if Path(p).exists()]
        if existing:
            raise ConfigError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")

    if args.merge:
        if args.models:
            raise ConfigError("--merge combines existing result files; do not name models with it")
        doc = merge([load(path) for path in args.merge])
        if args.out:
            save(doc, args.out, force=True)
            console.print(f"wrote {args.out}")
        write_reports(doc, args, console)
        return 0

    if not args.models:
        raise ConfigError("name at least one model (e.g. `staredge bench starnet_s1`), or use --merge")
    protocols = build_protocols(args)
    device = protocols[0].device
    specs = expand_backends([args.backends] if args.backends else list(protocols[0].backends), device=device)
    if not args.no_baselines:
        specs = with_baselines(specs, device)
    if args.compare_rewrites:
        specs = compare_rewrite_specs(specs)
    variants = ("star", "sum") if args.compare_star_sum else ("star",)

    def checkpoint(doc) -> None:
        if args.out:
            finished = doc.complete
            doc.complete = False  # a checkpoint is partial until the loop ends
            save(doc, args.out, force=True)
            doc.complete = finished

    doc = run_bench(
        args.models, specs, protocols, variants=variants, workdir=args.workdir, keep_samples=args.keep_samples,
        show_progress=not args.no_progress, console=console, checkpoint=checkpoint, interleave=args.interleave,
    )
    if args.out:
        save(doc, args.out, force=True)
        console.print(f"wrote {args.out}" + ("" if doc.complete else " (partial: interrupted)"))
    if doc.results:
        write_reports(doc, args, console)
    if not doc.complete:
        print("interrupted: the results measured so far were kept", file=sys.stderr)
        return 130
    return 0 if any(r.ok for r in doc.results) else 1
