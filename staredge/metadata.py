"""Artifact metadata: what every exported artifact carries inside itself.

Exporters embed one JSON document (``ArtifactMetadata.to_json()``) under the key
:data:`METADATA_KEY` in the artifact's own metadata slot (ONNX ``metadata_props``,
OpenVINO ``rt_info``, a metadata entry inside the ``.tflite`` flatbuffer, CoreML
user-defined metadata). Runtimes read it back with :func:`read_metadata`, so that loading
an artifact needs no side file. This module is shared by exporters (writers) and runtimes
(readers) and imports neither: it is part of the core (standard library and
:mod:`staredge.errors`, :mod:`staredge.formats`, :mod:`staredge.fileio` only).

Beside each format's reader sits what else the format table (:mod:`staredge.formats`) names
from here: its detector (``is_<format>_...``: does this path hold such an artifact) and its
writer (``write_<format>_text``: replace the embedded document in place, atomically).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from staredge._version import __version__
from staredge.errors import ArtifactError, MetadataError, StarEdgeError
from staredge.formats import CHECKPOINT_FORMAT

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
        return _checked(cls(**{k: v for k, v in data.items() if k in known}))

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


# MetadataError is defined in staredge.errors (one class for every layer) and imported above.

#: Limits on what a file's metadata may ask for (docs/security.md): the elements of one
#: input sample (a Predictor allocates a zero input of that shape) and the label count.
MAX_INPUT_ELEMENTS = 1 << 26
MAX_LABELS = 1 << 20

_STR_FIELDS = ("model", "family", "format", "task", "input_name", "input_layout", "precision", "staredge_version")
_LIST_OF_STR_FIELDS = ("output_names", "labels", "rewrites")
_DICT_FIELDS = ("preprocessing", "extra", "lm")


def _checked(meta: "ArtifactMetadata") -> "ArtifactMetadata":
    """``meta`` if every field has the type and range the readers rely on; else a
    :class:`MetadataError` naming the field (metadata that lies is refused at load time,
    not at the first call)."""

    def bad(name: str, want: str, value: Any) -> MetadataError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
        return MetadataError(f"artifact metadata field '{name}' must be {want}, got {type(value).__name__} {shown}; "
                             f"the metadata was edited or is damaged: re-export the artifact with `staredge export`")

    for name in _STR_FIELDS:
        if not isinstance(getattr(meta, name), str):
            raise bad(name, "a string", getattr(meta, name))
    for name in _LIST_OF_STR_FIELDS:
        value = getattr(meta, name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(name, "a list of strings", value)
    if len(meta.labels) > MAX_LABELS:
        raise MetadataError(f"artifact metadata has {len(meta.labels):,} labels, over the limit of {MAX_LABELS:,} "
                            f"(MAX_LABELS)")
    for name in _DICT_FIELDS:
        if not isinstance(getattr(meta, name), dict):
            raise bad(name, "a JSON object", getattr(meta, name))
    for name in ("dynamic_batch", "pixels_in_model"):
        if not isinstance(getattr(meta, name), bool):
            raise bad(name, "true or false", getattr(meta, name))
    if meta.checkpoint_sha256 is not None and not isinstance(meta.checkpoint_sha256, str):
        raise bad("checkpoint_sha256", "a string or null", meta.checkpoint_sha256)
    size = meta.input_size
    if (not isinstance(size, list) or not 1 <= len(size) <= 4
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise bad("input_size", "a list of 1 to 4 positive integers", size)
    elements = 1
    for v in size:
        elements *= v
    if elements > MAX_INPUT_ELEMENTS:
        raise MetadataError(f"artifact metadata says input_size {size} ({elements:,} values per sample), over the "
                            f"limit of {MAX_INPUT_ELEMENTS:,} (MAX_INPUT_ELEMENTS); the metadata lies or is damaged")
    pre = meta.preprocessing
    if "crop_pct" in pre and (isinstance(pre["crop_pct"], bool) or not isinstance(pre["crop_pct"], (int, float))):
        raise bad("preprocessing.crop_pct", "a number", pre["crop_pct"])
    for name in ("mean", "std"):
        if name in pre and (not isinstance(pre[name], list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in pre[name])):
            raise bad(f"preprocessing.{name}", "a list of numbers", pre[name])
    if "interpolation" in pre and not isinstance(pre["interpolation"], str):
        raise bad("preprocessing.interpolation", "a string", pre["interpolation"])
    return meta


class DamagedArtifactError(MetadataError, ArtifactError):
    """The artifact's metadata slot cannot be read: the file is truncated or corrupt."""


