#!/usr/bin/env python
"""Accuracy of weight-only int8 / int4 LM artifacts (issue 21): the shipped ``star_lm_pydoc``
exported to ONNX (MatMulNBits), OpenVINO (NNCF) and TFLite (ai-edge-quantizer) at each precision, scored on the held-out
text of its training run (bits per byte, 256-byte windows after BOS) and by greedy agreement
with the fp32 PyTorch model over 256 tokens; plus the artifact sizes. Prints the markdown
table of docs/low-precision.md ("Language models: weight-only int8 / int4").

    .venv/bin/python scripts/lm_quant_table.py --held-bytes 16384 --json docs/lm-quant-results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    """Command line entry (see the module doc)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default="onnx,openvino,tflite")
    p.add_argument("--precisions", default="fp32,int8,int4")
    p.add_argument("--max-context", type=int, default=512)
    p.add_argument("--held-bytes", type=int, default=16384, help="0: the whole held-out text")
    p.add_argument("--greedy-tokens", type=int, default=256)
    p.add_argument("--block-size", type=int, default=32, help="ONNX block / OpenVINO int4 group size")
    p.add_argument("--workdir", default="exports/lm_quant")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from staredge.exporters.lm_quantize import lm_quality
    from staredge.formats import get_format
    from staredge.generation import load_lm
    from staredge.runtimes.lm import load_lm_artifact

    model = load_lm().model
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for fmt in args.formats.split(","):
        for prec in args.precisions.split(","):
            suffix = get_format(fmt).suffixes[0]
            path = work / f"star_lm_pydoc_ctx{args.max_context}_{prec}{suffix}"
            size_key = {"onnx": "block_size", "openvino": "group_size"}.get(fmt)  # TFLite: per channel
            quant = {size_key: args.block_size} if size_key and (fmt == "onnx" or prec == "int4") else {}
            opts = {} if prec == "fp32" else {"precision": prec, "quantization": quant}
            t0 = time.perf_counter()
            get_format(fmt).lm_exporter_function()(model, path, max_context=args.max_context, name="star_lm_pydoc", **opts)
            size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if suffix == ".xml" else 0)
            q = lm_quality(load_lm_artifact(path), model, held_bytes=args.held_bytes or None,
                           greedy_tokens=args.greedy_tokens)
            rows.append({"format": fmt, "precision": prec, "size_bytes": size, "export_s": round(time.perf_counter() - t0, 1), **q})
            print(f"{fmt} {prec}: {q}", file=sys.stderr, flush=True)
    print("| format | weights | size MB | held-out bits/byte | vs fp32 PyTorch | greedy tokens = fp32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['precision']} | {r['size_bytes'] / 1e6:.2f} | {r['bits_per_byte']:.4f} | "
              f"{100 * r['bpb_change']:+.2f} % | {r['greedy_agree']}/{r['greedy_tokens']} |")
    print(f"held-out bytes scored: {rows[0]['held_out_bytes']} (fp32 PyTorch: {rows[0]['fp32_bits_per_byte']:.4f} bits/byte)")
    if args.json:
        from staredge.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps({"command": "scripts/lm_quant_table.py " + " ".join(argv or sys.argv[1:]),
                                                 "rows": rows}, indent=1) + "\n", force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
