#!/usr/bin/env python
"""Export and stream an LFM2-350M-shaped model (random weights of the real config: 16 layers,
width 1024, 65,536-token vocabulary, 10 short-conv + 6 GQA blocks) here, stage by stage, with
wall time and peak resident memory (RSS) per stage.

Each stage runs in its own child process, so its peak RSS is its own (``os.wait4``'s
``ru_maxrss``), and a stage that runs out of memory does not take the others with it:

1. ``build``   write the Hugging Face folder (random ``Lfm2ForCausalLM`` weights through
               StarEdge's ``save_pretrained``; a tokenizer.json of the model's size)
2. ``import``  ``from_pretrained`` (header checks, safetensors read) and one forward step
3. ``export-<fmt>`` ``staredge.exporters.lm_export.export_lm`` to each format asked for
               (validation token by token against PyTorch unless ``--no-validate``)
4. ``decode-<fmt>`` ``Predictor.stream`` of ``--tokens`` greedy tokens at each of ``--threads``
               (one session per thread count, one warm-up stream each, then ``--rounds``
               interleaved rounds in alternating order): decode tokens/s, median ms per
               decode step and first-token latency, each the median over rounds with
               min–max, and the load average before every round

With ``--precisions fp32,int8,int4`` the export and decode stages run once per format and
precision (``export-onnx-int8``, ``decode-onnx-int8``; weight-only, the quantised artifacts
under ``out-<precision>/``); ``--quant KEY=VALUE`` passes the format's LM quantisation options
(``head=quantized``, ``accuracy_level=4``) and names the variant ``<precision>-<--quant-tag>``. ``--stages`` runs a subset (merged into an existing ``--json``),
and ``--decode-nice N`` runs the decode stages at that scheduling priority (e.g. ``-15`` as
root, so that other jobs yield to the timing while the exports run at normal priority).

    .venv/bin/python scripts/lfm2_scale.py --workdir /tmp/lfm2_350m --formats onnx,openvino \\
        --json docs/lfm2-scale.json                                            # the real size
    .venv/bin/python scripts/lfm2_scale.py --workdir /tmp/lfm2_small --layers 4 --hidden 256 \\
        --vocab 4096 --intermediate 1024 --formats onnx                        # a quick sanity run
    .venv/bin/python scripts/lfm2_scale.py --workdir /tmp/lfm2_350m --formats onnx --precisions int8,int4 \
        --stages export-onnx-int8,export-onnx-int4 --no-validate --json docs/lfm2-scale.json  # quantised

Numbers are only meaningful on a quiet machine; the JSON records the load average before
every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lfm2_350m_config(args: argparse.Namespace) -> dict:
    """The LFM2-350M config.json (or a scaled-down one from the arguments)."""
    from staredge.models.star.families import LFM2_SHAPES

    cfg = dict(LFM2_SHAPES["lfm2-350m"])
    cfg.update(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
               num_hidden_layers=args.layers, num_attention_heads=args.heads,
               num_key_value_heads=min(8, args.heads), max_position_embeddings=max(args.context, 2048),
               bos_token_id=1, eos_token_id=7, pad_token_id=0)
    attn = [i for i in (2, 5, 8, 10, 12, 14) if i < args.layers] or [args.layers - 1]
    cfg["full_attn_idxs"] = attn
    return cfg


def _tokenizer_json(vocab: int) -> str:
    """A byte-level BPE tokenizer.json with exactly ``vocab`` tokens (merges of byte pairs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab_map = {"<|pad|>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for ch in alphabet:
        vocab_map[ch] = len(vocab_map)
    merges = []
    for a in alphabet:
        for b in alphabet:
            if len(vocab_map) >= vocab - 5:
                break
            vocab_map[a + b] = len(vocab_map)
            merges.append((a, b))
    for special in ("<|im_start|>", "<|im_end|>"):
        vocab_map.setdefault(special, len(vocab_map))
    tok = Tokenizer(models.BPE(vocab=vocab_map, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True) for t in
                            ("<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    return tok.to_str()


def stage_build(args: argparse.Namespace) -> dict:
    import torch

    from staredge.models.star.lfm2 import build_lfm2_model, parse_lfm2_config, save_pretrained
    from staredge.tokenizer import HFTokenizer

    cfg = lfm2_350m_config(args)
    spec = parse_lfm2_config(cfg)
    torch.manual_seed(0)
    model = build_lfm2_model(spec, max_seq_len=args.context)
    model.hf_config = cfg
    tok = HFTokenizer(_tokenizer_json(spec.vocab_size), bos_token="<|startoftext|>", eos_token="<|im_end|>",
                      pad_token="<|pad|>", vocab_size=spec.vocab_size)
    folder = save_pretrained(model, Path(args.workdir) / "lfm2-350m-random", force=True, tokenizer=tok)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {"folder": str(folder), "parameters": params, "folder_bytes": size}


def stage_import(args: argparse.Namespace) -> dict:
    import torch

    from staredge.models.star import from_pretrained

    t0 = time.perf_counter()
    model = from_pretrained(Path(args.workdir) / "lfm2-350m-random", max_seq_len=args.context)
    load_s = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        state = model.init_state(1)
        model.step(torch.tensor([[1, 100, 200, 300]]), state)
    return {"load_s": round(load_s, 2), "first_step_s": round(time.perf_counter() - t0, 3), "genome": model.genome}


def _split(stage_arg: str) -> tuple[str, str]:
    """``onnx`` → (onnx, fp32); ``onnx-int8`` → (onnx, int8); ``onnx-int8-qhead`` → (onnx, int8-qhead)."""
    fmt, _, prec = stage_arg.partition("-")
    return fmt, prec or "fp32"


def _out_dir(args: argparse.Namespace, variant: str) -> Path:
    return Path(args.workdir) / ("out" if variant == "fp32" else f"out-{variant}")


def _quant_options(args: argparse.Namespace) -> dict:
    """``--quant KEY=VALUE`` pairs (the format's LM ``quantization`` options); integers parsed."""
    out = {}
    for item in args.quant:
        key, _, value = item.partition("=")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _variant(args: argparse.Namespace, precision: str) -> str:
    """The artifact variant of a precision: ``int8``, or ``int8-<tag>`` with ``--quant`` options."""
    if precision == "fp32" or not args.quant:
        return precision
    return f"{precision}-{args.quant_tag or 'q'}"


def stage_export(args: argparse.Namespace, fmt_variant: str) -> dict:
    from staredge.exporters.lm_export import export_lm

    fmt, variant = _split(fmt_variant)
    prec = variant.split("-")[0]
    folder = Path(args.workdir) / "lfm2-350m-random"
    if variant != prec:  # a quantised head / embedding: the format's LM exporter with its quantization options
        from staredge.formats import get_format
        from staredge.models.star import from_pretrained

        model = from_pretrained(folder, max_seq_len=args.context)
        path = _out_dir(args, variant) / f"lfm2-350m-random_{prec}_ctx{args.context}{get_format(fmt).primary_suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        get_format(fmt).lm_exporter_function()(
            model, path, max_context=args.context, name="lfm2-350m-random", precision=prec,
            quantization=_quant_options(args))
        return {"format": fmt, "path": str(path), "precision": prec, "quantization": _quant_options(args),
                "export_s": round(time.perf_counter() - t0, 1),
                "size_bytes": sum(f.stat().st_size for f in path.parent.glob(path.stem + ".*")),
                "validation": "not run (--quant options: export_lm's quality check runs on the defaults)"}
    rows = export_lm(str(folder), [fmt], _out_dir(args, variant), max_context=args.context,
                     validate=not args.no_validate, force=True, precision=prec)
    row = rows[0]
    keep = ("format", "path", "size_bytes", "state_bytes", "export_s", "passed", "error")
    out = {k: row.get(k) for k in keep}
    if row.get("validation"):
        out["validation"] = {k: v for k, v in row["validation"].items() if not isinstance(v, (list, dict))}
    return out


def stage_decode(args: argparse.Namespace, fmt_prec: str) -> dict:
    import statistics

    from staredge.formats import get_format
    from staredge.predictor import Predictor
    from staredge.tokenizer import HFTokenizer

    fmt, prec = _split(fmt_prec)
    folder = Path(args.workdir) / "lfm2-350m-random"
    tok = HFTokenizer.from_folder(folder, vocab_size=json.loads((folder / "config.json").read_text())["vocab_size"])
    suffix = get_format(fmt).suffixes[0]
    path = next(_out_dir(args, prec).glob(f"*_ctx{args.context}{suffix}"))
    threads = [int(t) for t in args.threads.split(",") if t]
    preds = {n: Predictor(str(path), threads=n) for n in threads}

    def one(n: int, tokens: int) -> dict:
        s = preds[n].stream("The quick brown fox", max_new_tokens=tokens, temperature=0.0, tokenizer=tok,
                            ignore_eos=True)
        s.text()
        st = s.stats
        return {"generated_tokens": st.generated_tokens, "decode_tokens_per_s": st.decode_tokens_per_s,
                "median_step_ms": statistics.median(st.step_s) * 1000 if st.step_s else float("nan"),
                "first_token_ms": st.first_token_s * 1000}

    for n in threads:  # warm-up (not recorded)
        one(n, min(8, args.tokens))
    samples: dict[int, list[dict]] = {n: [] for n in threads}
    loads = []
    for rnd in range(args.rounds):
        order = threads if rnd % 2 == 0 else threads[::-1]
        loads.append(round(os.getloadavg()[0], 2))
        for n in order:
            samples[n].append(one(n, args.tokens))
    loads.append(round(os.getloadavg()[0], 2))
    out: dict = {"artifact": str(path), "precision": prec, "rounds": args.rounds, "tokens": args.tokens,
                 "load_average_per_round": loads, "nice": os.getpriority(os.PRIO_PROCESS, 0)}
    for n, rs in samples.items():
        row = {"generated_tokens": rs[0]["generated_tokens"]}
        for key, nd in (("decode_tokens_per_s", 2), ("median_step_ms", 2), ("first_token_ms", 1)):
            vals = [r[key] for r in rs]
            row[key] = round(statistics.median(vals), nd)
            row[key + "_min_max"] = [round(min(vals), nd), round(max(vals), nd)]
        out[f"threads_{n}"] = row
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        return None


def run_child(args: argparse.Namespace, stage: str) -> dict:
    """Run one stage in a child process; its result, wall time and peak RSS."""
    cmd = [sys.executable, __file__, "--stage", stage] + sys.argv[1:]  # the child ignores --json
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    nice = args.decode_nice if stage.startswith("decode-") else None
    preexec = None if nice is None else (lambda: os.setpriority(os.PRIO_PROCESS, 0, nice))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=preexec)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    result = {"stage": stage, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "exit_code": rc, "load_before": round(load, 2), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
    if line:
        result.update(json.loads(line))
    print(f"[{stage}] {result['wall_s']} s, peak RSS {result['peak_rss_mb']} MB, exit {rc}", file=sys.stderr)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--formats", default="onnx,openvino")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=64, help="greedy tokens per decode measurement")
    p.add_argument("--threads", default="1,2", help="decode thread counts")
    p.add_argument("--rounds", type=int, default=3, help="interleaved decode rounds per thread count")
    p.add_argument("--precisions", default="fp32", help="fp32,int8,int4 (weight-only; exports and decodes each)")
    p.add_argument("--quant", action="append", default=[], metavar="KEY=VALUE",
                   help="a quantization option of the format's LM exporter for int8/int4 (e.g. head=quantized, "
                        "accuracy_level=4); repeatable; such artifacts go to out-<precision>-<--quant-tag>/")
    p.add_argument("--quant-tag", default=None, help="names the --quant variant (default: q)")
    p.add_argument("--decode-nice", type=int, default=None, metavar="N",
                   help="scheduling priority of the decode stages (negative needs root)")
    p.add_argument("--no-validate", action="store_true")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=6656)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of the stages to run (default: all); with --json the results "
                        "are merged into the file's earlier ones, stage by stage")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, metavar="FILE", help="write the results here")
    args = p.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if args.stage:
        if args.stage == "build":
            res = stage_build(args)
        elif args.stage == "import":
            res = stage_import(args)
        elif args.stage.startswith("export-"):
            res = stage_export(args, args.stage[7:])
        elif args.stage.startswith("decode-"):
            res = stage_decode(args, args.stage[7:])
        else:
            raise SystemExit(f"unknown stage {args.stage}")
        print(json.dumps(res))
        return 0
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    precs = [q for q in args.precisions.split(",") if q]
    names = [f if q == "fp32" else f"{f}-{_variant(args, q)}" for f in formats for q in precs]
    stages = ["build", "import"] + [f"export-{n}" for n in names] + [f"decode-{n}" for n in names]
    if args.stages:
        wanted = [s for s in args.stages.split(",") if s]
        unknown = sorted(set(wanted) - set(stages))
        if unknown:
            raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(stages)}")
        stages = [s for s in stages if s in wanted]
    results = {"machine": platform.platform(), "cpu_model": _cpu_model(), "cpus": os.cpu_count(),
               "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:], "stages": []}
    if args.json and args.stages and Path(args.json).exists():
        results["stages"] = [r for r in json.loads(Path(args.json).read_text()).get("stages", [])
                             if r.get("stage") not in stages]
    for stage in stages:
        results["stages"].append(run_child(args, stage))
    text = json.dumps(results, indent=2)
    if args.json:
        from staredge.fileio import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
