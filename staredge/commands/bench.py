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
import os
import sys
from pathlib import Path

from staredge.commands import _args
from staredge.errors import ArtifactExistsError, ConfigError, DeviceError
from staredge.fileio import atomic_write_text


#: The protocol preset when ``--protocol`` is not given.
DEFAULT_PROTOCOL = "paper-cpu"
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
    p.add_argument("models", nargs="*", metavar="MODEL_OR_ARTIFACT",
                   help="registered model names (see `staredge models`), or exported artifacts (any format: "
                        "each is timed as it is, on its own runtime or the --backends one)")
    _args.add_backends(p, multiple=True, help=(
        "comma-separated backend specs RUNTIME[:ACCEL][@PASS+PASS][+PRECISION] or 'all'; runtime names or "
        "aliases from the format table (litert or tflite, onnxruntime or ort...), a precision among the passes: "
        "onnxruntime@int8, openvino@fuse+fp16 (default: the protocol's)"))
    _args.add_precision(p, multiple=True, help=(
        "time every exported runtime at each precision of a comma list of fp32, fp16, int8 (e.g. fp32,int8); "
        "the baselines stay fp32. int8 is calibrated on --calibration, else the model's own data (digits), "
        "else scikit-image photos outside the validation set; the terminal says which"))
    _args.add_calibration(p)
    p.add_argument("--protocol", default=None, choices=sorted(PRESETS) + sorted(ALIASES), metavar="NAME",
                   help=f"measurement preset: {', '.join(PRESETS)} (default {DEFAULT_PROTOCOL}; 'quick' for a first look; "
                   "ios and modelbench are old names of the *-settings-on-host presets)")
    _args.add_threads(p, multiple=True, help="intra-op threads; a comma list (e.g. 2,4) times each setting "
                      "(default: the machine's physical cores, at most the preset's count)")
    _args.add_timing(p, warmup=None, iters=None, repeats=None, repeats_help="runs per backend")
    p.add_argument("--statistic", choices=["mean", "median", "p90", "p99", "min", "trimmed_mean"],
                   help="per-run statistic reported (overrides the preset)")
    p.add_argument("--reduce", choices=["last", "mean"], help="report the last run or the mean over runs (overrides the preset)")
    p.add_argument("--interleave", action="store_true",
                   help="time backends round-robin, one run each per repeat (fairer on a shared machine; use --repeats > 1)")
    _args.add_device(p, default=None, help="device for 'all' and the protocol (default: the preset's); cuda "
                                          "without a CUDA device here is an error")
    _args.add_rewrite(p, default=None, what=" of the exported artifacts")
    p.add_argument("--no-baselines", action="store_true",
                   help="do not add the pytorch and onnx-plain baselines (they are timed by default)")
    p.add_argument("--compare-rewrites", action="store_true",
                   help="time each exported runtime with fuse_batchnorm and with fuse_batchnorm+pointwise_conv_to_linear")
    p.add_argument("--compare-star-sum", action="store_true",
                   help="also time StarNet with every star replaced by a sum (paper Table 8)")
    _args.add_out(p, None, "folder for everything the run writes: " + ", ".join(OUT_FILES.values())
                  + " (a path ending in .json is read as --json FILE, the old meaning, with a notice)")
    _args.add_json(p, "the results (a FILE is written as results come in and kept on Ctrl-C)")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--csv", metavar="FILE", help="write one CSV line per result")
    p.add_argument("--bars", metavar="FILE", help="write a bar chart: median per runtime, p10-p90 whiskers (PNG)")
    p.add_argument("--plot", metavar="FILE",
                   help="write the papers' published top-1 against the latencies measured here (PNG)")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine result files into one table instead of measuring")
    p.add_argument("--keep-samples", action="store_true", help="store every timed inference in the JSON")
    p.add_argument("--workdir", help="keep exported artifacts here (default: a temporary directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    _args.add_force(p, "existing output files")
    p.add_argument("--task", choices=["classify", "generate"], default="classify",
                   help="generate: the LM decode benchmark of a language model (staredge.bench.generate)")
    p.set_defaults(func=run, _bench_defaults={a.dest: a.default for a in p._actions
                                              if a.option_strings and a.dest != "help"})


def _threads(value: str | list[int] | None) -> list[int | None]:
    """The thread counts asked for (a parsed list, or the comma text of older callers),
    each checked by :func:`staredge.limits.check_threads`."""
    from staredge.limits import check_threads

    if value is None:
        return [None]
    items = value.split(",") if isinstance(value, str) else list(value)
    values = [check_threads(t) for t in items if str(t).strip()]
    if not values:
        raise ConfigError(f"--threads takes integers like 4 or 2,4, got {value!r}")
    return values


def build_protocols(args: argparse.Namespace, physical_cores: int | None = None) -> list:
    """The protocol(s) the arguments ask for: the preset with overrides, one per thread count.

    Without ``--threads`` the thread count is :func:`~staredge.bench.protocols.default_threads`:
    the machine's physical cores (``physical_cores``, detected when None), at most the
    preset's own count.
    """
    from staredge.bench.machine import physical_cores as detect_cores
    from staredge.bench.protocols import default_threads, get_protocol

    name = args.protocol or DEFAULT_PROTOCOL
    thread_list = _threads(args.threads)
    if args.threads is None:
        preset = get_protocol(name)
        thread_list = [default_threads(preset, physical_cores or detect_cores())]
    protocols = []
    for threads in thread_list:
        protocols.append(
            get_protocol(
                name, threads=threads, warmup=args.warmup, iters=args.iters, repeats=args.repeats,
                device=args.device, rewrite=args.rewrite, statistic=args.statistic, reduce=args.reduce,
            )
        )
    return protocols


def resolve_outputs(args: argparse.Namespace, console=None) -> dict[str, str]:
    """Report kind → file path: the explicit flags, then the files of the ``--out`` folder.

    ``--out x.json`` keeps its old meaning (the results file) with a deprecation notice.
    """
    out = {k: getattr(args, k) for k in OUT_FILES if getattr(args, k, None) and getattr(args, k) != _args.STDOUT}
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
    force = bool(getattr(args, "force", False))
    if outputs.get("markdown"):
        _args.write_output_file(outputs["markdown"], report.to_markdown(doc, title="StarEdge latency benchmark"),
                                force=force, flag="--markdown")
        console.print(f"wrote {outputs['markdown']}")
    if outputs.get("csv"):
        _args.write_output_file(outputs["csv"], report.to_csv(doc), force=force, flag="--csv")
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


#: What ``--task generate`` (the LM decode benchmark) reads; every other flag given with it is
#: refused (it would change nothing).
GENERATE_FLAGS = ("models", "threads", "repeats", "workdir", "no_baselines", "backends", "json", "markdown", "plot",
                  "out", "force", "task")


def _check_generate_backends(backends: str | None) -> None:
    """``--backends`` of ``--task generate`` names runtimes of exported language models (the
    eager model is a baseline, not a backend): another runtime is a ConfigError naming it,
    before any work (it was a StopIteration traceback from the artifact step)."""
    if not backends or backends == "all":
        return
    from staredge.formats import FORMATS, RUNTIMES, get_runtime

    def runs_an_lm(spec) -> bool:
        return spec.text_backend is not None and any(f in FORMATS and FORMATS[f].lm_exporter for f in spec.formats)

    usable = [name for name, spec in RUNTIMES.items() if runs_an_lm(spec)]
    for name in filter(None, (b.strip() for b in backends.split(","))):
        spec = get_runtime(name)
        if not runs_an_lm(spec):
            raise ConfigError(f"--backends {name}: --task generate times exported language models and {spec.name} "
                              f"runs none; choose from {','.join(usable)} (the eager model and transformers are "
                              "timed as baselines unless --no-baselines)")


def _generate_args(args: argparse.Namespace, parser_defaults: dict, outputs: dict[str, str]) -> argparse.Namespace:
    """``args`` in the shape :func:`staredge.bench.generate.run_cli` reads (comma texts; ``json``
    the file, ``-`` for stdout, or None), after refusing every flag the LM decode benchmark
    does not read (a ConfigError naming it, before any work)."""
    for dest, default in parser_defaults.items():
        if dest in GENERATE_FLAGS or dest.startswith("_") or dest in ("command", "func", "verbose", "capture"):
            continue
        if getattr(args, dest, default) != default:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} does not apply to --task generate (the LM decode benchmark reads --threads, "
                              f"--repeats, --backends, --no-baselines, --workdir and the output flags): drop it")
    for kind in ("csv", "bars"):
        if getattr(args, kind, None):
            raise ConfigError(f"--{kind} does not apply to --task generate (it writes --json, --markdown and --plot)")
    _check_generate_backends(args.backends)
    threads = ",".join(map(str, args.threads)) if isinstance(args.threads, list) else args.threads
    json_target = _args.STDOUT if args.json == _args.STDOUT else outputs.get("json")
    return argparse.Namespace(**{**vars(args), "threads": threads, "json": json_target,
                                 "markdown": outputs.get("markdown"), "plot": outputs.get("plot")})


