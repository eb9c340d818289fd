"""Streaming generation from exported LM artifacts on every runtime through one API
(issue 12): greedy text equal across runtimes and to PyTorch, seeded sampling reproducible per
runtime, concurrent streams from one Predictor, early close frees the state, context errors,
the text backends behind load_backend, GPU selection logic (mocked), torch-free streaming."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from _no_torch import NO_TORCH
from staredge.errors import ConfigError, DeviceError
from staredge.generation import ContextLengthError, load_lm, stream

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The import statement "
CONTEXT = 256  # prompt (22 tokens) + 200 greedy tokens fit


@pytest.fixture(scope="module")
def shipped():
    return load_lm()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, shipped):
    """The shipped model exported to ONNX and OpenVINO at context 256 (the conversions
    tests/test_lm_*.py use too: lm_helpers.shipped_artifact converts once per run)."""
    from lm_helpers import shipped_artifact

    paths = {"onnx": shipped_artifact(tmp_path_factory, "onnx", max_context=CONTEXT)}
    try:
        import openvino  # noqa: F401

        paths["openvino"] = shipped_artifact(tmp_path_factory, "openvino", max_context=CONTEXT)
    except ImportError:
        pass
    return paths


@pytest.fixture(scope="module")
def tflite_artifact(tmp_path_factory, shipped):
    pytest.importorskip("ai_edge_litert")
    from lm_helpers import shipped_artifact

    return shipped_artifact(tmp_path_factory, "tflite", max_context=CONTEXT)


def _greedy(model, n=200, prompt=PROMPT):
    s = stream(model, prompt, max_new_tokens=n, temperature=0)
    text = s.text()
    return text, list(s.stats.generated_ids)


# ------------------------------------------------------------------------------ greedy parity


def test_greedy_stream_equal_on_every_runtime_for_the_shipped_model(artifacts, shipped):
    from staredge import Predictor

    ref_text, ref_ids = _greedy(shipped.model)
    assert len(ref_ids) == 200 and len(ref_text) > 100
    for fmt, path in artifacts.items():
        p = Predictor(path, threads=1)
        assert p.backend.name == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
        s = p.stream(PROMPT, max_new_tokens=200, temperature=0)
        pieces = list(s)
        assert s.stats.generated_ids == ref_ids, fmt
        assert "".join(pieces) == ref_text == p.generate(PROMPT, max_new_tokens=200, temperature=0)
    # the PyTorch text backend (a module through load_backend) is one more stepper
    from staredge.runtimes import load_backend

    torch_backend = load_backend(shipped.model, device="cpu")
    assert type(torch_backend).__name__ == "PyTorchTextBackend"
    assert _greedy(torch_backend) == (ref_text, ref_ids)


@pytest.mark.slow
def test_greedy_stream_equal_on_litert(tflite_artifact, shipped):
    from staredge import Predictor

    p = Predictor(tflite_artifact, threads=1)
    assert p.backend.name == "litert" and p.info()["signatures"] == ["decode", "prefill"]
    assert _greedy(p.backend) == _greedy(shipped.model)


def test_greedy_equal_for_a_random_all_class_genome(tmp_path):
    """Every LIV class (attention, recurrences, convolutions, sharing) in one random genome."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _lm_cases import all_classes_genome, small_model
    from staredge.exporters.onnx_lm import export_lm_onnx
    from staredge.exporters.openvino_lm import export_lm_openvino
    from staredge.runtimes import load_backend

    model = small_model(all_classes_genome(), seed=5, max_seq_len=96)
    ref = _greedy(model, n=48, prompt="def f(x):")
    assert len(ref[1]) == 48
    backends = [load_backend(export_lm_onnx(model, tmp_path / "all.onnx", max_context=96), threads=1)]
    try:
        import openvino  # noqa: F401

        backends.append(load_backend(export_lm_openvino(model, tmp_path / "all.xml", max_context=96), threads=1))
    except ImportError:
        pass
    for b in backends:
        assert _greedy(b, n=48, prompt="def f(x):") == ref, b.name


# ------------------------------------------------------------------------------ sampling


