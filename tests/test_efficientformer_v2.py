"""EfficientFormerV2: Table 8 structure, official key layout, official and timm checkpoints,
the eval-order pitfall of the attention-bias cache, other input sizes, paper figures."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.errors import ConfigError
from staredge.models import create, get_entry, list_models, load_state_dict
from staredge.models.efficientformer_v2 import FFN, AttnFFN
from staredge.profiler import profile

S0 = "efficientformerv2_s0"
VARIANTS = ["efficientformerv2_s0", "efficientformerv2_s1", "efficientformerv2_s2", "efficientformerv2_l"]
SLOW = {"efficientformerv2_s2", "efficientformerv2_l"}

# EfficientFormerV2 paper, supplementary Table 8, written out: stem width (second stem conv = widths[0]), stage widths,
# depths, per-stage count of blocks with expansion ratio 4 and 3, attention blocks (MHSA N)
# in stages 3 and 4.
TABLE8 = {
    "efficientformerv2_s0": dict(stem=16, widths=(32, 48, 96, 176), depths=(2, 2, 6, 4),
                                 fours=(2, 2, 3, 2), threes=(0, 0, 3, 2), mhsa=2),
    "efficientformerv2_s1": dict(stem=16, widths=(32, 48, 120, 224), depths=(3, 3, 9, 6),
                                 fours=(3, 3, 5, 4), threes=(0, 0, 4, 2), mhsa=2),
    "efficientformerv2_s2": dict(stem=16, widths=(32, 64, 144, 288), depths=(4, 4, 12, 8),
                                 fours=(4, 4, 6, 4), threes=(0, 0, 6, 4), mhsa=4),
    "efficientformerv2_l": dict(stem=20, widths=(40, 80, 192, 384), depths=(5, 5, 15, 10),
                                fours=(5, 5, 8, 6), threes=(0, 0, 7, 4), mhsa=6),
}
# Table 8 spells these orders out explicitly.
EXPLICIT_RATIOS = {("efficientformerv2_s0", 2): [4, 3, 3, 3, 4, 4], ("efficientformerv2_s0", 3): [4, 3, 3, 4],
                   ("efficientformerv2_s1", 3): [4, 4, 3, 3, 4, 4]}

# Paper: params (M), MACs (M); their counter skips BN.
PAPER = {"efficientformerv2_s0": (3.5, 400), "efficientformerv2_s1": (6.1, 650),
         "efficientformerv2_s2": (12.6, 1250), "efficientformerv2_l": (26.1, 2560)}


def _variant_params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, BN statistics and layer scales, so that every block changes the output
    (the default layer scale of 1e-5 would make the blocks near-identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if "layer_scale" in name else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def images(size: int = 224, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------
# Hand-derived official layout (independent of the model code)
# ---------------------------------------------------------------------------------------


def official_shapes(name: str, img: int = 224, classes: int = 1000) -> dict[str, tuple]:
    """Every key of the official state_dict with its shape, derived from Table 8 and the
    attention hyper-parameters (key_dim 32, 8 heads, attn_ratio 4; the downsampler's
    attention has key_dim 16). Exact for variants whose ratio order Table 8 spells out (S0)."""
    t = TABLE8[name]
    ratios = {i: EXPLICIT_RATIOS.get((name, i), [4] * t["fours"][i] + [3] * t["threes"][i]) for i in range(4)}
    shapes: dict[str, tuple] = {}

    def conv(p, cin, cout, k=1, groups=1):
        shapes[f"{p}.weight"] = (cout, cin // groups, k, k)
        shapes[f"{p}.bias"] = (cout,)

    def bn(p, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{s}"] = (c,)
        shapes[f"{p}.num_batches_tracked"] = ()

    conv("patch_embed.0", 3, t["stem"], 3)
    bn("patch_embed.1", t["stem"])
    conv("patch_embed.3", t["stem"], t["widths"][0], 3)
    bn("patch_embed.4", t["widths"][0])
    for i, (c, depth) in enumerate(zip(t["widths"], t["depths"])):
        res = img // 2 ** (i + 2)
        for j in range(depth):
            p = f"network.{2 * i}.{j}"
            hidden = c * ratios[i][j]
            if i >= 2 and j >= depth - t["mhsa"]:
                a = f"{p}.token_mixer"
                grid = res // 2 if i == 2 else res
                if i == 2:
                    conv(f"{a}.stride_conv.0", c, c, 3, groups=c)
                    bn(f"{a}.stride_conv.1", c)
                for qk in ("q", "k"):
                    conv(f"{a}.{qk}.0", c, 256)
                    bn(f"{a}.{qk}.1", 256)
                conv(f"{a}.v.0", c, 1024)
                bn(f"{a}.v.1", 1024)
                conv(f"{a}.v_local.0", 1024, 1024, 3, groups=1024)
                bn(f"{a}.v_local.1", 1024)
                conv(f"{a}.talking_head1", 8, 8)
                conv(f"{a}.talking_head2", 8, 8)
                conv(f"{a}.proj.1", 1024, c)
                bn(f"{a}.proj.2", c)
                shapes[f"{a}.attention_biases"] = (8, grid * grid)
                shapes[f"{a}.attention_bias_idxs"] = (grid * grid, grid * grid)
                shapes[f"{p}.layer_scale_1"] = (c, 1, 1)
            conv(f"{p}.mlp.fc1", c, hidden)
            bn(f"{p}.mlp.norm1", hidden)
            conv(f"{p}.mlp.mid", hidden, hidden, 3, groups=hidden)
            bn(f"{p}.mlp.mid_norm", hidden)
            conv(f"{p}.mlp.fc2", hidden, c)
            bn(f"{p}.mlp.norm2", c)
            shapes[f"{p}.layer_scale_2"] = (c, 1, 1)
        if i < 3:
            p, c2 = f"network.{2 * i + 1}", t["widths"][i + 1]
            if i < 2:
                conv(f"{p}.proj", c, c2, 3)
                bn(f"{p}.norm", c2)
            else:
                conv(f"{p}.conv", c, c2, 3)
                bn(f"{p}.bn", c2)
                a = f"{p}.attn"
                conv(f"{a}.q.local.0", c, c, 3, groups=c)
                conv(f"{a}.q.proj.0", c, 128)
                bn(f"{a}.q.proj.1", 128)
                conv(f"{a}.k.0", c, 128)
                bn(f"{a}.k.1", 128)
                conv(f"{a}.v.0", c, 512)
                bn(f"{a}.v.1", 512)
                conv(f"{a}.v_local.0", 512, 512, 3, groups=512)
                bn(f"{a}.v_local.1", 512)
                conv(f"{a}.proj.1", 512, c2)
                bn(f"{a}.proj.2", c2)
                shapes[f"{a}.attention_biases"] = (8, res * res)
                shapes[f"{a}.attention_bias_idxs"] = ((res // 2) ** 2, res * res)
    bn("norm", t["widths"][-1])
    for h in ("head", "dist_head"):
        shapes[f"{h}.weight"] = (classes, t["widths"][-1])
        shapes[f"{h}.bias"] = (classes,)
    return shapes


# The official layout as patterns (what a reader of the official checkpoint sees).
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_ATT = r"(q|k|v|v_local|stride_conv)\.(0\.(weight|bias)|1\." + _BN + r")"
OFFICIAL_KEY = re.compile(
    "|".join([
        rf"patch_embed\.[03]\.(weight|bias)", rf"patch_embed\.[14]\.{_BN}",
        rf"network\.[0246]\.\d+\.mlp\.(fc1|mid|fc2)\.(weight|bias)",
        rf"network\.[0246]\.\d+\.mlp\.(norm1|mid_norm|norm2)\.{_BN}",
        r"network\.[0246]\.\d+\.layer_scale_[12]",
        rf"network\.[46]\.\d+\.token_mixer\.{_ATT}",
        rf"network\.[46]\.\d+\.token_mixer\.(talking_head[12]\.(weight|bias)|proj\.1\.(weight|bias)|proj\.2\.{_BN})",
        r"network\.[46]\.\d+\.token_mixer\.attention_bias(es|_idxs)",
        rf"network\.[13]\.(proj\.(weight|bias)|norm\.{_BN})",
        rf"network\.5\.(conv\.(weight|bias)|bn\.{_BN})",
        rf"network\.5\.attn\.({_ATT}|q\.local\.0\.(weight|bias)|q\.proj\.0\.(weight|bias)|q\.proj\.1\.{_BN})",
        rf"network\.5\.attn\.(proj\.1\.(weight|bias)|proj\.2\.{_BN}|attention_bias(es|_idxs))",
        rf"norm\.{_BN}", r"(head|dist_head)\.(weight|bias)",
    ])
)


def official_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write an official state_dict in timm's layout (the inverse of what the model's filter
    does, written segment by segment from timm's module names)."""
    stem = {"0": "conv1.conv", "1": "conv1.bn", "3": "conv2.conv", "4": "conv2.bn"}
    mlp = {"fc1": "fc1.conv", "norm1": "fc1.bn", "mid": "mid.conv", "mid_norm": "mid.bn",
           "fc2": "fc2.conv", "norm2": "fc2.bn"}
    seq = {"0": "conv", "1": "bn"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[-1] == "attention_bias_idxs":
            continue  # timm rebuilds these (non-persistent)
        if parts[0] == "patch_embed":
            out[f"stem.{stem[parts[1]]}.{parts[2]}"] = value
            continue
        if parts[0] == "dist_head":
            out[f"head_dist.{parts[1]}"] = value
            continue
        if parts[0] != "network":
            out[key] = value
            continue
        n = int(parts[1])
        if n % 2 == 0:
            prefix, rest = f"stages.{n // 2}.blocks.{parts[2]}", parts[3:]
        else:
            prefix, rest = f"stages.{(n + 1) // 2}.downsample", parts[2:]
            if rest[0] in ("proj", "conv"):
                rest = ["conv", "conv"] + rest[1:]
            elif rest[0] in ("norm", "bn"):
                rest = ["conv", "bn"] + rest[1:]
        if rest[0] in ("layer_scale_1", "layer_scale_2"):
            out[f"{prefix}.ls{rest[0][-1]}.gamma"] = value.reshape(-1)
            continue
        if rest[0] == "mlp":
            rest = ["mlp", mlp[rest[1]]] + rest[2:]
        elif rest[0] in ("token_mixer", "attn"):
            mod = rest[1]
            if mod == "q" and rest[2] == "local":  # q.local.0.weight -> q.local.weight
                rest = rest[:3] + rest[4:]
            elif mod == "q" and rest[2] == "proj":
                rest = rest[:3] + [seq[rest[3]]] + rest[4:]
            elif mod in ("q", "k", "v", "v_local", "stride_conv"):
                rest = rest[:2] + [seq[rest[2]]] + rest[3:]
            elif mod == "proj":
                rest = rest[:2] + [{"1": "conv", "2": "bn"}[rest[2]]] + rest[3:]
        out[f"{prefix}.{'.'.join(rest)}"] = value
    return out


# ---------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------


def test_registered_variants_and_config():
    assert list_models("efficientformer_v2") == VARIANTS
    entry = get_entry("efficientformerv2_s1")
    assert entry.cfg.input_size == (3, 224, 224) and entry.cfg.interpolation == "bicubic"
    assert entry.paper.top1 == 79.0


@pytest.mark.parametrize("name", _variant_params(VARIANTS))
def test_table8_structure(name):
    t = TABLE8[name]
    model = create(name)
    assert model.patch_embed[0].out_channels == t["stem"]
    for i in range(4):
        stage = model.network[2 * i]
        assert len(stage) == t["depths"][i]
        ratios = [blk.mlp.fc1.out_channels // t["widths"][i] for blk in stage]
        assert ratios.count(4) == t["fours"][i] and ratios.count(3) == t["threes"][i], ratios
        if (name, i) in EXPLICIT_RATIOS:
            assert ratios == EXPLICIT_RATIOS[(name, i)]
        kinds = [type(blk) for blk in stage]
        n_attn = t["mhsa"] if i >= 2 else 0
        assert kinds == [FFN] * (t["depths"][i] - n_attn) + [AttnFFN] * n_attn
    assert all(blk.token_mixer.stride_conv is not None for blk in model.network[4][-t["mhsa"]:])
    assert all(blk.token_mixer.stride_conv is None for blk in model.network[6][-t["mhsa"]:])
    assert model.network[5].asub and not model.network[3].asub


def test_official_key_layout_and_shapes():
    sd = create(S0).state_dict()
    expected = official_shapes(S0)
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    bad = [k for k in sd if not OFFICIAL_KEY.fullmatch(k)]
    assert not bad, bad[:5]


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s0_reference():
    """A randomised S0 in eval mode and its output on a fixed batch."""
    torch.manual_seed(0)
    model = randomize(create(S0)).eval()
    x = images()
    with torch.no_grad():
        y = model(x)
    return model, x, y


def test_official_and_timm_checkpoints_give_identical_outputs(s0_reference, tmp_path):
    from safetensors.torch import save_file

    model, x, y = s0_reference
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    official = tmp_path / "eformer_s0_450.pth"
    torch.save({"model": sd}, official)  # the official file keeps weights under "model"
    timm_sd = official_to_timm(sd)
    timm_file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm_sd.items()}, str(timm_file))

    from_official = create(S0, checkpoint=str(official))
    from_timm = create(S0, checkpoint=str(timm_file))
    with torch.no_grad():
        y_official, y_timm = from_official(x), from_timm(x)
    assert y.abs().max() > 1e-2  # the outputs are not trivially zero
    torch.testing.assert_close(y_official, y, rtol=0, atol=1e-6)
    torch.testing.assert_close(y_timm, y_official, rtol=0, atol=1e-6)
    assert len(timm_sd) < len(sd)  # no attention_bias_idxs in timm files