def check_device(device: str | None, factory=None) -> None:
    """``--device cuda`` on a machine where no runtime sees a CUDA device: a DeviceError now,
    not a CPU run labelled cuda."""
    if device not in ("cuda", "tensorrt"):
        return
    from staredge.bench.device import detect_ort_providers, detect_torch_cuda, resolve_device

    available = ("CUDAExecutionProvider" in detect_ort_providers()) or detect_torch_cuda()
    resolve_device(device, available)


def _int8_calibration(args: argparse.Namespace, models: list[str], specs: list, console) -> dict:
    """Before any timing: the int8 calibration data of every model (so a missing or empty
    ``--calibration`` folder is an error now, not after minutes of timing), said on the terminal.
    Returns the factory options (the prepared inputs of the first model, or the folder)."""
    if not any(getattr(s, "precision", "fp32") == "int8" for s in specs):
        for flag, value in (("--calibration", args.calibration), ("--calibration-samples", args.calibration_samples)):
            if value is not None:
                raise ConfigError(f"{flag} applies to int8 only, and nothing here is int8: add --precision "
                                  f"fp32,int8 (or a backend spec such as onnxruntime@int8), or drop {flag}")
        return {}
    from staredge.bench.artifacts import calibration_for
    from staredge.bench.harness import build_model

    options: dict = {}
    for name in models:
        _, what = calibration_for(build_model(name), args.calibration, args.calibration_samples)
        console.print(f"{name}: {what}")
    if args.calibration is not None:
        options["calibration"] = args.calibration
    if args.calibration_samples is not None:
        options["calibration_samples"] = args.calibration_samples
    return options