def test_seeded_sampling_is_reproducible_per_runtime(artifacts, shipped):
    from staredge import Predictor

    kw = dict(max_new_tokens=60, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.1)
    for path in [shipped.model, *artifacts.values()]:
        p = Predictor(path, threads=1) if not hasattr(path, "step") else None
        run = (lambda **k: p.generate("The ", **k)) if p else (lambda **k: shipped.generate("The ", **k))
        a, b, c = run(seed=5, **kw), run(seed=5, **kw), run(seed=6, **kw)
        assert a == b and len(a) > 0
        assert a != c


# ------------------------------------------------------------------------------ concurrency and state


def test_two_concurrent_streams_equal_two_serial_ones(artifacts):
    from staredge import Predictor

    for path in artifacts.values():
        p = Predictor(path, threads=1)
        jobs = [("The ", 1), ("x = [", 2)]
        serial = [p.generate(q, max_new_tokens=80, temperature=1.0, seed=s) for q, s in jobs]
        outs = [None, None]
        start = threading.Barrier(2)

        def work(i):
            start.wait()
            outs[i] = "".join(p.stream(jobs[i][0], max_new_tokens=80, temperature=1.0, seed=jobs[i][1]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outs == serial
        # interleaved on one thread, piece by piece, too
        a, b = (p.stream(q, max_new_tokens=80, temperature=1.0, seed=s) for q, s in jobs)
        got = ["", ""]
        live = {0: a, 1: b}
        while live:
            for i in list(live):
                try:
                    got[i] += next(live[i])
                except StopIteration:
                    del live[i]
        assert got == serial


def test_a_stream_closed_early_frees_its_state(artifacts):
    from staredge import Predictor

    p = Predictor(artifacts["onnx"], threads=1)
    s = p.stream("The ", max_new_tokens=100, temperature=0)
    assert p.backend.open_streams == 0  # nothing is allocated before the first piece
    next(s)
    assert p.backend.open_streams == 1
    session = next(iter(p.backend._sessions))
    host = weakref.ref(session.stepper._host[0][0])  # a state buffer behind an OrtValue
    s.close()
    assert s.stats.finish_reason == "cancelled"
    gc.collect()
    assert p.backend.open_streams == 0 and session.closed and host() is None
    with pytest.raises(ConfigError, match="closed"):
        session.feed([1])
    # a stream run to its end is closed too
    p.generate("The ", max_new_tokens=5, temperature=0)
    assert p.backend.open_streams == 0


def test_io_binding_reuses_the_two_state_buffers(artifacts):
    """The ONNX Runtime session writes present_* into the second buffer of each pair, which is
    the next step's past_*: the same two arrays serve every step."""
    from staredge.runtimes import load_backend

    b = load_backend(artifacts["onnx"], threads=1)
    session = b.open_session()
    stepper = session.stepper
    ids_before = {id(a) for pair in stepper._host for a in pair}
    session.feed([256, 84, 104])
    for tok in (101, 32, 105):
        session.feed([tok])
    assert {id(a) for pair in stepper._host for a in pair} == ids_before
    state = stepper.state_arrays()
    assert any(np.abs(a).max() > 0 for a in state)  # the state was written in place
    assert stepper.position == 6
    session.close()


# ------------------------------------------------------------------------------ context


def test_prompt_over_the_artifacts_context_raises_or_truncates(artifacts):
    from staredge import Predictor

    p = Predictor(artifacts["onnx"], threads=1)
    with pytest.raises(ContextLengthError, match="truncate='left'"):
        p.stream("z" * CONTEXT, max_new_tokens=4)
    s = p.stream("z" * 600, max_new_tokens=8, temperature=0, truncate="left")
    s.text()
    assert s.stats.prompt_tokens == CONTEXT - 7 and s.stats.truncated_tokens == 601 - (CONTEXT - 7)
    # a prompt that fits but leaves little room stops at the end of the context
    s = p.stream("z" * (CONTEXT - 4), max_new_tokens=50, temperature=0)
    s.text()
    assert s.stats.finish_reason in ("context", "eos") and s.stats.generated_tokens <= 4


# ------------------------------------------------------------------------------ backends, info, CLI


def test_load_backend_picks_the_text_backend_and_info_shows_the_state(artifacts):
    from staredge import Predictor
    from staredge.formats import RUNTIMES

    assert all(RUNTIMES[r].text_backend for r in ("onnxruntime", "openvino", "litert", "pytorch"))
    p = Predictor(artifacts["onnx"], threads=1)
    info = p.info()
    assert info["task"] == "text-generation" and info["max_context"] == CONTEXT and info["io_binding"]
    assert info["state_bytes"] == p.metadata.lm["state_bytes"] > 0
    assert {s["kind"] for s in info["state"]} == {"kv", "conv", "ssm"}
    assert sum(int(np.prod(s["shape"])) * 4 for s in info["state"]) == info["state_bytes"]
    with pytest.raises(ConfigError, match="stream"):
        p.backend.forward(np.zeros((1, 1), np.float32))


def test_cli_generate_artifact_prints_the_pytorch_text(artifacts, capsys):
    from staredge.cli import main

    expected = load_lm().generate(PROMPT, max_new_tokens=200, temperature=0)
    for path in artifacts.values():
        assert main(["generate", str(path), PROMPT, "--temperature", "0", "--max-new-tokens", "200"]) == 0
        assert capsys.readouterr().out.rstrip("\n") == (PROMPT + expected).rstrip("\n")
    assert main(["generate", "star_lm_pydoc", "x", "--backend", "onnxruntime"]) == 2
    assert "needs an exported artifact" in capsys.readouterr().err


# ------------------------------------------------------------------------------ GPU selection (mocked)


def test_gpu_selection_logic_without_a_gpu():
    from staredge.runtimes.onnxruntime_lm import lm_providers
    from staredge.runtimes.text import select_torch_device

    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    assert lm_providers("auto", [cpu]) == [cpu]
    assert lm_providers("auto", [trt, cuda, cpu]) == [cuda, cpu]  # no TensorRT for a dynamic token axis
    assert lm_providers("cuda", [cuda, cpu]) == [cuda, cpu]
    assert lm_providers("cpu", [cuda, cpu]) == [cpu]
    with pytest.raises(DeviceError, match="GPU build"):
        lm_providers("cuda", [cpu])
    assert select_torch_device("auto", True) == "cuda" and select_torch_device("auto", False) == "cpu"
    assert select_torch_device("cpu", True) == "cpu"
    with pytest.raises(DeviceError):
        select_torch_device("gpu", False)


def test_ort_text_backend_puts_state_on_the_device_when_cuda_is_listed(artifacts, monkeypatch):
    """With CUDA listed (mocked), the session is asked for CUDA first and the stepper allocates
    its state as device OrtValues; the allocation calls are recorded, not run."""
    import onnxruntime as ort

    from staredge.runtimes.onnxruntime_lm import OnnxRuntimeTextBackend

    asked = {}

    class FakeSession:
        def __init__(self, path, so, providers):
            asked["providers"] = providers

        def get_providers(self):
            return asked["providers"]

        def io_binding(self):
            return object()

    made = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy",
                        staticmethod(lambda a, device="cpu", idx=0: made.append(device) or ("ov", device)))
    b = OnnxRuntimeTextBackend(artifacts["onnx"], device="auto")
    assert asked["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"] and b.device == "cuda"
    stepper = b.new_stepper()
    n = len(stepper.state_spec)
    assert made.count("cuda") == 2 * n  # past and present of every state tensor on the device
    assert b.describe()["state_on"] == "device OrtValues"


# ------------------------------------------------------------------------------ no torch


def test_streaming_from_an_artifact_needs_no_torch(artifacts, shipped):
    code = NO_TORCH + textwrap.dedent(f"""
        from staredge import Predictor
        p = Predictor({str(artifacts['onnx'])!r}, threads=1)
        print(p.generate({PROMPT!r}, max_new_tokens=60, temperature=0), end="")
        assert "torch" not in sys.modules and "staredge.models" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == shipped.generate(PROMPT, max_new_tokens=60, temperature=0)


# ------------------------------------------------------------------------------ the LM benchmark (small settings)


def test_generate_bench_measures_streams_and_baselines(artifacts, shipped):
    pytest.importorskip("transformers")
    import torch

    from staredge.bench.generate import (combine, markdown_table, matched_llama_config, measure_streams,
                                         measure_transformers, prompt_ids)
    from staredge.runtimes import load_backend

    config, llama_params, star_params = matched_llama_config(shipped.model)
    assert config.vocab_size == 259 and config.hidden_size == shipped.model.dim
    assert abs(llama_params - star_params) / star_params < 0.01
    import transformers

    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(config).eval()
    assert sum(p.numel() for p in llama.parameters()) - 259 * config.hidden_size == llama_params
    ids = prompt_ids(20)
    assert len(ids) == 20 and ids[0] == 256
    backend = load_backend(artifacts["onnx"], threads=1)
    rows = [measure_streams(backend, 20, 12, repeats=2), measure_streams(shipped.model, 20, 12, repeats=1),
            measure_transformers(llama, 20, 12, repeats=1)]
    for row in rows:
        assert row["new_tokens"] == 12 and row["prompt_tokens"] == 20  # EOS ignored: exactly 12 tokens
        assert row["decode_tokens_per_s"] > 0 and row["ms_per_token_p90"] >= row["ms_per_token_median"] > 0
        assert row["first_token_ms"] > 0 and row["prefill_tokens_per_s"] > 0
    doc = {"generation_results": [dict(r, runtime=n, threads=1, state_bytes=None)
                                  for r, n in zip(rows, ["onnxruntime", "pytorch-eager", "transformers"])]}
    table = markdown_table(doc)
    assert table.count("\n") == 5 and "| onnxruntime | 1 |" in table
    with pytest.raises(ConfigError, match="repeats"):
        combine([])


def test_predictor_streams_a_saved_pytorch_lm(shipped):
    """A save_lm pair (.safetensors + .json) goes to the PyTorch text backend."""
    from staredge import Predictor
    from staredge.generation import _data_dir

    p = Predictor(_data_dir() / "star_lm_pydoc.safetensors", device="cpu", threads=1)
    assert type(p.backend).__name__ == "PyTorchTextBackend" and p.backend.device == "cpu"
    info = p.info()
    assert info["task"] == "text-generation" and info["max_context"] == shipped.max_seq_len
    assert info["state_bytes"] == 1_070_080  # the cache analysis at max_context, as the artifacts hold
    kw = dict(max_new_tokens=40, temperature=0.7, seed=4)
    assert p.generate("The ", **kw) == shipped.generate("The ", **kw)
    assert p.backend.open_streams == 0


def test_coreml_text_backend_streams_the_pytorch_text(tmp_path, shipped, capsys):
    """CoreML packages (explicit fp32 state, and the iOS 18 stateful form with fp16 state) on
    the MIL reference executor off macOS, with the usual notice; greedy text as PyTorch's."""
    pytest.importorskip("coremltools")
    from staredge.cli import main
    from staredge.exporters.coreml_lm import export_lm_coreml
    from staredge.runtimes import load_backend
    from staredge.runtimes.coreml_lm import CoreMLTextBackend

    ref_text, ref_ids = _greedy(shipped.model, n=120)
    for stateful in (False, True):
        path = export_lm_coreml(shipped.model, tmp_path / f"lm_{stateful}.mlpackage", max_context=CONTEXT,
                                stateful=stateful, name="star_lm_pydoc")
        b = load_backend(path, threads=1)
        assert isinstance(b, CoreMLTextBackend) and b.describe()["stateful"] is stateful
        if sys.platform != "darwin":
            assert b.describe()["engine"] == "mil-reference"
        assert _greedy(b, n=120) == (ref_text, ref_ids)
        assert b.open_streams == 0
    assert main(["generate", str(path), PROMPT, "--temperature", "0", "--max-new-tokens", "120"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == (PROMPT + ref_text).rstrip("\n")


def test_decode_vs_context_plot_is_written_atomically(tmp_path):
    """The LM bench plot (from the committed results) lands as a PNG under its final name,
    with no temporary file left beside it."""
    import json

    from staredge.bench.generate import plot_decode_vs_context

    doc = json.loads((Path(__file__).resolve().parents[1] / "docs" / "lm-bench-results.json").read_text("utf-8"))
    out = plot_decode_vs_context(doc, tmp_path / "plots" / "ctx.png")
    assert out == tmp_path / "plots" / "ctx.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["ctx.png"]
