"""LM decode against the peers: the same Transformer++ (Llama-equivalent) architecture and
weights on StarEdge's runtimes, Hugging Face transformers, ONNX Runtime GenAI, and (when
installed) llama.cpp and OpenVINO GenAI. ``scripts/bench_lm_peers.py`` is the command;
``scripts/lfm2_peers.py`` times an LFM2 folder and its StarEdge artifacts the same way
(:func:`run_streams`).

The model is a STAR ``transformer_pp`` genome (SA-1 + SwiGLU pairs, RMSNorm pre-norm, RoPE
base 10000 rotate-half, head dim 64, no biases, tied embedding, byte vocabulary 259) with
seeded random weights; :func:`star_to_llama` maps it onto ``LlamaForCausalLM`` exactly
(one Llama layer per SA-1 + SwiGLU pair; ``tests/test_lm_peers.py`` checks the logits), and
:func:`write_llama_folder` saves that as a Hugging Face folder with a byte-level
``tokenizer.json`` (ids 0..255 = bytes, 256/257/258 = BOS/EOS/PAD), which the peers' own
converters take (ONNX Runtime GenAI's model builder; llama.cpp's ``convert_hf_to_gguf.py``;
optimum-intel for OpenVINO GenAI).

Every stream is greedy: a ``prompt`` -token prompt, then ``new_tokens`` tokens with EOS
ignored. Each runner lives in its own worker process (so its peak RSS is its own); rounds
are interleaved (every runner once per round, the order rotated per round) and the load
average is recorded before each round. Reported per runner and thread count: median over
rounds of ms/token (median of the stream's token gaps), first-token ms, decode tokens/s,
min/max over rounds, and the worker's peak RSS. A peer that is not installed is skipped
with the reason, never estimated.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError
from staredge.formats import FORMATS, RUNTIMES, get_runtime

#: Runner names: StarEdge's runtimes (``staredge-<runtime>[-<precision>]``) and the peers.
PEERS = ("pytorch-eager", "transformers", "ort-genai", "llama.cpp", "openvino-genai")
#: StarEdge runtime → the LM format it runs, read from the format table: every format with
#: an LM exporter whose default runtime runs off Apple platforms (ONNX Runtime, OpenVINO, LiteRT).
STAREDGE_RUNTIMES = {spec.runtime: name for name, spec in FORMATS.items()
                     if spec.lm_exporter and not RUNTIMES[spec.runtime].apple_only}


# ------------------------------------------------------------------ the shared model


def transformer_pp_model(dim: int = 128, layers: int = 5, max_seq_len: int = 1024, seed: int = 0):
    """A STAR Transformer++ LM (``layers`` SA-1 + SwiGLU pairs) with seeded random weights."""
    import torch

    from staredge.models.star import STARLanguageModel, transformer_pp

    torch.manual_seed(seed)
    model = STARLanguageModel(dim=dim, depth=2 * layers, genome=transformer_pp(dim, 2 * layers),
                              max_seq_len=max_seq_len).eval()
    with torch.no_grad():  # unit-scale norms with a little spread, so logits are not near-ties
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norms." in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model


def llama_config(model):
    """The ``LlamaConfig`` equal to a STAR Transformer++ model (raises ConfigError otherwise)."""
    from transformers import LlamaConfig

    from staredge.models.star import choices as C
    from staredge.models.star.liv import Attention, SwiGLU

    livs = list(model.backbone.livs)
    pairs = len(livs) // 2
    if len(livs) % 2 or not all(isinstance(livs[2 * i], Attention) and isinstance(livs[2 * i + 1], SwiGLU)
                                for i in range(pairs)):
        raise ConfigError("only a Transformer++ genome (SA-1, SwiGLU pairs) maps onto a Llama")
    att = livs[0]
    if att.differential or att.featurizer.kernel or getattr(att, "qk_norm", False) or any(
            a.shared_groups for a in livs):
        raise ConfigError("the Llama mapping needs plain SA-1 attention without sharing, convs or q/k norms")
    s = att.shape
    return LlamaConfig(vocab_size=model.vocab_size, hidden_size=model.dim,
                       intermediate_size=livs[1].out.in_features, num_hidden_layers=pairs,
                       num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, head_dim=s.head_dim,
                       max_position_embeddings=model.max_seq_len, rms_norm_eps=C.NORM_EPS,
                       rope_theta=C.ROPE_BASE, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
                       bos_token_id=C.BOS_ID, eos_token_id=C.EOS_ID, pad_token_id=C.PAD_ID)


def star_to_llama(model):
    """``LlamaForCausalLM`` with ``model``'s weights (same logits: tests/test_lm_peers.py)."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(model)
    llama = LlamaForCausalLM(config).eval()
    bb = model.backbone
    sd = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.head.weight}
    for i in range(config.num_hidden_layers):
        att, mlp = bb.livs[2 * i], bb.livs[2 * i + 1]
        pre = f"model.layers.{i}."
        sd.update({pre + "input_layernorm.weight": bb.norms[2 * i].weight,
                   pre + "post_attention_layernorm.weight": bb.norms[2 * i + 1].weight,
                   pre + "self_attn.q_proj.weight": att.featurizer.proj["q"].weight,
                   pre + "self_attn.k_proj.weight": att.featurizer.proj["k"].weight,
                   pre + "self_attn.v_proj.weight": att.featurizer.proj["v"].weight,
                   pre + "self_attn.o_proj.weight": att.out.weight,
                   pre + "mlp.gate_proj.weight": mlp.featurizer.proj["gate"].weight,
                   pre + "mlp.up_proj.weight": mlp.featurizer.proj["up"].weight,
                   pre + "mlp.down_proj.weight": mlp.out.weight})
    with torch.no_grad():
        missing, unexpected = llama.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise ConfigError(f"Llama mapping incomplete: missing {missing}, unexpected {unexpected}")
    return llama


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: printable Latin-1 bytes map to themselves, the others to
    code points from 256 up (the convention byte-level BPE tokenizers use)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def byte_tokenizer_json() -> str:
    """A ``tokenizer.json`` (byte-level BPE, no merges) whose ids are StarEdge's byte ids."""
    tokenizers = __import__("tokenizers")
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True) for t in ("<bos>", "<eos>", "<pad>")])
    return tok.to_str()


