"""CoreML exporter: an ``.mlpackage`` ML Program (iOS16+), fp32 or fp16 compute precision.

What the package holds (``export_coreml``):

* an **image input** (``ct.ImageType``, RGB): pixels go in as they are. The 1/255 scale
  and the mean live in the ImageType's ``scale``/``bias`` (CoreML applies
  ``scale * pixel + bias`` per channel); a per-channel std cannot be expressed there (one
  scale for all channels), so a small normalisation layer (multiply by ``1/std`` per
  channel) runs at the start of the traced graph. When every std is equal, the whole
  normalisation folds into ``scale``/``bias`` and no layer is added;
* for classifiers, a **softmax at the end of the graph and a classifier config**: outputs
  ``classLabel`` (string) and ``classLabel_probs`` (label → probability), plus ``logits``
  (the pre-softmax scores, so that artifacts can be compared with PyTorch);
* model and feature **descriptions**, and the :class:`~staredge.metadata.ArtifactMetadata`
  JSON under the user-defined metadata key ``staredge``.

``image_input=False`` exports a plain tensor model instead (a float input named after
``metadata.input_name`` that takes the already-normalised tensor, and the raw outputs).

coremltools converts on Linux but cannot run the package there; validation off Apple
platforms uses StarEdge's numpy MIL executor (:mod:`staredge.runtimes.mil_reference`).
On macOS :func:`compare_with_apple_runtime` also checks Apple's runtime against it (written
for macOS; it cannot run on the Linux machines this was developed on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from staredge.errors import ArtifactExistsError, ConfigError, DeviceError, ExportError, require
from staredge.fileio import replace_folder_or_file
from staredge.metadata import METADATA_KEY, ArtifactMetadata

#: Deployment targets accepted (ML Programs with fp16 I/O and our op set need iOS16+).
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
#: Names of the classifier outputs.
CLASS_LABEL_OUTPUT = "classLabel"
PROBABILITIES_OUTPUT = "classLabel_probs"
LOGITS_OUTPUT = "logits"


class CoreMLExportError(ExportError):
    """coremltools could not convert the model; nothing was written."""


class CoreMLPlatformError(ExportError, DeviceError):
    """Apple's CoreML runtime was asked for on a platform that does not have it (a
    :class:`~staredge.errors.DeviceError` too: Apple hardware is the device missing)."""


class _PixelNormalisation(nn.Module):
    """``model(x * inv_std)``: the per-channel part of normalisation CoreML's ImageType cannot do.

    The ImageType already turned pixels into ``pixel / 255 - mean``; this multiplies by
    ``1 / std`` per channel, then runs the model and (for classifiers) a softmax.
    """

    def __init__(self, model: nn.Module, inv_std: list[float] | None, softmax: bool) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        if inv_std is not None:
            self.register_buffer("inv_std", torch.tensor(inv_std, dtype=torch.float32).view(1, -1, 1, 1))
        else:
            self.inv_std = None

    def forward(self, x: torch.Tensor):
        if self.inv_std is not None:
            x = x * self.inv_std
        logits = self.model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if self.softmax:
            return torch.softmax(logits, dim=-1), logits
        return logits


def _image_normalisation(metadata: ArtifactMetadata) -> tuple[float, list[float], list[float] | None]:
    """(ImageType scale, per-channel bias, per-channel multiplier for the graph or None)."""
    channels = int(metadata.input_size[0])
    mean = [float(v) for v in metadata.preprocessing.get("mean", [0.0] * channels)]
    std = [float(v) for v in metadata.preprocessing.get("std", [1.0] * channels)]
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"metadata preprocessing mean {mean} / std {std} do not have one value per input channel ({channels})"
        )
    if any(s <= 0 for s in std):
        raise ConfigError(f"preprocessing std must be positive, got {std}")
    if max(std) == min(std):
        # (p/255 - m)/s == p * (1/(255 s)) - m/s: the ImageType does all of it
        return 1.0 / (255.0 * std[0]), [-m / std[0] for m in mean], None
    return 1.0 / 255.0, [-m for m in mean], [1.0 / s for s in std]


def _deployment_target(ct, name: str):
    if name not in DEPLOYMENT_TARGETS:
        raise ConfigError(
            f"CoreML deployment target must be one of {', '.join(DEPLOYMENT_TARGETS)} (ML Programs need iOS16 or "
            f"later here), got {name!r}"
        )
    return getattr(ct.target, name)


@contextlib.contextmanager
def _quiet_converter():
    """Silence coremltools' tqdm bars and warnings (they would break the CLI's progress display).

    What was printed is kept and attached to the error if the conversion fails.
    """
    buffer = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stderr(buffer),
        contextlib.redirect_stdout(buffer),
    ):
        warnings.simplefilter("always")
        try:
            yield buffer
        finally:
            for w in caught:
                buffer.write(f"{w.category.__name__}: {w.message}\n")


def export_coreml(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: ArtifactMetadata,
    precision: str = "fp32",
    deployment_target: str = "iOS16",
    *,
    image_input: bool | None = None,
    example_input: torch.Tensor | None = None,
    force: bool = False,
    **_ignored: Any,
) -> Path:
    """Convert ``model`` to a CoreML ``.mlpackage`` at ``path`` and return ``path``.

    ``precision``: "fp32" or "fp16" compute precision, or "int8": int8 weights
    decompressed to fp32 compute (coremltools' optimize API, :func:`quantize_weights_int8`; CoreML's
    activation quantisation needs Apple's runtime to calibrate, so it is not used). ``image_input`` (default: True for
    3- or 1-channel image models) makes the input an RGB/grayscale image with
    normalisation inside the model and sets ``metadata.pixels_in_model``; a classifier
    (``metadata.labels`` non-empty and an image input) gets a softmax, a classifier config
    and a ``logits`` output. The package is built in a temporary folder next to ``path``
    and moved into place with ``os.replace``; an existing ``path`` raises
    :class:`ArtifactExistsError` unless ``force=True``. Conversion failures raise
    :class:`CoreMLExportError` and leave nothing behind. Extra keyword arguments that
    other exporters take (``dynamic_batch``...) are ignored: CoreML packages have batch 1.
    """
    with _quiet_converter():  # importing coremltools prints warnings about torch/sklearn versions
        ct = require("coremltools", "coreml", "CoreML export")
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"CoreML export supports precision fp32, fp16 or int8, not {precision!r}")
    target = _deployment_target(ct, deployment_target)
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ConfigError(f"a CoreML package path must end in .mlpackage, got {path}")
    if (path.exists() or path.is_symlink()) and not force:
        raise ArtifactExistsError(f"{path} exists; pass force=True (--force) to replace it")
    size = [int(v) for v in metadata.input_size]
    if image_input is None:
        image_input = len(size) == 3 and size[0] in (1, 3) and size[1] > 1 and size[2] > 1
    if example_input is None:
        example_input = torch.zeros(1, *size)
    example_input = example_input[:1].float()
    classifier = bool(image_input and metadata.labels)

    meta = dataclasses.replace(
        metadata,
        format="coreml",
        precision=precision,
        pixels_in_model=bool(image_input),
        dynamic_batch=False,
        output_names=[LOGITS_OUTPUT] if classifier else list(metadata.output_names)[:1] or [LOGITS_OUTPUT],
        extra={
            **metadata.extra,
            "coreml": {
                "deployment_target": deployment_target,
                "image_input": bool(image_input),
                "classifier": classifier,
                **(
                    {"class_label_output": CLASS_LABEL_OUTPUT, "probabilities_output": PROBABILITIES_OUTPUT}
                    if classifier
                    else {}
                ),
            },
        },
    )
    if classifier:
        n_out = _num_outputs(model, example_input)
        if len(meta.labels) != n_out:
            raise ConfigError(f"{meta.model}: {len(meta.labels)} labels for a model with {n_out} outputs; fix the labels")

    inv_std = None
    if image_input:
        scale, bias, inv_std = _image_normalisation(meta)
        color = ct.colorlayout.RGB if size[0] == 3 else ct.colorlayout.GRAYSCALE
        image_type = ct.ImageType(
            name=meta.input_name,
            shape=(1, *size),
            scale=scale,
            bias=bias if size[0] == 3 else bias[0],  # grayscale takes one bias
            color_layout=color,
        )
        inputs = [image_type]
    else:
        inputs = [ct.TensorType(name=meta.input_name, shape=tuple(example_input.shape), dtype=np.float32)]
    wrapper = _PixelNormalisation(model, inv_std, softmax=classifier).eval()
    compute_precision = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32

    with _quiet_converter() as log:
        try:
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, example_input, check_trace=False)
            if classifier:
                mlmodel = _convert_classifier(ct, traced, inputs, meta.labels, target, compute_precision)
            else:
                mlmodel = ct.convert(
                    traced,
                    inputs=inputs,
                    outputs=[ct.TensorType(name=meta.output_names[0])],
                    convert_to="mlprogram",
                    minimum_deployment_target=target,
                    compute_precision=compute_precision,
                    skip_model_load=True,
                )
        except Exception as exc:  # noqa: BLE001 - coremltools raises many unrelated types
            tail = "\n".join(log.getvalue().strip().splitlines()[-5:])
            raise CoreMLExportError(
                f"coremltools could not convert {meta.model} ({precision}): {type(exc).__name__}: {exc}"
                + (f"\nconverter output (last lines):\n{tail}" if tail else "")
            ) from exc

    if precision == "int8":
        with _quiet_converter():
            mlmodel = quantize_weights_int8(mlmodel)
    _describe(mlmodel, meta, classifier, bool(image_input))
    return _save_atomically(mlmodel, path, force)


#: Weights with fewer elements stay fp16 (biases, norms: tiny, and sensitive).
INT8_WEIGHT_THRESHOLD = 512


def quantize_weights_int8(mlmodel, weight_threshold: int = INT8_WEIGHT_THRESHOLD):
    """``mlmodel`` with its weights linearly quantised to int8 (symmetric, per output channel)
    by ``coremltools.optimize.coreml.linear_quantize_weights``. Weights are decompressed by
    ``constexpr_*`` ops (``constexpr_affine_dequantize`` for iOS16/17 targets,
    ``constexpr_blockwise_shift_scale`` for iOS18), which the MIL reference executor runs."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=weight_threshold))
    # The in-memory program of a classifier (built from MIL with a classify op) holds list
    # types the optimize API cannot serialise; the saved package reads back cleanly. (An
    # fp16-compute classifier fails even so, in coremltools 9.0: int8 starts from fp32.)
    with tempfile.TemporaryDirectory(prefix="staredge-coreml-int8-") as tmp:
        staged = os.path.join(tmp, "fp.mlpackage")
        mlmodel.save(staged)
        return cto.linear_quantize_weights(ct.models.MLModel(staged, skip_model_load=True), config)


