"""How much of each generated token is the graph call, per runtime (issue 19's speed check).

The one decode loop (``staredge.decoding.decode_tokens``) records, per token, the time of the
graph call (``StreamStats.step_s``) and the time between sampled tokens (``token_t``): their
ratio is the share of the graph call; the rest is StarEdge's loop (sampling, UTF-8 decoding,
stop strings, bookkeeping). Both come from the same run, so the share is meaningful even on
a busy machine; absolute times are not (run it on a quiet machine for those).

    python scripts/bench_decode_loop.py ARTIFACT [ARTIFACT ...] [--threads 1] [--tokens 200] [--repeats 5]

Before/after a change: run it at both commits on the same artifacts, side by side.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def measure(path: str, threads: int, tokens: int, repeats: int) -> dict:
    """Median graph-call and per-token times (µs) over ``repeats`` greedy streams of ``path``."""
    from staredge import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor(path, device="cpu", threads=threads)
    graph, token = [], []
    for _ in range(repeats + 1):  # the first stream warms the runtime up
        s = predictor.stream("The ", max_new_tokens=tokens, temperature=0, ignore_eos=True)
        s.text()
        graph.append(float(np.median(s.stats.step_s)))
        token.append(float(np.median(np.diff(s.stats.token_t))))
    g, t = float(np.median(graph[1:])), float(np.median(token[1:]))
    in_effect = getattr(predictor.backend, "threads_in_effect", None)  # absent before issue 19
    return {"artifact": path, "runtime": predictor.backend.name,
            "threads": in_effect() if callable(in_effect) else threads,
            "graph_call_us": round(g * 1e6, 1), "per_token_us": round(t * 1e6, 1),
            "graph_share": round(g / t, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for path in args.artifacts:
        print(json.dumps(measure(path, args.threads, args.tokens, args.repeats)))


if __name__ == "__main__":
    main()
