#!/usr/bin/env python
"""Speed of two (or more) checkouts of StarEdge side by side, in one interleaved run.

Each checkout (``--tree LABEL=PATH``, a clone or ``git worktree`` with its own ``.venv``)
exports the same models with its own ``staredge export`` and runs them with its own runtime
layer (``Predictor``), so what is compared is what each version ships: export settings,
session settings and the decode loop together. Then one worker process per checkout holds
every artifact loaded, and ``--rounds`` rounds alternate the checkouts (the order flips
every round) on each case:

- image: ``Predictor(path, threads=--image-threads).backend.prepare(x)`` called
  ``--calls`` times after 20 warm-up calls (batch 1, a fixed random input); the round's
  figure is the median ms per call;
- text: ``Predictor(path, threads=--lm-threads).stream(prompt, temperature=0)`` for
  ``--tokens`` tokens from a 64-byte prompt; the round's figure is the median ms between
  tokens.

The table gives, per case and checkout, the median over rounds with min–max and the ratio
to the first checkout, and the load average before every round.

    git worktree add /tmp/before <commit> && (cd /tmp/before && python3 -m venv .venv && \\
        .venv/bin/pip install -c constraints.txt -e ".[all]")
    nice -n -15 .venv/bin/python scripts/compare_commits.py --tree before=/tmp/before --tree after=. \\
        --rounds 7 --json docs/before-after.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMAGE_MODEL = "starnet_s1"
LM_MODEL = "star_lm_pydoc"
PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs far away. "[:64]


def _export(tree: Path, model: str, formats: str, out: Path) -> list[Path]:
    """Export ``model`` to ``formats`` with the checkout's own CLI; returns the artifacts."""
    if not out.exists():
        exe = tree / ".venv" / "bin" / "staredge"
        cmd = [str(exe), "export", model, "--formats", formats, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    found = []
    for suffix in (".onnx", ".xml", ".tflite"):
        found += sorted(p for p in out.rglob(f"*{suffix}") if "scratch" not in p.parts)
    return found


def _worker() -> None:
    """Serve measurement requests (JSON lines on stdin) with every artifact loaded once."""
    import warnings

    import numpy as np

    from staredge import Predictor

    cases = json.loads(sys.stdin.readline())
    loaded = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, case in cases.items():
            p = Predictor(case["path"], device="cpu", threads=case["threads"])
            if case["kind"] == "image":
                shape = [1] + [int(v) for v in p.backend.input_shape[1:]]
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
                loaded[name] = (p, p.backend.prepare(x))
            else:
                loaded[name] = (p, None)
    print(json.dumps({"ok": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        p, call = loaded[req["case"]]
        if call is not None:
            for _ in range(20):
                call()
            times = []
            for _ in range(req["calls"]):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
        else:
            s = p.stream(PROMPT, max_new_tokens=req["tokens"], temperature=0, ignore_eos=True)
            s.text()
            ms = float(np.median(np.diff(s.stats.token_t))) * 1e3
        print(json.dumps({"ms": ms}), flush=True)


def main() -> int:
    """Parse the arguments, export in each checkout, run the interleaved rounds, print the table."""
    if sys.argv[1:2] == ["--worker"]:
        _worker()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH",
                    help="a checkout with its own .venv; the first is the reference")
    ap.add_argument("--workdir", default="/tmp/compare_commits")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200, help="timed image calls per round")
    ap.add_argument("--tokens", type=int, default=128, help="decoded tokens per round")
    ap.add_argument("--image-threads", type=int, default=2)
    ap.add_argument("--lm-threads", type=int, default=1)
    ap.add_argument("--image-formats", default="onnx,openvino,tflite")
    ap.add_argument("--lm-formats", default="onnx,openvino,tflite")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    work = Path(args.workdir)
    workers = {}
    cases: dict[str, dict] = {}
    for label, tree in trees:
        mine = {}
        for kind, model, fmts, threads in (("image", IMAGE_MODEL, args.image_formats, args.image_threads),
                                           ("text", LM_MODEL, args.lm_formats, args.lm_threads)):
            for path in _export(tree, model, fmts, work / label / kind):
                case = f"{kind} {model} {path.suffix.lstrip('.')}"
                mine[case] = {"path": str(path), "kind": kind, "threads": threads}
        cases[label] = mine
        proc = subprocess.Popen([str(tree / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(tree))
        proc.stdin.write(json.dumps(mine) + "\n")
        proc.stdin.flush()
        if not json.loads(proc.stdout.readline()).get("ok"):
            raise SystemExit(f"{label}: worker failed to load")
        workers[label] = proc
    names = sorted(set.intersection(*(set(c) for c in cases.values())))
    samples = {(n, label): [] for n in names for label, _ in trees}
    loads = []
    for rnd in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        order = trees if rnd % 2 == 0 else trees[::-1]
        for n in names:
            for label, _ in order:
                w = workers[label]
                w.stdin.write(json.dumps({"case": n, "calls": args.calls, "tokens": args.tokens}) + "\n")
                w.stdin.flush()
                samples[(n, label)].append(json.loads(w.stdout.readline())["ms"])
        print(f"round {rnd + 1}/{args.rounds}: load {loads[-1]}", file=sys.stderr, flush=True)
    loads.append(round(os.getloadavg()[0], 2))
    for w in workers.values():
        w.stdin.close()
        w.wait(30)
    rows = []
    ref = trees[0][0]
    for n in names:
        base = statistics.median(samples[(n, ref)])
        for label, _ in trees:
            ms = samples[(n, label)]
            rows.append({"case": n, "tree": label, "median_ms": round(statistics.median(ms), 4),
                         "min_ms": round(min(ms), 4), "max_ms": round(max(ms), 4),
                         "ratio_to_" + ref: round(statistics.median(ms) / base, 3), "rounds_ms": ms})
    commits = {label: subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() for label, tree in trees}
    doc = {"what": "scripts/compare_commits.py", "commits": commits, "rounds": args.rounds,
           "image_threads": args.image_threads, "lm_threads": args.lm_threads, "calls": args.calls,
           "tokens": args.tokens, "load_average_per_round": loads, "nice": os.getpriority(os.PRIO_PROCESS, 0),
           "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(), "rows": rows}
    print(f"| case | {' | '.join(f'{label} ({commits[label]}) ms' for label, _ in trees)} | ratio |")
    print("|---|" + "---|" * len(trees) + "---|")
    for n in names:
        by = {r["tree"]: r for r in rows if r["case"] == n}
        cells = [f"{by[label]['median_ms']:.3f} ({by[label]['min_ms']:.3f}–{by[label]['max_ms']:.3f})"
                 for label, _ in trees]
        ratio = by[trees[-1][0]]["ratio_to_" + ref]
        print(f"| {n} | {' | '.join(cells)} | {ratio:.2f}× |")
    print(f"\nload average per round: {loads}")
    if args.json:
        from staredge.fileio import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
