"""The benchmark's artifact cache: each artifact a backend spec needs is exported once.

An artifact folder under the benchmark's ``workdir`` holds a marker naming the artifact and
the weights it was made from (a SHA-256 of the model's state), so a later run with the
same ``--workdir`` reuses it instead of exporting again (exports can take longer than the
timing itself). Artifacts at another precision than fp32 (``onnxruntime@int8``) live in their
own folder; an int8 one also records a digest of its calibration inputs, so changing
``--calibration`` exports again.

int8 calibration for a benchmark: the inputs given (``--calibration DIR`` or an array), else
the model's own (the digits model's training split), else :func:`~staredge.exporters.quantize.photo_calibration`
(scikit-image photos that are not in the validation set, and their mirror images). A
benchmark's zoo models carry seeded random weights, so only the calibration's effect on
speed matters here; the result notes which data was used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ExportError
from staredge.fileio import atomic_write_text, atomic_write_with

MARKER = ".staredge-bench-artifact.json"


class BenchExportError(ExportError):
    """Our exporter could not produce the artifact a backend spec needs."""


def model_fingerprint(model: Any) -> str:
    """SHA-256 of the model's class and state_dict bytes: which weights an artifact holds."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ArtifactCache:
    """Exports (or finds) the artifacts of one model under ``workdir``."""

    def __init__(self, model: Any, workdir: str | os.PathLike) -> None:
        self.model = model
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fingerprint: str | None = None
        self._artifacts: dict[tuple, tuple[Path, list[str]]] = {}

    @property
    def fingerprint(self) -> str:
        """:func:`model_fingerprint` of the model (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    def cached(self, out_dir: Path, calibration: str | None = None) -> tuple[Path, list[str]] | None:
        """(artifact, rewrites) recorded in ``out_dir`` for these weights (and calibration digest), or None."""
        marker = out_dir / MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        path = out_dir / str(data.get("artifact", ""))
        if data.get("fingerprint") != self.fingerprint or not data.get("artifact") or not path.exists():
            return None
        if data.get("calibration") != calibration:
            return None
        return path, list(data.get("rewrites", []))

    def remember(self, out_dir: Path, path: Path, rewrites: list[str], calibration: str | None = None) -> None:
        """Record that ``out_dir`` holds ``path`` made from these weights with ``rewrites``
        (and, for int8, calibration inputs with digest ``calibration``)."""
        record = {"artifact": str(Path(path).relative_to(out_dir)), "rewrites": rewrites, "fingerprint": self.fingerprint,
                  "calibration": calibration}
        atomic_write_text(out_dir / MARKER, json.dumps(record), force=True)

    def plain_onnx(self, x: Any) -> Path:
        """A plain ``torch.onnx.export`` of the model (the ``onnx-plain`` baseline's artifact)."""
        key = ("onnx-plain",)
        if key not in self._artifacts:
            import torch

            out_dir = self.workdir / "onnx-plain"
            cached = self.cached(out_dir)
            if cached is None:
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / "plain.onnx"

                def write(tmp: Path) -> None:
                    # dynamo=False: torch 2.13's default (dynamo) exporter needs onnxscript, which a
                    # plain install lacks; the TorchScript exporter is what such a user ends up with.
                    with torch.no_grad(), warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        torch.onnx.export(
                            self.model, (torch.from_numpy(x),), str(tmp), dynamo=False, opset_version=17,
                            input_names=["input"], output_names=["logits"],
                        )

                atomic_write_with(path, write, suffix=path.suffix)
                self.remember(out_dir, path, [])
                cached = (path, [])
            self._artifacts[key] = cached
        return self._artifacts[key][0]

    def exported(self, fmt: str, passes: list[str], precision: str = "fp32",
                 calibration: Any = None) -> tuple[Path, list[str]]:
        """(artifact, rewrites) of our exporter for ``fmt`` with exactly ``passes`` at ``precision``.

        ``calibration`` (int8 only): an (N, C, H, W) array of prepared inputs (see
        :func:`calibration_for`).
        """
        key = (fmt, tuple(passes), precision)
        if key not in self._artifacts:
            from staredge.exporters import export

            out_dir = self.workdir / (f"{fmt}-{'+'.join(passes) or 'none'}"
                                      + ("" if precision == "fp32" else f"-{precision}"))
            digest = None
            if precision == "int8":
                if calibration is None:
                    raise BenchExportError(f"an int8 {fmt} artifact needs calibration inputs")
                digest = hashlib.sha256(np.ascontiguousarray(calibration, dtype=np.float32).tobytes()).hexdigest()
            cached = self.cached(out_dir, digest)
            if cached is None:
                report = export(
                    self.model, [fmt], str(out_dir), precision=precision, rewrite=list(passes) or "none",
                    force=True, validate=False,
                    **({"calibration": calibration, "calibration_samples": len(calibration)} if digest else {}),
                )
                artifact = report.artifacts[0]
                if artifact.error or not artifact.path:
                    raise BenchExportError(f"exporting to {fmt} ({precision}) failed: {artifact.error}")
                cached = (Path(artifact.path), list(artifact.rewrites or passes))
                self.remember(out_dir, *cached, calibration=digest)
            self._artifacts[key] = cached
        return self._artifacts[key]


def calibration_for(model: Any, calibration: Any = None, samples: int | None = None) -> tuple[np.ndarray, str]:
    """(int8 calibration inputs, a phrase saying what they are) for a benchmark of ``model``.

    ``calibration`` (a folder of images or an array) wins; else the model's own data (the
    digits model's training split); else scikit-image photos outside the validation set and
    their mirrors (:func:`~staredge.exporters.quantize.photo_calibration`). Raises
    :class:`~staredge.exporters.quantize.CalibrationError` when there is none.
    """
    from staredge.exporters.quantize import DIGITS_MODEL, photo_calibration, resolve_calibration

    if calibration is not None or getattr(model, "staredge_name", None) == DIGITS_MODEL:
        x = resolve_calibration(model, calibration, samples)
        what = f"{calibration}" if isinstance(calibration, (str, os.PathLike)) else (
            "the given array" if calibration is not None else "its training split")
        return x, f"int8 calibrated on {len(x)} inputs ({what})"
    x = photo_calibration(model, samples)
    return x, (f"int8 calibrated on {len(x)} scikit-image photos and mirrors (not the validation photos); "
               f"pass --calibration DIR for your own data")
