"""Produce docs/benchmarks.md and docs/img/latency_vs_top1.png on this machine.

Three measurements, each written as a ``staredge-bench`` JSON document (docs/bench-format.md)
under ``--results`` as it goes (Ctrl-C keeps what was measured):

1. ``main.json``: StarNet S1-S4, 050/100/150 and EfficientFormerV2 S0/S1/S2/L on every
   CPU runtime (baselines included) at each ``--threads`` setting, paper-cpu protocol.
2. ``rewrites.json``: StarNet-S1 and EfficientFormerV2-S0 with BatchNorm fusing only vs.
   fusing + pointwise-conv→Linear, per exported runtime: the evidence for ``--rewrite auto``.
3. ``star_sum.json``: StarNet S1-S4 with every star replaced by a sum (paper Table 8).

Then it renders the tables into docs/benchmarks.md between the ``bench_all`` markers
(the prose around them is written by hand) and draws the plot.

    python scripts/bench_all.py --warmup 50 --iters 500            # the paper's counts
    python scripts/bench_all.py --warmup 10 --iters 100 --threads 2,4
    python scripts/bench_all.py --render-only                      # re-render from the JSON
    python scripts/bench_all.py --prepare                          # export every artifact, time nothing
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench_all:begin -->"
END = "<!-- bench_all:end -->"

STARNETS = ["starnet_s1", "starnet_s2", "starnet_s3", "starnet_s4", "starnet_s050", "starnet_s100", "starnet_s150"]
EFFICIENTFORMERS = ["efficientformerv2_s0", "efficientformerv2_s1", "efficientformerv2_s2", "efficientformerv2_l"]


def registered(names: list[str]) -> list[str]:
    """The names the registry knows (EfficientFormerV2 may not have landed)."""
    from staredge.models import list_models

    known = set(list_models())
    return [n for n in names if n in known]


def measure(args: argparse.Namespace) -> None:
    """Run the three measurements, writing each JSON document as results come in."""
    from rich.console import Console

    from staredge.bench.backends import compare_rewrite_specs, expand_backends, parse_backend
    from staredge.bench.harness import run_bench
    from staredge.bench.protocols import get_protocol
    from staredge.bench.results import save

    console = Console()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")]
    counts = {"warmup": args.warmup, "iters": args.iters, "repeats": args.repeats,
              "statistic": args.statistic, "reduce": args.reduce}
    models = registered(STARNETS + EFFICIENTFORMERS)
    if args.models:
        models = [m for m in models if m in args.models.split(",")]

    def writer(name: str):
        def checkpoint(doc) -> None:
            save(doc, results / name)
        return checkpoint

    def run(name: str, models, specs, protocols, **kw) -> None:
        console.rule(f"{name}: {len(models)} models × {len(specs)} backends × {len(protocols)} protocol(s)")
        doc = run_bench(models, specs, protocols, workdir=args.workdir, checkpoint=writer(name), console=console, **kw)
        save(doc, results / name)
        if not doc.complete:
            console.print("[red]interrupted[/]: partial results kept")
            sys.exit(130)

    if args.prepare:
        # One timed inference per backend, only to export and cache every artifact in --workdir.
        counts = {"warmup": 0, "iters": 1, "repeats": 1}

    def threads_protocols(only: str | None = None) -> list:
        chosen = [int(t) for t in only.split(",")] if only else threads
        return [get_protocol("paper-cpu", threads=t, **counts) for t in chosen]

    for step in args.steps.split(","):
        if step == "main":
            run("main.json", models, expand_backends(["all"]), threads_protocols())
        elif step == "rewrites":
            chosen = registered(["starnet_s1", "efficientformerv2_s0"])
            # no PyTorch baseline here: the question is fuse vs fuse + pwlinear per runtime
            base = [parse_backend(b) for b in ("onnx-plain", "onnxruntime", "openvino", "tflite")]
            run("rewrites.json", chosen, compare_rewrite_specs(base), threads_protocols(args.side_threads),
                interleave=args.interleave)
        elif step == "star_sum":
            chosen = registered(["starnet_s1", "starnet_s2", "starnet_s3", "starnet_s4"])
            # the paper's Table 8 is ONNX Runtime on CPU; PyTorch and OpenVINO show whether it generalises
            specs = [parse_backend(b) for b in ("pytorch", "onnx-plain", "onnxruntime", "openvino")]
            run("star_sum.json", chosen, specs, threads_protocols(args.side_threads), variants=("star", "sum"),
                interleave=args.interleave)
        else:
            raise SystemExit(f"unknown step '{step}': use main, rewrites, star_sum")


def render(args: argparse.Namespace) -> str:
    """Markdown tables from the JSON documents; also draws the plot."""
    from staredge.bench import report
    from staredge.bench.results import load

    results = Path(args.results)
    parts: list[str] = []
    main_path = results / "main.json"
    if main_path.exists():
        doc = load(main_path)
        for pid in doc.protocols:
            subset = [r for r in doc.results if r.protocol == pid]
            threads = doc.protocols[pid].get("threads")
            parts.append(report.to_markdown(doc, subset, title=f"Every runtime, {threads} threads"))
        plot_threads = min(int(t) for t in args.threads.split(","))
        subset = [r for r in doc.results if doc.protocols[r.protocol].get("threads") == plot_threads]
        img = ROOT / "docs" / "img" / "latency_vs_top1.png"
        report.plot_latency_vs_top1(
            doc, str(img), subset,
            title=(f"Median latency measured here ({plot_threads} threads) vs. the papers' published top-1; "
                   "papers' own latencies dashed"),
        )
        parts.append(f"![latency vs top-1](img/latency_vs_top1.png)\n")
    rw_path = results / "rewrites.json"
    if rw_path.exists():
        doc = load(rw_path)
        for pid in doc.protocols:
            subset = [r for r in doc.results if r.protocol == pid]
            threads = doc.protocols[pid].get("threads")
            parts.append(report.to_markdown(
                doc, subset, title=f"Rewrites per runtime: fuse vs. fuse + pointwise→Linear, {threads} threads"))
            parts.append(rewrite_verdicts(doc, subset))
    ss_path = results / "star_sum.json"
    if ss_path.exists():
        doc = load(ss_path)
        for pid in doc.protocols:
            subset = [r for r in doc.results if r.protocol == pid]
            threads = doc.protocols[pid].get("threads")
            parts.append(report.to_markdown(doc, subset, title=f"Star vs. sum (paper Table 8), {threads} threads"))
    return "\n".join(parts)


def rewrite_verdicts(doc, results) -> str:
    """Per runtime and model: fuse+pwlinear latency / fuse latency, and whether auto should pick it."""
    lat = {(r.model, r.backend): r.latency_ms for r in results if r.ok}
    lines = ["| model | runtime | fuse (ms) | fuse + pwlinear (ms) | ratio | pwlinear helps? |", "|---|---|---:|---:|---:|---|"]
    for model in dict.fromkeys(r.model for r in results):
        for runtime in ("onnxruntime", "openvino", "tflite"):
            a = lat.get((model, f"{runtime}@fuse"))
            b = lat.get((model, f"{runtime}@fuse+pwlinear"))
            if a is None or b is None:
                continue
            ratio = b / a
            verdict = "yes" if ratio < 0.97 else ("no (slower)" if ratio > 1.03 else "no (within ±3%)")
            lines.append(f"| {model} | {runtime} | {a:.2f} | {b:.2f} | {ratio:.3f} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_doc(markdown: str) -> Path:
    """Put ``markdown`` between the markers in docs/benchmarks.md (the rest is kept)."""
    from staredge.fileio import atomic_write_text

    path = ROOT / "docs" / "benchmarks.md"
    block = f"{BEGIN}\n<!-- generated by scripts/bench_all.py: do not edit by hand -->\n\n{markdown}\n{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    return atomic_write_text(path, text)


def main() -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=50, help="warm-up per run (paper: 50)")
    p.add_argument("--iters", type=int, default=500, help="timed inferences per run (paper: 500)")
    p.add_argument("--repeats", type=int, default=1, help="runs per backend (paper: 1)")
    p.add_argument("--statistic", help="per-run statistic reported (paper: mean)")
    p.add_argument("--reduce", choices=["last", "mean"], help="report the last run or the mean over runs")
    p.add_argument("--threads", default="2,4", help="thread counts to time (paper: 4; this machine has 2 cores)")
    p.add_argument("--side-threads", help="thread counts for the rewrites and star_sum steps (default: --threads)")
    p.add_argument("--models", help="only these models (comma list)")
    p.add_argument("--steps", default="main,rewrites,star_sum", help="which measurements to run")
    p.add_argument("--results", default=str(ROOT / "docs" / "img" / "bench-results"), help="where the JSON documents go")
    p.add_argument("--workdir", default="/tmp/staredge-bench-artifacts", help="exported artifacts (reused across runs)")
    p.add_argument("--interleave", action="store_true",
                   help="rewrites and star_sum steps: time backends round-robin (use with --repeats > 1)")
    p.add_argument("--prepare", action="store_true", help="export and cache every artifact; time one inference each")
    p.add_argument("--render-only", action="store_true", help="do not measure; re-render docs from the JSON")
    args = p.parse_args()
    if not args.render_only:
        measure(args)
        if args.prepare:
            return 0
    path = write_doc(render(args))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
