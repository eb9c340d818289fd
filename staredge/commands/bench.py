"""``staredge bench``: time models on every runtime the way the papers did, and report.

Examples::

    staredge bench starnet_s1 --protocol quick                      # a first look, seconds per runtime
    staredge bench starnet_s1 starnet_s2 --backends all --out bench/  # JSON, Markdown, CSV, two plots
    staredge bench starnet_s1 --threads 1,2 --json results.json --markdown t.md
    staredge bench starnet_s1 --compare-star-sum --bars bars.png
    staredge bench starnet_s1 --backends onnxruntime,onnxruntime@int8,openvino@int8   # precision per backend
    staredge bench starnet_s1 --backends onnxruntime,openvino --precision fp32,int8   # ... or for all of them
    staredge bench --merge linux.json iphone.json --out merged/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from staredge.errors import ConfigError
from staredge.fileio import atomic_write_text


#: What ``--out DIR`` writes, by report.
OUT_FILES = {
    "json": "results.json",
    "markdown": "results.md",
    "csv": "results.csv",
    "bars": "latency_bars.png",
    "plot": "accuracy_vs_latency.png",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    from staredge.bench.protocols import ALIASES, PRESETS

    p = sub.add_parser(
        "bench",
        help="time models on every runtime under a paper's protocol; Table-6-style reports and plots",
        description=(
            "Time MODEL(s) at batch 1 on each backend (the baselines pytorch and onnx-plain, and our "
            "exports on onnxruntime, openvino, litert (alias tflite), coreml) under a protocol preset whose "
            "every setting can be overridden. Tables give the median and p90 (mean beside them) and mark "
            "results that a heavy tail or a busy machine makes unreliable. Presets: "
            + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items())
        ),
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="registered model names (see `staredge models`)")
    p.add_argument("--backends", help="comma-separated backend specs RUNTIME[:ACCEL][@PASS+PASS][+PRECISION] or 'all'; "
                   "runtime names or aliases from the format table (litert or tflite, onnxruntime or ort...), "
                   "a precision among the passes: onnxruntime@int8, openvino@fuse+fp16 (default: the protocol's)")
    p.add_argument("--precision", metavar="LIST",
                   help="time every exported runtime at each precision of a comma list of fp32, fp16, int8 "
                   "(e.g. fp32,int8); the baselines stay fp32. int8 is calibrated on --calibration, else the model's "
                   "own data (digits), else scikit-image photos outside the validation set")
    p.add_argument("--calibration", metavar="DIR", help="int8 calibration images (see staredge export --calibration)")
    p.add_argument("--calibration-samples", type=int, metavar="N", help="calibration images to use (default 128)")
    p.add_argument("--protocol", default="paper-cpu", choices=sorted(PRESETS) + sorted(ALIASES), metavar="NAME",
                   help=f"measurement preset: {', '.join(PRESETS)} (default paper-cpu; 'quick' for a first look; "
                   "ios and modelbench are old names of the *-settings-on-host presets)")
    p.add_argument("--threads", help="intra-op threads; a comma list (e.g. 2,4) times each setting "
                   "(default: the machine's physical cores, at most the preset's count)")
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
    p.add_argument("--out", metavar="DIR",
                   help="folder for everything the run writes: " + ", ".join(OUT_FILES.values())
                   + " (a path ending in .json is read as --json FILE, the old meaning, with a notice)")
    p.add_argument("--json", metavar="FILE", help="results JSON (written as results come in; kept on Ctrl-C)")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--csv", metavar="FILE", help="write one CSV line per result")
    p.add_argument("--bars", metavar="FILE", help="write a bar chart: median per runtime, p10-p90 whiskers (PNG)")
    p.add_argument("--plot", metavar="FILE",
                   help="write the papers' published top-1 against the latencies measured here (PNG)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine result files into one table instead of measuring")
    p.add_argument("--keep-samples", action="store_true", help="store every timed inference in the JSON")
    p.add_argument("--workdir", help="keep exported artifacts here (default: a temporary directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--task", choices=["classify", "generate"], default="classify",
                   help="generate: the LM decode benchmark of a language model (staredge.bench.generate)")
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


def build_protocols(args: argparse.Namespace, physical_cores: int | None = None) -> list:
    """The protocol(s) the arguments ask for: the preset with overrides, one per thread count.

    Without ``--threads`` the thread count is :func:`~staredge.bench.protocols.default_threads`:
    the machine's physical cores (``physical_cores``, detected when None), at most the
    preset's own count.
    """
    from staredge.bench.machine import physical_cores as detect_cores
    from staredge.bench.protocols import default_threads, get_protocol

    thread_list = _threads(args.threads)
    if args.threads is None:
        preset = get_protocol(args.protocol)
        thread_list = [default_threads(preset, physical_cores or detect_cores())]
    protocols = []
    for threads in thread_list:
        protocols.append(
            get_protocol(
                args.protocol, threads=threads, warmup=args.warmup, iters=args.iters, repeats=args.repeats,
                device=args.device, rewrite=args.rewrite, statistic=args.statistic, reduce=args.reduce,
            )
        )
    return protocols


def resolve_outputs(args: argparse.Namespace, console=None) -> dict[str, str]:
    """Report kind → file path: the explicit flags, then the files of the ``--out`` folder.

    ``--out x.json`` keeps its old meaning (the results file) with a deprecation notice.
    """
    out = {k: getattr(args, k) for k in OUT_FILES if getattr(args, k, None)}
    if args.out:
        if args.out.lower().endswith(".json"):
            if console is not None:
                console.print(f"[yellow]note:[/] --out {args.out}: --out is now a folder; "
                              f"writing the results to it as --json {args.out} would (this use is deprecated)")
            out.setdefault("json", args.out)
        else:
            folder = Path(args.out)
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"--out {args.out} is a file; --out names a folder (use --json FILE for the results)")
            for kind, name in OUT_FILES.items():
                out.setdefault(kind, str(folder / name))
    return out


def write_reports(doc, args: argparse.Namespace, console, outputs: dict[str, str] | None = None) -> None:
    """Terminal tables, then the Markdown, CSV and plot files asked for."""
    from staredge.bench import report
    outputs = outputs if outputs is not None else resolve_outputs(args)
    report.print_tables(doc, console)
    if outputs.get("markdown"):
        atomic_write_text(outputs["markdown"], report.to_markdown(doc, title="StarEdge latency benchmark"), force=True)
        console.print(f"wrote {outputs['markdown']}")
    if outputs.get("csv"):
        atomic_write_text(outputs["csv"], report.to_csv(doc), force=True)
        console.print(f"wrote {outputs['csv']}")
    for kind, draw in (("bars", report.plot_latency_bars), ("plot", report.plot_latency_vs_top1)):
        if outputs.get(kind):
            try:
                draw(doc, outputs[kind])
                console.print(f"wrote {outputs[kind]}")
            except ConfigError as exc:
                console.print(f"[yellow]no {'bar chart' if kind == 'bars' else 'plot'}:[/] {exc}")


def _notices(args: argparse.Namespace, protocols: list, console) -> None:
    """Say what a user could misread: a protocol that imitates another device, a changed thread count."""
    from staredge.bench.protocols import ALIASES, PRESETS

    proto = protocols[0]
    if args.protocol in ALIASES:
        console.print(f"[yellow]note:[/] --protocol {args.protocol} is now called {ALIASES[args.protocol]}")
    if proto.imitates:
        console.print(
            f"[yellow]note:[/] {proto.name} uses the counts of {proto.imitates.split(';')[0]}, "
            "but times this host's CPU: these are not iPhone numbers"
            + (f" ({proto.imitates.split(';', 1)[1].strip()})" if ";" in proto.imitates else "")
        )
    preset = PRESETS[proto.name]
    if args.threads is None and preset.threads is not None and proto.threads != preset.threads:
        console.print(
            f"[yellow]note:[/] {proto.threads} thread(s), the physical cores of this machine, instead of the "
            f"preset's {preset.threads} (pass --threads {preset.threads} to use them anyway)"
        )


def run(args: argparse.Namespace) -> int:
    """Measure (or merge), print the tables, write the files; 130 after Ctrl-C (results kept)."""
    if getattr(args, "task", "classify") == "generate":
        from staredge.bench.generate import run_cli

        return run_cli(args)
    from rich.console import Console

    from staredge.bench.specs import (
        compare_rewrite_specs, expand_backends, parse_precisions, with_baselines, with_precisions,
    )
    from staredge.bench.harness import has_sum_variant, run_bench
    from staredge.bench.results import load, merge, save

    console = Console(stderr=False)
    outputs = resolve_outputs(args, console)
    if not args.force:
        existing = [p for p in outputs.values() if Path(p).exists()]
        if existing:
            raise ConfigError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    if args.out and not args.out.lower().endswith(".json"):
        Path(args.out).mkdir(parents=True, exist_ok=True)
    json_path = outputs.get("json")

    if args.merge:
        if args.models:
            raise ConfigError("--merge combines existing result files; do not name models with it")
        doc = merge([load(path) for path in args.merge])
        if json_path:
            save(doc, json_path, force=True)
            console.print(f"wrote {json_path}")
        write_reports(doc, args, console, outputs)
        return 0

    if not args.models:
        raise ConfigError("name at least one model (e.g. `staredge bench starnet_s1`), or use --merge")
    protocols = build_protocols(args)
    device = protocols[0].device
    specs = expand_backends([args.backends] if args.backends else list(protocols[0].backends), device=device)
    specs = with_precisions(specs, parse_precisions(getattr(args, "precision", None)))
    if not args.no_baselines:
        specs = with_baselines(specs, device)
    if args.compare_rewrites:
        specs = compare_rewrite_specs(specs)
    variants = ("star", "sum") if args.compare_star_sum else ("star",)
    _notices(args, protocols, console)
    if not args.no_progress:
        from staredge.bench.estimate import describe_estimate
        from staredge.bench.protocols import get_protocol

        n_variants = 2 if args.compare_star_sum and any(has_sum_variant(m) for m in args.models) else 1
        line = describe_estimate(args.models, len(specs), protocols, variants=n_variants,
                                 quick=get_protocol("quick", threads=protocols[0].threads))
        if line:
            console.print(line)

    def checkpoint(doc) -> None:
        if json_path:
            finished = doc.complete
            doc.complete = False  # a checkpoint is partial until the loop ends
            save(doc, json_path, force=True)
            doc.complete = finished

    calibration = {k: v for k, v in (("calibration", getattr(args, "calibration", None)),
                                     ("calibration_samples", getattr(args, "calibration_samples", None))) if v is not None}
    doc = run_bench(
        args.models, specs, protocols, variants=variants, workdir=args.workdir, keep_samples=args.keep_samples,
        show_progress=not args.no_progress, console=console, checkpoint=checkpoint, interleave=args.interleave,
        factory_options=calibration or None,
    )
    if json_path:
        save(doc, json_path, force=True)
        console.print(f"wrote {json_path}" + ("" if doc.complete else " (partial: interrupted)"))
    if doc.results:
        write_reports(doc, args, console, outputs)
    if not doc.complete:
        print("interrupted: the results measured so far were kept",
              file=getattr(getattr(args, "capture", None), "stderr", None) or sys.stderr)
        return 130
    return 0 if any(r.ok for r in doc.results) else 1
