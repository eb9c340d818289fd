"""``Predictor.predict(x)`` has one meaning: the same normalised float32 array gives the same
logits from every format's artifact of one model (ONNX, OpenVINO, TFLite, CoreML through the
MIL executor, PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

from _digits_artifacts import artifact_paths, heldout_images, shared_demo_summary
from staredge import Predictor
from staredge.errors import ConfigError

#: fp32 artifacts against the PyTorch checkpoint they were exported from.
ATOL = 1e-4


@pytest.fixture(scope="module")
def paths(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


def test_same_normalised_array_same_logits_in_every_format(paths):
    assert {"pytorch", "onnx", "openvino", "tflite", "coreml"} <= set(paths), sorted(paths)
    reference = Predictor(paths["pytorch"], device="cpu")
    images, _ = heldout_images(2)
    rng = np.random.default_rng(0)
    # real digits through the shared preprocessing, plus a random normalised array
    xs = [reference.preprocess(img)[None] for img in images]
    xs.append(rng.standard_normal((1, *reference.backend.input_shape[1:])).astype(np.float32))
    want = [reference.predict(x)[0] for x in xs]
    for fmt in ("onnx", "openvino", "tflite", "coreml"):
        p = Predictor(paths[fmt], device="cpu")
        assert p.info()["preprocessing"]["mean"] == reference.info()["preprocessing"]["mean"]
        for x, ref in zip(xs, want):
            got = p.predict(x)[0]
            assert got.shape == ref.shape, fmt
            np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0, err_msg=fmt)
            assert int(got.argmax()) == int(ref.argmax()), fmt


def test_a_runtime_that_does_not_run_the_format_is_a_clear_error(paths):
    with pytest.raises(ConfigError, match="openvino runtime runs openvino artifacts.*run by onnxruntime"):
        Predictor(paths["onnx"], backend="openvino")
    with pytest.raises(ConfigError, match="--formats tflite"):
        Predictor(paths["onnx"], backend="tflite")
    # the aliases of the format table work for the right format
    assert Predictor(paths["onnx"], backend="ort").backend.name == "onnxruntime"
    assert Predictor(paths["tflite"], backend="tflite").backend.name == "litert"


def test_labels_option_replaces_the_artifacts_names(paths, tmp_path):
    names = [f"digit-{i}" for i in range(10)]
    f = tmp_path / "labels.txt"
    f.write_text("\n".join(names) + "\n")
    images, targets = heldout_images(1)
    p = Predictor(paths["onnx"], labels=str(f))
    assert p.labels == names
    assert p.classify(images[0], top_k=1)[0][0] == f"digit-{targets[0]}"
    with pytest.raises(ConfigError, match="3 labels given for a model with 10 outputs"):
        Predictor(paths["onnx"], labels=["a", "b", "c"]).classify(images[0])