def write_llama_folder(model, folder: str | os.PathLike) -> Path:
    """Save ``model`` as a Hugging Face Llama folder (config, safetensors, byte tokenizer)."""
    folder = Path(folder)
    llama = star_to_llama(model)
    llama.save_pretrained(str(folder))
    (folder / "tokenizer.json").write_text(byte_tokenizer_json(), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "add_bos_token": False, "model_max_length": model.max_seq_len}, indent=1))
    return folder


# ------------------------------------------------------------------ one stream per runner


def _gaps_result(t0: float, times: list[float], prompt: int) -> dict[str, Any]:
    """Numbers of one stream from the times each new token became known."""
    gaps = list(np.diff(times) * 1000.0)
    return {"first_token_ms": (times[0] - t0) * 1000.0, "ms_per_token": float(np.median(gaps)),
            "decode_tokens_per_s": len(gaps) / (times[-1] - times[0]), "prefill_tokens_per_s": prompt / (times[0] - t0)}


class _StarEdge:
    """A StarEdge LM artifact streamed by ``staredge.generation.stream`` with its own
    tokenizer (the one its metadata records, else ``cfg["tokenizer_json"]``, else bytes)."""

    def __init__(self, cfg):
        from staredge.runtimes import load_backend
        from staredge.tokenizer import ByteTokenizer, HFTokenizer, load_artifact_tokenizer

        self.backend = load_backend(cfg["path"], threads=cfg["threads"], device="cpu")
        self.tokenizer = load_artifact_tokenizer(self.backend.path, self.backend.metadata.lm)
        if isinstance(self.tokenizer, ByteTokenizer) and cfg.get("tokenizer_json"):
            self.tokenizer = HFTokenizer(Path(cfg["tokenizer_json"]).read_text("utf-8"))

    def stream(self, ids, new):
        from staredge.bench.generate import summarize_stream
        from staredge.generation import stream

        s = stream(self.backend, ids, max_new_tokens=new, temperature=0, add_bos=False, ignore_eos=True,
                   tokenizer=self.tokenizer)
        for _ in s:
            pass
        r = summarize_stream(s.stats)
        return {"first_token_ms": r["first_token_ms"], "ms_per_token": float(np.median(r["ms_per_token"])),
                "decode_tokens_per_s": r["decode_tokens_per_s"], "prefill_tokens_per_s": r["prefill_tokens_per_s"]}


class _StarEdgeEager:
    """StarEdge's own stream of the same model in PyTorch eager mode (the issue's baseline)."""

    def __init__(self, cfg):
        import torch

        torch.set_num_threads(cfg["threads"])
        self.model = transformer_pp_model(cfg["dim"], cfg["layers"], max_seq_len=cfg["max_seq_len"], seed=cfg["seed"])

    def stream(self, ids, new):
        import torch

        from staredge.bench.generate import summarize_stream
        from staredge.generation import stream

        with torch.no_grad():
            s = stream(self.model, ids, max_new_tokens=new, temperature=0, add_bos=False, ignore_eos=True)
            for _ in s:
                pass
        r = summarize_stream(s.stats)
        return {"first_token_ms": r["first_token_ms"], "ms_per_token": float(np.median(r["ms_per_token"])),
                "decode_tokens_per_s": r["decode_tokens_per_s"], "prefill_tokens_per_s": r["prefill_tokens_per_s"]}


