"""Artifact metadata: what every exported artifact carries inside itself.

Exporters embed one JSON document (``ArtifactMetadata.to_json()``) under the key
:data:`METADATA_KEY` in the artifact's own metadata slot (ONNX ``metadata_props``,
OpenVINO ``rt_info``, a metadata entry inside the ``.tflite`` flatbuffer, CoreML
user-defined metadata). Runtimes read it back with :func:`read_metadata`, so that loading
an artifact needs no side file. This module is shared by exporters (writers) and runtimes
(readers) and imports neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from staredge._version import __version__
from staredge.errors import StarEdgeError

#: Key under which the JSON document is stored in every format.
METADATA_KEY = "staredge"
#: Bumped when the schema changes incompatibly.
SCHEMA_VERSION = 1


@dataclass
class ArtifactMetadata:
    """Self-description of an exported artifact.

    ``input_size`` is (C, H, W) for image models; ``labels`` are class names in output
    index order; ``preprocessing`` holds ``crop_pct``, ``interpolation``, ``mean``, ``std``
    (images are resized so the shorter side is ``H / crop_pct``, centre-cropped, scaled to
    [0, 1] and normalised, unless ``pixels_in_model`` says the artifact does that itself).
    """

    model: str
    family: str
    format: str = ""
    task: str = "image-classification"
    input_name: str = "input"
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    input_size: list[int] = field(default_factory=lambda: [3, 224, 224])
    input_layout: str = "NCHW"
    dynamic_batch: bool = False
    preprocessing: dict[str, Any] = field(default_factory=dict)
    pixels_in_model: bool = False
    labels: list[str] = field(default_factory=list)
    precision: str = "fp32"
    rewrites: list[str] = field(default_factory=list)
    checkpoint_sha256: str | None = None
    staredge_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def to_json(self) -> str:
        """The JSON document exporters embed."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactMetadata":
        """Build from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        missing = {"model", "family"} - set(data)
        if missing:
            raise MetadataError(f"artifact metadata lacks required keys {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> "ArtifactMetadata":
        """Parse the embedded JSON document."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise MetadataError(f"artifact metadata is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise MetadataError("artifact metadata is not a JSON object")
        return cls.from_dict(data)


class MetadataError(StarEdgeError):
    """An artifact has no StarEdge metadata, or it cannot be parsed."""


#: Artifact formats by file suffix (a directory is inspected by :func:`detect_format`).
SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".xml": "openvino",
    ".tflite": "tflite",
    ".mlpackage": "coreml",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".tar": "pytorch",
    ".safetensors": "pytorch",
}


def detect_format(path) -> str:
    """The artifact format of ``path`` ("onnx", "openvino", "tflite", "coreml", "pytorch").

    Uses the suffix; a directory is an ``.mlpackage`` if it holds ``Manifest.json`` and an
    OpenVINO IR if it holds exactly one ``.xml`` with its ``.bin``. Raises
    :class:`MetadataError` for anything else.
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise MetadataError(f"no such file or directory: {p}")
    if p.is_dir():
        if (p / "Manifest.json").is_file():
            return "coreml"
        xmls = [x for x in p.glob("*.xml") if x.with_suffix(".bin").is_file()]
        if len(xmls) == 1:
            return "openvino"
        raise MetadataError(
            f"{p} is a directory but neither a CoreML .mlpackage (no Manifest.json) nor an "
            f"OpenVINO IR folder (one .xml with its .bin); point at the artifact file itself"
        )
    fmt = SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise MetadataError(f"unknown artifact suffix '{p.suffix}' for {p}; known suffixes: {known}")
    return fmt
