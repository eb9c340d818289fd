"""Validation: run each artifact and compare its logits with the PyTorch model.

Inputs are real photos shipped with scikit-image (astronaut, coffee, chelsea, rocket,
camera, hubble_deep_field), preprocessed per the model's ``pretrained_cfg`` with Pillow and
numpy, plus seeded random inputs. Each artifact runs them one by one at its export batch
size and, where the artifact allows another batch size (dynamic ONNX, OpenVINO reshape,
LiteRT input resize), all together as one batch. Reported per artifact: max |Δ|, relative
error (max |Δ| / max |reference|), the lowest cosine similarity of a logit vector and top-1
agreement.

Tolerances (:data:`TOLERANCES`): fp32 passes with max |Δ| ≤ 1e-4; fp16 passes with
relative error ≤ 1e-2 and every top-1 class equal. int8 is judged on real data only (the
seeded random inputs are still compared and reported, but an int8 model calibrated on
images is not expected to follow PyTorch on noise): where the model has a labelled
held-out set (the digits model: 450 scans, :func:`staredge.exporters.quantize.labelled_set`)
the artifact's accuracy must be within 0.5 points of fp32 PyTorch's and its top-1 class
must equal PyTorch's on ≥ 99% of the set; otherwise (zoo models) on the real photos the
top-1 agreement must be ≥ 99% (every photo, with six) and the lowest logit cosine ≥ 0.99.
Top-5 agreement (PyTorch's top-1 class within the artifact's top 5) is reported too.

Artifacts run through :func:`staredge.runtimes.load_backend`, the same runtime layer the
Predictor and the benchmark use, so what is validated is what ships (OpenVINO then runs
with its f32 precision hint, CoreML packages on the MIL reference executor). Photos are
prepared by :mod:`staredge.preprocess`, the Predictor's own preprocessing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from staredge.errors import ConfigError, StarEdgeError
from staredge.runtimes import load_backend

#: Pass criteria by precision.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4},
    "fp16": {"rel_error": 1e-2, "top1_agreement": 1.0},
    # real data only (labelled set if any, else photos); see the module docstring
    "int8": {"top1_agreement": 0.99, "accuracy_drop": 0.005, "cosine": 0.99},
}

#: Input sets that do not count towards an int8 pass (reported only).
INT8_REPORT_ONLY = ("random",)

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
    top5_agreement: float | None = None

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
    #: Labelled held-out set (int8 only, where the model has one): its name and size,
    #: the artifact's accuracy and fp32 PyTorch's on it.
    labelled_set: str | None = None
    labelled_n: int | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None
    #: Worst top-5 agreement over the real-data comparisons (int8 only).
    top5_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["comparisons"] = [c.to_dict() for c in self.comparisons]
        return d


# --------------------------------------------------------------------------- inputs


def preprocess_config(cfg: Any):
    """The :class:`staredge.preprocess.PreprocessConfig` of a model's ``pretrained_cfg``."""
    from staredge.preprocess import PreprocessConfig

    return PreprocessConfig(
        input_size=tuple(int(v) for v in cfg.input_size),
        crop_pct=float(cfg.crop_pct),
        interpolation=str(cfg.interpolation),
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
    )