class _Transformers:
    def __init__(self, cfg):
        import torch
        from transformers import LlamaForCausalLM

        torch.set_num_threads(cfg["threads"])
        self.model = LlamaForCausalLM.from_pretrained(cfg["hf_dir"]).eval()

    def stream(self, ids, new):
        import torch
        from transformers import LogitsProcessorList

        from staredge.bench.generate import _Clock

        x = torch.tensor([ids])
        clock = _Clock()
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                                do_sample=False, use_cache=True, logits_processor=LogitsProcessorList([clock]),
                                pad_token_id=258)
        return _gaps_result(t0, clock.times, len(ids))


class _OrtGenAI:
    def __init__(self, cfg):
        import onnxruntime_genai as og

        config = og.Config(cfg["og_dir"])
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": cfg["threads"], "inter_op_num_threads": 1}}}}))
        self.og = og
        self.model = og.Model(config)

    def stream(self, ids, new):
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + new, min_length=len(ids) + new)
        t0 = time.perf_counter()
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray(ids, dtype=np.int32))
        times = []
        while not gen.is_done() and len(times) < new:
            gen.generate_next_token()
            gen.get_next_tokens()
            times.append(time.perf_counter())
        return _gaps_result(t0, times, len(ids))


def _add_llama_cpp_path(path: str | None) -> None:
    """Make a ``llama_cpp`` package installed elsewhere importable (appended to ``sys.path``:
    this environment's own packages still win)."""
    import sys

    if path and path not in sys.path:
        sys.path.append(path)


class _LlamaCpp:
    def __init__(self, cfg):
        _add_llama_cpp_path(cfg.get("llama_cpp_path"))
        from llama_cpp import Llama

        self.llm = Llama(model_path=cfg["gguf"], n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
                         n_ctx=cfg["n_ctx"], logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def last_logits(self) -> np.ndarray:
        """The logits of the last token evaluated (``Llama.scores`` is filled only with
        ``logits_all=True``, which would copy every prompt row: read llama.cpp's own)."""
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))

    def stream(self, ids, new):
        self.llm.reset()
        t0 = time.perf_counter()
        times = []
        self.llm.eval(list(ids))
        for _ in range(new):
            tok = int(np.argmax(self.last_logits()))
            times.append(time.perf_counter())
            self.llm.eval([tok])
        return _gaps_result(t0, times, len(ids))

    def greedy(self, ids, new) -> list[int]:
        """The greedy tokens after ``ids`` (for checking the GGUF against StarEdge's artifact)."""
        self.llm.reset()
        self.llm.eval(list(ids))
        out = []
        for _ in range(new):
            out.append(int(np.argmax(self.last_logits())))
            self.llm.eval([out[-1]])
        return out


class _OpenVinoGenAI:
    def __init__(self, cfg):
        import openvino_genai as ov_genai

        self.ov_genai = ov_genai
        self.pipe = ov_genai.LLMPipeline(cfg["ov_dir"], "CPU", INFERENCE_NUM_THREADS=cfg["threads"])

    def stream(self, ids, new):
        import openvino as ov

        times = []

        def streamer(_):
            times.append(time.perf_counter())
            return self.ov_genai.StreamingStatus.RUNNING

        config = self.ov_genai.GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False)
        t0 = time.perf_counter()
        self.pipe.generate(ov.Tensor(np.asarray([ids], dtype=np.int64)), config, streamer)
        return _gaps_result(t0, times, len(ids))


RUNNER_CLASSES = {"staredge": _StarEdge, "pytorch-eager": _StarEdgeEager, "transformers": _Transformers, "ort-genai": _OrtGenAI,
                  "llama.cpp": _LlamaCpp, "openvino-genai": _OpenVinoGenAI}