def _num_outputs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return int(out.shape[-1])


def _convert_classifier(ct, traced, inputs, labels, target, compute_precision):
    """Convert with a classifier config and an extra ``logits`` output.

    coremltools 9.0 cannot combine a classifier config with more than one graph output
    when output types are recorded (fp16 compute precision always records them): its
    backend indexes the recorded types by the classifier's enlarged output list and fails
    with an IndexError. So the program is converted to MIL first (every pass, fp16 casts
    included), the recorded output types are dropped (the outputs already have their final
    dtypes), and the MIL program is then turned into an ML Program with the classifier op
    added and no further passes.
    """
    prog = ct.convert(
        traced,
        inputs=inputs,
        outputs=[ct.TensorType(name="probabilities"), ct.TensorType(name=LOGITS_OUTPUT, dtype=np.float32)],
        convert_to="milinternal",
        minimum_deployment_target=target,
        compute_precision=compute_precision,
    )
    prog.functions["main"].output_types = None
    return ct.convert(
        prog,
        inputs=inputs,
        classifier_config=ct.ClassifierConfig(
            list(labels), predicted_feature_name=CLASS_LABEL_OUTPUT, predicted_probabilities_output="probabilities"
        ),
        convert_to="mlprogram",
        minimum_deployment_target=target,
        compute_precision=ct.precision.FLOAT32,  # already applied above; no second pass
        pass_pipeline=ct.PassPipeline.EMPTY,
        skip_model_load=True,
    )


