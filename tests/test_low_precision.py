"""int8 artifacts of the trained digits model in every format pass validation; calibration
errors are clear; the MIL reference executor's weight-decompression kernels match
coremltools' own definitions."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from staredge.errors import ConfigError  # noqa: E402
from staredge.exporters.quantize import CalibrationError, resolve_calibration  # noqa: E402

N_CALIBRATION = 100


@pytest.fixture(scope="module")
def digits():
    from staredge.models.digits import digits_model, digits_weights

    return digits_model(digits_weights())


def _export_int8(digits, formats, out):
    from staredge.exporters import export

    return export(digits, formats, out, precision="int8", calibration_samples=N_CALIBRATION)


def _check(report, fmt):
    from staredge.runtimes import load_backend

    (a,) = [a for a in report.artifacts if a.format == fmt]
    assert a.error is None, a.error
    assert "_int8" in a.path
    v = a.validation
    # the labelled held-out set decides: accuracy within 0.5 points of fp32, top-1 agreement >= 99%
    assert v["labelled_set"] == "digits held-out" and v["labelled_n"] == 450
    assert v["reference_accuracy"] - v["accuracy"] <= 0.005
    assert a.top1_agreement >= 0.99
    assert a.passed is True
    backend = load_backend(a.path, device="cpu")
    assert backend.metadata.precision == "int8"
    assert backend.metadata.extra["calibration_samples"] == N_CALIBRATION
    return a


def test_onnx_int8_digits_passes_validation(digits, tmp_path):
    pytest.importorskip("onnxruntime")
    report = _export_int8(digits, ["onnx"], tmp_path)
    a = _check(report, "onnx")
    import onnx

    ops = {n.op_type for n in onnx.load(a.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format


@pytest.mark.slow
def test_openvino_tflite_coreml_int8_digits_pass_validation(digits, tmp_path):
    pytest.importorskip("nncf")
    pytest.importorskip("ai_edge_quantizer")
    pytest.importorskip("coremltools")
    report = _export_int8(digits, ["openvino", "tflite", "coreml"], tmp_path)
    for fmt in ("openvino", "tflite", "coreml"):
        _check(report, fmt)
    # the CoreML package really holds int8 weights, run by the reference executor's kernels
    from staredge.runtimes.mil_reference import MILExecutor

    (cm,) = [a for a in report.artifacts if a.format == "coreml"]
    assert MILExecutor(cm.path).op_counts["constexpr_affine_dequantize"] > 0


def test_int8_without_calibration_is_a_clear_error(tmp_path):
    from staredge.exporters import export

    with pytest.raises(CalibrationError, match="--calibration DIR"):
        export("starnet_s050", ["onnx"], tmp_path, precision="int8")
    assert not any(tmp_path.iterdir())  # nothing was written
    assert issubclass(CalibrationError, ConfigError)


def test_calibration_folder(tmp_path):
    from PIL import Image

    from staredge.models import create

    model = create("starnet_s050")
    with pytest.raises(CalibrationError, match="holds no images"):
        resolve_calibration(model, str(tmp_path))
    with pytest.raises(CalibrationError, match="does not exist"):
        resolve_calibration(model, str(tmp_path / "nope"))
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    x = resolve_calibration(model, str(tmp_path), samples=3)
    assert x.shape == (3, *model.pretrained_cfg.input_size) and x.dtype == np.float32
    with pytest.raises(CalibrationError, match="positive integer"):
        resolve_calibration(model, str(tmp_path), samples=0)


def test_digits_calibration_never_uses_heldout_scans(digits):
    from staredge.commands.demo import digits_images, heldout_indices
    from staredge.exporters.quantize import digits_training_inputs, labelled_set, model_preprocess_config

    x = digits_training_inputs(model_preprocess_config(digits), 1000)
    held, _, _ = labelled_set(digits)
    images, _ = digits_images()
    assert len(x) == 1000 and len(held) == len(heldout_indices()) == 450
    # no calibration sample equals a held-out sample
    flat_cal = {row.tobytes() for row in x}
    assert not any(h.tobytes() in flat_cal for h in held)


def test_int8_tolerance_rules():
    from staredge.exporters.validate import passes

    # labelled set: accuracy drop decides with top-1 agreement
    assert passes("int8", 9.0, 1.0, 0.995, cosine=0.5, accuracy=0.990, reference_accuracy=0.993)
    assert not passes("int8", 0.0, 0.0, 0.995, cosine=1.0, accuracy=0.985, reference_accuracy=0.993)
    assert not passes("int8", 0.0, 0.0, 0.98, cosine=1.0, accuracy=0.993, reference_accuracy=0.993)
    # no labelled set: cosine and top-1 on photos
    assert passes("int8", 1.0, 1.0, 1.0, cosine=0.995)
    assert not passes("int8", 1.0, 1.0, 1.0, cosine=0.95)


# ----------------------------------------------------------------------------- MIL kernels


def _run(op, **values):
    from staredge.runtimes.mil_reference.kernels import KERNELS, Args

    return KERNELS[op](Args(op, "t", {k: [v] for k, v in values.items()}))[0]


def test_affine_dequantize_kernel():
    q = np.array([[-128, 0, 127], [5, -5, 10]], dtype=np.int8)
    scale = np.array([0.5, 2.0], dtype=np.float32)
    zero = np.array([0, 1], dtype=np.int8)
    out = _run("constexpr_affine_dequantize", quantized_data=q, scale=scale, zero_point=zero, axis=np.int32(0))
    np.testing.assert_array_equal(out, np.array([[-64, 0, 63.5], [8, -12, 18]], np.float32))
    assert out.dtype == np.float32


def test_blockwise_shift_scale_kernel():
    data = np.arange(8, dtype=np.int8).reshape(2, 4)
    scale = np.array([[1.0, 10.0], [2.0, 20.0]], dtype=np.float16)  # blocks of 2 along axis 1
    offset = np.array([[1, 0], [0, 1]], dtype=np.int8)
    out = _run("constexpr_blockwise_shift_scale", data=data, scale=scale, offset=offset)
    expected = np.array([[-1, 0, 20, 30], [8, 10, 100, 120]], np.float32)
    np.testing.assert_array_equal(out.astype(np.float32), expected)
    assert out.dtype == np.float16


def test_lut_to_dense_kernel_matches_coremltools():
    pytest.importorskip("coremltools")
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_lut_to_dense

    rng = np.random.default_rng(1)
    lut = rng.standard_normal(16).astype(np.float32)  # 4-bit palette
    shape = np.array([3, 7], dtype=np.uint32)
    packed = rng.integers(0, 256, (3 * 7 * 4 + 7) // 8, dtype=np.uint8)
    ours = _run("constexpr_lut_to_dense", lut=lut, indices=packed, shape=shape)
    theirs = constexpr_lut_to_dense.decompress(lut, packed, shape)
    np.testing.assert_array_equal(ours, theirs)
