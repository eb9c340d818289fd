"""LM decode benchmark: ``staredge bench star_lm_pydoc --task generate``.

Per runtime (every exported LM format, through the same ``staredge.generation.stream`` loop
users call) and per thread count: prefill tokens/s, decode tokens/s, milliseconds per token
(median and p90 of the time between consecutive sampled tokens), first-token latency and the
decode state's bytes, at a 64-token prompt and 256 new tokens (greedy, EOS ignored so every
run decodes exactly 256 tokens). Two baselines are measured in the same run:

* ``pytorch-eager``: StarEdge's own stream of the same model in PyTorch eager mode;
* ``transformers``: Hugging Face ``LlamaForCausalLM.generate()`` (greedy, KV cache) on a
  Llama with random weights, the STAR model's vocabulary and width, and as close to its
  non-embedding parameter count as whole layers and an intermediate size allow.

Decode speed against context length (prompts of 64 … max_context - 17 tokens, 16 timed
decode steps each) shows the cost of the exported graphs' fixed state buffers.

The result document is the ``staredge-bench`` JSON (``docs/bench-format.md``): the usual top
level with ``results: []`` and the generation results under ``generation_results`` /
``decode_vs_context`` (see the "Generation results" section there).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from staredge.errors import ConfigError

BASELINES = ("pytorch-eager", "transformers")


def lm_runtimes() -> dict[str, str]:
    """Runtimes timed by default → the LM format each runs, from the format table: every
    runtime with a text-generation backend that runs a format with an LM exporter, except
    Apple-only ones (off macOS their reference executor is not meant to be timed)."""
    from staredge.formats import FORMATS, RUNTIMES

    out = {}
    for name, spec in RUNTIMES.items():
        fmt = next((f for f in spec.formats if f in FORMATS and FORMATS[f].lm_exporter), None)
        if fmt is not None and spec.text_backend is not None and not spec.apple_only:
            out[name] = fmt
    return out


#: Runtimes measured by default (those installed are used), then the two baselines.
LM_RUNTIMES = tuple(lm_runtimes())
PROMPT_TEXT = ("The import statement combines two operations; it searches for the named module, then it "
               "binds the results of that search to a name in the local scope. ")


def prompt_ids(n: int) -> list[int]:
    """``n`` token ids: BOS then the UTF-8 bytes of a fixed English prompt (repeated as needed)."""
    data = (PROMPT_TEXT * (1 + n // len(PROMPT_TEXT))).encode("utf-8")
    return [256] + list(data[: n - 1])


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summarize_stream(stats: Any) -> dict[str, Any]:
    """Numbers of one stream (a :class:`staredge.generation.StreamStats`)."""
    gaps = list(np.diff(stats.token_t) * 1000.0)
    return {
        "prompt_tokens": stats.prompt_tokens,
        "new_tokens": stats.generated_tokens,
        "prefill_tokens_per_s": stats.prompt_tokens / stats.prefill_s,
        "decode_tokens_per_s": (len(gaps) / ((stats.token_t[-1] - stats.token_t[0]))) if gaps else float("nan"),
        "first_token_ms": stats.first_token_s * 1000.0,
        "ms_per_token": gaps,
        "graph_ms_per_step": [t * 1000.0 for t in stats.step_s],
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over runs for the rates; median/p90 over every token of every run."""
    if not runs:
        raise ConfigError("no runs to combine; repeats must be >= 1")
    gaps = [g for r in runs for g in r["ms_per_token"]]
    steps = [g for r in runs for g in r["graph_ms_per_step"]]
    return {
        "runs": len(runs),
        "prompt_tokens": runs[0]["prompt_tokens"],
        "new_tokens": runs[0]["new_tokens"],
        "prefill_tokens_per_s": statistics.median(r["prefill_tokens_per_s"] for r in runs),
        "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
        "ms_per_token_median": _pct(gaps, 50),
        "ms_per_token_p90": _pct(gaps, 90),
        "graph_ms_per_step_median": _pct(steps, 50),
        "first_token_ms": statistics.median(r["first_token_ms"] for r in runs),
    }


# ------------------------------------------------------------------------------ StarEdge streams


def _stream_once(model: Any, prompt_len: int, new_tokens: int) -> dict[str, Any]:
    from staredge.generation import stream

    s = stream(model, prompt_ids(prompt_len), max_new_tokens=new_tokens, temperature=0, add_bos=False,
               ignore_eos=True)
    for _ in s:
        pass
    if s.stats.generated_tokens != new_tokens:
        raise ConfigError(f"expected {new_tokens} tokens, got {s.stats.generated_tokens} ({s.stats.finish_reason})")
    return summarize_stream(s.stats)