def peak_rss_mb() -> float:
    """This process's peak resident set (MB): ``VmHWM`` (reset by exec, unlike ``ru_maxrss``,
    which a spawned worker inherits from the parent it was forked from)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(kind: str, cfg: dict, conn) -> None:
    """One runner in its own process: load, then run a stream per request until ``None``."""
    try:
        runner = RUNNER_CLASSES[kind](cfg)
        conn.send({"ok": True})
    except Exception as exc:  # noqa: BLE001 - reported as the runner's skip reason
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    while True:
        msg = conn.recv()
        if msg is None:
            break
        try:
            r = runner.stream(msg["ids"], msg["new"])
            r["peak_rss_mb"] = peak_rss_mb()
            conn.send(r)
        except Exception as exc:  # noqa: BLE001
            conn.send({"error": f"{type(exc).__name__}: {exc}"})


def peer_availability(llama_cpp_path: str | None = None) -> dict[str, str | None]:
    """None for a peer that can run here, else why not (the note the report prints).
    ``llama_cpp_path``: a folder holding the ``llama_cpp`` package (e.g. a separate
    environment's site-packages), looked in after this environment's own."""
    import importlib.util

    def has(mod):
        if importlib.util.find_spec(mod) is not None:
            return True
        return bool(mod == "llama_cpp" and llama_cpp_path and (Path(llama_cpp_path) / "llama_cpp" / "__init__.py").exists())

    return {
        "pytorch-eager": None if has("torch") else "torch is not installed (pip install staredge[dev])",
        "transformers": None if has("transformers") else "transformers is not installed (pip install staredge[dev])",
        "ort-genai": None if has("onnxruntime_genai") else "onnxruntime-genai is not installed (pip install staredge[peers])",
        "llama.cpp": None if has("llama_cpp") else ("llama-cpp-python is not installed (it builds llama.cpp from source, "
                                                    "~15 min on 2 cores: pip install llama-cpp-python==0.3.36)"),
        "openvino-genai": None if has("openvino_genai") else (
            "openvino-genai is not installed; its IR comes from optimum-intel, which needs its own environment "
            "(transformers 5.5, torch 2.15): pass --ov-genai-dir with an exported folder"),
    }


def build_ort_genai(hf_dir: Path, out: Path, precision: str = "fp32") -> Path:
    """ONNX Runtime GenAI's model builder on a Hugging Face folder (``-p fp32|int8|int4 -e cpu``)."""
    import subprocess
    import sys

    if not (out / "genai_config.json").exists():
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(out.parent / "og_cache")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"onnxruntime-genai's builder failed: {proc.stderr.strip().splitlines()[-1:]}")
    return out


#: ``convert_hf_to_gguf.py`` identifies a BPE tokenizer by hashing how it splits a test
#: text and refuses one it does not know; the byte-level tokenizers written here are new to
#: it, so the converter runs with this pre-tokenizer name instead (the benchmark feeds token
#: ids, never text, so the pre-tokenizer is never used).
GGUF_PRE_TOKENIZER = "gpt-2"

#: A BPE vocabulary without merges (the byte tokenizer: every id one byte) loads in
#: llama.cpp only with a merges list present; the converter writes this placeholder merge
#: then (two byte symbols of the vocabulary; used only to tokenize text, which the
#: benchmark never does).
GGUF_PLACEHOLDER_MERGE = "\u0120 \u0120"

_GGUF_CONVERT = """
import runpy, sys
script, pre, merge = sys.argv[1], sys.argv[2], sys.argv[3]
if pre:
    import conversion.base as base
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
import gguf.vocab
_add = gguf.vocab.SpecialVocab.add_to_gguf
def add_to_gguf(self, gw, quiet=False):
    if self.load_merges and not self.merges:
        self.merges = [merge]
    return _add(self, gw, quiet)
gguf.vocab.SpecialVocab.add_to_gguf = add_to_gguf
sys.argv = [script] + sys.argv[4:]
runpy.run_path(script, run_name="__main__")
"""

#: llama.cpp file types (``llama_ftype``) of the GGUF quantisations used here.
GGUF_FTYPES = {"q8_0": 7, "q4_0": 2}

_GGUF_QUANTIZE = """
import sys
sys.path.append(sys.argv[1])
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[4])
params.nthread = 2
rc = llama_cpp.llama_model_quantize(sys.argv[2].encode(), sys.argv[3].encode(), params)
sys.exit(rc)
"""


