"""Rewrite passes: numerics against the original module and the structure they promise."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from staredge.errors import ConfigError
from staredge.exporters.passes import (
    PASS_NAMES,
    PointwiseLinear,
    apply_passes,
    count_batchnorm,
    count_pointwise_convs,
    fuse_batchnorm,
    pointwise_conv_to_linear,
    resolve_passes,
)
from staredge.formats import get_format
from staredge.models import create, list_models, realistic_weights

ATOL = 1e-5

SMALL = ["starnet_s050", "starnet_s1", "efficientformerv2_s0"]
LARGE = [n for n in list_models("starnet") + list_models("efficientformer_v2") if n not in SMALL and n != "starnet_digits"]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights that make a wrong fold visible (real BN maps, layer scales, O(1) logits)."""
    return realistic_weights(model, seed)


def image_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    model = randomize(create(name))
    _, h, w = model.pretrained_cfg.input_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    return model, x


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def check_fuse(name: str) -> None:
    model, x = image_model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = outputs(model, x)
    assert ref.abs().max() > 0.5, "logits too small for the comparison to mean anything"
    fused = fuse_batchnorm(model)
    assert count_batchnorm(model) > 0 and count_batchnorm(fused) == 0
    torch.testing.assert_close(outputs(fused, x), ref, atol=ATOL, rtol=0)
    # pure: the input module is untouched
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def check_pointwise(name: str) -> None:
    model, x = image_model(name)
    ref = outputs(model, x)
    fused = fuse_batchnorm(model)
    assert count_pointwise_convs(fused) > 0
    linear = pointwise_conv_to_linear(fused)
    assert count_pointwise_convs(linear) == 0
    assert count_pointwise_convs(fused) > 0, "the pass modified its input"
    torch.testing.assert_close(outputs(linear, x), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", SMALL)
def test_fuse_batchnorm_small(name):
    check_fuse(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_fuse_batchnorm_large(name):
    check_fuse(name)


@pytest.mark.parametrize("name", SMALL)
def test_pointwise_conv_to_linear_small(name):
    check_pointwise(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_pointwise_conv_to_linear_large(name):
    check_pointwise(name)


def test_starnet_final_norm_folded_into_head_and_depthwise_fused():
    model, x = image_model("starnet_s050")
    fused = fuse_batchnorm(model)
    assert isinstance(fused.norm, nn.Identity)
    block = fused.stages[0][1]
    assert not hasattr(block.dwconv, "bn") and block.dwconv.conv.groups == block.dwconv.conv.in_channels
    assert not torch.equal(fused.head.weight, model.head.weight)  # the BN scale went into the head


def test_starnet_pointwise_run_stays_channels_last():
    """f1, f2, act, star and g of a block sit between exactly one pair of permutes."""
    model, x = image_model("starnet_s050")
    out = pointwise_conv_to_linear(fuse_batchnorm(model))
    stage = out.stages[0]
    assert isinstance(stage, torch.fx.GraphModule)
    blocks = len(model.stages[0]) - 1
    permutes = [n for n in stage.graph.nodes if n.op == "call_method" and n.target == "permute"]
    assert len(permutes) == 2 * blocks
    linears = [n for n in stage.graph.nodes if n.op == "call_module" and isinstance(stage.get_submodule(n.target), nn.Linear)]
    assert len(linears) == 3 * blocks
    torch.testing.assert_close(outputs(out, x), outputs(model, x), atol=ATOL, rtol=0)


def test_efficientformerv2_heads_merged_and_layer_scales_folded():
    model, x = image_model("efficientformerv2_s0")
    fused = fuse_batchnorm(model)
    assert fused.dist_head is None and isinstance(fused.head, nn.Linear)
    assert not [n for n, _ in fused.named_parameters() if "layer_scale" in n]
    assert [n for n, _ in model.named_parameters() if "layer_scale" in n]
    torch.testing.assert_close(outputs(fused, x), outputs(model, x), atol=ATOL, rtol=0)


class SiblingConvBN(nn.Module):
    """Conv and BN as siblings (not a Sequential), plus a conv whose output is reused."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.shared = nn.Conv2d(8, 8, 1)
        self.bn_shared = nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.bn(self.conv(x))
        y = self.shared(x)
        return self.bn_shared(y) + y  # folding bn_shared into `shared` would change `+ y`


def test_generic_conv_bn_fused_but_not_when_conv_output_is_reused():
    model = randomize(SiblingConvBN())
    x = torch.randn(2, 3, 16, 16)
    fused = fuse_batchnorm(model, example_input=x)
    assert isinstance(fused.bn, nn.Identity) and fused.conv.bias is not None
    assert isinstance(fused.bn_shared, nn.BatchNorm2d)  # undone by the numeric check
    torch.testing.assert_close(outputs(fused, x), outputs(model, x), atol=ATOL, rtol=0)


def test_pointwise_only_rewrites_true_pointwise_convs():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 1),              # rewritten
        nn.Conv2d(8, 8, 1, stride=2),    # strided: kept
        nn.Conv2d(8, 8, 1, groups=2),    # grouped: kept
        nn.ReLU(),
        nn.Conv2d(8, 4, 1, bias=False),  # rewritten
    ).eval()
    x = torch.randn(2, 4, 8, 8)
    out = pointwise_conv_to_linear(model)
    convs = [m for m in out.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and {c.stride for c in convs} == {(2, 2), (1, 1)}
    assert sum(isinstance(m, nn.Linear) for m in out.modules()) == 2
    torch.testing.assert_close(outputs(out, x), outputs(model, x), atol=ATOL, rtol=0)


def test_pointwise_root_conv_becomes_pointwise_linear():
    conv = nn.Conv2d(6, 5, 1)
    out = pointwise_conv_to_linear(conv)
    assert isinstance(out, PointwiseLinear)
    x = torch.randn(1, 6, 4, 4)
    torch.testing.assert_close(out(x), conv(x), atol=ATOL, rtol=0)


def test_demonet_passes_keep_numerics():
    model = create("demonet_w96")
    x = torch.randn(2, 3, 224, 224)
    out = apply_passes(model, ["fuse_batchnorm", "pointwise_conv_to_linear"])
    assert out is not model
    torch.testing.assert_close(outputs(out, x), outputs(model, x), atol=ATOL, rtol=0)


def test_resolve_passes():
    assert resolve_passes("none", "onnx") == []
    assert resolve_passes(None, "onnx") == []
    for fmt in ("onnx", "openvino", "tflite", "coreml"):
        auto = resolve_passes("auto", fmt)
        assert auto[0] == "fuse_batchnorm"
        assert ("pointwise_conv_to_linear" in auto) == ("pointwise_conv_to_linear" in get_format(fmt).default_passes)
        assert auto == list(get_format(fmt).default_passes)  # "auto" is the format table's choice
    assert resolve_passes("pointwise_conv_to_linear,fuse_batchnorm", "onnx") == ["pointwise_conv_to_linear", "fuse_batchnorm"]
    assert resolve_passes(["fuse_batchnorm"], "tflite") == ["fuse_batchnorm"]
    with pytest.raises(ConfigError, match="unknown rewrite pass"):
        resolve_passes("fuse_bn", "onnx")


def test_unknown_pass_is_a_config_error_naming_the_valid_ones():
    model = create("demonet_w96")
    for bad in (["count_batchnorm"], "fuse_batchnorm,count_batchnorm", ["is_pointwise_conv"], [fuse_batchnorm]):
        with pytest.raises(ConfigError, match="unknown rewrite pass") as info:
            apply_passes(model, bad)
        assert all(name in str(info.value) for name in PASS_NAMES)
    assert apply_passes(model, []) is model


def test_bench_rejects_a_helper_function_as_a_pass():
    """`pytorch@count_batchnorm` once replaced the model by an integer; now it is refused."""
    from staredge.bench.runners import apply_rewrites
    from staredge.bench.specs import parse_backend
    from staredge.cli import main

    with pytest.raises(ConfigError, match="unknown rewrite pass.*count_batchnorm"):
        parse_backend("pytorch@count_batchnorm")
    with pytest.raises(ConfigError, match="valid passes: fuse_batchnorm, pointwise_conv_to_linear"):
        apply_rewrites(create("starnet_s050"), ("count_batchnorm",))
    assert parse_backend("pytorch@fuse+pwlinear").rewrites == tuple(PASS_NAMES)
    assert main(["bench", "starnet_s050", "--backends", "pytorch@count_batchnorm", "--warmup", "1", "--iters", "1"]) == 2


class _NoHookNet(nn.Module):
    """A final BatchNorm and two averaged heads, but no ``inference_folds`` hook."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)
        self.dist_head = nn.Linear(8, 4)

    def forward(self, x):
        pooled = self.norm(torch.relu(self.conv(x))).mean((2, 3))  # the BN does not read the conv
        return (self.head(pooled) + self.dist_head(pooled)) / 2


def test_family_folds_come_only_from_the_family_hook():
    """The generic pass guesses nothing from attribute names: without a hook the final norm
    and the two heads stay; a hook listing them gets them folded."""
    from staredge.models.folds import InferenceFolds

    model = randomize(_NoHookNet())
    x = torch.randn(2, 3, 8, 8)
    plain = fuse_batchnorm(model, example_input=x)
    assert isinstance(plain.norm, nn.BatchNorm2d) and isinstance(plain.dist_head, nn.Linear)

    class _Hooked(_NoHookNet):
        def inference_folds(self):
            return InferenceFolds(pooled_norm="norm", heads=("head", "dist_head"), averaged_heads=("head", "dist_head"))

        def forward(self, x):
            pooled = self.norm(torch.relu(self.conv(x))).mean((2, 3))
            if self.dist_head is None:
                return self.head(pooled)
            return (self.head(pooled) + self.dist_head(pooled)) / 2

    hooked = _Hooked()
    hooked.load_state_dict(model.state_dict())
    hooked.eval()
    fused = fuse_batchnorm(hooked, example_input=x)
    assert isinstance(fused.norm, nn.Identity) and fused.dist_head is None and count_batchnorm(fused) == 0
    torch.testing.assert_close(outputs(fused, x), outputs(model, x), atol=ATOL, rtol=0)
