"""StarNet: official key layout, forward pass, checkpoint round trips, paper figures."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from staredge.models import create, list_models, load_checkpoint
from staredge.models.starnet import StarNet

STARNETS = ["starnet_s1", "starnet_s2", "starnet_s3", "starnet_s4", "starnet_s050", "starnet_s100", "starnet_s150"]

# (base width, depths, mlp ratio) from StarNet Table 5 and supplement Table 13
CONFIGS = {
    "starnet_s1": (24, (2, 2, 8, 3), 4),
    "starnet_s2": (32, (1, 2, 6, 2), 4),
    "starnet_s3": (32, (2, 2, 8, 4), 4),
    "starnet_s4": (32, (3, 3, 12, 5), 4),
    "starnet_s050": (16, (1, 1, 3, 1), 3),
    "starnet_s100": (20, (1, 2, 4, 1), 4),
    "starnet_s150": (24, (1, 2, 4, 2), 3),
}

# The official state_dict layout, written out as patterns.
_CONV = r"(conv\.(weight|bias))"
_BN = r"(bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"
OFFICIAL_KEY = re.compile(
    "|".join(
        [
            rf"stem\.0\.({_CONV}|{_BN})",
            rf"stages\.[0-3]\.0\.({_CONV}|{_BN})",  # downsampler ConvBN
            rf"stages\.[0-3]\.[1-9]\d*\.(dwconv|g)\.({_CONV}|{_BN})",  # ConvBN with BN
            rf"stages\.[0-3]\.[1-9]\d*\.(f1|f2|dwconv2)\.{_CONV}",  # no BN
            r"norm\.(weight|bias|running_mean|running_var|num_batches_tracked)",
            r"head\.(weight|bias)",
        ]
    )
)


def expected_shapes(base: int, depths: tuple[int, ...], ratio: int, num_classes: int = 1000) -> dict[str, tuple]:
    """Parameter shapes of the official implementation, derived by hand from the paper."""
    shapes: dict[str, tuple] = {}

    def convbn(prefix, cin, cout, k, groups=1, bn=True):
        shapes[f"{prefix}.conv.weight"] = (cout, cin // groups, k, k)
        shapes[f"{prefix}.conv.bias"] = (cout,)
        if bn:
            for s in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.bn.{s}"] = (cout,)
            shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    convbn("stem.0", 3, 32, 3)
    cin = 32
    for i, depth in enumerate(depths):
        dim = base * 2**i
        convbn(f"stages.{i}.0", cin, dim, 3)
        for j in range(1, depth + 1):
            p = f"stages.{i}.{j}"
            convbn(f"{p}.dwconv", dim, dim, 7, groups=dim)
            convbn(f"{p}.f1", dim, ratio * dim, 1, bn=False)
            convbn(f"{p}.f2", dim, ratio * dim, 1, bn=False)
            convbn(f"{p}.g", ratio * dim, dim, 1)
            convbn(f"{p}.dwconv2", dim, dim, 7, groups=dim, bn=False)
        cin = dim
    for s in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"norm.{s}"] = (cin,)
    shapes["norm.num_batches_tracked"] = ()
    shapes["head.weight"] = (num_classes, cin)
    shapes["head.bias"] = (num_classes,)
    return shapes


def test_all_variants_registered():
    assert set(STARNETS) <= set(list_models("starnet"))


@pytest.mark.parametrize("name", STARNETS)
def test_official_key_layout(name):
    sd = create(name).state_dict()
    bad = [k for k in sd if not OFFICIAL_KEY.fullmatch(k)]
    assert not bad, f"keys outside the official layout: {bad[:5]}"
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert got == expected_shapes(*CONFIGS[name])


def test_block_structure_matches_paper():
    m = create("starnet_s1")
    blk = m.stages[0][1]
    assert isinstance(blk.act, torch.nn.ReLU6)
    assert not hasattr(blk.f1, "bn") and not hasattr(blk.dwconv2, "bn")
    assert hasattr(blk.dwconv, "bn") and hasattr(blk.g, "bn")
    assert m.stem[0].conv.bias is not None  # ConvBN keeps its conv bias
    assert isinstance(m.stem[1], torch.nn.ReLU6)


def test_star_is_act_f1_times_f2(rng):
    m = create("starnet_s050")
    _randomise(m)  # the default init makes the residual branch ~1e-7: use O(0.1) weights
    blk = m.stages[0][1]
    x = torch.randn(1, 16, 8, 8, generator=rng)
    with torch.no_grad():
        h = blk.dwconv(x)
        expected = x + blk.dwconv2(blk.g(torch.nn.functional.relu6(blk.f1(h)) * blk.f2(h)))
        assert torch.allclose(blk(x), expected, atol=1e-6)
        blk.mode = "sum"
        assert (blk(x) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["starnet_s050", "starnet_s1"])
def test_forward_shape_and_determinism(name, rng):
    m = create(name)
    x = torch.randn(2, 3, 224, 224, generator=rng)
    with torch.inference_mode():
        y1, y2 = m(x), m(x)
    assert y1.shape == (2, 1000)
    assert torch.equal(y1, y2)
    assert torch.isfinite(y1).all()


def _randomise(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=g) * 0.1)
            elif "num_batches_tracked" in name:
                t.fill_(1234)


def test_official_pth_tar_loads_strictly(tmp_path, rng):
    """A file in the official release format: state_dict + argparse.Namespace + epoch."""
    src = StarNet(24, (2, 2, 8, 3))
    _randomise(src)
    args = argparse.Namespace(model="starnet_s1", lr=3e-3, epochs=300, drop_path=0.0, aa="rand-m1-mstd0.5-inc1")
    path = tmp_path / "starnet_s1.pth.tar"
    torch.save({"epoch": 299, "arch": "starnet_s1", "state_dict": src.state_dict(), "args": args, "metric": 73.5}, path)

    dst = create("starnet_s1", checkpoint=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k  # BN running stats included
    assert int(dst.norm.num_batches_tracked) == 1234
    x = torch.randn(1, 3, 224, 224, generator=rng)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst(x))
    assert len(dst.checkpoint_sha256) == 64


def test_wrong_variant_checkpoint_lists_problems(tmp_path):
    path = tmp_path / "s2.pth"
    torch.save(create("starnet_s2").state_dict(), path)
    from staredge.errors import CheckpointError

    with pytest.raises(CheckpointError) as err:
        create("starnet_s1", checkpoint=str(path))
    msg = str(err.value)
    assert "shape mismatches" in msg and "stages.0.0.conv.weight" in msg
    assert "unexpected keys" in msg or "missing keys" in msg


@pytest.mark.parametrize(
    "name,params_m,macs_m",
    [
        ("starnet_s1", 2.9, 425), ("starnet_s2", 3.7, 547), ("starnet_s3", 5.8, 757), ("starnet_s4", 7.5, 1075),
        ("starnet_s050", 0.54, 92.8), ("starnet_s100", 1.04, 187.1), ("starnet_s150", 1.56, 229.0),
    ],
)
def test_params_and_macs_match_paper(name, params_m, macs_m):
    from staredge import profile

    res = profile(name)
    decimals = len(str(params_m).split(".")[1])
    assert round(res.params_m, decimals) == params_m  # equal at the paper's printed precision
    assert abs(res.macs_m - macs_m) / macs_m < 0.03


def test_s4_is_the_mac_outlier():
    """The paper's S4 MAC figure deviates most from a count of its own architecture."""
    from staredge import profile

    paper = {"starnet_s1": 425, "starnet_s2": 547, "starnet_s3": 757, "starnet_s4": 1075,
             "starnet_s050": 92.8, "starnet_s100": 187.1, "starnet_s150": 229.0}
    dev = {n: abs(profile(n).macs_m - m) / m for n, m in paper.items()}
    assert max(dev, key=dev.get) == "starnet_s4"
    assert dev["starnet_s4"] > 0.02


def test_profile_s1_conv_linear_macs():
    """Counting only conv and linear MACs gives 421.9M for S1 (the StarNet paper, Table 6, reports 425M:
    its counter also counts a few other ops)."""
    from staredge import profile

    assert round(profile("starnet_s1").macs_m, 1) == 421.9
