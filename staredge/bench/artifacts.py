"""The benchmark's artifact cache: each artifact a backend spec needs is exported once.

An artifact folder under the benchmark's ``workdir`` holds a marker naming the artifact and
the weights it was made from (a SHA-256 of the model's state), so a later run with the
same ``--workdir`` reuses it instead of exporting again (exports can take longer than the
timing itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

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

    def cached(self, out_dir: Path) -> tuple[Path, list[str]] | None:
        """(artifact, rewrites) recorded in ``out_dir`` for these weights, or None."""
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
        return path, list(data.get("rewrites", []))

    def remember(self, out_dir: Path, path: Path, rewrites: list[str]) -> None:
        """Record that ``out_dir`` holds ``path`` made from these weights with ``rewrites``."""
        record = {"artifact": str(Path(path).relative_to(out_dir)), "rewrites": rewrites, "fingerprint": self.fingerprint}
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

                atomic_write_with(path, write, suffix=".onnx")
                self.remember(out_dir, path, [])
                cached = (path, [])
            self._artifacts[key] = cached
        return self._artifacts[key][0]

    def exported(self, fmt: str, passes: list[str]) -> tuple[Path, list[str]]:
        """(artifact, rewrites) of our exporter for ``fmt`` with exactly ``passes``."""
        key = (fmt, tuple(passes))
        if key not in self._artifacts:
            from staredge.exporters import export

            out_dir = self.workdir / f"{fmt}-{'+'.join(passes) or 'none'}"
            cached = self.cached(out_dir)
            if cached is None:
                report = export(
                    self.model, [fmt], str(out_dir), precision="fp32", rewrite=list(passes) or "none",
                    force=True, validate=False,
                )
                artifact = report.artifacts[0]
                if artifact.error or not artifact.path:
                    raise BenchExportError(f"exporting to {fmt} failed: {artifact.error}")
                cached = (Path(artifact.path), list(artifact.rewrites or passes))
                self.remember(out_dir, *cached)
            self._artifacts[key] = cached
        return self._artifacts[key]