def run(args: argparse.Namespace) -> int:
    """Measure (or merge), print the tables, write the files; 130 after Ctrl-C (results kept)."""
    from rich.console import Console

    from staredge.bench.specs import (
        compare_rewrite_specs, expand_backends, parse_precisions, with_baselines, with_precisions,
    )
    from staredge.bench.harness import artifact_source, has_sum_variant, run_bench
    from staredge.bench.results import load, merge, save

    to_stdout = args.json == _args.STDOUT
    console = Console(stderr=to_stdout)  # with --json and no FILE, stdout carries the JSON only
    outputs = resolve_outputs(args, console)
    if not args.force:
        existing = [p for p in outputs.values() if Path(p).exists()]
        if existing:
            raise ArtifactExistsError(f"{', '.join(existing)} already exist(s); nothing was done. Pass --force "
                                      f"to overwrite")
    from staredge.fileio import check_output_file, check_output_folder

    if args.out and not args.out.lower().endswith(".json"):
        check_output_folder(args.out)
    for kind, path in outputs.items():  # writable places (typed errors naming the path), before any work
        check_output_file(path, force=True, flag=f"--{kind}")
    json_path = outputs.get("json")
    if getattr(args, "task", "classify") == "generate":
        from staredge.bench.generate import run_cli

        defaults = getattr(args, "_bench_defaults", None) or {}
        return run_cli(_generate_args(args, defaults, outputs))

    if args.merge:
        if args.models:
            raise ConfigError("--merge combines existing result files; do not name models with it")
        doc = merge([load(path) for path in args.merge])
        if json_path:
            save(doc, json_path, force=True)
            console.print(f"wrote {json_path}")
        if to_stdout:
            print(doc.to_json())
        write_reports(doc, args, console, outputs)
        return 0

    if not args.models:
        raise ConfigError("name at least one model (e.g. `staredge bench starnet_s1`) or an exported artifact, "
                          "or use --merge")
    artifacts = [m for m in args.models if artifact_source(m)]
    missing = [m for m in args.models if m not in artifacts and (os.sep in m or Path(m).suffix) and not Path(m).exists()]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no such file; name registered models (see `staredge models`) "
                          f"or exported artifacts")
    if artifacts and len(artifacts) != len(args.models):
        raise ConfigError("time registered models and exported artifacts in separate runs (models are exported "
                          "for each backend; an artifact is timed as it is)")
    protocols = build_protocols(args)
    device = protocols[0].device
    check_device(args.device or device)
    if artifacts:
        specs = _artifact_specs(args, artifacts, device)
    else:
        specs = expand_backends([args.backends] if args.backends else list(protocols[0].backends), device=device)
        _refuse_export_flags_without_exports(args, specs)
        precision = ",".join(args.precision) if isinstance(args.precision, list) else args.precision
        specs = with_precisions(specs, parse_precisions(precision))
        if not args.no_baselines:
            specs = with_baselines(specs, device)
        if args.compare_rewrites:
            specs = compare_rewrite_specs(specs)
    variants = ("star", "sum") if args.compare_star_sum and not artifacts else ("star",)
    _notices(args, protocols, console)
    calibration = {} if artifacts else _int8_calibration(args, list(args.models), specs, console)
    if not args.no_progress and not artifacts:
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

    common = dict(variants=variants, workdir=args.workdir, keep_samples=args.keep_samples,
                  show_progress=not args.no_progress, console=console, checkpoint=checkpoint,
                  interleave=args.interleave)
    if artifacts:  # each file on its own runtime(s)
        doc = None
        for path in artifacts:
            doc = run_bench([path], _artifact_specs(args, [path], device), protocols, doc=doc, **common)
            if not doc.complete:
                break
    else:
        doc = run_bench(args.models, specs, protocols, factory_options=calibration or None, **common)
    if json_path:
        save(doc, json_path, force=True)
        console.print(f"wrote {json_path}" + ("" if doc.complete else " (partial: interrupted)"))
    if to_stdout:
        print(doc.to_json())
    if doc.results:
        write_reports(doc, args, console, outputs)
    if not doc.complete:
        print("interrupted: the results measured so far were kept",
              file=getattr(getattr(args, "capture", None), "stderr", None) or sys.stderr)
        return 130
    return 0 if any(r.ok for r in doc.results) else 1


