#!/usr/bin/env python
"""Decode of one LFM2-350M-shaped model on StarEdge's artifacts against llama.cpp (f32, Q8_0,
Q4_0) and ONNX Runtime GenAI (issue 21's second "done when"), same weights, same token ids.

The model folder and StarEdge's artifacts are the ones ``scripts/lfm2_scale.py`` wrote in
``--workdir`` (``lfm2-350m-random/``; ``out/`` fp32, ``out-int8/``, ``out-int4/``, and any
``out-<precision>-<tag>/`` variant). From the same folder this script makes the peers' files:
llama.cpp's ``convert_hf_to_gguf.py`` (f32 GGUF) and llama.cpp's own quantiser (Q8_0, Q4_0,
its default recipe), and ONNX Runtime GenAI's model builder (fp32, int8, int4), recording the
error where a builder refuses the architecture. Then every runner streams greedily through
``staredge.bench.peers.run_streams`` (one worker process per runner and thread count, a
warm-up stream, interleaved rounds, medians with min–max, load average per round).

    .venv/bin/python scripts/lfm2_peers.py --workdir /tmp/lfm2_350m --threads 2 --rounds 5 \\
        --gguf-convert /path/to/llama.cpp/convert_hf_to_gguf.py \\
        --llama-cpp-path /tmp/peers-venv/lib/python3.11/site-packages --json docs/lm-peers-results-lfm2-350m.json

llama-cpp-python is not a dependency of StarEdge (it compiles llama.cpp for many minutes):
install it by hand into a separate environment and pass its site-packages as
``--llama-cpp-path``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}


def staredge_runners(work: Path, context: int, formats: list[str], variants: list[str]) -> list[tuple[str, str, dict]]:
    """StarEdge's artifacts under ``work``: (label, "staredge", {"path": ..., "tokenizer_json": the
    folder's, for artifacts that record no tokenizer})."""
    runners = []
    for fmt in formats:
        for variant in variants:
            folder = work / ("out" if variant == "fp32" else f"out-{variant}")
            found = sorted(folder.glob(f"*_ctx{context}{SUFFIXES[fmt]}"))
            if found:
                runners.append((f"staredge-{fmt}-{variant}", "staredge", {
                    "path": str(found[0]), "tokenizer_json": str(work / "lfm2-350m-random" / "tokenizer.json")}))
    return runners


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="scripts/lfm2_scale.py's workdir")
    p.add_argument("--context", type=int, default=1024, help="the StarEdge artifacts' context")
    p.add_argument("--formats", default="onnx", help="StarEdge formats to time (onnx, openvino)")
    p.add_argument("--variants", default="fp32,int8,int4", help="StarEdge artifact variants (out-<variant>/)")
    p.add_argument("--gguf", default="f32,q8_0,q4_0", help="llama.cpp file types")
    p.add_argument("--ort-genai", default="fp32,int8,int4", help="ONNX Runtime GenAI builder precisions")
    p.add_argument("--threads", default="2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--gguf-convert", default=None, help="llama.cpp's convert_hf_to_gguf.py")
    p.add_argument("--llama-cpp-path", default=None, metavar="DIR", help="folder holding the llama_cpp package")
    p.add_argument("--prepare-only", action="store_true", help="make the peers' files, time nothing")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from staredge.bench.generate import prompt_ids
    from staredge.bench.peers import build_gguf, build_ort_genai, markdown, ratios, run_streams
    from staredge.errors import ConfigError

    def split(s):
        return [x for x in s.split(",") if x]

    work = Path(args.workdir)
    hf_dir = work / "lfm2-350m-random"
    n_ctx = args.prompt + args.new_tokens + 1
    skipped: dict[str, str] = {}
    prepared: dict[str, dict] = {}
    runners = staredge_runners(work, args.context, split(args.formats), split(args.variants))
    for t in split(args.gguf):
        t0 = time.perf_counter()
        try:
            gguf = build_gguf(hf_dir, work / f"lfm2-350m-random_{t}.gguf", t, args.gguf_convert,
                              llama_cpp_path=args.llama_cpp_path)
        except ConfigError as exc:
            skipped[f"llama.cpp-{t}"] = str(exc)
            continue
        prepared[f"llama.cpp-{t}"] = {"path": str(gguf), "bytes": gguf.stat().st_size,
                                      "build_s": round(time.perf_counter() - t0, 1)}
        runners.append((f"llama.cpp-{t}", "llama.cpp", {"gguf": str(gguf), "n_ctx": n_ctx,
                                                        "llama_cpp_path": args.llama_cpp_path}))
    for prec in split(args.ort_genai):
        t0 = time.perf_counter()
        try:
            og = build_ort_genai(hf_dir, work / f"og_{prec}", prec)
        except ConfigError as exc:
            skipped[f"ort-genai-{prec}"] = str(exc)
            continue
        prepared[f"ort-genai-{prec}"] = {"path": str(og), "build_s": round(time.perf_counter() - t0, 1)}
        runners.append((f"ort-genai-{prec}", "ort-genai", {"og_dir": str(og)}))
    print(json.dumps({"prepared": prepared, "skipped": skipped}, indent=1), file=sys.stderr)
    if args.prepare_only:
        return 0
    rows, loads = run_streams(runners, threads=tuple(int(t) for t in split(args.threads)), ids=prompt_ids(args.prompt),
                              new_tokens=args.new_tokens, rounds=args.rounds, skipped=skipped,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    doc = {"what": "LFM2-350M-shaped decode vs peers (scripts/lfm2_peers.py)", "model": str(hf_dir),
           "prompt_tokens": args.prompt, "new_tokens": args.new_tokens, "rounds": args.rounds,
           "threads": [int(t) for t in split(args.threads)], "load_average_per_round": [round(x, 2) for x in loads],
           "nice": os.getpriority(os.PRIO_PROCESS, 0), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpu_count": os.cpu_count(), "prepared": prepared, "rows": rows, "skipped": skipped,
           "ratios": ratios(rows), "artifacts": {label: cfg.get("path") or cfg.get("og_dir") or cfg.get("gguf")
                                                 for label, _, cfg in runners},
           "command": " ".join(["scripts/lfm2_peers.py"] + sys.argv[1:])}
    print(markdown(doc))
    if args.json:
        from staredge.fileio import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
