"""CoreML export: packages checked with the MIL reference executor against PyTorch.

Models keep their random initialisation, with BatchNorm statistics randomised and the
classifier scaled so that logits spread over O(1) (so the fp32 bound of 1e-4 and top-1
agreement are meaningful rather than trivially met by near-zero logits).
"""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

pytest.importorskip("coremltools")

from staredge.errors import ConfigError, StarEdgeError  # noqa: E402
from staredge.exporters import coreml as coreml_exporter  # noqa: E402
from staredge.exporters.coreml import (  # noqa: E402
    ArtifactExistsError,
    CoreMLExportError,
    CoreMLPlatformError,
    compare_with_apple_runtime,
    export_coreml,
)
from staredge.metadata import ArtifactMetadata, read_metadata  # noqa: E402
from staredge.models import create  # noqa: E402
from staredge.runtimes.mil_reference import MILExecutor, MILInputError  # noqa: E402

FP32_TOL = 1e-4
FP16_REL_TOL = 1e-2


# --------------------------------------------------------------------------- helpers


def spread(model: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise BatchNorm statistics and scale the classifier head(s) to logits of std ~2."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
        cfg = model.pretrained_cfg
        x = torch.randn(2, *cfg.input_size, generator=g)
        std = float(model(x).std())
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.out_features == cfg.num_classes:
                m.weight.mul_(2.0 / std)
                m.bias.mul_(2.0 / std)
    return model.eval()


def metadata_for(model: nn.Module, precision: str = "fp32") -> ArtifactMetadata:
    """What ``staredge.exporters.export`` would embed (built here so this test stands alone)."""
    cfg = model.pretrained_cfg
    return ArtifactMetadata(
        model=model.staredge_name,
        family=model.staredge_name.split("_")[0],
        input_size=list(cfg.input_size),
        preprocessing={
            "crop_pct": cfg.crop_pct,
            "interpolation": cfg.interpolation,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
        },
        labels=cfg.class_names(),
        precision=precision,
    )


def sample_images(size: int = 224) -> list[Image.Image]:
    """Two real photos (scikit-image) and one random image, centre-cropped to ``size``."""
    images = []
    try:
        import skimage.data as sk

        photos = [sk.astronaut(), sk.chelsea()]
    except ImportError:  # the dev extra is not installed: random images only
        photos = []
    for arr in photos:
        im = Image.fromarray(arr).convert("RGB")
        scale = size / min(im.size)
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        images.append(im.crop((left, top, left + size, top + size)))
    rng = np.random.default_rng(0)
    images.append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    return images


def normalised(image: Image.Image, meta: ArtifactMetadata) -> torch.Tensor:
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(meta.preprocessing["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(meta.preprocessing["std"], np.float32).reshape(-1, 1, 1)
    return torch.from_numpy((x - mean) / std)[None]


def compare(model: nn.Module, path, meta: ArtifactMetadata):
    """(max |Δ| of logits, relative error, top-1 agreement, executor outputs) over sample_images()."""
    executor = MILExecutor(path)
    worst, rel, agree, outs = 0.0, 0.0, [], []
    for image in sample_images(meta.input_size[1]):
        with torch.no_grad():
            ref = model(normalised(image, meta)).numpy()
        out = executor.predict({meta.input_name: image})
        logits = out["logits"].astype(np.float32)
        worst = max(worst, float(np.abs(logits - ref).max()))
        rel = max(rel, float(np.abs(logits - ref).max() / np.abs(ref).max()))
        agree.append(int(logits.argmax()) == int(ref.argmax()))
        outs.append((ref, out))
    return worst, rel, float(np.mean(agree)), outs


def exported(tmp_path_factory, name: str, precision: str = "fp32", passes=()):
    model = spread(create(name))
    meta = metadata_for(model, precision)
    export_model = model
    for p in passes:
        export_model = p(export_model)
    meta.rewrites = [p.__name__ for p in passes]
    path = tmp_path_factory.mktemp(name) / f"{name}.mlpackage"
    export_coreml(export_model, path, meta, precision)
    return model, meta, path


@pytest.fixture(scope="module")
def s050(tmp_path_factory):
    return exported(tmp_path_factory, "starnet_s050")


class TinyClassifier(nn.Module):
    """Conv → ReLU → pooled Linear on small images: cheap to convert, exercises the classifier path."""

    def __init__(self, channels: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 4, stride=4)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_meta(channels: int = 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> ArtifactMetadata:
    return ArtifactMetadata(
        model="tiny",
        family="test",
        input_size=[channels, 16, 16],
        preprocessing={"mean": list(mean)[:channels], "std": list(std)[:channels]},
        labels=["cat", "dog", "bird"],
    )


# --------------------------------------------------------------------------- numerics


def test_starnet_s050_fp32_matches_pytorch(s050):
    model, meta, path = s050
    worst, _, agree, outs = compare(model, path, meta)
    assert worst <= FP32_TOL
    assert agree == 1.0
    for ref, out in outs:
        probs = torch.softmax(torch.from_numpy(ref), -1).numpy().reshape(-1)
        np.testing.assert_allclose(out["classLabel_probs"], probs, atol=1e-6)
        assert str(out["classLabel"]) == meta.labels[int(ref.argmax())]


@pytest.mark.parametrize(
    "name",
    [
        "starnet_s1",
        "demonet_w96",
        pytest.param("starnet_s2", marks=pytest.mark.slow),
        pytest.param("starnet_s3", marks=pytest.mark.slow),
        pytest.param("starnet_s4", marks=pytest.mark.slow),
        pytest.param("starnet_s100", marks=pytest.mark.slow),
        pytest.param("starnet_s150", marks=pytest.mark.slow),
        pytest.param("demonet", marks=pytest.mark.slow),
        pytest.param("efficientformerv2_s0", marks=pytest.mark.slow),
        pytest.param("efficientformerv2_s1", marks=pytest.mark.slow),
        pytest.param("efficientformerv2_s2", marks=pytest.mark.slow),
        pytest.param("efficientformerv2_l", marks=pytest.mark.slow),
    ],
)
def test_model_fp32_matches_pytorch(tmp_path_factory, name):
    if name.startswith("efficientformerv2"):
        from staredge.models import list_models

        assert name in list_models(), "EfficientFormerV2 is registered"
    model, meta, path = exported(tmp_path_factory, name)
    worst, _, agree, _ = compare(model, path, meta)
    assert worst <= FP32_TOL, f"{name}: max |Δ| {worst:.3g} > {FP32_TOL}"
    assert agree == 1.0


def test_rewritten_starnet_matches_original(tmp_path_factory):
    """BN fused and pointwise convs as Linear (the GPU rewrite): new MIL ops, same numbers."""
    from staredge.exporters.passes import fuse_batchnorm, pointwise_conv_to_linear

    model, meta, path = exported(tmp_path_factory, "starnet_s050", passes=(fuse_batchnorm, pointwise_conv_to_linear))
    executor = MILExecutor(path)
    assert "batch_norm" not in executor.op_counts and executor.op_counts["linear"] > 1
    worst, _, agree, _ = compare(model, path, meta)
    assert worst <= FP32_TOL and agree == 1.0


def test_fp16_export_within_fp16_tolerance(tmp_path_factory, s050):
    model, meta, path = exported(tmp_path_factory, "starnet_s050", precision="fp16")
    worst, rel, agree, _ = compare(model, path, meta)
    assert agree == 1.0
    assert rel <= FP16_REL_TOL
    # the fp16 program really computed in fp16: it is further from PyTorch than fp32 is
    fp32_worst, _, _, _ = compare(s050[0], s050[2], s050[1])
    assert worst > 10 * fp32_worst
    executor = MILExecutor(path)
    # conv weights are stored in fp16 (the (1, 3, 1, 1) pixel-normalisation constants stay fp32:
    # CoreML applies the image scaling before the program's cast to fp16)
    weights = [v for v in executor._consts.values() if isinstance(v, np.ndarray) and v.ndim == 4 and v.size > 3]
    assert weights and all(w.dtype == np.float16 for w in weights)
    assert read_metadata(path).precision == "fp16"


# --------------------------------------------------------------------------- package contents


def test_metadata_round_trip(s050):
    _, meta, path = s050
    back = read_metadata(path)
    assert back.format == "coreml" and back.pixels_in_model is True
    assert back.model == meta.model and back.labels == meta.labels and len(back.labels) == 1000
    assert back.preprocessing == meta.preprocessing and back.input_size == meta.input_size
    assert back.output_names == ["logits"]
    assert back.extra["coreml"]["deployment_target"] == "iOS16"
    assert back.extra["coreml"]["probabilities_output"] == "classLabel_probs"
    # the caller's metadata object is not modified
    assert meta.format == "" and meta.pixels_in_model is False
    executor = MILExecutor(path)
    assert json.loads(executor.user_metadata["staredge"]) == back.to_dict()


def test_package_is_an_ios16_image_classifier(s050):
    _, meta, path = s050
    executor = MILExecutor(path)
    spec = executor.spec
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion >= 7  # iOS16
    (name, info), = executor.inputs.items()
    assert name == meta.input_name and info.kind == "image" and info.color_space == "RGB"
    assert info.shape == (1, 3, 224, 224)
    assert executor.class_labels == meta.labels
    assert set(executor.output_names) == {"classLabel", "classLabel_probs", "logits"}
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    assert "starnet_s050" in spec.description.metadata.shortDescription
    described = {f.name: f.shortDescription for f in spec.description.input}
    assert "pixels" in described[meta.input_name]
    # graph ends with softmax → classify
    assert executor.op_counts["softmax"] == 1 and executor.op_counts["classify"] == 1


def test_image_input_forms_agree(s050):
    _, meta, path = s050
    executor = MILExecutor(path)
    image = sample_images()[-1]
    arr = np.asarray(image)
    from_pil = executor.predict({"input": image})["logits"]
    from_array = executor.predict({"input": arr})["logits"]
    from_pixels = executor.predict({"input": arr.transpose(2, 0, 1).astype(np.float32)[None]})["logits"]
    np.testing.assert_array_equal(from_pil, from_array)
    np.testing.assert_array_equal(from_pil, from_pixels)
    with pytest.raises(MILInputError, match="224x224"):
        executor.predict({"input": arr[:100]})


def test_validation_runner_passes(s050):
    from staredge.exporters.validate import validate_artifact

    model, _, path = s050
    result = validate_artifact(model, path, "coreml", "fp32")
    assert result.passed and result.max_abs_diff <= FP32_TOL and result.top1_agreement == 1.0


@pytest.mark.parametrize(
    "channels, mean, std",
    [(3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), (1, (0.5,), (0.25,)), (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
    ids=["rgb-equal-std-folded", "grayscale", "rgb-per-channel-std"],
)
def test_normalisation_inside_the_model(tmp_path, channels, mean, std):
    torch.manual_seed(0)
    model = TinyClassifier(channels).eval()
    meta = tiny_meta(channels, mean, std)
    path = export_coreml(model, tmp_path / "tiny.mlpackage", meta)
    executor = MILExecutor(path)
    folded = len(set(std)) == 1
    # an equal std folds into the ImageType's scale/bias: only the image scaling multiplies
    assert executor.op_counts["mul"] == (1 if folded else 2)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (16, 16, channels), dtype=np.uint8)
    x = (pixels.transpose(2, 0, 1) / np.float32(255) - np.reshape(mean, (-1, 1, 1))) / np.reshape(std, (-1, 1, 1))
    with torch.no_grad():
        ref = model(torch.from_numpy(x.astype(np.float32))[None]).numpy()
    out = executor.predict({"input": pixels if channels == 3 else pixels[:, :, 0]})
    np.testing.assert_allclose(out["logits"], ref, atol=FP32_TOL)
    assert executor.inputs["input"].color_space == ("RGB" if channels == 3 else "GRAYSCALE")


def test_tensor_input_export(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 2)).eval()
    meta = ArtifactMetadata(model="mlp", family="test", input_size=[2], labels=["a", "b"])
    path = export_coreml(model, tmp_path / "mlp.mlpackage", meta, image_input=False)
    back = read_metadata(path)
    assert back.pixels_in_model is False and back.extra["coreml"]["classifier"] is False
    executor = MILExecutor(path)
    assert executor.inputs["input"].kind == "tensor"
    x = torch.randn(1, 2)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(executor.predict({"input": x.numpy()})["logits"], ref, atol=FP32_TOL)


# --------------------------------------------------------------------------- writes and errors


def test_existing_package_is_not_overwritten(tmp_path):
    model, meta = TinyClassifier().eval(), tiny_meta()
    path = tmp_path / "tiny.mlpackage"
    path.mkdir()
    (path / "keep.txt").write_text("old")
    with pytest.raises(ArtifactExistsError):
        export_coreml(model, path, meta)
    assert (path / "keep.txt").read_text() == "old"
    export_coreml(model, path, meta, force=True)
    assert not (path / "keep.txt").exists() and (path / "Manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mlpackage"]


def test_failure_while_saving_leaves_nothing(tmp_path, monkeypatch):
    import coremltools as ct

    def broken_save(self, target):
        from pathlib import Path

        Path(target).mkdir(parents=True)
        (Path(target) / "Manifest.json").write_text("{}")  # half a package, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_coreml(TinyClassifier().eval(), tmp_path / "tiny.mlpackage", tiny_meta())
    assert list(tmp_path.iterdir()) == []


def test_conversion_failure_is_a_clear_error(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("op not convertible")

    monkeypatch.setattr(coreml_exporter, "_convert_classifier", fail)
    with pytest.raises(CoreMLExportError, match="tiny.*op not convertible"):
        export_coreml(TinyClassifier().eval(), tmp_path / "tiny.mlpackage", tiny_meta())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"precision": "int4"}, "fp32, fp16 or int8"), ({"deployment_target": "iOS15"}, "iOS16"), ({}, ".mlpackage")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    name = "tiny.mlpackage" if kwargs else "tiny.onnx"
    with pytest.raises(ConfigError, match=match):
        export_coreml(TinyClassifier().eval(), tmp_path / name, tiny_meta(), **kwargs)


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Apple's runtime exists")
def test_apple_runtime_check_refuses_off_macos(tmp_path):
    with pytest.raises(CoreMLPlatformError, match="macOS") as info:
        compare_with_apple_runtime(tmp_path / "x.mlpackage", [])
    assert isinstance(info.value, StarEdgeError)


def test_label_count_must_match_the_model(tmp_path):
    meta = tiny_meta()
    meta.labels = ["only", "two"]
    with pytest.raises(ConfigError, match="2 labels for a model with 3 outputs"):
        export_coreml(TinyClassifier().eval(), tmp_path / "tiny.mlpackage", meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, opset, spec_version", [("iOS16", "CoreML6", 7), ("iOS17", "CoreML7", 8), ("iOS18", "CoreML8", 9)])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_deployment_targets(tmp_path, target, opset, spec_version, precision):
    torch.manual_seed(0)
    model, meta = TinyClassifier().eval(), tiny_meta()
    path = export_coreml(model, tmp_path / "tiny.mlpackage", meta, precision, target)
    executor = MILExecutor(path)
    assert executor.opset == opset and executor.spec.specificationVersion == spec_version
    assert read_metadata(path).extra["coreml"]["deployment_target"] == target
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = model(normalised(Image.fromarray(pixels), meta)).numpy()
    logits = executor.predict({"input": pixels})["logits"]
    if precision == "fp32":
        np.testing.assert_allclose(logits, ref, atol=FP32_TOL)
    else:
        assert np.abs(logits - ref).max() / np.abs(ref).max() <= FP16_REL_TOL


def test_read_metadata_errors(tmp_path):
    """A package without our entry, and a damaged manifest, are MetadataErrors that say so."""
    import coremltools as ct

    from staredge.metadata import MetadataError

    path = export_coreml(TinyClassifier().eval(), tmp_path / "tiny.mlpackage", tiny_meta())
    spec = ct.utils.load_spec(str(path))
    del spec.description.metadata.userDefined["staredge"]
    bare = tmp_path / "bare.mlpackage"
    ct.models.MLModel(spec, weights_dir=str(path / "Data" / "com.apple.CoreML" / "weights"), skip_model_load=True).save(str(bare))
    with pytest.raises(MetadataError, match="no StarEdge metadata"):
        read_metadata(bare)
    (path / "Manifest.json").write_text('{"itemInfoEntries": {}}')
    with pytest.raises(MetadataError, match="Manifest.json"):
        read_metadata(path)
