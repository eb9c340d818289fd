"""The peers benchmark's model mapping and a tiny end-to-end run (staredge/bench/peers.py,
issue 21): the STAR Transformer++ and the Llama it is mapped to give the same logits; the
byte tokenizer.json gives StarEdge's ids; ONNX Runtime GenAI's builder output decodes the
same greedy tokens as StarEdge's ONNX artifact; absent peers are skipped with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from staredge.bench.peers import (peer_availability, run_peers_bench, star_to_llama, transformer_pp_model,
                                  write_llama_folder)
from staredge.errors import ConfigError

pytest.importorskip("transformers")


def test_llama_mapping_gives_the_same_logits():
    model = transformer_pp_model(dim=64, layers=2, max_seq_len=128, seed=1)
    llama = star_to_llama(model)
    ids = torch.randint(0, 259, (1, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids), llama(ids).logits
    assert a.abs().max() > 0.5
    assert (a - b).abs().max() < 1e-4


def test_non_llama_genome_is_refused():
    from staredge.generation import load_lm

    with pytest.raises(ConfigError, match="Transformer"):
        star_to_llama(load_lm().model)


def test_llama_folder_tokenizer_uses_byte_ids(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = transformer_pp_model(dim=64, layers=1, max_seq_len=128)
    folder = write_llama_folder(model, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    text = "déjà vu\n\t~"
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.convert_tokens_to_ids(["<bos>", "<eos>", "<pad>"]) == [256, 257, 258]
    assert tok.decode(list(text.encode("utf-8"))) == text


def test_ort_genai_decodes_the_same_tokens_as_staredge(tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    from staredge.bench.peers import build_ort_genai
    from staredge.exporters.onnx_lm import export_lm_onnx
    from staredge.runtimes.lm import load_lm_artifact

    model = transformer_pp_model(dim=64, layers=2, max_seq_len=128, seed=2)
    folder = write_llama_folder(model, tmp_path / "hf")
    og_dir = build_ort_genai(folder, tmp_path / "og")
    prompt = [256] + list(b"The import statement ")
    gen_model = og.Model(str(og_dir))
    params = og.GeneratorParams(gen_model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 24, min_length=len(prompt) + 24)
    gen = og.Generator(gen_model, params)
    gen.append_tokens(np.asarray(prompt, dtype=np.int32))
    theirs = []
    while not gen.is_done():
        gen.generate_next_token()
        theirs.append(int(gen.get_next_tokens()[0]))
    ours = load_lm_artifact(export_lm_onnx(model, tmp_path / "m.onnx", max_context=64)).greedy(prompt, 24)
    assert len(theirs) == 24 and theirs == ours


def test_tiny_bench_runs_and_skips_absent_peers(tmp_path):
    avail = peer_availability()
    doc = run_peers_bench(dim=64, layers=1, prompt=8, new_tokens=6, rounds=1, threads=(1,), workdir=tmp_path,
                          staredge=("onnxruntime",), precisions=("fp32", "int8"),
                          peers=("pytorch-eager", "transformers", "llama.cpp", "openvino-genai"), profile=True,
                          quantization={"accuracy_level": 1}, quant_tag="acc1", log=lambda m: None)
    runners = {r["runner"] for r in doc["rows"]}
    assert {"staredge-onnxruntime", "staredge-onnxruntime-int8", "staredge-onnxruntime-acc1-int8",
            "staredge-pytorch-eager", "transformers"} <= runners
    # the --quant variant is a second artifact whose MatMulNBits carry the option; the default is level 4
    import onnx

    def levels(label):
        m = onnx.load(doc["artifacts"][label], load_external_data=False)
        return {a.i for n in m.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"}

    assert levels("staredge-onnxruntime-acc1-int8") == {1} and levels("staredge-onnxruntime-int8") == {4}
    # the profiler saw the 5 decode steps of each ONNX artifact, and kernels are part of each run
    assert set(doc["profiles"]) == {"staredge-onnxruntime", "staredge-onnxruntime-int8", "staredge-onnxruntime-acc1-int8"}
    for prof in doc["profiles"].values():
        assert prof["steps"] == 5 and prof["nodes_run_per_step"] > 5
        assert 0 < prof["kernel_ms_per_step"] <= prof["model_run_ms_per_step"]
    assert [r["precision"] for r in doc["ratios"]] == ["fp32", "int8"]
    assert doc["ratios"][0]["staredge_best"] == "staredge-onnxruntime"
    assert all(r["speedup_vs_eager"] > 0 for r in doc["ratios"])
    for r in doc["rows"]:
        assert r["ms_per_token_median"] > 0 and r["tokens_per_s_median"] > 0 and r["peak_rss_mb"] > 10
    for peer in ("llama.cpp", "openvino-genai"):
        if avail[peer]:
            assert doc["skipped"][peer] and peer not in runners
    assert len(doc["load_average_per_round"]) == 2


def test_gguf_converter_gets_the_pre_tokenizer_and_a_placeholder_merge(tmp_path):
    """build_gguf runs llama.cpp's converter with its gguf-py on the path, the pre-tokenizer
    name it cannot find by hash, and a placeholder merge for a merge-less byte vocabulary
    (a stand-in converter with llama.cpp's module layout records what it saw)."""
    from staredge.bench.peers import GGUF_PLACEHOLDER_MERGE, build_gguf

    (tmp_path / "conversion").mkdir()
    (tmp_path / "conversion" / "__init__.py").write_text("")
    (tmp_path / "conversion" / "base.py").write_text(
        "class TextModel:\n    def get_vocab_base_pre(self, tokenizer):\n        raise NotImplementedError('unknown')\n")
    (tmp_path / "gguf-py" / "gguf").mkdir(parents=True)
    (tmp_path / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (tmp_path / "gguf-py" / "gguf" / "vocab.py").write_text(
        "class SpecialVocab:\n    def __init__(self, merges):\n        self.load_merges, self.merges = True, merges\n"
        "    def add_to_gguf(self, gw, quiet=False):\n        gw.extend(self.merges)\n")
    script = tmp_path / "convert_hf_to_gguf.py"
    script.write_text(
        "import json, sys\nfrom conversion.base import TextModel\nfrom gguf.vocab import SpecialVocab\n"
        "out = sys.argv[sys.argv.index('--outfile') + 1]\nmerges = []\nSpecialVocab([]).add_to_gguf(merges)\n"
        "kept = []\nSpecialVocab(['a b']).add_to_gguf(kept)\n"
        "json.dump({'pre': TextModel().get_vocab_base_pre(None), 'merges': merges, 'kept': kept,\n"
        "           'argv': sys.argv[1:]}, open(out, 'w'))\n")
    out = build_gguf(tmp_path / "hf", tmp_path / "m_f32.gguf", "f32", str(script), pre_tokenizer="gpt-2")
    seen = __import__("json").loads(out.read_text())
    assert seen["pre"] == "gpt-2"
    assert seen["merges"] == [GGUF_PLACEHOLDER_MERGE] and seen["kept"] == ["a b"]
    assert seen["argv"][:1] == [str(tmp_path / "hf")] and "--outtype" in seen["argv"]
    assert not (tmp_path / "m_f32.gguf.part").exists()
    with pytest.raises(ConfigError, match="convert_hf_to_gguf.py was not found"):
        build_gguf(tmp_path / "hf", tmp_path / "other.gguf", "f32", str(tmp_path / "missing.py"))


def _row(runner, ms, threads=1):
    return {"runner": runner, "threads": threads, "ms_per_token_median": ms}


def test_ratios_take_the_fastest_staredge_runtime_per_precision():
    """StarEdge's best exported runtime per precision against the peers at the same
    precision (llama.cpp's q8_0 / q4_0 are int8 / int4) and against the fp32 eager stream."""
    from staredge.bench.peers import ratios

    rows = [_row("staredge-onnxruntime", 0.8), _row("staredge-litert", 0.6), _row("staredge-pytorch-eager", 3.0),
            _row("staredge-onnxruntime-int8", 0.5), _row("staredge-openvino-int8", 0.9),
            _row("ort-genai", 0.3), _row("ort-genai-int8", 0.25), _row("llama.cpp-f32", 0.4),
            _row("llama.cpp-q8_0", 1.0), _row("llama.cpp-q4_0", 0.2), _row("staredge-litert", 0.4, threads=2),
            _row("staredge-onnx-int4-acc4", 0.7), _row("staredge-onnxruntime-acc4-int4", 0.4)]
    got = {(r["threads"], r["precision"]): r for r in ratios(rows)}
    assert set(got) == {(1, "fp32"), (1, "int8"), (1, "int4"), (2, "fp32")}
    # the precision is read from any part of the label (lfm2_peers.py and --quant-tag labels)
    assert got[(1, "int4")]["staredge_best"] == "staredge-onnxruntime-acc4-int4"
    assert got[(1, "int4")]["vs_llama.cpp"] == pytest.approx(2.0) and "vs_ort-genai" not in got[(1, "int4")]
    fp32, int8 = got[(1, "fp32")], got[(1, "int8")]
    assert fp32["staredge_best"] == "staredge-litert"
    assert fp32["vs_ort-genai"] == pytest.approx(2.0) and fp32["vs_llama.cpp"] == pytest.approx(1.5)
    assert fp32["speedup_vs_eager"] == pytest.approx(5.0)
    assert int8["staredge_best"] == "staredge-onnxruntime-int8"
    assert int8["vs_ort-genai"] == pytest.approx(2.0) and int8["vs_llama.cpp"] == pytest.approx(0.5)
    assert "vs_ort-genai" not in got[(2, "fp32")] and "speedup_vs_eager" not in got[(2, "fp32")]


def test_profile_summary_counts_only_the_decode_steps(tmp_path):
    """The profile summary takes the last ``steps`` model runs (the prefill before them is
    left out) and sums kernel times per operator type per step."""
    from staredge.bench.peers import _ort_profile_summary

    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, op, dur):
        return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0, 5000), node(1, "MatMul", 4000),  # the prefill
              run(10000, 1000), node(10001, "MatMul", 400), node(10002, "Add", 100),
              run(20000, 3000), node(20001, "MatMul", 600), node(20002, "Add", 300),
              {"cat": "Node", "name": "n_fence_before", "ts": 20003, "dur": 50}]
    (tmp_path / "p.json").write_text(__import__("json").dumps(events))
    out = _ort_profile_summary(tmp_path / "p.json", 2)
    assert out["steps"] == 2 and out["model_run_ms_per_step"] == pytest.approx(2.0)
    assert out["kernel_ms_per_step"] == pytest.approx(0.7) and out["nodes_run_per_step"] == 2
    assert out["by_op_ms_per_step"] == {"MatMul": 0.5, "Add": 0.2}
    assert list(out["by_op_ms_per_step"]) == ["MatMul", "Add"]
