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

    Language-model artifacts (``task="text-generation"``) describe their decode contract in
    ``lm``: genome, dim, depth, vocab_size, bos/eos/pad ids, max_context, prefill_chunk and
    ``state`` (one entry per state tensor: name, shape, dtype, kind, liv); see
    ``docs/lm-artifacts.md``. Image artifacts leave it empty.
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
    lm: dict[str, Any] = field(default_factory=dict)

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


# --------------------------------------------------------------------------- readers
# Each reader returns the raw JSON text stored under METADATA_KEY, or None when the
# artifact has none. They parse only the metadata slot (no weights, no runtime needed).


def read_metadata(path) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` embedded in the artifact at ``path``.

    Dispatches on :func:`detect_format`: ONNX ``metadata_props``, OpenVINO ``rt_info``
    (read from the ``.xml``; a folder holding one IR works too), the ``staredge`` metadata
    entry of a ``.tflite`` flatbuffer, CoreML user-defined metadata. Raises
    :class:`MetadataError` if the artifact has no StarEdge metadata or it is damaged.
    """
    from pathlib import Path

    p = Path(path)
    fmt = detect_format(p)
    readers = {"onnx": _read_onnx, "openvino": _read_openvino, "tflite": _read_tflite}
    coreml_reader = globals().get("_read_coreml")
    if coreml_reader is not None:
        readers["coreml"] = coreml_reader
    reader = readers.get(fmt)
    if reader is None:
        raise MetadataError(f"{p} is a {fmt} file; StarEdge metadata is read from exported artifacts only")
    try:
        text = reader(p)
    except MetadataError:
        raise
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise MetadataError(f"cannot read the metadata of {p} ({fmt}): the file is damaged or truncated ({exc})") from exc
    if text is None:
        raise MetadataError(
            f"{p} carries no StarEdge metadata (key '{METADATA_KEY}'); export it with `staredge export`"
        )
    if isinstance(text, ArtifactMetadata):
        return text
    return ArtifactMetadata.from_json(text)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _protobuf_fields(buf: bytes):
    """(field number, wire type, value) for each top-level field of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
            if pos > len(buf):
                raise ValueError("truncated protobuf field")
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _read_onnx(path) -> str | None:
    """``metadata_props[staredge]`` of an ONNX ModelProto (field 14), without the onnx package."""
    data = open(path, "rb").read()
    for number, wire, value in _protobuf_fields(data):
        if number == 14 and wire == 2:  # StringStringEntryProto {key = 1, value = 2}
            entry = {n: v for n, w, v in _protobuf_fields(value) if w == 2}
            if entry.get(1, b"").decode("utf-8") == METADATA_KEY:
                return entry.get(2, b"").decode("utf-8")
    return None


def _read_openvino(path) -> str | None:
    """``rt_info/staredge@value`` of an OpenVINO IR ``.xml`` (the ``.bin`` is not opened)."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        xmls = [x for x in sorted(p.glob("*.xml")) if x.with_suffix(".bin").is_file()]
        if len(xmls) != 1:
            raise MetadataError(f"{p} must hold exactly one OpenVINO .xml with its .bin")
        p = xmls[0]
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise MetadataError(f"{p} is not a readable OpenVINO IR .xml: {exc}") from exc
    node = root.find(f"rt_info/{METADATA_KEY}")
    return None if node is None else node.get("value")


def _read_tflite(path) -> str | None:
    """The ``staredge`` entry of ``Model.metadata`` in a ``.tflite`` flatbuffer.

    A small reader of the TFLite schema: Model field 4 = buffers, field 6 = metadata
    (Metadata: name = field 0, buffer = field 1); Buffer: data = field 0, or offset/size
    (fields 1, 2) for data stored after the flatbuffer.
    """
    import struct

    buf = open(path, "rb").read()
    if len(buf) < 8:
        raise ValueError("file too short for a flatbuffer")

    def u32(pos: int) -> int:
        return struct.unpack_from("<I", buf, pos)[0]

    def field(table: int, index: int) -> int | None:
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        vt_size = struct.unpack_from("<H", buf, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_size:
            return None
        off = struct.unpack_from("<H", buf, vtable + slot)[0]
        return table + off if off else None

    def deref(pos: int) -> int:
        return pos + u32(pos)

    def vector(table: int, index: int) -> tuple[int, int]:
        pos = field(table, index)
        if pos is None:
            return 0, 0
        vec = deref(pos)
        return vec + 4, u32(vec)

    if buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (file identifier is not TFL3)")
    model = deref(0)
    meta_start, meta_len = vector(model, 6)
    for i in range(meta_len):
        entry = deref(meta_start + 4 * i)
        name_pos = field(entry, 0)
        if name_pos is None:
            continue
        s = deref(name_pos)
        name = buf[s + 4 : s + 4 + u32(s)].decode("utf-8")
        if name != METADATA_KEY:
            continue
        buf_pos = field(entry, 1)
        buffer_index = u32(buf_pos) if buf_pos is not None else 0
        buffers_start, buffers_len = vector(model, 4)
        if buffer_index >= buffers_len:
            raise ValueError(f"metadata buffer index {buffer_index} out of range")
        buffer = deref(buffers_start + 4 * buffer_index)
        data_start, data_len = vector(buffer, 0)
        if data_len:
            return buf[data_start : data_start + data_len].decode("utf-8")
        off_pos, size_pos = field(buffer, 1), field(buffer, 2)
        if off_pos is not None and size_pos is not None:
            offset, size = struct.unpack_from("<Q", buf, off_pos)[0], struct.unpack_from("<Q", buf, size_pos)[0]
            return buf[offset : offset + size].decode("utf-8")
        return ""
    return None


def _read_coreml(path) -> str | None:
    """The ``staredge`` user-defined metadata of a CoreML ``.mlpackage``, without coremltools.

    ``Manifest.json`` names the root model spec (``rootModelIdentifier`` → item ``path``
    under ``Data/``); in that ``CoreML.Specification.Model`` protobuf the entry sits at
    ``description`` (field 2) → ``metadata`` (field 100) → ``userDefined`` (field 100, a
    string map: key = 1, value = 2).
    """
    import json
    from pathlib import Path

    pkg = Path(path)
    manifest_path = pkg / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        item = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        spec = (pkg / "Data" / item["path"]).read_bytes()
    except (KeyError, TypeError) as exc:
        raise MetadataError(f"{manifest_path} does not name a root model spec ({exc}); re-export the package") from exc

    def submessages(buf: bytes, number: int):
        return [v for n, w, v in _protobuf_fields(buf) if n == number and w == 2]

    for description in submessages(spec, 2):
        for meta in submessages(description, 100):
            for entry in submessages(meta, 100):
                kv = {n: v for n, w, v in _protobuf_fields(entry) if w == 2}
                if kv.get(1, b"").decode("utf-8") == METADATA_KEY:
                    return kv.get(2, b"").decode("utf-8")
    return None
