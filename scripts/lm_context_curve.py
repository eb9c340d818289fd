#!/usr/bin/env python
"""Decode cost against context length: ms per decode step of LM artifacts exported at
contexts 256 … 4,096, per runtime, side by side.

The model has the shipped ``star_lm_pydoc`` genome (GConv-1, SwiGLU, Rec-1 and one SA-1
whose K/V a second SA-1 reuses: the only state that grows with the context is that one
shared KV cache) with random weights and ``max_seq_len`` = the largest context. For each
context C it is exported to every format asked for (``--variants``: ``default`` = each
exporter's default graph; ``blend`` = the older whole-buffer form, one-hot blend writes and
attention over the whole buffer, for a before/after comparison), loaded with
``staredge.runtimes.load_backend`` (the stepper users' streams get), and a decode step is
timed at position C - steps - 1 (the end of the context, where a stream of that length
pays most). Rounds are interleaved: every round runs every (variant, context, runtime)
once, in an order rotated per round, so slow phases of a shared machine hit all of them.
Reported per cell: median over rounds of the round's median step time, min and max over
rounds; the load average is recorded before every round. The growth column is
ms(C) / ms(smallest C) per runtime and variant (the issue's target: at most 1.3 from 256
to 4,096).

    .venv/bin/python scripts/lm_context_curve.py --json docs/lm-context-curve.json   # the docs' numbers
    .venv/bin/python scripts/lm_context_curve.py --contexts 128,256 --rounds 2 --steps 4 \\
        --runtimes onnxruntime --workdir /tmp/curve                                   # sanity run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}
VARIANT_OPTIONS = {"default": {}, "blend": {"onnx": {"cache_write": "blend", "attend": "buffer"},
                                            "openvino": {"cache_write": "blend", "attend": "buffer"},
                                            "tflite": {"cache_write": "blend"}}}


def build_model(genome: str | None, dim: int, depth: int, max_seq_len: int, seed: int):
    """The curve's model: ``genome`` (default: the shipped model's) with seeded random weights."""
    import torch

    from staredge.generation import load_lm
    from staredge.models.star import STARLanguageModel

    genome = genome or load_lm().model.genome
    torch.manual_seed(seed)
    return STARLanguageModel(dim=dim, depth=depth, genome=genome, max_seq_len=max_seq_len).eval()


def export_all(model, contexts, runtimes, variants, workdir: Path, log) -> dict:
    """Artifacts by (variant, context, runtime): exported once, reused when present."""
    from staredge.exporters.lm_export import lm_formats
    from staredge.formats import get_format

    suffix = lm_formats()
    paths = {}
    for variant in variants:
        for c in contexts:
            for r in runtimes:
                fmt = RUNTIME_FORMAT[r]
                path = workdir / f"curve_{variant}_ctx{c}{suffix[fmt]}"
                if not path.exists():
                    t0 = time.perf_counter()
                    get_format(fmt).lm_exporter_function()(model, path, max_context=c, name=f"curve_{variant}",
                                                           **VARIANT_OPTIONS[variant].get(fmt, {}))
                    log(f"exported {path.name} in {time.perf_counter() - t0:.1f} s")
                paths[(variant, c, r)] = path
    return paths


def time_steps(stepper, position: int, steps: int, token: int = 101) -> list[float]:
    """ms of each of ``steps`` single-token decode calls starting at ``position`` (the state
    is zeros: a step's cost does not depend on the values)."""
    stepper.reset()
    stepper.position = position
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        stepper.step([token])
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main(argv=None) -> int:
    """Command line entry (see the module doc)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", default="256,512,1024,2048,4096")
    p.add_argument("--runtimes", default="onnxruntime,openvino,litert")
    p.add_argument("--variants", default="default,blend", help="default, blend (comma-separated)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=32, help="timed decode steps per cell and round")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--genome", default=None, help="default: the shipped star_lm_pydoc genome")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="exports/context_curve")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    from staredge.runtimes import load_backend

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    contexts = sorted(int(c) for c in args.contexts.split(","))
    runtimes = [r for r in args.runtimes.split(",") if r]
    variants = [v for v in args.variants.split(",") if v]
    bad = [r for r in runtimes if r not in RUNTIME_FORMAT] + [v for v in variants if v not in VARIANT_OPTIONS]
    if bad:
        p.error(f"unknown runtime/variant {bad}; runtimes: {list(RUNTIME_FORMAT)}, variants: {list(VARIANT_OPTIONS)}")
    if contexts[0] < args.steps + args.warmup + 2:
        p.error("the smallest context must exceed steps + warmup + 1")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(args.genome, args.dim, args.depth, contexts[-1], args.seed)
    paths = export_all(model, contexts, runtimes, variants, workdir, log)
    steppers = {}
    for key, path in paths.items():
        backend = load_backend(path, threads=args.threads, device="cpu")
        steppers[key] = (backend, backend.new_stepper())
    cells = list(paths)
    samples: dict = {k: [] for k in cells}
    loads = []
    for rnd in range(args.rounds):
        loads.append(os.getloadavg()[0])
        shift = rnd % len(cells)
        for key in cells[shift:] + cells[:shift]:
            _, stepper = steppers[key]
            c = key[1]
            start = c - args.steps - args.warmup - 1
            ms = time_steps(stepper, start, args.steps + args.warmup)[args.warmup:]
            samples[key].append(statistics.median(ms))
        log(f"round {rnd + 1}/{args.rounds} load {loads[-1]:.2f}")
    loads.append(os.getloadavg()[0])
    rows = []
    for variant in variants:
        for r in runtimes:
            base = statistics.median(samples[(variant, contexts[0], r)])
            for c in contexts:
                s = samples[(variant, c, r)]
                med = statistics.median(s)
                rows.append({"variant": variant, "runtime": r, "context": c, "ms_per_step_median": round(med, 4),
                             "ms_min": round(min(s), 4), "ms_max": round(max(s), 4),
                             "growth": round(med / base, 3), "rounds": s})
    for backend, _ in steppers.values():
        backend.close()
    doc = {"what": "decode ms per step vs exported context (scripts/lm_context_curve.py)",
           "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "genome": model.genome if isinstance(model.genome, str) else str(model.genome),
           "dim": args.dim, "depth": args.depth, "threads": args.threads, "rounds": args.rounds,
           "steps": args.steps, "load_average_per_round": [round(x, 2) for x in loads],
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "processor": platform.processor()},
           "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    print(f"| variant | runtime | {' | '.join(f'ctx {c}' for c in contexts)} | growth {contexts[0]}→{contexts[-1]} |")
    print("|---|---|" + "---|" * (len(contexts) + 1))
    for variant in variants:
        for r in runtimes:
            cells_txt = [next(f"{x['ms_per_step_median']:.3f} ({x['ms_min']:.3f}–{x['ms_max']:.3f})" for x in rows
                              if x["variant"] == variant and x["runtime"] == r and x["context"] == c) for c in contexts]
            growth = next(x["growth"] for x in rows if x["variant"] == variant and x["runtime"] == r
                          and x["context"] == contexts[-1])
            print(f"| {variant} | {r} | {' | '.join(cells_txt)} | {growth:.2f}× |")
    print(f"load average per round: {doc['load_average_per_round']}")
    if args.json:
        from staredge.fileio import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