def test_timm_layout_key_names(s0_reference):
    """Key names and shapes of timm's efficientformerv2_s0 (as listed by timm 1.0)."""
    timm_sd = official_to_timm(s0_reference[0].state_dict())
    expected = {
        "stem.conv1.conv.weight": (16, 3, 3, 3), "stem.conv2.bn.running_var": (32,),
        "stages.0.blocks.0.mlp.fc1.conv.weight": (128, 32, 1, 1), "stages.0.blocks.0.mlp.mid.bn.weight": (128,),
        "stages.0.blocks.1.ls2.gamma": (32,), "stages.1.downsample.conv.conv.weight": (48, 32, 3, 3),
        "stages.2.blocks.4.token_mixer.stride_conv.conv.weight": (96, 1, 3, 3),
        "stages.2.blocks.4.token_mixer.proj.conv.weight": (96, 1024, 1, 1), "stages.2.blocks.5.ls1.gamma": (96,),
        "stages.2.blocks.5.token_mixer.attention_biases": (8, 49),
        "stages.3.downsample.conv.bn.weight": (176,), "stages.3.downsample.attn.q.local.weight": (96, 1, 3, 3),
        "stages.3.downsample.attn.q.proj.conv.weight": (128, 96, 1, 1),
        "stages.3.downsample.attn.attention_biases": (8, 196), "head_dist.weight": (1000, 176),
    }
    for key, shape in expected.items():
        assert tuple(timm_sd[key].shape) == shape, key
    assert not any("attention_bias_idxs" in k or k.startswith(("network.", "patch_embed.")) for k in timm_sd)


