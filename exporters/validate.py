"""Validation: run each artifact and compare its logits with the PyTorch model.

Inputs are real photos shipped with scikit-image (astronaut, coffee, chelsea, rocket,
camera, hubble_deep_field), preprocessed per the model's ``pretrained_cfg`` with Pillow and
numpy, plus seeded random inputs. Each artifact runs them one by one at its export batch
size and, where the artifact allows another batch size (dynamic ONNX, OpenVINO reshape,
LiteRT input resize), all together as one batch. Reported per artifact: max |Δ|, relative
error (max |Δ| / max |reference|), the lowest cosine similarity of a logit vector and top-1
agreement.

Tolerances (:data:`TOLERANCES`): fp32 passes with max |Δ| ≤ 1e-4; fp16 passes with
relative error ≤ 1e-2 and every top-1 class equal.

Artifacts run through the runtime libraries directly here (ONNX Runtime; OpenVINO with
``INFERENCE_PRECISION_HINT=f32`` since this CPU's default is bf16; ai-edge-litert), so that
validation checks the file, not a runtime wrapper's pre/post-processing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from staredge.errors import ConfigError, StarEdgeError, require

#: Pass criteria by precision.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4},
    "fp16": {"rel_error": 1e-2, "top1_agreement": 1.0},
}

#: scikit-image photos used as real inputs (all ship inside the wheel; none is downloaded).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")

#: Seeded random inputs added to the photos.
N_RANDOM = 4


class ValidationError(StarEdgeError):
    """An artifact could not be run for validation (not a numeric mismatch, which is reported)."""


@dataclass
class Comparison:
    """Artifact vs. PyTorch on one set of inputs."""

    inputs: str
    batch: int
    n: int
    max_abs_diff: float
    rel_error: float
    cosine: float
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


@dataclass
class ValidationResult:
    """The worst figures over every comparison of one artifact, and whether it passed."""

    precision: str
    max_abs_diff: float
    rel_error: float
    cosine: float
    top1_agreement: float
    passed: bool
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["comparisons"] = [c.to_dict() for c in self.comparisons]
        return d


# --------------------------------------------------------------------------- inputs


def preprocess_image(image: np.ndarray, cfg: Any) -> np.ndarray:
    """One HWC uint8 (or gray) image → a CHW float32 array per ``cfg`` (a PretrainedConfig).

    Resize so the shorter side is ``H / crop_pct`` (``cfg.interpolation``), centre-crop to
    (H, W), scale to [0, 1], normalise with ``mean``/``std``.
    """
    from PIL import Image

    channels, height, width = (int(v) for v in cfg.input_size)
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3].astype(np.uint8)
    img = Image.fromarray(arr)
    methods = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
    method = methods.get(str(cfg.interpolation).lower())
    if method is None:
        raise ConfigError(f"unknown interpolation {cfg.interpolation!r}; use one of {sorted(methods)}")
    short = int(np.floor(max(height, width) / float(cfg.crop_pct)))
    w0, h0 = img.size
    scale = short / min(w0, h0)
    img = img.resize((max(width, round(w0 * scale)), max(height, round(h0 * scale))), method)
    left = (img.size[0] - width) // 2
    top = (img.size[1] - height) // 2
    img = img.crop((left, top, left + width, top + height))
    out = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    out = (out - mean) / std
    if channels == 1:
        out = out.mean(axis=2, keepdims=True)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[:channels])


def photo_inputs(cfg: Any, names: tuple[str, ...] = PHOTOS) -> tuple[np.ndarray, list[str]]:
    """Preprocessed scikit-image photos as an (N, C, H, W) array and their names.

    Returns an empty array when scikit-image is not installed (the ``dev`` extra).
    """
    try:
        import skimage.data as sk_data
    except ImportError:
        return np.zeros((0, *cfg.input_size), np.float32), []
    arrays, used = [], []
    for name in names:
        try:
            image = getattr(sk_data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
            continue
        arrays.append(preprocess_image(image, cfg))
        used.append(name)
    if not arrays:
        return np.zeros((0, *cfg.input_size), np.float32), []
    return np.stack(arrays).astype(np.float32), used


def random_inputs(shape: tuple[int, ...], n: int = N_RANDOM, seed: int = 0) -> np.ndarray:
    """``n`` seeded standard-normal inputs of per-sample ``shape``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def sample_shape(model: nn.Module) -> tuple[int, ...]:
    """Per-sample input shape: ``pretrained_cfg.input_size``, or (C,) for point models."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = tuple(int(v) for v in getattr(cfg, "input_size", (3, 224, 224)))
    if len(size) == 3 and size[1:] == (1, 1):
        return (size[0],)
    return size


def validation_inputs(model: nn.Module) -> dict[str, np.ndarray]:
    """Named input sets: ``photos`` (image models only) and ``random``."""
    shape = sample_shape(model)
    sets: dict[str, np.ndarray] = {}
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is not None and len(shape) == 3 and shape[0] in (1, 3):
        photos, names = photo_inputs(cfg)
        if len(names):
            sets["photos"] = photos
    sets["random"] = random_inputs(shape)
    return sets


# --------------------------------------------------------------------------- runners


class ArtifactRunner:
    """Runs an artifact on numpy batches; ``batch_sizes`` says which batch sizes it accepts."""

    def __init__(self, path: Path, export_batch: int, dynamic_batch: bool) -> None:
        self.path = Path(path)
        self.export_batch = export_batch
        self.dynamic_batch = dynamic_batch

    def can_run_batch(self, batch: int) -> bool:
        """Whether this artifact accepts a batch of ``batch`` inputs."""
        return batch == self.export_batch or self.dynamic_batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRunner(ArtifactRunner):
    """ONNX Runtime, CPU, all graph optimisations (what users get by default)."""

    def __init__(self, path, export_batch, dynamic_batch):
        super().__init__(path, export_batch, dynamic_batch)
        ort = require("onnxruntime", "onnx", "ONNX validation")
        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        return np.asarray(self.session.run(None, {self.input_name: x})[0])


class OpenVinoRunner(ArtifactRunner):
    """OpenVINO CPU with f32 inference precision; the IR is reshaped for other batch sizes."""

    def __init__(self, path, export_batch, dynamic_batch):
        super().__init__(path, export_batch, dynamic_batch)
        ov = require("openvino", "openvino", "OpenVINO validation")
        self.core = ov.Core()
        self.ov = ov
        self._compiled: dict[int, Any] = {}

    def can_run_batch(self, batch):
        return True  # an IR can be reshaped to any batch at load time

    def _compiled_for(self, batch: int):
        if batch not in self._compiled:
            model = self.core.read_model(str(self.path))
            shape = list(model.inputs[0].get_partial_shape())
            if shape[0].is_static and shape[0].get_length() != batch:
                model.reshape({model.inputs[0]: self.ov.PartialShape([batch, *shape[1:]])})
            self._compiled[batch] = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return self._compiled[batch]

    def __call__(self, x):
        compiled = self._compiled_for(x.shape[0])
        return np.asarray(compiled(x)[compiled.outputs[0]])


class LiteRtRunner(ArtifactRunner):
    """ai-edge-litert's interpreter (XNNPACK); the input is resized for other batch sizes."""

    def __init__(self, path, export_batch, dynamic_batch):
        super().__init__(path, export_batch, dynamic_batch)
        interp = require("ai_edge_litert.interpreter", "tflite", "TFLite validation")
        self.interpreter = interp.Interpreter(model_path=str(self.path), num_threads=2)
        self.interpreter.allocate_tensors()

    def can_run_batch(self, batch):
        return True  # resize_tensor_input; a failure is reported as a note

    def __call__(self, x):
        it = self.interpreter
        inp = it.get_input_details()[0]
        if tuple(inp["shape"]) != tuple(x.shape):  # read back: a failed resize may leave it half-done
            it.resize_tensor_input(inp["index"], list(x.shape), strict=False)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], x)
        it.invoke()
        return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