def _refuse_export_flags_without_exports(args: argparse.Namespace, specs: list) -> None:
    """``--precision``, ``--rewrite`` and ``--compare-rewrites`` act on exported runtimes only;
    when every backend asked for is an eager one (pytorch), they would change nothing: refused."""
    from staredge.bench.specs import exported_runtimes

    if any(s.runtime in exported_runtimes() for s in specs):
        return
    precision = args.precision if isinstance(args.precision, list) else [args.precision] if args.precision else []
    for flag, value in (("--precision", [p for p in precision if p != "fp32"]), ("--rewrite", args.rewrite),
                        ("--compare-rewrites", args.compare_rewrites)):
        if value:
            raise ConfigError(f"{flag} applies to exported runtimes (onnxruntime, openvino, ...), and --backends "
                              f"{','.join(dict.fromkeys(s.runtime for s in specs))} exports nothing: add an "
                              f"exported runtime or drop {flag}")


def _artifact_specs(args: argparse.Namespace, artifacts: list[str], device: str) -> list:
    """The backend specs that time exported files: ``--backends`` (runtimes that run their
    format), else each artifact's own runtime; no baselines, rewrites or precisions (the file
    is what it is)."""
    from staredge.bench.specs import BackendSpec, expand_backends
    from staredge.formats import detect_format

    for flag, value in (("--precision", args.precision), ("--compare-rewrites", args.compare_rewrites),
                        ("--compare-star-sum", args.compare_star_sum), ("--rewrite", args.rewrite),
                        ("--calibration", args.calibration)):
        if value:
            raise ConfigError(f"{flag} does not apply to an exported artifact (it is timed as it is); "
                              f"give a model name to export and time variants")
    if args.backends:
        return expand_backends([args.backends], device=device)
    runtimes = list(dict.fromkeys(detect_format(a).runtime for a in artifacts))
    accel = "cpu" if device == "cpu" else "cuda"
    return [BackendSpec(runtime=r, accelerator=accel if r == "onnxruntime" else "cpu") for r in runtimes]