def test_num_classes_replaces_both_heads(s0_reference, tmp_path):
    model = s0_reference[0]
    path = tmp_path / "s0.pth"
    torch.save({"model": model.state_dict()}, path)
    tuned = create(S0, checkpoint=str(path), num_classes=10)
    assert tuned.head.out_features == 10 and tuned.dist_head.out_features == 10
    assert tuned.head_names == ("head", "dist_head")
    torch.testing.assert_close(tuned.norm.running_var, model.norm.running_var, rtol=0, atol=0)
    with torch.no_grad():
        assert tuned(images(batch=1)).shape == (1, 10)


# ---------------------------------------------------------------------------------------
# The attention-bias cache
# ---------------------------------------------------------------------------------------


def test_loading_after_eval_refreshes_the_bias_cache(s0_reference):
    """The official code caches the gathered biases in train(False); loading after .eval()
    left them stale there. Here every path that changes the weights refreshes the cache."""
    model, x, y = s0_reference
    sd = model.state_dict()
    with torch.no_grad():
        fresh_out = create(S0)(x)  # zero biases, as built
    assert (fresh_out - y).abs().max() > 1e-3  # a stale cache would be detectable

    via_loader = create(S0).eval()
    load_state_dict(via_loader, sd)
    plain = create(S0).eval()
    plain.load_state_dict(sd)  # plain nn.Module API, no after_load()
    with torch.no_grad():
        torch.testing.assert_close(via_loader(x), y, rtol=0, atol=1e-6)
        torch.testing.assert_close(plain(x), y, rtol=0, atol=1e-6)

    # An in-place edit of the parameter in eval mode is seen through its version counter
    # (random, not constant: softmax ignores a constant shift per row).
    attn = plain.network[6][-1].token_mixer
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        attn.attention_biases.add_(5 * torch.randn(attn.attention_biases.shape, generator=g))
        torch.testing.assert_close(attn.attention_bias(), attn.attention_biases[:, attn.attention_bias_idxs])
        reference = create(S0)
        reference.load_state_dict(plain.state_dict())
        edited = plain(x)
        torch.testing.assert_close(edited, reference.eval()(x), rtol=0, atol=1e-6)
        assert (edited - y).abs().max() > 1e-4
        # the cache follows dtype changes (a buffer, converted with the parameters)
        plain.double()
        assert attn.attention_bias().dtype == torch.float64
        torch.testing.assert_close(plain(x.double()).float(), edited, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_eval_uses_precomputed_biases_in_traced_graphs(s0_reference):
    """In eval the gathered bias is a constant, so an exported graph has no index op; a bias
    edited in place right before tracing is still traced correctly (jit and fx)."""
    import torch.fx as fx

    model, x, y = s0_reference
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:1], check_trace=False)
        torch.testing.assert_close(traced(x[:1]), y[:1], rtol=0, atol=1e-6)
    ops = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::index" not in ops
    assert "aten::matmul" in ops or "aten::bmm" in ops

    edited = create(S0)
    edited.load_state_dict(model.state_dict())
    attn = edited.network[5].attn
    with torch.no_grad():
        attn.attention_biases.mul_(-3.0)  # in place, in eval, no forward pass in between
        jit_graph = torch.jit.trace(edited, x[:1], check_trace=False)
        fx_graph = fx.symbolic_trace(edited)
        expected = edited(x[:1])
        assert (expected - y[:1]).abs().max() > 1e-4
        torch.testing.assert_close(jit_graph(x[:1]), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(fx_graph(x[:1]), expected, rtol=0, atol=1e-6)


def test_training_mode_outputs(s0_reference):
    model = randomize(create(S0))
    model.train()
    x = images(batch=2)
    with torch.no_grad():
        avg = model(x)
        model.distilled_training = True
        logits, dist = model(x)
    assert avg.shape == logits.shape == dist.shape == (2, 1000)
    torch.testing.assert_close(avg, (logits + dist) / 2, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Resolutions
# ---------------------------------------------------------------------------------------


def test_224_checkpoint_into_224_model_is_unchanged(s0_reference, tmp_path):
    model, x, y = s0_reference
    path = tmp_path / "s0.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = create(S0, checkpoint=str(path), img_size=224)
    for name, p in model.named_parameters():
        if name.endswith("attention_biases"):
            assert torch.equal(dict(loaded.named_parameters())[name], p)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [256, 320])
def test_224_checkpoint_at_other_resolutions(s0_reference, tmp_path, size):
    model = s0_reference[0]
    path = tmp_path / "s0.pth"
    torch.save({"model": model.state_dict()}, path)
    big = create(S0, checkpoint=str(path), img_size=size)
    assert big.pretrained_cfg.input_size == (3, size, size)

    src = model.network[5].attn.attention_biases.detach()  # (8, 14*14) offsets at 224
    side = size // 16
    resized = big.network[5].attn.attention_biases.detach()
    assert resized.shape == (8, side * side)
    expected = F.interpolate(src.reshape(1, 8, 14, 14), size=(side, side), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.reshape(8, -1), rtol=0, atol=1e-6)
    idxs = big.network[5].attn.attention_bias_idxs
    assert idxs.shape == ((side // 2) ** 2, side * side) and int(idxs.max()) == side * side - 1
    # the same weights in timm's layout resize the same way
    from_timm = create(S0, img_size=size)
    load_state_dict(from_timm, official_to_timm(model.state_dict()))
    for name, p in big.named_parameters():
        assert torch.equal(dict(from_timm.named_parameters())[name], p), name
    # everything that is not resolution-dependent is loaded unchanged
    torch.testing.assert_close(big.network[6][0].mlp.fc1.weight, model.network[6][0].mlp.fc1.weight, rtol=0, atol=0)
    with torch.no_grad():
        out = big(images(size, batch=1))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_bicubic_resize_keeps_constant_biases(tmp_path):
    model = create(S0)
    with torch.no_grad():
        for m in model.attention_modules().values():
            m.attention_biases.copy_(torch.arange(8.0).reshape(8, 1).expand_as(m.attention_biases))
    sd = model.state_dict()
    big = create(S0, img_size=288)
    load_state_dict(big, sd)
    for m in big.attention_modules().values():
        torch.testing.assert_close(m.attention_biases, torch.arange(8.0).reshape(8, 1).expand_as(m.attention_biases))


def test_s1_builds_for_other_sizes():
    for size in (256, 320):
        model = create("efficientformerv2_s1", img_size=size)
        assert model.pretrained_cfg.input_size == (3, size, size)
        with torch.no_grad():
            assert model(images(size, batch=1)).shape == (1, 1000)


def test_bad_sizes_are_reported():
    with pytest.raises(ConfigError, match="divisible by 32"):
        create(S0, img_size=250)
    with pytest.raises(ConfigError, match="built for 224x224"):
        with torch.no_grad():
            create(S0)(images(256, batch=1))


# ---------------------------------------------------------------------------------------
# BN fusing support
# ---------------------------------------------------------------------------------------


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)


def test_conv_bn_pairs_cover_every_fusable_batchnorm(s0_reference):
    model, x, y = s0_reference
    fused = randomize(create(S0)).eval()
    fused.load_state_dict(model.state_dict())
    pairs = fused.conv_bn_pairs()
    bns = {n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert bns - {b for _, b in pairs} == {"norm"}  # only the final norm has no conv before it
    assert len({b for _, b in pairs}) == len(pairs)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            _fold(fused.get_submodule(conv_name), fused.get_submodule(bn_name))
            parent, _, child = bn_name.rpartition(".")
            setattr(fused.get_submodule(parent), child, nn.Identity())
        torch.testing.assert_close(fused(x), y, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Paper figures
# ---------------------------------------------------------------------------------------


def _params_without_bn(model: nn.Module) -> int:
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - bn


@pytest.mark.parametrize("name", _variant_params(VARIANTS))
def test_params_and_macs_within_2pct_of_paper(name):
    paper_params, paper_macs = PAPER[name]
    model = create(name)
    res = profile(model)
    assert abs(res.macs_m - paper_macs) / paper_macs < 0.02, res.macs_m
    # The paper counts params without BN (fused for inference), as does our note.
    ours = _params_without_bn(model) / 1e6
    assert abs(ours - paper_params) / paper_params < 0.02, ours
    entry = get_entry(name)
    assert entry.paper.params_m == paper_params and entry.paper.macs_m == paper_macs
    stated = float(re.search(r"w/o BN ([\d.]+)M", entry.paper.note).group(1))
    assert math.isclose(stated, ours, abs_tol=0.0005), (stated, ours)
