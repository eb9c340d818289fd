#!/usr/bin/env python
"""LM decode against the peers (issue 21): one Transformer++ (Llama-equivalent) model with
the same weights on StarEdge's runtimes, transformers, ONNX Runtime GenAI, and llama.cpp /
OpenVINO GenAI when installed (skipped with the reason otherwise). Interleaved rounds,
medians with min–max, load average per round, peak RSS per runner (each in its own
process). See staredge/bench/peers.py.

    # the docs' table (quiet machine; ~10 min):
    .venv/bin/python scripts/bench_lm_peers.py --layers 5 --threads 1,2 --rounds 9 \\
        --precisions fp32,int8,int4 --json docs/lm-peers-results.json
    # sanity run:
    .venv/bin/python scripts/bench_lm_peers.py --layers 1 --threads 1 --rounds 1 --prompt 8 --new-tokens 8 \\
        --runtimes onnxruntime --workdir /tmp/peers
"""

from __future__ import annotations

import argparse
import sys


def quant_options(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs; integers and true/false parsed."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        low = value.lower()
        out[key] = (int(value) if value.lstrip("-").isdigit() else
                    {"true": True, "false": False}.get(low, value))
    return out


def main(argv=None) -> int:
    """Command line entry (see the module doc)."""
    from staredge.bench.peers import STAREDGE_RUNTIMES, markdown, run_peers_bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=5, help="Llama layers (= SA-1 + SwiGLU pairs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runtimes", default=",".join(STAREDGE_RUNTIMES),
                   help="StarEdge runtimes (default: every runtime of an LM format that runs here, from the format table)")
    p.add_argument("--precisions", default="fp32", help="fp32,int8,int4 (each where the runner takes it)")
    p.add_argument("--peers", default="pytorch-eager,transformers,ort-genai,llama.cpp,openvino-genai")
    p.add_argument("--gguf-convert", default=None, help="llama.cpp's convert_hf_to_gguf.py")
    p.add_argument("--llama-cpp-path", default=None, metavar="DIR",
                   help="a folder holding the llama_cpp package when it is installed in another environment "
                        "(e.g. /tmp/peers-venv/lib/python3.11/site-packages); searched after this one's")
    p.add_argument("--ov-genai-dir", default=None, help="an optimum-intel export of the Llama folder")
    p.add_argument("--workdir", default="exports/peers")
    p.add_argument("--quant", action="append", default=[], metavar="KEY=VALUE",
                   help="an LM quantisation option (e.g. accuracy_level=4): int8/int4 StarEdge artifacts of the "
                        "formats that take it get a second variant, staredge-<runtime>-<--quant-tag>-<precision>")
    p.add_argument("--quant-tag", default="q", help="names the --quant variant")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, ONNX Runtime's profiler on every ONNX runner at 1 thread (where the time goes)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    def split(s):
        return tuple(x for x in s.split(",") if x)

    doc = run_peers_bench(dim=args.dim, layers=args.layers, seed=args.seed, prompt=args.prompt,
                          new_tokens=args.new_tokens, rounds=args.rounds,
                          threads=tuple(int(t) for t in split(args.threads)), workdir=args.workdir,
                          staredge=split(args.runtimes), precisions=split(args.precisions), peers=split(args.peers),
                          gguf_convert=args.gguf_convert, ov_genai_dir=args.ov_genai_dir,
                          llama_cpp_path=args.llama_cpp_path, profile=args.profile,
                          quantization=quant_options(args.quant), quant_tag=args.quant_tag,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    doc["command"] = " ".join(["scripts/bench_lm_peers.py"] + (argv if argv is not None else sys.argv[1:]))
    print(markdown(doc))
    if args.json:
        from staredge.fileio import atomic_write_json

        atomic_write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