def _coreml_runner(path, export_batch, dynamic_batch) -> ArtifactRunner:
    """The CoreML engineer's reference MIL executor (numpy), wrapped as a runner."""
    try:
        from staredge.exporters import coreml_validate  # noqa: F401
    except ImportError as exc:
        raise ValidationError(
            "CoreML validation needs the MIL reference executor (staredge.exporters.coreml_validate), "
            "which this build lacks"
        ) from exc
    return coreml_validate.make_runner(path, export_batch, dynamic_batch)


RUNNERS: dict[str, Callable[..., ArtifactRunner]] = {
    "onnx": OnnxRunner,
    "openvino": OpenVinoRunner,
    "tflite": LiteRtRunner,
    "coreml": _coreml_runner,
}


# --------------------------------------------------------------------------- comparison


def compare(reference: np.ndarray, output: np.ndarray, inputs: str, batch: int) -> Comparison:
    """Max |Δ|, relative error, lowest per-sample cosine and top-1 agreement of two logit arrays."""
    ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
    out = np.asarray(output, dtype=np.float64).reshape(ref.shape)
    diff = float(np.abs(ref - out).max())
    scale = float(np.abs(ref).max())
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    top1 = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean())
    return Comparison(
        inputs=inputs, batch=batch, n=ref.shape[0], max_abs_diff=diff,
        rel_error=diff / scale if scale > 0 else diff, cosine=float(cos.min()), top1_agreement=top1,
    )


