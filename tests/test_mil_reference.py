"""The numpy MIL reference executor against PyTorch, op by op.

Each case is a tiny ``nn.Module`` converted with coremltools (fp32 ML Program, tensor
input); the test checks that the converted program really contains the MIL op under test,
then compares the executor's output with PyTorch (fp32: max |Δ| ≤ 1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip("coremltools")

from staredge.errors import StarEdgeError  # noqa: E402
from staredge.runtimes import mil_reference  # noqa: E402
from staredge.runtimes.mil_reference.kernels.elementwise import _erf_numpy  # noqa: E402
from staredge.runtimes.mil_reference import (  # noqa: E402
    SUPPORTED_OPS,
    BlobFile,
    MILExecutor,
    MILInputError,
    MILProgramError,
    UnsupportedOpError,
)

FP32_TOL = 1e-4


class Fn(nn.Module):
    """A module around a function (so that each case is one line)."""

    def __init__(self, fn, *modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x, *self.mods)


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


def convert(module: nn.Module, shape, path, precision: str = "fp32", ops_pipeline=None):
    """Convert ``module`` with a tensor input named ``x`` and save it at ``path``."""
    import coremltools as ct

    module = module.eval()
    example = torch.randn(*shape)
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    kwargs = {}
    if ops_pipeline is not None:
        kwargs["pass_pipeline"] = ops_pipeline
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=example.shape)],
        outputs=[ct.TensorType(name="y")],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        skip_model_load=True,
        **kwargs,
    )
    mlmodel.save(str(path))
    return path


# (case id, module, input shape, MIL op that must appear in the converted program)
CASES = [
    ("conv_stride_pad", nn.Conv2d(4, 6, 3, stride=2, padding=1), (1, 4, 9, 9), "conv"),
    ("conv_grouped", nn.Conv2d(4, 8, 3, padding=1, groups=2), (1, 4, 7, 7), "conv"),
    ("conv_depthwise_7x7", nn.Conv2d(8, 8, 7, padding=3, groups=8), (1, 8, 10, 10), "conv"),
    ("conv_dilated_nobias", nn.Conv2d(4, 5, 3, padding=2, dilation=2, bias=False), (1, 4, 8, 8), "conv"),
    ("conv_patchify", nn.Conv2d(3, 6, 4, stride=4), (1, 3, 16, 16), "conv"),
    ("conv1d", nn.Conv1d(4, 6, 3, padding=1), (1, 4, 12), "conv"),
    ("linear", nn.Linear(8, 5), (1, 3, 8), "linear"),
    ("matmul", Fn(lambda x: x @ x.transpose(-1, -2)), (1, 2, 5, 4), "matmul"),
    ("add_sub_mul_div", Fn(lambda x: (x + 1.5) * x - x / (x.abs() + 2)), (1, 3, 4), "real_div"),
    ("relu6_clip", nn.ReLU6(), (1, 3, 5, 5), "clip"),
    ("relu", nn.ReLU(), (1, 3, 5), "relu"),
    ("sigmoid", nn.Sigmoid(), (1, 3, 5), "sigmoid"),
    ("tanh", nn.Tanh(), (1, 3, 5), "tanh"),
    ("gelu_exact", nn.GELU(), (1, 4, 16), "gelu"),
    ("gelu_tanh", nn.GELU(approximate="tanh"), (1, 4, 16), "gelu"),
    ("softmax", Fn(lambda x: torch.softmax(x * 3, dim=1)), (1, 6, 4), "softmax"),
    ("reduce_mean", Fn(lambda x: x.mean((2, 3), keepdim=True) + x.mean(1, keepdim=True)), (1, 3, 4, 5), "reduce_mean"),
    ("layer_norm", nn.LayerNorm(8), (1, 5, 8), "layer_norm"),
    ("batch_norm", _bn(4), (1, 4, 5, 5), "batch_norm"),
    ("reshape_transpose", Fn(lambda x: x.reshape(1, 4, -1).permute(0, 2, 1) * 2), (1, 4, 3, 3), "transpose"),
    ("concat", Fn(lambda x: torch.cat([x, x * 2, x - 1], dim=1)), (1, 2, 3), "concat"),
    ("split_chunk", Fn(lambda x: (lambda a, b: a * b)(*x.chunk(2, dim=-1))), (1, 3, 8), "split"),
    ("slice_by_index", Fn(lambda x: x[:, 1:3, ::2] * 2), (1, 4, 6), "slice_by_index"),
    ("squeeze", Fn(lambda x: x.sum(-1, keepdim=True).squeeze(-1) * 2), (1, 3, 4), "squeeze"),
    ("expand_dims", Fn(lambda x: x.mean(-1).unsqueeze(1) * 2), (1, 3, 4), "expand_dims"),
    ("avg_pool_with_pad", nn.AvgPool2d(3, 2, 1), (1, 3, 8, 8), "avg_pool"),
    ("avg_pool_exclude_pad", nn.AvgPool2d(3, 1, 1, count_include_pad=False), (1, 3, 6, 6), "avg_pool"),
    ("max_pool", nn.MaxPool2d(3, 2, 1), (1, 3, 8, 8), "max_pool"),
    ("upsample_bilinear", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)), (1, 2, 4, 5), "upsample_bilinear"),
    ("upsample_bilinear_align", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)), (1, 2, 4, 5), "upsample_bilinear"),
    ("upsample_nearest", Fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")), (1, 2, 3, 3), "upsample_nearest_neighbor"),
]


def _op_types(path) -> set[str]:
    spec = mil_reference.load_model_spec(path)
    func = spec.mlProgram.functions["main"]
    return {op.type for op in func.block_specializations[func.opset].operations}


@pytest.mark.parametrize("case_id, module, shape, op", CASES, ids=[c[0] for c in CASES])
def test_op_matches_pytorch(tmp_path, case_id, module, shape, op):
    torch.manual_seed(0)
    path = convert(module, shape, tmp_path / f"{case_id}.mlpackage")
    assert op in _op_types(path), f"{case_id}: coremltools did not emit {op} (emitted {_op_types(path)})"
    x = torch.randn(*shape) * 2
    with torch.no_grad():
        ref = module(x).numpy()
    out = MILExecutor(path).predict({"x": x.numpy()})["y"]
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=FP32_TOL)


def test_fp16_program_runs_in_fp16(tmp_path):
    """An fp16 program: fp16 weights and intermediates, results within fp16 error of PyTorch."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()
    path = convert(module, (1, 3, 8, 8), tmp_path / "fp16.mlpackage", precision="fp16")
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = module(x).numpy()
    executor = MILExecutor(path)
    # iOS16 programs may take fp16 inputs directly; otherwise a cast narrows the fp32 input
    assert executor.inputs["x"].dtype == np.float16 or "cast" in _op_types(path)
    out = executor.predict({"x": x.numpy()})["y"].astype(np.float32)
    err = np.abs(out - ref).max() / np.abs(ref).max()
    assert err <= 1e-2
    assert err > 1e-6, "an fp16 program matched fp32 to 1e-6: it did not round to fp16"
    weights = [v for v in executor._consts.values() if isinstance(v, np.ndarray) and v.ndim == 4]
    assert weights and all(w.dtype == np.float16 for w in weights)


