"""Runtimes: every backend agrees with PyTorch; the selection table; GPU provider logic (mocked)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from _digits_artifacts import artifact_paths, heldout_images, shared_demo_summary
from staredge.errors import ConfigError, MissingDependencyError
from staredge.runtimes import (
    BACKENDS_BY_FORMAT,
    ArtifactError,
    DeviceError,
    available_backends,
    backend_class,
    load_backend,
    select_backend,
)
from staredge.runtimes.onnxruntime import CPU, CUDA, TENSORRT, select_providers
from staredge.runtimes.openvino import select_device

FORMATS = ("pytorch", "onnx", "openvino", "tflite", "coreml")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


@pytest.fixture(scope="module")
def torch_model():
    from staredge.commands.demo import build_digits_model, weights_path

    return build_digits_model(weights_path())


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CoreML reference-executor notice
        return load_backend(path, threads=1, **kw)


def test_every_format_on_this_platform_was_exported(artifacts):
    assert set(FORMATS) <= set(artifacts), f"missing formats: {set(FORMATS) - set(artifacts)}"


@pytest.mark.parametrize("fmt", ["pytorch", "onnx", "openvino", "tflite"])
def test_backend_matches_pytorch_on_real_digits(fmt, artifacts, torch_model):
    backend = _load(artifacts[fmt], device="cpu")
    assert backend.name == BACKENDS_BY_FORMAT[fmt]
    assert backend.metadata.labels == [str(i) for i in range(10)]
    assert backend.metadata.input_size == [3, 32, 32]
    from staredge.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig.from_metadata(backend.metadata)
    images, _ = heldout_images(6)
    for img in images:
        x = preprocess(img, cfg)[None]
        with torch.inference_mode():
            ref = torch_model(torch.from_numpy(x)).numpy()
        out = backend.forward(x)
        assert len(out) == 1 and out[0].shape == (1, 10)
        np.testing.assert_allclose(out[0], ref, rtol=0, atol=2e-5)  # export validation saw ~2e-6


def test_coreml_reference_executor_matches_pytorch(artifacts, torch_model):
    backend = _load(artifacts["coreml"])
    assert backend.describe()["engine"] == "mil-reference"  # Linux: no Apple runtime
    assert backend.metadata.pixels_in_model  # image input: normalisation is inside the package
    from staredge.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig.from_metadata(backend.metadata)
    ref_cfg = PreprocessConfig(input_size=cfg.input_size, crop_pct=cfg.crop_pct, mean=cfg.mean, std=cfg.std)
    images, _ = heldout_images(3)
    for img in images:
        out = backend.forward(preprocess(img, cfg)[None])[0]
        with torch.inference_mode():
            ref = torch_model(torch.from_numpy(preprocess(img, ref_cfg)[None])).numpy()
        np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=0, atol=1e-4)


def test_same_image_gives_same_top5_from_every_runtime(artifacts):
    from staredge.predictor import Predictor

    images, labels = heldout_images(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictors = {fmt: Predictor(artifacts[fmt], device="cpu", threads=1) for fmt in FORMATS}
    reference = predictors["pytorch"].classify(images, top_k=5)
    assert [r[0][0] for r in reference] == [str(y) for y in labels]  # the model is right on these
    for fmt, predictor in predictors.items():
        got = predictor.classify(images, top_k=5)
        for ours, ref in zip(got, reference):
            assert [lab for lab, _ in ours] == [lab for lab, _ in ref], fmt
            np.testing.assert_allclose([p for _, p in ours], [p for _, p in ref], atol=1e-5, err_msg=fmt)


def test_pytorch_backend_from_module_and_options(torch_model):
    backend = load_backend(torch_model, threads=1, channels_last=True)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.forward(x)[0], ref, atol=1e-5)
    assert backend.supports_batch and backend.describe()["channels_last"] is True
    assert backend.metadata.labels == [str(i) for i in range(10)]


def test_openvino_bf16_on_request_f32_by_default(artifacts):
    default = _load(artifacts["openvino"])
    assert default.describe()["precision_hint"] == "f32"
    bf16 = _load(artifacts["openvino"], precision="bf16")
    assert bf16.describe()["precision_hint"] == "bf16"
    with pytest.raises(DeviceError, match="precision"):
        _load(artifacts["openvino"], precision="int3")


def test_openvino_accepts_the_ir_folder(artifacts, tmp_path):
    import shutil

    xml = artifacts["openvino"]
    folder = tmp_path / "ir"
    folder.mkdir()
    shutil.copy(xml, folder / xml.name)
    shutil.copy(xml.with_suffix(".bin"), folder / xml.with_suffix(".bin").name)
    assert select_backend(folder) == "openvino"
    assert _load(folder).metadata.model == _load(xml).metadata.model


def test_litert_runs_with_and_without_xnnpack(artifacts):
    x = np.zeros((1, 3, 32, 32), np.float32)
    fast = _load(artifacts["tflite"])
    plain = _load(artifacts["tflite"], xnnpack=False)
    assert fast.describe()["xnnpack"] and not plain.describe()["xnnpack"]
    np.testing.assert_allclose(fast.forward(x)[0], plain.forward(x)[0], atol=1e-5)
    assert not fast.thread_safe  # the Predictor must lock around it


# ----------------------------------------------------------------------------- selection table


def test_selection_table_by_suffix_and_forced(artifacts):
    assert select_backend(artifacts["onnx"]) == "onnxruntime"
    assert select_backend(artifacts["openvino"]) == "openvino"
    assert select_backend(artifacts["tflite"]) == "litert"
    assert select_backend(artifacts["coreml"]) == "coreml"
    assert select_backend(artifacts["pytorch"]) == "pytorch"
    assert select_backend(artifacts["onnx"], backend="ort") == "onnxruntime"
    with pytest.raises(ConfigError, match="unknown backend"):
        select_backend(artifacts["onnx"], backend="tensorflow")


def test_forcing_the_wrong_runtime_is_a_clear_error(artifacts):
    with pytest.raises(ArtifactError, match="LiteRT cannot load|not a TFLite"):
        load_backend(artifacts["onnx"], backend="litert")


def test_available_backends_lists_installed_runtimes():
    names = available_backends()
    assert {"onnxruntime", "openvino", "litert", "pytorch", "coreml"} <= set(names)
    assert all(backend_class(n).name == n for n in names)


def test_missing_runtime_names_the_extra(artifacts, monkeypatch):
    cls = backend_class("openvino")
    monkeypatch.setattr(cls, "is_available", classmethod(lambda c: False))
    with pytest.raises(MissingDependencyError, match=r"staredge\[openvino\]"):
        load_backend(artifacts["openvino"])


# ----------------------------------------------------------------------------- GPU logic (mocked)


def test_onnx_provider_selection_prefers_tensorrt_then_cuda(tmp_path):
    gpu = [TENSORRT, CUDA, CPU]
    providers = select_providers("auto", gpu, engine_cache_dir=tmp_path / "trt")
    assert [p for p, _ in providers] == [TENSORRT, CUDA, CPU]
    trt_opts = providers[0][1]
    assert trt_opts["trt_engine_cache_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert [p for p, _ in select_providers("cuda", [CUDA, CPU])] == [CUDA, CPU]
    assert [p for p, _ in select_providers("cpu", gpu)] == [CPU]
    assert [p for p, _ in select_providers("auto", [CPU])] == [CPU]
    # TensorRT without CUDA cannot run: it is skipped rather than failing at session start
    assert [p for p, _ in select_providers("auto", [TENSORRT, CPU])] == [CPU]
    with pytest.raises(DeviceError, match=r"staredge\[gpu\]"):
        select_providers("cuda", [CPU])


def test_onnx_backend_passes_gpu_providers_to_the_session(artifacts, monkeypatch, tmp_path):
    import onnxruntime as ort

    seen = {}
    real_session = ort.InferenceSession

    class RecordingSession:
        """Records the providers asked for; runs on the CPU (no GPU here)."""

        def __init__(self, path, sess_options=None, providers=None, provider_options=None):
            seen.update(providers=providers, options=provider_options)
            self._real = real_session(path, sess_options, providers=[CPU])

        def get_providers(self):
            return list(seen["providers"])

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    backend = load_backend(artifacts["onnx"], device="auto", engine_cache_dir=str(tmp_path / "engines"))
    assert seen["providers"] == [TENSORRT, CUDA, CPU]
    assert seen["options"][0]["trt_engine_cache_enable"] is True
    assert (tmp_path / "engines").is_dir()  # the engine cache folder is created up front
    assert backend.device == "cuda"  # and forward() would use IO binding


def test_cuda_request_on_a_cpu_machine_is_a_clear_error(artifacts):
    with pytest.raises(DeviceError, match="CUDA"):
        load_backend(artifacts["onnx"], device="cuda")
    with pytest.raises(DeviceError, match="device='cpu'"):
        load_backend(artifacts["pytorch"], device="cuda")


def test_openvino_device_selection():
    assert select_device("auto", ["CPU"]) == "CPU"
    assert select_device("auto", ["CPU", "GPU.0"]) == "GPU.0"
    assert select_device("cpu", ["CPU", "GPU"]) == "CPU"
    assert select_device("cuda", ["CPU", "GPU"]) == "GPU"
    with pytest.raises(DeviceError, match="no GPU"):
        select_device("gpu", ["CPU"])


def test_coreml_notice_is_shown_once(artifacts):
    import staredge.runtimes.coreml as cm

    cm._notice_shown = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_backend(artifacts["coreml"])
        load_backend(artifacts["coreml"])
    notices = [w for w in caught if "validation, not speed" in str(w.message)]
    assert len(notices) == 1


def test_pytorch_backend_compiled_asks_for_a_lock(torch_model):
    backend = load_backend(torch_model, threads=1, compile="eager")  # "eager": no C++ toolchain needed
    x = np.zeros((2, 3, 32, 32), np.float32)
    with torch.inference_mode():
        ref = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.forward(x)[0], ref, atol=1e-5)
    assert backend.compiled and not backend.thread_safe
    assert load_backend(torch_model).thread_safe  # eager: no lock needed


def test_litert_falls_back_to_the_next_interpreter(monkeypatch):
    import staredge.runtimes.litert as lt

    monkeypatch.setattr(lt, "INTERPRETER_MODULES", ("no_such_litert.interpreter", "ai_edge_litert.interpreter"))
    assert lt.import_interpreter_module().__name__ == "ai_edge_litert.interpreter"
    monkeypatch.setattr(lt, "INTERPRETER_MODULES", ("no_such_litert.interpreter", "no_such_tflite_runtime.interpreter"))
    with pytest.raises(MissingDependencyError, match=r"staredge\[tflite\]"):
        lt.import_interpreter_module()