def photo_inputs(cfg: Any, names: tuple[str, ...] = PHOTOS) -> tuple[np.ndarray, list[str]]:
    """Preprocessed scikit-image photos as an (N, C, H, W) array and their names.

    The photos go through :func:`staredge.preprocess.preprocess`, exactly as
    ``Predictor.classify`` prepares them. Returns an empty array when scikit-image is not
    installed (the ``dev`` extra).
    """
    from staredge.preprocess import preprocess

    try:
        import skimage.data as sk_data
    except ImportError:
        return np.zeros((0, *cfg.input_size), np.float32), []
    config = preprocess_config(cfg)
    arrays, used = [], []
    for name in names:
        try:
            image = getattr(sk_data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
            continue
        arrays.append(preprocess(np.asarray(image), config))
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


def artifact_backend(path: str | os.PathLike, fmt: str, batch: int | None = None):
    """The artifact at ``path`` loaded through :func:`staredge.runtimes.load_backend` on the
    format's own runtime, on the CPU, with the format's validation options; ``batch`` asks
    a static artifact to be re-shaped for that batch size."""
    from staredge.formats import get_format

    spec = get_format(fmt)
    options = dict(spec.validation_options)
    if batch is not None:
        options["batch"] = batch
    return load_backend(str(path), backend=spec.runtime, device="cpu", **options)


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
    k = min(5, out.shape[1])
    top5_out = np.argsort(-out, axis=1)[:, :k]
    top5 = float((top5_out == ref.argmax(axis=1)[:, None]).any(axis=1).mean())
    return Comparison(
        inputs=inputs, batch=batch, n=ref.shape[0], max_abs_diff=diff,
        rel_error=diff / scale if scale > 0 else diff, cosine=float(cos.min()), top1_agreement=top1,
        top5_agreement=top5,
    )


def passes(precision: str, max_abs_diff: float, rel_error: float, top1_agreement: float,
           *, cosine: float | None = None, accuracy: float | None = None,
           reference_accuracy: float | None = None) -> bool:
    """Whether figures meet :data:`TOLERANCES` for ``precision``.

    ``accuracy_drop`` applies where a labelled set gave ``accuracy`` and
    ``reference_accuracy``; ``cosine`` only where no labelled set exists (zoo models).
    """
    tol = TOLERANCES.get(precision)
    if tol is None:
        raise ConfigError(f"no validation tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}")
    ok = True
    labelled = accuracy is not None and reference_accuracy is not None
    if "accuracy_drop" in tol and labelled:
        ok &= reference_accuracy - accuracy <= tol["accuracy_drop"] + 1e-12
    if "cosine" in tol and not labelled and cosine is not None:
        ok &= cosine >= tol["cosine"]
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
    labelled: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> ValidationResult:
    """Compare the artifact at ``path`` with ``model`` (the original PyTorch module).

    Every input set runs sample by sample at ``export_batch`` and, where the artifact
    allows a different batch size, as one batch. The result holds the worst figures.
    ``references`` caches the PyTorch logits per input set across artifacts (filled here).
    ``labelled``: the model's labelled held-out set ``(inputs, labels, name)``
    (:func:`staredge.exporters.quantize.labelled_set`, which the caller asks: validation
    imports no quantiser); an int8 artifact is also judged on its accuracy there.
    """
    from staredge.formats import get_format

    spec = get_format(fmt, exportable=True)
    backend = artifact_backend(path, spec.name, None if dynamic_batch else export_batch)
    inputs = inputs if inputs is not None else validation_inputs(model)
    comparisons: list[Comparison] = []
    notes: list[str] = []
    references = references if references is not None else {}
    for name, x in inputs.items():
        if name not in references:
            references[name] = torch_logits(model, x)
        ref = references[name]
        singles = [backend.forward(x[i : i + export_batch])[0]
                   for i in range(0, len(x) - export_batch + 1, export_batch)]
        used = len(singles) * export_batch
        comparisons.append(compare(ref[:used], np.concatenate(singles, axis=0), name, export_batch))
        other = len(x) if len(x) != export_batch else len(x) + 1
        if dynamic_batch or spec.resizable_batch:
            xb = x if other == len(x) else np.concatenate([x, x[:1]], axis=0)
            refb = ref if other == len(x) else np.concatenate([ref, ref[:1]], axis=0)
            try:
                outb = (backend if dynamic_batch else artifact_backend(path, spec.name, other)).forward(xb)[0]
            except Exception as exc:  # noqa: BLE001 - the runtime's own error, reported
                notes.append(f"{name}: batch {other} not accepted by the artifact ({type(exc).__name__})")
            else:
                comparisons.append(compare(refb, outb, name, other))
    held_out, labelled = labelled, None
    if precision == "int8":
        labelled = _labelled_comparison(model, backend, export_batch, references, held_out)
        if labelled is not None:
            comparisons.append(labelled[0])
        notes.append("int8: judged on real data only; random inputs are reported, not judged")
    # int8: the labelled set decides where there is one, else every real-data comparison
    judged = comparisons
    if precision == "int8":
        judged = [labelled[0]] if labelled is not None else [c for c in comparisons if c.inputs not in INT8_REPORT_ONLY]
        judged = judged or comparisons
    worst_diff = max(c.max_abs_diff for c in judged)
    worst_rel = max(c.rel_error for c in judged)
    worst_cos = min(c.cosine for c in judged)
    worst_top1 = min(c.top1_agreement for c in judged)
    top5 = [c.top5_agreement for c in judged if c.top5_agreement is not None]
    accuracy = reference_accuracy = None
    if labelled is not None:
        accuracy, reference_accuracy = labelled[1], labelled[2]
    return ValidationResult(
        precision=precision,
        max_abs_diff=worst_diff,
        rel_error=worst_rel,
        cosine=worst_cos,
        top1_agreement=worst_top1,
        passed=passes(precision, worst_diff, worst_rel, worst_top1, cosine=worst_cos, accuracy=accuracy,
                      reference_accuracy=reference_accuracy),
        comparisons=comparisons,
        notes=notes,
        labelled_set=labelled[3] if labelled is not None else None,
        labelled_n=labelled[0].n if labelled is not None else None,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        top5_agreement=min(top5) if top5 else None,
    )


def _labelled_comparison(model: nn.Module, backend: Any, batch: int, references: dict[str, Any],
                         found: tuple[np.ndarray, np.ndarray, str] | None):
    """(comparison, artifact accuracy, PyTorch accuracy, set name) on the model's labelled
    held-out set ``found``, or None when it has none."""
    key = "__labelled__"
    if key not in references:
        references[key] = None if found is None else (found, torch_logits(model, found[0]))
    cached = references[key]
    if cached is None:
        return None
    (x, y, name), ref = cached
    outs = [backend.forward(x[i : i + batch])[0] for i in range(0, len(x) - batch + 1, batch)]
    out = np.concatenate(outs, axis=0)
    used = len(out)
    comparison = compare(ref[:used], out, name, batch)
    acc = float((np.asarray(out).reshape(used, -1).argmax(axis=1) == y[:used]).mean())
    ref_acc = float((ref[:used].argmax(axis=1) == y[:used]).mean())
    return comparison, acc, ref_acc, name