def passes(precision: str, max_abs_diff: float, rel_error: float, top1_agreement: float) -> bool:
    """Whether figures meet :data:`TOLERANCES` for ``precision``."""
    tol = TOLERANCES.get(precision)
    if tol is None:
        raise ConfigError(f"no validation tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}")
    ok = True
    if "max_abs_diff" in tol:
        ok &= max_abs_diff <= tol["max_abs_diff"]
    if "rel_error" in tol:
        ok &= rel_error <= tol["rel_error"]
    if "top1_agreement" in tol:
        ok &= top1_agreement >= tol["top1_agreement"]
    return bool(ok)


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The PyTorch model's first output on ``x`` (float32, eval mode)."""
    out = model.eval()(torch.from_numpy(x))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().numpy()


def validate_artifact(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str,
    precision: str = "fp32",
    *,
    export_batch: int = 1,
    dynamic_batch: bool = False,
    inputs: dict[str, np.ndarray] | None = None,
    references: dict[str, np.ndarray] | None = None,
) -> ValidationResult:
    """Compare the artifact at ``path`` with ``model`` (the original PyTorch module).

    Every input set runs sample by sample at ``export_batch`` and, where the artifact
    allows a different batch size, as one batch. The result holds the worst figures.
    ``references`` caches the PyTorch logits per input set across artifacts (filled here).
    """
    if fmt not in RUNNERS:
        raise ConfigError(f"cannot validate format {fmt!r}; known: {sorted(RUNNERS)}")
    runner = RUNNERS[fmt](Path(path), export_batch, dynamic_batch)
    inputs = inputs if inputs is not None else validation_inputs(model)
    comparisons: list[Comparison] = []
    notes: list[str] = []
    references = references if references is not None else {}
    for name, x in inputs.items():
        if name not in references:
            references[name] = torch_logits(model, x)
        ref = references[name]
        singles = [runner(x[i : i + export_batch]) for i in range(0, len(x) - export_batch + 1, export_batch)]
        used = len(singles) * export_batch
        comparisons.append(compare(ref[:used], np.concatenate(singles, axis=0), name, export_batch))
        other = len(x) if len(x) != export_batch else len(x) + 1
        if runner.can_run_batch(other):
            xb = x if other == len(x) else np.concatenate([x, x[:1]], axis=0)
            refb = ref if other == len(x) else np.concatenate([ref, ref[:1]], axis=0)
            try:
                outb = runner(xb)
            except Exception as exc:  # noqa: BLE001 - the runtime's own error, reported
                notes.append(f"{name}: batch {other} not accepted by the artifact ({type(exc).__name__})")
            else:
                comparisons.append(compare(refb, outb, name, other))
    worst_diff = max(c.max_abs_diff for c in comparisons)
    worst_rel = max(c.rel_error for c in comparisons)
    worst_cos = min(c.cosine for c in comparisons)
    worst_top1 = min(c.top1_agreement for c in comparisons)
    return ValidationResult(
        precision=precision,
        max_abs_diff=worst_diff,
        rel_error=worst_rel,
        cosine=worst_cos,
        top1_agreement=worst_top1,
        passed=passes(precision, worst_diff, worst_rel, worst_top1),
        comparisons=comparisons,
        notes=notes,
    )