def build_gguf(hf_dir: Path, out: Path, outtype: str, convert_script: str | None, *,
               pre_tokenizer: str | None = GGUF_PRE_TOKENIZER, llama_cpp_path: str | None = None) -> Path:
    """A GGUF file of ``hf_dir``: ``outtype`` f32 (or f16 / q8_0) straight from llama.cpp's
    ``convert_hf_to_gguf.py`` (its ``gguf-py`` beside it is put on the path), or q8_0 / q4_0
    through llama.cpp's own quantiser (``llama_model_quantize``, its default recipe for the
    file type) from the f32 file, which needs the ``llama_cpp`` package
    (``llama_cpp_path``)."""
    import subprocess
    import sys

    if out.exists():
        return out
    if outtype in GGUF_FTYPES:
        f32 = build_gguf(hf_dir, out.with_name(out.name.replace(f"_{outtype}.gguf", "_f32.gguf")), "f32",
                         convert_script, pre_tokenizer=pre_tokenizer)
        tmp = out.with_name(out.name + ".part")
        proc = subprocess.run([sys.executable, "-c", _GGUF_QUANTIZE, llama_cpp_path or "", str(f32), str(tmp),
                               str(GGUF_FTYPES[outtype])], capture_output=True, text=True)
        if proc.returncode != 0 or not tmp.exists():
            raise ConfigError(f"llama.cpp's quantiser failed ({outtype}): {proc.stderr.strip().splitlines()[-3:]}")
        os.replace(tmp, out)
        return out
    if not convert_script or not Path(convert_script).exists():
        raise ConfigError("llama.cpp's convert_hf_to_gguf.py was not found: pass --gguf-convert PATH "
                          "(vendor/llama.cpp/convert_hf_to_gguf.py in the llama-cpp-python sdist)")
    here = Path(convert_script).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(here), str(here / "gguf-py")] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
    tmp = out.with_name(out.name + ".part")
    proc = subprocess.run([sys.executable, "-c", _GGUF_CONVERT, str(convert_script), pre_tokenizer or "",
                           GGUF_PLACEHOLDER_MERGE, str(hf_dir), "--outfile", str(tmp), "--outtype", outtype],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not tmp.exists():
        raise ConfigError(f"convert_hf_to_gguf failed: {proc.stderr.strip().splitlines()[-3:]}")
    os.replace(tmp, out)
    return out


def run_streams(runners: list[tuple[str, str, dict]], *, threads: tuple[int, ...], ids: list[int],
                new_tokens: int, rounds: int, skipped: dict[str, str], log=print) -> tuple[list[dict], list[float]]:
    """Time ``runners`` (``(label, kind, cfg)``; each × ``threads`` in its own spawned worker
    process): one warm-up stream each, then ``rounds`` interleaved rounds (every worker once,
    the order rotated per round). Returns the rows (median over rounds of the per-stream
    median ms/token, min–max, tokens/s, first-token ms, peak RSS) and the load average
    before each round and after the last. A worker that fails to load is put in
    ``skipped`` with its error."""
    ctx = mp.get_context("spawn")
    workers = {}
    for label, kind, cfg in runners:
        for n in threads:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(kind, {**cfg, "threads": n}, child), daemon=True)
            proc.start()
            ready = parent.recv()
            if not ready["ok"]:
                skipped[f"{label}@{n}"] = ready["error"]
                proc.join(5)
                continue
            workers[(label, n)] = (proc, parent)
    for key, (proc, conn) in workers.items():  # warm-up stream (not recorded); a failure stops here
        conn.send({"ids": ids, "new": min(16, new_tokens)})
        r = conn.recv()
        if "error" in r:
            raise ConfigError(f"{key[0]} ({key[1]} threads) failed in its warm-up stream: {r['error']}")
    samples: dict = {k: [] for k in workers}
    loads = []
    keys = list(workers)
    for rnd in range(rounds):
        loads.append(os.getloadavg()[0])
        shift = rnd % max(1, len(keys))
        for key in keys[shift:] + keys[:shift]:
            _, conn = workers[key]
            conn.send({"ids": ids, "new": new_tokens})
            r = conn.recv()
            if "error" in r:
                raise ConfigError(f"{key[0]} ({key[1]} threads) failed: {r['error']}")
            samples[key].append(r)
        log(f"round {rnd + 1}/{rounds}: load {loads[-1]:.2f}")
    loads.append(os.getloadavg()[0])
    for proc, conn in workers.values():
        conn.send(None)
        proc.join(10)
    rows = []
    for (label, n), rs in samples.items():
        ms = [r["ms_per_token"] for r in rs]
        rows.append({"runner": label, "threads": n, "ms_per_token_median": statistics.median(ms),
                     "ms_per_token_min": min(ms), "ms_per_token_max": max(ms),
                     "first_token_ms_median": statistics.median(r["first_token_ms"] for r in rs),
                     "tokens_per_s_median": statistics.median(r["decode_tokens_per_s"] for r in rs),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "rounds": ms})
    return rows, loads


