"""Predictor: classify from every input kind, batching, raw outputs, info, concurrency, CLI."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from _digits_artifacts import artifact_paths, heldout_images, shared_demo_summary
from staredge import Predictor
from staredge.cli import main as cli_main
from staredge.predictor import softmax


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def onnx_predictor(artifacts):
    return Predictor(artifacts["onnx"], device="cpu", threads=1)


def test_classify_ranks_labels_with_probabilities(onnx_predictor):
    images, labels = heldout_images(8)
    for img, label in zip(images, labels):
        ranking = onnx_predictor.classify(img, top_k=3)
        assert len(ranking) == 3
        assert ranking[0][0] == str(label)
        probs = [p for _, p in ranking]
        assert probs == sorted(probs, reverse=True) and 0.0 < probs[-1] <= probs[0] <= 1.0
    full = onnx_predictor.classify(images[0], top_k=50)  # capped at the number of labels
    assert len(full) == 10 and abs(sum(p for _, p in full) - 1.0) < 1e-6
    assert sorted(lab for lab, _ in full) == [str(i) for i in range(10)]


def test_path_pil_array_and_bytes_give_the_same_answer(onnx_predictor, tmp_path):
    img, _ = heldout_images(1)
    arr = img[0]
    path = tmp_path / "digit.png"
    Image.fromarray(arr).save(path)
    answers = [
        onnx_predictor.classify(x, top_k=5)
        for x in (arr, Image.fromarray(arr), str(path), path, path.read_bytes(), np.repeat(arr[:, :, None], 3, 2))
    ]
    for other in answers[1:]:
        assert [lab for lab, _ in other] == [lab for lab, _ in answers[0]]
        np.testing.assert_allclose([p for _, p in other], [p for _, p in answers[0]], atol=1e-7)


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "pytorch"])
def test_list_input_batched_or_looped_equals_one_by_one(artifacts, fmt):
    predictor = Predictor(artifacts[fmt], device="cpu", threads=1, batch_size=4)
    images, _ = heldout_images(10)
    together = predictor.classify(images, top_k=3)
    apart = [predictor.classify(im, top_k=3) for im in images]
    assert len(together) == 10
    for a, b in zip(together, apart):
        assert [lab for lab, _ in a] == [lab for lab, _ in b]
        np.testing.assert_allclose([p for _, p in a], [p for _, p in b], atol=1e-5)
    # ONNX and PyTorch take batches; the TFLite artifact has a fixed batch of 1 and is looped
    assert predictor.backend.supports_batch == (fmt != "tflite")


def test_predict_returns_raw_logits(onnx_predictor):
    images, _ = heldout_images(3)
    x = np.stack([onnx_predictor.preprocess(im) for im in images])
    logits = onnx_predictor.predict(x)
    assert len(logits) == 1 and logits[0].shape == (3, 10) and logits[0].dtype == np.float32
    probs = softmax(logits[0])
    ranking = onnx_predictor.classify(images[1], top_k=1)
    assert ranking[0][1] == pytest.approx(float(probs[1].max()), abs=1e-6)
    single = onnx_predictor.predict(x[0])  # (C, H, W) is a batch of one
    np.testing.assert_allclose(single[0], logits[0][:1], atol=1e-6)


def test_info_and_warmup(onnx_predictor, artifacts):
    info = onnx_predictor.info()
    assert info["backend"] == "onnxruntime" and info["device"] == "cpu" and info["threads"] == 1
    assert info["format"] == "onnx" and info["input_size"] == [3, 32, 32] and info["num_labels"] == 10
    assert info["preprocessing"]["crop"] == [32, 32] and info["preprocessing"]["interpolation"] == "bicubic"
    assert info["providers"] == ["CPUExecutionProvider"]
    assert onnx_predictor.warmup(2) > 0.0
    assert onnx_predictor.labels == [str(i) for i in range(10)]


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite", "pytorch"])
def test_eight_threads_share_one_predictor(artifacts, fmt):
    predictor = Predictor(artifacts[fmt], device="cpu", threads=1)
    images, _ = heldout_images(16)
    serial = [predictor.classify(im, top_k=5) for im in images]
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            start.wait()
            # every thread classifies every image, in a different order
            order = list(range(len(images)))[t:] + list(range(len(images)))[:t]
            for i in order:
                results[(t, i)] = predictor.classify(images[i], top_k=5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 8 * len(images)
    for (t, i), ranking in results.items():
        assert [lab for lab, _ in ranking] == [lab for lab, _ in serial[i]], (fmt, t, i)
        np.testing.assert_allclose([p for _, p in ranking], [p for _, p in serial[i]], rtol=0, atol=1e-6)
    assert (predictor._lock is None) == predictor.backend.thread_safe


def test_coreml_predictor_classifies_like_pytorch(artifacts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        coreml = Predictor(artifacts["coreml"])
    images, labels = heldout_images(4)
    assert [r[0][0] for r in coreml.classify(images, top_k=1)] == [str(y) for y in labels]
    assert coreml.info()["engine"] == "mil-reference"


def test_cli_classify_json_and_table(artifacts, tmp_path, capsys):
    images, labels = heldout_images(2)
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    assert cli_main(["classify", str(artifacts["onnx"]), *paths, "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "onnxruntime"
    assert [r["top_k"][0]["label"] for r in out["results"]] == [str(y) for y in labels]
    assert all(len(r["top_k"]) == 2 for r in out["results"])
    assert cli_main(["classify", str(artifacts["tflite"]), paths[0], "--top-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "litert" in table and str(labels[0]) in table and "probability" in table


def test_non_image_artifacts_still_predict_but_do_not_classify(tmp_path):
    import onnx
    import torch

    from staredge.errors import ConfigError
    from staredge.metadata import ArtifactMetadata

    model = torch.nn.Linear(4, 2).eval()  # not an image model: a (1, 4) float input
    path = tmp_path / "regressor.onnx"
    torch.onnx.export(model, (torch.zeros(1, 4),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["scores"])
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = "staredge"
    entry.value = ArtifactMetadata(model="regressor", family="custom", format="onnx", task="regression",
                                   input_size=[4], output_names=["scores"]).to_json()
    onnx.save(proto, str(path))

    p = Predictor(path, threads=1)
    x = np.ones((1, 4), np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p.predict(x)[0], ref, atol=1e-6)
    with pytest.raises(ConfigError, match="not an image classifier; call predict"):
        p.classify(np.zeros((8, 8), np.uint8))
    assert p.info()["preprocessing"] is None
