#!/usr/bin/env python
"""Tokens per second of the PyTorch streaming path (``LanguageModel.stream``) on this machine.

For each thread count: one warm-up stream, then ``--repeats`` timed streams of
``--new-tokens`` tokens after a fixed prompt; prefill and decode are timed separately by the
stream itself (``TextStream.stats``) and the median is reported. The load average is
recorded before and after, because the machine may be shared.

    .venv/bin/python scripts/bench_star_stream.py                 # prints a table
    .venv/bin/python scripts/bench_star_stream.py --write-results # also stores it in docs/star-lm-results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PROMPT = ("The import statement is executed in two steps: find a module, loading and initializing it if "
          "necessary; define a name or names in the local namespace. ")


def bench(lm, threads: int, new_tokens: int, repeats: int, temperature: float) -> dict:
    """Median prefill and decode tokens/s over ``repeats`` streams with ``threads`` threads."""
    torch.set_num_threads(threads)
    kw = dict(max_new_tokens=new_tokens, temperature=temperature, top_p=0.95, seed=0)
    lm.stream(PROMPT, **kw).text()  # warm-up: allocator, first-call dispatch
    prefill, decode, generated, decode_cpu_ms = [], [], [], []
    for r in range(repeats):
        # CPU time is less sensitive to other processes than wall time: a prefill-only run
        # (one token) is subtracted from the full run to get the decode share.
        c0 = time.process_time()
        lm.stream(PROMPT, **{**kw, "seed": r, "max_new_tokens": 1}).text()
        c1 = time.process_time()
        s = lm.stream(PROMPT, **{**kw, "seed": r})
        s.text()
        c2 = time.process_time()
        prefill.append(s.stats.prefill_tokens_per_s)
        decode.append(s.stats.decode_tokens_per_s)
        generated.append(s.stats.generated_tokens)
        if s.stats.generated_tokens > 1:
            decode_cpu_ms.append(1000 * ((c2 - c1) - (c1 - c0)) / (s.stats.generated_tokens - 1))
    return {
        "threads": threads,
        "temperature": temperature,
        "prompt_tokens": s.stats.prompt_tokens,
        "new_tokens": new_tokens,
        "generated_tokens": generated,
        "prefill_tokens_per_s_median": round(statistics.median(prefill), 1),
        "decode_tokens_per_s_median": round(statistics.median(decode), 1),
        "decode_tokens_per_s_all": [round(x, 1) for x in decode],
        "ms_per_token_median": round(1000 / statistics.median(decode), 2),
        "decode_cpu_ms_per_token_median": round(statistics.median(decode_cpu_ms), 2) if decode_cpu_ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, optionally store the numbers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="shipped model name or saved path (default: the shipped STAR model)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--write-results", action="store_true",
                   help="store under 'streaming_bench' in docs/star-lm-results.json (atomic rewrite)")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "star-lm-results.json")
    args = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from staredge.generation import load_lm

    lm = load_lm(args.model)
    load_before = os.getloadavg()
    rows = [bench(lm, t, args.new_tokens, args.repeats, args.temperature) for t in args.threads]
    load_after = os.getloadavg()
    doc = {
        "model": lm.name,
        "params": lm.num_parameters,
        "path": "staredge.generation.stream (PyTorch eager, fp32, batch 1, one token per step after a chunked prefill)",
        "machine": f"{platform.machine()} {os.cpu_count()} cores (AMD EPYC, AVX-512), torch {torch.__version__}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "measured_at_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "runs": rows,
    }
    table = Table(title=f"{lm.name}: PyTorch streaming ({lm.num_parameters:,} params)",
                  caption=f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (shared machine)")
    for col in ("threads", "prompt tok", "new tok", "prefill tok/s", "decode tok/s", "ms/token", "CPU ms/token"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["threads"]), str(r["prompt_tokens"]), str(r["new_tokens"]),
                      f"{r['prefill_tokens_per_s_median']:.0f}", f"{r['decode_tokens_per_s_median']:.1f}",
                      f"{r['ms_per_token_median']:.2f}", f"{r['decode_cpu_ms_per_token_median'] or float('nan'):.2f}")
    Console().print(table)
    if args.write_results:
        results = json.loads(args.results.read_text(encoding="utf-8")) if args.results.exists() else {}
        results["streaming_bench"] = doc
        tmp = args.results.with_name(f".{args.results.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, args.results)
        finally:
            tmp.unlink(missing_ok=True)
        print(f"stored under 'streaming_bench' in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