def detect_format(path) -> str:
    """The artifact format name of ``path`` ("onnx", "openvino", "tflite", "coreml", "pytorch").

    The format table (:func:`staredge.formats.detect_format`) decides from the suffix or a
    folder's layout. Raises :class:`MetadataError` for anything else.
    """
    from staredge.formats import detect_format as detect

    return detect(path).name


# --------------------------------------------------------------------------- readers
# Each reader returns the raw JSON text stored under METADATA_KEY, or None when the
# artifact has none. They parse only the metadata slot (no weights, no runtime needed),
# with the standard library alone. The format table names each format's reader.


def read_metadata(path, fmt: str | None = None) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` embedded in the artifact at ``path``.

    ``fmt`` (a format name) skips detection. Dispatches to the format's reader: ONNX
    ``metadata_props``, OpenVINO ``rt_info`` (read from the ``.xml``; a folder holding one
    IR works too), the ``staredge`` metadata entry of a ``.tflite`` flatbuffer, CoreML
    user-defined metadata, a safetensors header. Raises :class:`MetadataError` if the
    artifact has no StarEdge metadata or it is damaged.
    """
    from pathlib import Path

    from staredge.formats import detect_format as detect, get_format

    p = Path(path)
    spec = get_format(fmt) if fmt is not None else detect(p)
    try:
        text = spec.read_metadata_text(p)
    except MetadataError:
        raise
    except (OSError, ValueError, IndexError, KeyError, TypeError, struct.error, RecursionError) as exc:
        raise DamagedArtifactError(
            f"cannot read the metadata of {p} ({spec.name}): the file is damaged or truncated ({exc}); "
            f"re-export it with `staredge export`"
        ) from exc
    if (text is None or text == "") and not spec.exportable:
        raise MetadataError(
            f"{p} is a {spec.title} without StarEdge metadata; StarEdge metadata is read from exported "
            f"artifacts only (and from safetensors files whose header carries it)"
        )
    if text is None or text == "":
        raise MetadataError(
            f"{p} carries no StarEdge metadata (key '{METADATA_KEY}'); it was not exported by StarEdge. "
            f"Re-export it with `staredge export`, which embeds labels and preprocessing"
        )
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


def read_onnx_text(path) -> str | None:
    """``metadata_props[staredge]`` of an ONNX ModelProto (field 14), without the onnx package."""
    data = open(path, "rb").read()
    for number, wire, value in _protobuf_fields(data):
        if number == 14 and wire == 2:  # StringStringEntryProto {key = 1, value = 2}
            entry = {n: v for n, w, v in _protobuf_fields(value) if w == 2}
            if entry.get(1, b"").decode("utf-8") == METADATA_KEY:
                return entry.get(2, b"").decode("utf-8")
    return None


def read_openvino_text(path) -> str | None:
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


def read_tflite_text(path) -> str | None:
    """The ``staredge`` entry of ``Model.metadata`` in a ``.tflite`` flatbuffer.

    A small reader of the TFLite schema: Model field 4 = buffers, field 6 = metadata
    (Metadata: name = field 0, buffer = field 1); Buffer: data = field 0, or offset/size
    (fields 1, 2) for data stored after the flatbuffer.
    """
    import struct

    buf = open(path, "rb").read()
    if len(buf) < 8:
        raise ValueError("file too short for a flatbuffer")
    size = len(buf)

    # Every offset comes from the file: each read is bounds-checked first (a negative or
    # past-the-end offset is a damaged file, never a wrap-around or a huge loop).
    def need(pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > size:
            raise ValueError(f"damaged flatbuffer: {what} at offset {pos} (+{n} bytes) lies outside the file "
                             f"({size} bytes)")

    def u32(pos: int) -> int:
        need(pos, 4, "an offset")
        return struct.unpack_from("<I", buf, pos)[0]

    def field(table: int, index: int) -> int | None:
        need(table, 4, "a table")
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        need(vtable, 4, "a vtable")
        vt_size = struct.unpack_from("<H", buf, vtable)[0]
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        need(vtable + slot, 2, "a vtable entry")
        off = struct.unpack_from("<H", buf, vtable + slot)[0]
        return table + off if off else None

    def deref(pos: int) -> int:
        target = pos + u32(pos)
        need(target, 4, "a referenced table or vector")
        return target

    def vector(table: int, index: int, elem: int = 4) -> tuple[int, int]:
        pos = field(table, index)
        if pos is None:
            return 0, 0
        vec = deref(pos)
        n = u32(vec)
        need(vec + 4, n * elem, "a vector")
        return vec + 4, n

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
        need(s + 4, u32(s), "a name string")
        name = buf[s + 4 : s + 4 + u32(s)].decode("utf-8")
        if name != METADATA_KEY:
            continue
        buf_pos = field(entry, 1)
        buffer_index = u32(buf_pos) if buf_pos is not None else 0
        buffers_start, buffers_len = vector(model, 4)
        if buffer_index >= buffers_len:
            raise ValueError(f"metadata buffer index {buffer_index} out of range")
        buffer = deref(buffers_start + 4 * buffer_index)
        data_start, data_len = vector(buffer, 0, elem=1)
        if data_len:
            return buf[data_start : data_start + data_len].decode("utf-8")
        off_pos, size_pos = field(buffer, 1), field(buffer, 2)
        if off_pos is not None and size_pos is not None:
            need(off_pos, 8, "a buffer offset")
            need(size_pos, 8, "a buffer size")
            offset, length = struct.unpack_from("<Q", buf, off_pos)[0], struct.unpack_from("<Q", buf, size_pos)[0]
            need(offset, length, "the metadata buffer")
            return buf[offset : offset + length].decode("utf-8")
        return ""
    return None


def read_coreml_text(path) -> str | None:
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
        spec_path = (pkg / "Data" / item["path"]).resolve()
        if not spec_path.is_relative_to((pkg / "Data").resolve()):
            raise MetadataError(f"{manifest_path} names a model spec outside the package ({item['path']!r}); "
                                "re-export the package")
        spec = spec_path.read_bytes()
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


def read_safetensors_text(path) -> str | None:
    """The ``staredge`` entry of a safetensors header's ``__metadata__``, or None.

    Also None for files that are not safetensors (a pickled ``.pth``), which carry no
    StarEdge metadata.
    """
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return None
        n = int.from_bytes(head, "little")
        if n <= 0 or n > 100_000_000:
            return None
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta.get(METADATA_KEY) if isinstance(meta, dict) else None


# --------------------------------------------------------------------------- detectors
# Each says whether an existing path is an artifact of its format (the format table's
# ``detector``); the first line of each docstring names the artifact for error messages.


def is_coreml_package(path) -> bool:
    """a CoreML .mlpackage (a folder holding Manifest.json).

    True for a folder with a ``Manifest.json`` (whatever its name ends in)."""
    from pathlib import Path

    p = Path(path)
    return p.is_dir() and (p / "Manifest.json").is_file()


def is_openvino_ir(path) -> bool:
    """an OpenVINO IR (an .xml, or a folder holding one .xml with its .bin).

    True for an ``.xml`` file, or a folder that holds exactly one ``.xml`` with its ``.bin``."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return len([x for x in p.glob("*.xml") if x.with_suffix(".bin").is_file()]) == 1
    return p.is_file() and p.suffix.lower() == ".xml"


# --------------------------------------------------------------------------- writers
# Each replaces the document under METADATA_KEY in an existing artifact (written atomically,
# the rest of the file kept byte for byte where the format allows), with the standard
# library alone where it can. The format table names each format's writer.


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_field(number: int, wire: int, value) -> bytes:
    key = _encode_varint(number << 3 | wire)
    if wire == 0:
        return key + _encode_varint(value)
    if wire == 2:
        return key + _encode_varint(len(value)) + bytes(value)
    return key + bytes(value)  # fixed 64 / 32 bit


def _string_entry(number: int, key: str, value: str) -> bytes:
    """A ``StringStringEntryProto`` (or a map entry) as field ``number``."""
    body = _encode_field(1, 2, key.encode("utf-8")) + _encode_field(2, 2, value.encode("utf-8"))
    return _encode_field(number, 2, body)


def _replace_entry(buf: bytes, number: int, text: str) -> bytes:
    """``buf`` without its field-``number`` string entries keyed METADATA_KEY, plus one holding ``text``."""
    out = bytearray()
    for n, wire, value in _protobuf_fields(buf):
        if n == number and wire == 2:
            entry = {k: v for k, w, v in _protobuf_fields(value) if w == 2}
            if entry.get(1, b"").decode("utf-8", "replace") == METADATA_KEY:
                continue
        out += _encode_field(n, wire, value)
    return bytes(out) + _string_entry(number, METADATA_KEY, text)


def write_onnx_text(path, text: str) -> None:
    """Set ``metadata_props[staredge]`` of an ONNX file to ``text`` (the onnx package is not needed)."""
    from staredge.fileio import atomic_write_bytes

    data = open(path, "rb").read()
    atomic_write_bytes(path, _replace_entry(data, 14, text), force=True)


def write_openvino_text(path, text: str) -> None:
    """Set ``rt_info/staredge@value`` of an OpenVINO IR ``.xml`` (the ``.bin`` is untouched)."""
    import xml.etree.ElementTree as ET
    from pathlib import Path

    from staredge.fileio import atomic_write_bytes

    p = Path(path)
    if p.is_dir():
        p = next(x for x in sorted(p.glob("*.xml")) if x.with_suffix(".bin").is_file())
    tree = ET.parse(p)
    root = tree.getroot()
    rt_info = root.find("rt_info")
    if rt_info is None:
        rt_info = ET.SubElement(root, "rt_info")
    node = rt_info.find(METADATA_KEY)
    if node is None:
        node = ET.SubElement(rt_info, METADATA_KEY)
    node.set("value", text)
    atomic_write_bytes(p, ET.tostring(root, encoding="utf-8", xml_declaration=True), force=True)


def write_coreml_text(path, text: str) -> None:
    """Set the ``staredge`` user-defined metadata of a CoreML ``.mlpackage`` (no coremltools):
    ``description`` (2) → ``metadata`` (100) → ``userDefined`` (100) of the root model spec."""
    import json
    from pathlib import Path

    from staredge.fileio import atomic_write_bytes

    pkg = Path(path)
    manifest = json.loads((pkg / "Manifest.json").read_text("utf-8"))
    spec_path = pkg / "Data" / manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    spec = spec_path.read_bytes()

    def rewrite(buf: bytes, chain: tuple[int, ...]) -> bytes:
        if len(chain) == 1:
            return _replace_entry(buf, chain[0], text)
        out, found = bytearray(), False
        for n, wire, value in _protobuf_fields(buf):
            if n == chain[0] and wire == 2 and not found:
                value, found = rewrite(value, chain[1:]), True
            out += _encode_field(n, wire, value)
        if not found:
            out += _encode_field(chain[0], 2, rewrite(b"", chain[1:]))
        return bytes(out)

    atomic_write_bytes(spec_path, rewrite(spec, (2, 100, 100)), force=True)


def write_metadata(path, meta: ArtifactMetadata, fmt: str | None = None) -> None:
    """Embed ``meta`` in the artifact at ``path``, replacing its document (the format's
    ``metadata_writer``; ``fmt`` skips detection). The one way to rewrite an artifact's metadata."""
    from pathlib import Path

    from staredge.formats import detect_format as detect, get_format

    p = Path(path)
    spec = get_format(fmt) if fmt is not None else detect(p)
    spec.write_metadata_text(p, meta.to_json())


# --------------------------------------------------------------------------- builder


def metadata_from_model(
    model: Any,
    fmt: str = CHECKPOINT_FORMAT,
    *,
    precision: str = "fp32",
    rewrites: list[str] | tuple[str, ...] = (),
    dynamic_batch: bool = False,
    extra: dict[str, Any] | None = None,
    family: str | None = None,
) -> ArtifactMetadata:
    """The :class:`ArtifactMetadata` an artifact made from ``model`` carries.

    Reads what a StarEdge model knows about itself: ``staredge_name`` (registry name),
    ``pretrained_cfg`` (input size, preprocessing, labels) and ``checkpoint_sha256``. Used
    by every exporter, the PyTorch backend and the model registry; imports no torch and
    nothing above the core: ``family`` is given by the caller (the exporters ask the
    registry), else read from ``model.staredge_family`` or from the registry module when the
    model came from it (it is then loaded already), else "custom".
    """
    import sys

    name = getattr(model, "staredge_name", None) or type(model).__name__.lower()
    if family is None:
        family = "custom"
        if getattr(model, "staredge_name", None):
            family = getattr(model, "staredge_family", None) or _registry_family(name)
    cfg = getattr(model, "pretrained_cfg", None)
    preprocessing: dict[str, Any] = {}
    labels: list[str] = []
    input_size = [3, 224, 224]
    if cfg is not None:
        input_size = [int(v) for v in cfg.input_size]
        preprocessing = {
            "crop_pct": float(cfg.crop_pct),
            "interpolation": str(cfg.interpolation),
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
        }
        labels = list(cfg.class_names())
    info: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_version"] = torch.__version__
    fingerprint = getattr(model, "init_fingerprint", None)
    if isinstance(fingerprint, str) and torch is not None:  # a registry model: weights still its seeded init?
        info["pretrained"] = weights_fingerprint(model) != fingerprint
    info.update(extra or {})
    return ArtifactMetadata(
        model=name,
        family=family,
        format=fmt,
        input_size=input_size,
        input_layout="NCHW",
        dynamic_batch=bool(dynamic_batch),
        preprocessing=preprocessing,
        labels=labels,
        precision=precision,
        rewrites=list(rewrites),
        checkpoint_sha256=getattr(model, "checkpoint_sha256", None),
        extra=info,
    )


def weights_fingerprint(model: Any) -> str:
    """A digest of a model's first and last four floating-point tensors (cheap; any load or
    training step changes it). Duck-typed over ``state_dict()``: imports no torch."""
    import hashlib

    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    h = hashlib.sha256()
    for t in tensors[:4] + tensors[-4:]:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _registry_family(name: str) -> str:
    """The registry family of ``name``, or "custom". The core imports nothing above it: registry
    models carry ``staredge_family`` (read first by the caller); this asks the registry only
    when it is loaded already (a registry model was built by it)."""
    import sys

    registry = sys.modules.get("staredge.models.registry")
    if registry is None:
        return "custom"
    try:
        return registry.get_entry(name).family
    except StarEdgeError:
        return "custom"