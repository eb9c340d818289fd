"""Issue 19: what every engine says about itself, and the one thread rule.

For each runtime (the shared small LM artifacts, and the PyTorch engine): the threads the
runtime reports back equal what was asked, ``threads=None`` means
:func:`staredge.threads.default_threads` everywhere (the CoreML reference executor: 1, the
documented exception), the op histogram lists real ops, declared capabilities match the
runtime, a failure inside a call is an ``InferenceError`` (a StarEdgeError), and the
PyTorch engine leaves torch's process-wide thread count as it found it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("torch")

from lm_helpers import small_artifact, small_lm  # noqa: E402
from staredge.errors import InferenceError, StarEdgeError  # noqa: E402
from staredge.threads import default_threads  # noqa: E402

FORMATS = ["onnx", "openvino", "tflite", "coreml"]
#: an op every engine's histogram of the small hybrid LM must list
EXPECTED_OP = {"onnx": "MatMul", "openvino": "FullyConnected", "tflite": "FULLY_CONNECTED", "coreml": "linear"}
CAPABILITY = {"onnx": "io_binding", "openvino": "stateful", "tflite": "signatures", "coreml": "stateful"}


def _backend(path, threads):
    from staredge.runtimes import load_backend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_backend(path, device="cpu", threads=threads)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_threads_histogram_and_capabilities(tmp_path_factory, fmt):
    path = small_artifact(tmp_path_factory, fmt)
    one = _backend(path, 1)
    assert one.threads_in_effect() == 1 and one.describe()["threads"] == 1
    default = _backend(path, None)
    assert default.threads_in_effect() == (1 if fmt == "coreml" else default_threads())
    hist = one.op_histogram()
    assert hist.get(EXPECTED_OP[fmt], 0) > 0 and all(isinstance(n, int) and n > 0 for n in hist.values()), hist
    assert CAPABILITY[fmt] in one.engine.capabilities


@pytest.mark.slow
def test_a_failing_call_is_an_inference_error(tmp_path_factory):
    """A state buffer of the wrong shape reaches ONNX Runtime: its error comes back typed."""
    backend = _backend(small_artifact(tmp_path_factory, "onnx"), 1)
    engine = backend.engine
    feeds = {"input_ids": np.zeros((1, 1), np.int64), "position": np.zeros(1, np.int64)}
    feeds.update({t.name: np.zeros((1, 1), np.float32) for t in engine.inputs()[2:]})
    with pytest.raises(InferenceError, match="onnxruntime failed running") as info:
        engine.run(None, feeds)
    assert isinstance(info.value, StarEdgeError) and info.value.__cause__ is not None


def test_the_pytorch_engine_leaves_torchs_threads_as_it_found_them():
    import torch

    from staredge.runtimes import load_backend

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    backend = load_backend(small_lm(), device="cpu", threads=want)
    assert torch.get_num_threads() == before  # loading sets nothing process-wide
    seen = []
    real_step = backend.model.step

    def spy(ids, state):
        seen.append(torch.get_num_threads())
        return real_step(ids, state)

    backend.model.step = spy
    try:
        session = backend.open_session()
        session.feed([256, 84, 104])
        session.close()
    finally:
        del backend.model.step
    assert seen and all(n == want for n in seen)  # the engine's threads inside its calls
    assert torch.get_num_threads() == before  # and the caller's afterwards
    assert backend.threads_in_effect() == want
    assert backend.op_histogram().get("Linear", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_named_feeds_run_the_graph_the_stepper_runs(tmp_path_factory, fmt):
    """``engine.run_feeds`` (inputs by name, outputs by name) gives the logits of the first
    decode step that the served stepper computes on the same engine."""
    backend = _backend(small_artifact(tmp_path_factory, fmt), 1)
    engine = backend.engine
    ids_dtype = np.int32 if fmt == "coreml" else np.int64
    feeds = {"input_ids": np.array([[256]], ids_dtype), "position": np.array([0], ids_dtype)}
    signature = None
    if fmt in ("onnx", "tflite") or (fmt == "coreml" and not backend.stateful):
        feeds.update({s["input"]: np.zeros(s["shape"], np.float32) for s in backend.state_spec})
    if fmt == "tflite":
        signature = "decode"
    if fmt == "openvino":
        engine.request().reset_state()
    out = engine.run_feeds(feeds, signature=signature)
    want = backend.new_stepper().step([256])
    np.testing.assert_allclose(np.asarray(out["logits"]).reshape(want.shape), want, rtol=0, atol=1e-6)


def test_a_torch_error_inside_a_call_is_an_inference_error():
    """The PyTorch engine wraps torch's kernel errors like the other engines wrap theirs."""
    import torch

    from staredge.runtimes import load_backend

    class Broken(torch.nn.Module):
        max_seq_len = 16
        vocab_size = 259

        def init_state(self, batch_size=1):
            return None

        def step(self, ids, state):
            return torch.zeros(1, 2) @ torch.zeros(3, 4), state  # a shape error inside torch

    backend = load_backend(Broken(), device="cpu", threads=1)
    session = backend.open_session()
    with pytest.raises(InferenceError, match="pytorch failed running Broken") as info:
        session.feed([256])
    assert isinstance(info.value.__cause__, RuntimeError)