def _describe(mlmodel, meta: ArtifactMetadata, classifier: bool, image_input: bool) -> None:
    """Descriptions Xcode shows, and the StarEdge metadata document."""
    from staredge._version import __version__

    c, h, w = (list(meta.input_size) + [1, 1, 1])[:3]
    mlmodel.short_description = (
        f"{meta.model} ({meta.family}) image classifier, {meta.precision}, exported by StarEdge {__version__}"
        if classifier
        else f"{meta.model} ({meta.family}), {meta.precision}, exported by StarEdge {__version__}"
    )
    mlmodel.author = "StarEdge export"
    mlmodel.version = __version__
    if meta.checkpoint_sha256:
        mlmodel.license = f"weights: checkpoint sha256 {meta.checkpoint_sha256}"
    if image_input:
        mlmodel.input_description[meta.input_name] = (
            f"{'RGB' if c == 3 else 'grayscale'} image, {w}x{h} pixels as they are (0-255); resize the shorter "
            f"side and centre-crop first. Scaling and mean/std normalisation happen inside the model."
        )
    else:
        mlmodel.input_description[meta.input_name] = f"float32 tensor of shape (1, {', '.join(map(str, meta.input_size))})"
    if classifier:
        mlmodel.output_description[CLASS_LABEL_OUTPUT] = "most likely class"
        mlmodel.output_description[PROBABILITIES_OUTPUT] = "probability of each class (softmax of logits)"
        mlmodel.output_description[LOGITS_OUTPUT] = "class scores before the softmax"
    else:
        for name in meta.output_names:
            if name in mlmodel.output_description:
                mlmodel.output_description[name] = "model output"
    mlmodel.user_defined_metadata[METADATA_KEY] = meta.to_json()