def _ort_profile_summary(profile_json: str | os.PathLike, steps: int) -> dict[str, Any]:
    """Per-step time from an ONNX Runtime profile: every ``model_run`` and every node's kernel
    time, by operator type, for the last ``steps`` runs (the decode steps)."""
    events = json.loads(Path(profile_json).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs = runs[-steps:]
    if not runs:
        raise ConfigError(f"no model_run event in {profile_json}")
    start = runs[0]["ts"]
    by_op: dict[str, float] = {}
    nodes = 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"]
            nodes += 1
    n = len(runs)
    return {"steps": n, "model_run_ms_per_step": sum(r["dur"] for r in runs) / n / 1000.0,
            "kernel_ms_per_step": sum(by_op.values()) / n / 1000.0, "nodes_run_per_step": nodes / n,
            "by_op_ms_per_step": {k: round(v / n / 1000.0, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}}


def onnx_decode_profile(path: str | os.PathLike, *, threads: int = 1, prompt: int = 64, new_tokens: int = 256,
                        workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where a decode step's time goes inside ONNX Runtime: ``path`` is a StarEdge ONNX LM
    artifact (run by StarEdge's stepper, IO-bound buffers) or an ONNX Runtime GenAI folder
    (run by its generator, profiling switched on in its ``session_options``). ONNX
    Runtime's profiler records each ``model_run`` and each node's kernel time; the result is
    per decode step: the whole run, the sum of kernel times (the rest is the runtime's
    per-run and per-node overhead: binding, allocation, scheduling) and the kernel time by
    operator type. Greedy, ``prompt`` byte ids then ``new_tokens`` steps, ``threads`` intra-op
    threads. The profiler adds its own overhead, so compare shares, not absolute times, with
    the benchmark's."""
    import shutil
    import tempfile

    from staredge.bench.generate import prompt_ids

    ids = prompt_ids(prompt)
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix="ort_profile_", dir=workdir))
    try:
        if path.is_dir():
            import onnxruntime_genai as og

            folder = tmp / "og"
            shutil.copytree(path, folder)
            cfg = json.loads((folder / "genai_config.json").read_text())
            cfg["model"]["decoder"]["session_options"].update(
                {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "enable_profiling": str(tmp / "p")})
            (folder / "genai_config.json").write_text(json.dumps(cfg))
            model = og.Model(og.Config(str(folder)))
            params = og.GeneratorParams(model)
            params.set_search_options(do_sample=False, max_length=prompt + new_tokens, min_length=prompt + new_tokens)
            gen = og.Generator(model, params)
            gen.append_tokens(np.asarray(ids, dtype=np.int32))
            steps = 0
            while not gen.is_done() and steps < new_tokens - 1:
                gen.generate_next_token()
                steps += 1
            del gen, params, model  # the session writes its profile when it is destroyed
            found = sorted(tmp.glob("p*.json"))
        else:
            from staredge.runtimes.onnxruntime import OnnxRuntimeEngine
            from staredge.runtimes.onnxruntime_lm import OnnxRuntimeLM

            engine = OnnxRuntimeEngine(path, "cpu", threads, tensorrt=False, profile_prefix=str(tmp / "p"))
            lm = OnnxRuntimeLM(path, engine=engine)
            lm.reset()
            logits = lm.prefill(list(ids))
            steps = new_tokens - 1
            for _ in range(steps):
                token = int(np.argmax(logits[-1]))
                logits = lm.step([token])
            found = [Path(engine.session.end_profiling())]
        if not found or not found[-1].exists():
            raise ConfigError(f"ONNX Runtime wrote no profile for {path}")
        out = _ort_profile_summary(found[-1], steps)
        out["path"] = str(path)
        out["threads"] = threads
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_peers_bench(*, dim: int = 128, layers: int = 5, seed: int = 0, prompt: int = 64, new_tokens: int = 256,
                    rounds: int = 5, threads: tuple[int, ...] = (1, 2), workdir: str | os.PathLike = "exports/peers",
                    staredge: tuple[str, ...] = tuple(STAREDGE_RUNTIMES),
                    precisions: tuple[str, ...] = ("fp32",), peers: tuple[str, ...] = ("transformers", "ort-genai"),
                    gguf_convert: str | None = None, ov_genai_dir: str | None = None,
                    llama_cpp_path: str | None = None, profile: bool = False,
                    quantization: dict[str, Any] | None = None, quant_tag: str = "q", log=print) -> dict[str, Any]:
    """Run the benchmark (see the module doc); returns the result document.
    ``quantization``: options of the formats' LM quantisers (e.g. ``{"accuracy_level": 4}``
    for ONNX); each int8/int4 StarEdge artifact whose format takes them all gets a second
    variant with them, runner ``staredge-<runtime>-<quant_tag>-<precision>``. ``profile``:
    afterwards, :func:`onnx_decode_profile` of every ONNX runner (StarEdge's ONNX artifacts,
    ONNX Runtime GenAI's folders) at 1 thread, under ``"profiles"``."""
    from staredge.bench.generate import prompt_ids
    from staredge.formats import TEXT_GENERATION, get_format

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    max_ctx = max(prompt + new_tokens + 1, 32)
    model = transformer_pp_model(dim, layers, max_seq_len=max(max_ctx, 512), seed=seed)
    hf_dir = work / f"llama_d{dim}_l{layers}_s{seed}"
    if not (hf_dir / "config.json").exists():
        write_llama_folder(model, hf_dir)
    avail = peer_availability(llama_cpp_path)
    skipped: dict[str, str] = {}
    runners: list[tuple[str, str, dict]] = []  # (label, kind, cfg without threads)
    for rt in staredge:
        rt = get_runtime(rt).name
        if rt not in STAREDGE_RUNTIMES:
            raise ConfigError(f"{rt} does not run StarEdge LM artifacts here; choose from {', '.join(STAREDGE_RUNTIMES)}")
        fmt = STAREDGE_RUNTIMES[rt]
        for prec in precisions:
            if prec not in get_format(fmt).precisions_for(TEXT_GENERATION):
                skipped[f"staredge-{rt}-{prec}"] = f"{fmt} LM artifacts do not take {prec}"
                continue
            suffix = get_format(fmt).suffixes[0]
            path = work / f"star_tpp_d{dim}_l{layers}_s{seed}_ctx{max_ctx}_{prec}{suffix}"
            if not path.exists():
                get_format(fmt).lm_exporter_function()(model, path, max_context=max_ctx, name="transformer_pp_peer",
                                                       prefill_chunk=16, **({"precision": prec} if prec != "fp32" else {}))
            runners.append((f"staredge-{rt}" + ("" if prec == "fp32" else f"-{prec}"), "staredge", {"path": str(path)}))
            if quantization and prec != "fp32":
                unknown = sorted(set(quantization) - set(get_format(fmt).lm_quant_options))
                if unknown:
                    skipped[f"staredge-{rt}-{quant_tag}-{prec}"] = (
                        f"{fmt} LM quantisation takes {', '.join(get_format(fmt).lm_quant_options)}, not {', '.join(unknown)}")
                    continue
                qpath = path.with_name(f"{path.stem}_{quant_tag}{suffix}")
                if not qpath.exists():
                    get_format(fmt).lm_exporter_function()(model, qpath, max_context=max_ctx, name="transformer_pp_peer",
                                                           prefill_chunk=16, precision=prec, quantization=dict(quantization))
                runners.append((f"staredge-{rt}-{quant_tag}-{prec}", "staredge", {"path": str(qpath)}))
    for peer in peers:
        if avail.get(peer):
            skipped[peer] = avail[peer]
            continue
        try:
            if peer == "pytorch-eager":
                runners.append(("staredge-pytorch-eager", "pytorch-eager", {"dim": dim, "layers": layers, "seed": seed,
                                                                            "max_seq_len": max(max_ctx, 512)}))
            elif peer == "transformers":
                runners.append(("transformers", "transformers", {"hf_dir": str(hf_dir)}))
            elif peer == "ort-genai":
                for prec in precisions:
                    p = prec  # the builder's CPU precisions include fp32, int8 and int4
                    og_dir = build_ort_genai(hf_dir, work / f"og_{hf_dir.name}_{p}", p)
                    runners.append(("ort-genai" + ("" if p == "fp32" else f"-{p}"), "ort-genai", {"og_dir": str(og_dir)}))
            elif peer == "llama.cpp":
                for prec in precisions:
                    t = {"fp32": "f32", "int8": "q8_0", "int4": "q4_0"}[prec]
                    gguf = build_gguf(hf_dir, work / f"{hf_dir.name}_{t}.gguf", t, gguf_convert,
                                      llama_cpp_path=llama_cpp_path)
                    runners.append((f"llama.cpp-{t}", "llama.cpp", {"gguf": str(gguf), "n_ctx": max_ctx,
                                                                    "llama_cpp_path": llama_cpp_path}))
            elif peer == "openvino-genai":
                if not ov_genai_dir:
                    raise ConfigError("pass --ov-genai-dir (optimum-cli export openvino --task text-generation-with-past "
                                      f"{hf_dir} OUT, in a separate environment)")
                runners.append(("openvino-genai", "openvino-genai", {"ov_dir": ov_genai_dir}))
        except ConfigError as exc:
            skipped[peer] = str(exc)
    rows, loads = run_streams(runners, threads=threads, ids=prompt_ids(prompt), new_tokens=new_tokens,
                              rounds=rounds, skipped=skipped, log=log)
    profiles = {}
    if profile:
        for label, kind, cfg in runners:
            target = cfg.get("og_dir") if kind == "ort-genai" else cfg.get("path")
            if target and (kind == "ort-genai" or str(target).endswith(get_format(STAREDGE_RUNTIMES["onnxruntime"]).suffixes[0])):
                log(f"profiling {label} (1 thread)")
                profiles[label] = onnx_decode_profile(target, threads=1, prompt=prompt, new_tokens=new_tokens)
    return {"what": "LM decode vs peers (staredge.bench.peers)", "dim": dim, "llama_layers": layers,
            "star_livs": 2 * layers, "params_excluding_embeddings": sum(p.numel() for p in model.parameters())
            - model.vocab_size * model.dim, "prompt_tokens": prompt, "new_tokens": new_tokens, "rounds": rounds,
            "threads": list(threads), "load_average_per_round": [round(x, 2) for x in loads],
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
            "nice": os.getpriority(os.PRIO_PROCESS, 0), "rows": rows, "skipped": skipped,
            **({"quantization": {quant_tag: quantization}} if quantization else {}),
            "artifacts": {label: cfg.get("path") or cfg.get("og_dir") or cfg.get("gguf") for label, _, cfg in runners
                          if cfg.get("path") or cfg.get("og_dir") or cfg.get("gguf")},
            "ratios": ratios(rows), **({"profiles": profiles} if profiles else {})}


#: The precision of a runner label (``staredge-onnxruntime-int8``, ``ort-genai-int4``,
#: ``llama.cpp-q8_0``; fp32 where the label names none).
_LABEL_PRECISION = {"f32": "fp32", "q8_0": "int8", "q4_0": "int4", "int8": "int8", "int4": "int4"}


def _precision_of(label: str) -> str:
    """The first part of ``label`` (split at ``-``) that names a precision, else fp32
    (``staredge-onnx-int8-acc4`` and ``staredge-onnxruntime-acc4-int8`` are both int8)."""
    return next((_LABEL_PRECISION[p] for p in label.split("-") if p in _LABEL_PRECISION), "fp32")


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per thread count and precision: StarEdge's fastest exported runtime (by median
    ms/token) against ONNX Runtime GenAI and llama.cpp at the same precision (ms/token
    ratio, StarEdge / peer: ≤ 1.0 is "not slower") and against StarEdge's PyTorch eager
    stream (fp32; speed-up, eager / StarEdge: the issue's target is ≥ 5)."""
    out = []
    for n in sorted({r["threads"] for r in rows}):
        here = [r for r in rows if r["threads"] == n]
        eager = next((r for r in here if r["runner"] == "staredge-pytorch-eager"), None)
        for prec in ("fp32", "int8", "int4"):
            ours = [r for r in here if r["runner"].startswith("staredge-") and r["runner"] != "staredge-pytorch-eager"
                    and _precision_of(r["runner"]) == prec]
            if not ours:
                continue
            best = min(ours, key=lambda r: r["ms_per_token_median"])
            row = {"threads": n, "precision": prec, "staredge_best": best["runner"],
                   "staredge_ms_per_token": best["ms_per_token_median"]}
            for peer in ("ort-genai", "llama.cpp"):
                match = [r for r in here if r["runner"].startswith(peer) and _precision_of(r["runner"]) == prec]
                if match:
                    row[f"{peer}_ms_per_token"] = match[0]["ms_per_token_median"]
                    row[f"vs_{peer}"] = best["ms_per_token_median"] / match[0]["ms_per_token_median"]
            if eager:
                row["eager_ms_per_token"] = eager["ms_per_token_median"]
                row["speedup_vs_eager"] = eager["ms_per_token_median"] / best["ms_per_token_median"]
            out.append(row)
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The result as a markdown table (plus the skipped peers)."""
    lines = ["| runner | threads | ms/token median (min–max) | tokens/s | first token ms | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in sorted(doc["rows"], key=lambda r: (r["threads"], r["ms_per_token_median"])):
        lines.append(f"| {r['runner']} | {r['threads']} | {r['ms_per_token_median']:.3f} "
                     f"({r['ms_per_token_min']:.3f}–{r['ms_per_token_max']:.3f}) | {r['tokens_per_s_median']:.0f} | "
                     f"{r['first_token_ms_median']:.1f} | {r['peak_rss_mb']:.0f} |")
    for k, why in doc["skipped"].items():
        lines.append(f"\nskipped {k}: {why}")
    lines.append(f"\nload average per round: {doc['load_average_per_round']}")
    if doc.get("ratios"):
        lines += ["", "| threads | precision | StarEdge best | ms/token | × ORT GenAI | × llama.cpp | speed-up over eager |",
                  "|---|---|---|---|---|---|---|"]
        for r in doc["ratios"]:
            def fmt(key, unit="×"):
                return f"{r[key]:.2f}{unit}" if key in r else "—"
            lines.append(f"| {r['threads']} | {r['precision']} | {r['staredge_best']} | {r['staredge_ms_per_token']:.3f} | "
                         f"{fmt('vs_ort-genai')} | {fmt('vs_llama.cpp')} | {fmt('speedup_vs_eager')} |")
    for label, prof in doc.get("profiles", {}).items():
        top = ", ".join(f"{k} {v:.3f}" for k, v in list(prof["by_op_ms_per_step"].items())[:8])
        lines.append(f"\nprofile {label} (1 thread, ms/step under the profiler): run {prof['model_run_ms_per_step']:.3f}, "
                     f"kernels {prof['kernel_ms_per_step']:.3f} in {prof['nodes_run_per_step']:.0f} nodes; {top}")
    return "\n".join(lines)


__all__ = ["transformer_pp_model", "llama_config", "star_to_llama", "write_llama_folder", "byte_tokenizer_json",
           "peer_availability", "build_ort_genai", "build_gguf", "run_streams", "run_peers_bench", "markdown",
           "onnx_decode_profile",
           "PEERS", "GGUF_PRE_TOKENIZER", "GGUF_FTYPES"]