def test_unsupported_op_is_refused_at_load(tmp_path):
    path = convert(Fn(lambda x: torch.argsort(x, dim=1).float()), (1, 5), tmp_path / "argsort.mlpackage")
    assert "argsort" in _op_types(path)
    with pytest.raises(UnsupportedOpError) as info:
        MILExecutor(path)
    message = str(info.value)
    assert "argsort" in message and "argsort.mlpackage" in message
    assert isinstance(info.value, StarEdgeError)


def test_every_supported_op_name_is_a_kernel():
    assert {"conv", "linear", "gelu", "classify", "cast", "const", "layer_norm", "upsample_bilinear"} <= SUPPORTED_OPS


def test_erf_without_scipy_is_exact_to_1e12():
    xs = np.linspace(-7, 7, 20001)
    expected = np.array([math.erf(v) for v in xs])
    assert np.abs(_erf_numpy(xs) - expected).max() < 1e-12


def test_blob_reader_rejects_damaged_file(tmp_path):
    good = convert(nn.Linear(4, 3), (1, 4), tmp_path / "lin.mlpackage")
    weight = good / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weight.read_bytes())
    blob = BlobFile(weight)
    assert blob.count >= 1 and blob.version == 2
    data[64:68] = b"\0\0\0\0"  # break the first record's sentinel
    weight.write_bytes(bytes(data))
    with pytest.raises(MILProgramError, match="sentinel"):
        MILExecutor(good)


def test_input_errors_are_clear(tmp_path):
    path = convert(nn.Linear(4, 3), (1, 4), tmp_path / "lin.mlpackage")
    executor = MILExecutor(path)
    with pytest.raises(MILInputError, match="missing input"):
        executor.predict({})
    with pytest.raises(MILInputError, match="shape"):
        executor.predict({"x": np.zeros((1, 5), np.float32)})


def test_not_a_package(tmp_path):
    with pytest.raises(MILProgramError, match="Manifest.json"):
        MILExecutor(tmp_path)


def test_multifunction_package_runs_each_function_with_shared_weights(tmp_path):
    """A two-function package (coremltools ``save_multifunction``: ``main`` on [1, 4], ``batch``
    on [3, 4], same Linear weights): each function runs and matches PyTorch, the weight file
    holds the weights once, and the executors of both functions share the weight arrays."""
    import coremltools as ct

    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(4, 5), nn.GELU())
    one = convert(module, (1, 4), tmp_path / "one.mlpackage")
    three = convert(module, (3, 4), tmp_path / "three.mlpackage")
    desc = ct.utils.MultiFunctionDescriptor()
    desc.add_function(str(one), src_function_name="main", target_function_name="main")
    desc.add_function(str(three), src_function_name="main", target_function_name="batch")
    desc.default_function_name = "main"
    ct.utils.save_multifunction(desc, str(tmp_path / "mf.mlpackage"))

    main = MILExecutor(tmp_path / "mf.mlpackage")
    assert main.function == "main" and main.functions == ["batch", "main"]
    batch = main.for_function("batch")
    assert batch.function == "batch" and batch.inputs["x"].shape == (3, 4) and main.inputs["x"].shape == (1, 4)
    x = torch.randn(3, 4)
    with torch.no_grad():
        ref = module(x).numpy()
    assert np.abs(batch.predict({"x": x.numpy()})["y"] - ref).max() <= FP32_TOL
    assert np.abs(main.predict({"x": x[:1].numpy()})["y"] - ref[:1]).max() <= FP32_TOL
    single = BlobFile(tmp_path / "one.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    shared = BlobFile(tmp_path / "mf.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    assert shared.count == single.count  # stored once, not once per function
    assert batch._weights is main._weights and len(main._weights) == single.count
    with pytest.raises(MILProgramError, match="no 'prefill' function"):
        main.for_function("prefill")