def _save_atomically(mlmodel, path: Path, force: bool) -> Path:
    """Save into a temporary ``.mlpackage`` next to ``path``, then move it into place.

    A failure at any point removes the temporary package, so no partial package is ever
    visible at ``path``. Replacing an existing package moves the old one aside first
    (``rename`` cannot replace a non-empty folder) and restores it if the move fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent))
    try:
        staged = scratch / path.name
        with _quiet_converter():
            mlmodel.save(str(staged))
        if (path.exists() or path.is_symlink()) and not force:
            raise ArtifactExistsError(f"{path} appeared while exporting; pass force=True (--force) to replace it")
        replace_folder_or_file(staged, path, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- Apple runtime (macOS)


def compare_with_apple_runtime(
    path: str | os.PathLike, images: list[Any], compute_units: str = "CPU_ONLY"
) -> dict[str, float]:
    """Max |Δ| per numeric output between Apple's runtime and the reference executor (macOS only).

    ``images``: PIL images or (H, W, 3) uint8 arrays of the package's input size (Apple's
    runtime takes images, so this check uses real pixels). Raises
    :class:`CoreMLPlatformError` off macOS. Written for macOS; not runnable on the Linux
    machines StarEdge is developed on (coremltools' ``predict`` exists only on macOS).
    """
    if platform.system() != "Darwin":
        raise CoreMLPlatformError(
            "Apple's CoreML runtime exists only on macOS; off macOS the MIL reference executor "
            "(staredge.runtimes.mil_reference) is the only engine that can run an .mlpackage"
        )
    # pragma: no cover - macOS only from here: both engines through the one runtime layer
    from staredge.preprocess import PreprocessConfig, preprocess
    from staredge.runtimes import load_backend

    units = {"ALL": "all", "CPU_AND_GPU": "cpuAndGPU", "CPU_ONLY": "cpuOnly", "CPU_AND_NE": "cpuAndNeuralEngine"}
    reference = load_backend(str(path), backend="coreml", device="cpu", reference=True)
    apple = load_backend(str(path), backend="coreml", device="cpu", compute_units=units.get(compute_units, compute_units))
    config = PreprocessConfig.from_metadata(reference.metadata)
    names = reference.metadata.output_names
    worst: dict[str, float] = {}
    for image in images:
        x = preprocess(image, config)[None]
        for name, ours, theirs in zip(names, reference.forward(x), apple.forward(x)):
            diff = float(np.max(np.abs(np.asarray(theirs, np.float64) - np.asarray(ours, np.float64))))
            worst[name] = max(worst.get(name, 0.0), diff)
    return worst  # pragma: no cover