def measure_streams(model: Any, prompt_len: int, new_tokens: int, repeats: int, warmup_tokens: int = 16) -> dict[str, Any]:
    """Warm up once, then ``repeats`` full streams; :func:`combine` of them."""
    _stream_once(model, prompt_len, warmup_tokens)
    return combine([_stream_once(model, prompt_len, new_tokens) for _ in range(repeats)])


def decode_vs_context(model: Any, max_context: int, lengths: list[int], steps: int = 16) -> list[dict[str, Any]]:
    """Median ms per decode step after prompts of each length (greedy, EOS ignored)."""
    from staredge.generation import stream

    out = []
    for n in lengths:
        if n + steps > max_context:
            continue
        s = stream(model, prompt_ids(n), max_new_tokens=steps + 1, temperature=0, add_bos=False, ignore_eos=True)
        for _ in s:
            pass
        gaps = list(np.diff(s.stats.token_t) * 1000.0)
        out.append({"context": n, "ms_per_token_median": _pct(gaps, 50)})
    return out


# ------------------------------------------------------------------------------ transformers


def matched_llama_config(star_model: Any, depth: int | None = None) -> tuple[Any, int, int]:
    """A LlamaConfig with the STAR model's vocabulary and width whose non-embedding parameter
    count is as close as possible to the STAR model's (same depth, intermediate size solved
    for); returns (config, llama non-embedding params, STAR non-embedding params)."""
    from transformers import LlamaConfig

    star_params = sum(p.numel() for p in star_model.parameters()) - star_model.vocab_size * star_model.dim
    d, layers = star_model.dim, int(depth or star_model.depth)
    heads = max(1, d // 32)
    per_layer_fixed = 4 * d * d + 2 * d
    inter = max(1, round((star_params - d - layers * per_layer_fixed) / (layers * 3 * d)))
    llama_params = layers * (per_layer_fixed + 3 * d * inter) + d
    config = LlamaConfig(vocab_size=star_model.vocab_size, hidden_size=d, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=star_model.max_seq_len, tie_word_embeddings=True,
                         bos_token_id=256, eos_token_id=257, pad_token_id=258)
    return config, llama_params, star_params


class _Clock:
    """A logits processor that only records when each new token's logits arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def measure_transformers(llama: Any, prompt_len: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    """``generate()`` timings in the same terms as :func:`summarize_stream`."""
    import torch
    from transformers import LogitsProcessorList

    ids = torch.tensor([prompt_ids(prompt_len)])

    def once(n: int) -> dict[str, Any]:
        clock = _Clock()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, use_cache=True, logits_processor=LogitsProcessorList([clock]),
                                 pad_token_id=258)
        end = time.perf_counter()
        assert out.shape[1] == prompt_len + n
        t = clock.times + [end]  # the last token is sampled after its logits; close the series
        gaps = list(np.diff(t[:n]) * 1000.0)
        return {"prompt_tokens": prompt_len, "new_tokens": n,
                "prefill_tokens_per_s": prompt_len / (t[0] - t0),
                "decode_tokens_per_s": len(gaps) / (t[n - 1] - t[0]) if gaps else float("nan"),
                "first_token_ms": (t[0] - t0) * 1000.0, "ms_per_token": gaps, "graph_ms_per_step": []}

    once(16)
    return combine([once(new_tokens) for _ in range(repeats)])


def transformers_vs_context(llama: Any, max_context: int, lengths: list[int], steps: int = 16) -> list[dict[str, Any]]:
    import torch
    from transformers import LogitsProcessorList

    out = []
    for n in lengths:
        if n + steps > max_context:
            continue
        clock = _Clock()
        ids = torch.tensor([prompt_ids(n)])
        with torch.no_grad():
            llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps + 1,
                           min_new_tokens=steps + 1, do_sample=False, logits_processor=LogitsProcessorList([clock]),
                           pad_token_id=258)
        out.append({"context": n, "ms_per_token_median": _pct(list(np.diff(clock.times) * 1000.0), 50)})
    return out


# ------------------------------------------------------------------------------ the run


def ensure_artifacts(model_name: str, workdir: Path, runtimes: list[str], max_context: int | None) -> dict[str, Path]:
    """Exported artifacts per runtime in ``workdir`` (exported, and validated, when missing)."""
    from staredge.exporters.lm_export import export_lm
    from staredge.exporters.lm_graph import resolve_max_context
    from staredge.formats import FORMATS, TEXT_GENERATION, get_runtime
    from staredge.generation import load_lm

    model = load_lm(model_name).model
    ctx = resolve_max_context(model, max_context)
    table = lm_runtimes()
    fmt_of = {r: table.get(r) or next(f for f in get_runtime(r).formats if FORMATS[f].lm_exporter) for r in runtimes}
    paths = {r: FORMATS[fmt_of[r]].task_paths(TEXT_GENERATION, workdir, f"{model_name}_ctx{ctx}")[1] for r in runtimes}
    missing = [fmt_of[r] for r, p in paths.items() if not p.exists()]
    if missing:
        for row in export_lm(model_name, missing, workdir, max_context=ctx, force=True):
            if not row.get("passed"):
                raise ConfigError(f"export of {row['format']} failed: {row.get('error')}")
    return paths


def run_generate_bench(model_name: str = "star_lm_pydoc", runtimes: list[str] | None = None,
                       threads: list[int] | None = None, prompt_len: int = 64, new_tokens: int = 256,
                       repeats: int = 3, workdir: str | Path | None = None, max_context: int | None = None,
                       baselines: bool = True, context_curve: bool = True,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything (see the module doc); returns the result document (a dict)."""
    import tempfile

    import torch

    from staredge.bench.machine import machine_info
    from staredge.formats import RUNTIMES
    from staredge.generation import load_lm
    from staredge.runtimes import load_backend

    say = progress or (lambda msg: None)
    runtimes = [r for r in (runtimes or tuple(lm_runtimes())) if RUNTIMES[r].available()]
    threads = threads or [1, 2]
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="staredge-lmbench-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"artifacts in {work}")
    paths = ensure_artifacts(model_name, work, runtimes, max_context)
    lm = load_lm(model_name)
    star = lm.model
    results: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    machine = machine_info()
    llama = None
    llama_info: dict[str, Any] = {}
    if baselines:
        import transformers

        config, llama_params, star_params = matched_llama_config(star)
        torch.manual_seed(0)
        llama = transformers.LlamaForCausalLM(config).eval()
        llama_info = {"transformers": transformers.__version__, "llama_non_embedding_params": llama_params,
                      "star_non_embedding_params": star_params, "layers": config.num_hidden_layers,
                      "hidden": config.hidden_size, "intermediate": config.intermediate_size,
                      "heads": config.num_attention_heads, "vocab_size": config.vocab_size}
    state_bytes = None
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for r in runtimes:
            say(f"{r} threads={n_threads}")
            backend = load_backend(paths[r], backend=r, threads=n_threads, device="cpu")
            state_bytes = backend.state_bytes
            row = {"runtime": r, "kind": "artifact", "threads": n_threads, "artifact": paths[r].name,
                   "max_context": backend.max_seq_len, "state_bytes": backend.state_bytes,
                   **measure_streams(backend, prompt_len, new_tokens, repeats)}
            results.append(row)
            if context_curve and n_threads == threads[0]:
                say(f"{r} decode vs context")
                curves[r] = decode_vs_context(backend, backend.max_seq_len, _lengths(backend.max_seq_len))
            backend.close()
        if baselines:
            say(f"pytorch-eager threads={n_threads}")
            results.append({"runtime": "pytorch-eager", "kind": "baseline", "threads": n_threads,
                            "max_context": star.max_seq_len,
                            "state_bytes": None, **measure_streams(star, prompt_len, new_tokens, repeats)})
            say(f"transformers threads={n_threads}")
            results.append({"runtime": "transformers", "kind": "baseline", "threads": n_threads,
                            "max_context": llama.config.max_position_embeddings, "state_bytes": None,
                            **measure_transformers(llama, prompt_len, new_tokens, repeats)})
            if context_curve and n_threads == threads[0]:
                ctx = star.max_seq_len
                say("baselines decode vs context")
                curves["pytorch-eager"] = decode_vs_context(star, ctx, _lengths(ctx))
                curves["transformers"] = transformers_vs_context(llama, ctx, _lengths(ctx))
    for row in results:
        base = {b: next((x for x in results if x["runtime"] == b and x["threads"] == row["threads"]), None)
                for b in BASELINES}
        for b, x in base.items():
            if x is not None:
                # from the median time per token: robust to other processes on a shared machine
                row[f"decode_speedup_vs_{b.replace('-', '_')}"] = x["ms_per_token_median"] / row["ms_per_token_median"]
                row[f"decode_rate_ratio_vs_{b.replace('-', '_')}"] = row["decode_tokens_per_s"] / x["decode_tokens_per_s"]
    return {
        "schema": "staredge-bench",
        "schema_version": 1,
        "tool": "staredge bench --task generate",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": True,
        "notes": [f"greedy, EOS ignored, prompt {prompt_len} tokens, {new_tokens} new tokens, {repeats} runs each; "
                  "GPU paths (ONNX Runtime CUDA, PyTorch CUDA) exist but were not timed here (no GPU)"],
        "machines": {"this": machine},
        "protocols": {"generate": {"task": "generate", "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                                   "repeats": repeats, "threads": threads, "sampling": "greedy",
                                   "warmup_tokens": 16}},
        "results": [],
        "generation": {"model": model_name, "state_bytes": state_bytes, "llama_baseline": llama_info},
        "generation_results": results,
        "decode_vs_context": curves,
    }


def _lengths(max_context: int) -> list[int]:
    points = [64, 128, 256, 512, 768, max_context - 17]
    return sorted({p for p in points if 1 <= p <= max_context - 17})


def markdown_table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (one row per runtime and thread count)."""
    lines = ["| runtime | threads | prefill tok/s | decode tok/s | ms/token median | ms/token p90 | first token ms "
             "| state bytes | × PyTorch eager | × transformers |",  # speedups: ratio of median ms/token
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["generation_results"]:
        sb = f"{r['state_bytes']:,}" if r.get("state_bytes") else "grows"
        lines.append(
            f"| {r['runtime']} | {r['threads']} | {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.0f} "
            f"| {r['ms_per_token_median']:.2f} | {r['ms_per_token_p90']:.2f} | {r['first_token_ms']:.1f} | {sb} "
            f"| {r.get('decode_speedup_vs_pytorch_eager', float('nan')):.1f} "
            f"| {r.get('decode_speedup_vs_transformers', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def plot_decode_vs_context(doc: dict[str, Any], path: str | Path) -> Path:
    """Line plot: median ms per decode step against context length, one line per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in doc["decode_vs_context"].items():
        if points:
            ax.plot([p["context"] for p in points], [p["ms_per_token_median"] for p in points], marker="o", label=name)
    ax.set_xlabel("context length (tokens already in the state)")
    ax.set_ylabel("ms per decode step (median, log scale)")
    ax.set_yscale("log")
    ax.set_title(f"{doc['generation']['model']}: decode cost vs context (1 thread)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from staredge.fileio import atomic_write_with

    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    finally:
        plt.close(fig)


def run_cli(args: Any) -> int:
    """``staredge bench MODEL --task generate`` (``--threads``, ``--repeats``, ``--workdir``,
    ``--json``, ``--markdown``, ``--plot``, ``--no-baselines``, ``--backends``)."""
    import sys

    from staredge.fileio import atomic_write_json, atomic_write_text

    models = list(getattr(args, "models", None) or ["star_lm_pydoc"])
    if len(models) != 1:
        raise ConfigError("--task generate measures one language model at a time, e.g. star_lm_pydoc")
    threads = [int(t) for t in str(args.threads).split(",")] if getattr(args, "threads", None) else [1, 2]
    runtimes = None
    if getattr(args, "backends", None) and args.backends != "all":
        from staredge.formats import get_runtime

        runtimes = [get_runtime(b.strip()).name for b in args.backends.split(",") if b.strip()]
    err = getattr(getattr(args, "capture", None), "stderr", None) or sys.stderr
    doc = run_generate_bench(models[0], runtimes=runtimes, threads=threads, repeats=int(args.repeats or 3),
                             workdir=getattr(args, "workdir", None), baselines=not getattr(args, "no_baselines", False),
                             progress=lambda m: print(f"[bench generate] {m}", file=err, flush=True))
    table = markdown_table(doc)
    to_stdout = getattr(args, "json", None) == "-"  # --json with no FILE: the JSON only on stdout
    print(json.dumps(doc, indent=1) if to_stdout else table)
    force = bool(getattr(args, "force", False))
    if getattr(args, "json", None) and not to_stdout:
        atomic_write_json(Path(args.json), doc, force=force)
    if getattr(args, "markdown", None):
        atomic_write_text(Path(args.markdown), table, force=force)
    if getattr(args, "plot", None):
        plot_decode_vs_context(doc, args.plot)
    return 0


__all__ = ["run_generate_bench", "matched_llama_config", "markdown_table", "plot_decode_vs_context", "run_cli",
           "prompt_ids", "summarize_stream", "combine"]
