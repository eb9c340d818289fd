"""Integrity digests: a SHA-256 of an artifact's weight payload, recorded at export, checked at load.

A flipped byte in an artifact's weights used to run and give garbage silently. Now every
export records a digest of the weights in the artifact's own metadata
(``extra["integrity"] = {"scheme": SCHEME, "sha256": ...}``, :func:`seal`) and
:func:`staredge.runtimes.load_backend` checks it before any runtime reads the file
(:func:`verify`); a mismatch is an :class:`~staredge.errors.ArtifactIntegrityError` naming
the file. What "the weight payload" is, per format (each format spec's ``weight_payload``
names the function below that lists it; the metadata itself is never covered, since it lives
inside the artifact and is rewritten after the digest is taken):

- ONNX: every top-level field of the ``ModelProto`` except ``metadata_props`` (field 14): the
  graph with its initializers, opsets, producer; plus every external-data file the graph's
  initializers name (kept inside the model's folder). Read with a byte scan, no ``onnx``.
- TFLite: the data of every flatbuffer buffer a tensor refers to (weights and constants,
  inline or stored after the flatbuffer); the metadata buffers are not tensors' buffers.
- OpenVINO: the whole ``.bin`` beside the ``.xml``.
- CoreML: every file under ``Data/com.apple.CoreML/weights/`` in the package.

Standard library only: no runtime and no converter is imported. Names of files are not
hashed (an artifact renamed to ``.failed.`` or copied elsewhere keeps its digest), only their
role and bytes. Artifacts exported before this change carry no digest and load unchecked.

Opt-out for very large files (the check reads every weight byte once per load; see the cost
in docs/security.md): ``STAREDGE_SKIP_INTEGRITY=1`` or ``load_backend(...,
verify_integrity=False)``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any

from staredge.errors import ArtifactIntegrityError
from staredge.formats import FORMATS as _TABLE, load_object

#: Environment variable that switches the load-time check off (``1``/``true``/``yes``/``on``).
ENV_SKIP = "STAREDGE_SKIP_INTEGRITY"
#: Key in the metadata's ``extra`` under which the digest is recorded.
EXTRA_KEY = "integrity"
#: What the digest covers and how it is computed (bumped if that ever changes).
SCHEME = "staredge-weights-sha256-v1"
#: Formats whose weight payload has a digest (those whose format spec names a
#: ``weight_payload`` walker: the functions below, one per format), at import; the checks
#: below ask the table each time (:func:`has_digest`).
FORMATS = tuple(name for name, spec in _TABLE.items() if spec.weight_payload)


def has_digest(fmt: str) -> bool:
    """Whether artifacts of format ``fmt`` carry a weight digest (its spec names a
    ``weight_payload`` walker)."""
    spec = _TABLE.get(fmt)
    return spec is not None and spec.weight_payload is not None

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20

#: A region of the payload: (role, file, offset, length). The role names what the bytes are
#: (not the file's name, which changes when an artifact is renamed).
Region = tuple[str, Path, int, int]


def skipped_by_environment() -> bool:
    """Whether ``STAREDGE_SKIP_INTEGRITY`` switches the load-time check off."""
    return os.environ.get(ENV_SKIP, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- regions per format


def onnx_regions(path: Path, spec: Any, buffers: dict) -> list[Region]:
    """ONNX: every top-level ``ModelProto`` field but ``metadata_props``, and the external-data
    files its initializers name (the format table's ``weight_payload``)."""
    from staredge.metadata import _varint

    regions: list[Region] = []
    externals: list[str] = []
    # read into memory, not mmap: views into a mapping kept alive by an exception's traceback
    # would make closing it fail (BufferError); a protobuf file is under 2 GB, and external
    # data is hashed from its own files
    buf = memoryview(path.read_bytes())
    buffers[path] = buf  # hashed from memory: the file is not read a second time
    for number, wire, start, vstart, end in _fields(buf, _varint):
        if number == 14:  # metadata_props: the metadata lives here
            continue
        regions.append((f"onnx:{number}", path, start, end - start))
        if number == 7 and wire == 2:  # graph → initializer (5) → external_data (13)
            externals += _onnx_external_locations(buf[vstart:end], _varint)
    folder = path.parent.resolve()
    for location in sorted(set(externals)):
        ext = (folder / location).resolve()
        if not ext.is_relative_to(folder):
            raise ArtifactIntegrityError(f"{path} names external weights {location!r} outside its folder; "
                                         f"re-export the model")
        try:
            size = ext.stat().st_size
        except OSError as exc:
            raise ArtifactIntegrityError(f"{path}: its external weights {ext} cannot be read "
                                         f"({exc.strerror or exc})") from exc
        regions.append((f"onnx-external:{location}", ext, 0, size))
    return regions


def _fields(buf, varint):
    """(number, wire, field start, value start, end) of each top-level protobuf field."""
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = varint(buf, pos)
            vstart = pos
        elif wire == 1:
            vstart, pos = pos, pos + 8
        elif wire == 2:
            length, pos = varint(buf, pos)
            vstart, pos = pos, pos + length
        elif wire == 5:
            vstart, pos = pos, pos + 4
        else:
            raise ArtifactIntegrityError(f"unsupported protobuf wire type {wire} at byte {start}")
        if pos > n:
            raise ArtifactIntegrityError(f"a protobuf field at byte {start} runs past the end of the file")
        yield number, wire, start, vstart, pos


def _onnx_external_locations(graph, varint) -> list[str]:
    found = []
    for number, wire, _, vs, ve in _fields(graph, varint):
        if number != 5 or wire != 2:  # GraphProto.initializer
            continue
        tensor = graph[vs:ve]
        for tn, tw, _, ts, te in _fields(tensor, varint):
            if tn == 13 and tw == 2:  # TensorProto.external_data: StringStringEntryProto
                entry = {n: bytes(tensor[s:e]) for n, w, _, s, e in _fields(tensor[ts:te], varint) if w == 2}
                if entry.get(1) == b"location":
                    found.append(entry.get(2, b"").decode("utf-8", "replace"))
    return found


class _FlatBuffer:
    """A bounds-checked reader of the few flatbuffer tables the TFLite payload needs."""

    def __init__(self, buf, path: Path) -> None:
        self.buf, self.size, self.path = buf, len(buf), path

    def need(self, pos: int, n: int) -> None:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise ArtifactIntegrityError(f"{self.path} is damaged: a flatbuffer offset ({pos}, +{n} bytes) lies "
                                         f"outside the file ({self.size} bytes); re-export it")

    def u32(self, pos: int) -> int:
        self.need(pos, 4)
        return struct.unpack_from("<I", self.buf, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        self.need(table, 4)
        vtable = table - struct.unpack_from("<i", self.buf, table)[0]
        self.need(vtable, 4)
        vt_size = struct.unpack_from("<H", self.buf, vtable)[0]
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        self.need(vtable + slot, 2)
        off = struct.unpack_from("<H", self.buf, vtable + slot)[0]
        return table + off if off else None

    def deref(self, pos: int) -> int:
        target = pos + self.u32(pos)
        self.need(target, 4)
        return target

    def vector(self, table: int, index: int, elem: int = 4) -> tuple[int, int]:
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        n = self.u32(vec)
        self.need(vec + 4, n * elem)
        return vec + 4, n

    def u64(self, pos: int) -> int:
        self.need(pos, 8)
        return struct.unpack_from("<Q", self.buf, pos)[0]


def tflite_regions(path: Path, spec: Any, buffers: dict) -> list[Region]:
    """TFLite: the data of every flatbuffer buffer a tensor refers to (the format table's
    ``weight_payload``)."""
    # TFLite schema: Model.subgraphs = 2, Model.buffers = 4; SubGraph.tensors = 0;
    # Tensor.buffer = 2; Buffer.data = 0, Buffer.offset = 1, Buffer.size = 2.
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        fb = _FlatBuffer(mm, path)
        if fb.size < 8 or mm[4:8] != b"TFL3":
            raise ArtifactIntegrityError(f"{path} is not a TFLite flatbuffer; re-export it")
        model = fb.deref(0)
        used: set[int] = set()
        sg_start, sg_len = fb.vector(model, 2)
        for i in range(sg_len):
            subgraph = fb.deref(sg_start + 4 * i)
            t_start, t_len = fb.vector(subgraph, 0)
            for j in range(t_len):
                tensor = fb.deref(t_start + 4 * j)
                pos = fb.field(tensor, 2)
                if pos is not None:
                    used.add(fb.u32(pos))
        b_start, b_len = fb.vector(model, 4)
        regions: list[Region] = []
        for index in sorted(used):
            if index >= b_len:
                raise ArtifactIntegrityError(f"{path} is damaged: a tensor refers to buffer {index} of {b_len}")
            buffer = fb.deref(b_start + 4 * index)
            d_start, d_len = fb.vector(buffer, 0, elem=1)
            if d_len:
                regions.append((f"buffer:{index}", path, d_start, d_len))
                continue
            off_pos, size_pos = fb.field(buffer, 1), fb.field(buffer, 2)
            if off_pos is not None and size_pos is not None:
                offset, length = fb.u64(off_pos), fb.u64(size_pos)
                if offset > 1 and length:
                    fb.need(offset, length)
                    regions.append((f"buffer:{index}", path, offset, length))
        return regions


def openvino_regions(path: Path, spec: Any, buffers: dict) -> list[Region]:
    """OpenVINO: the whole weights file (the spec's companion) beside the ``.xml``, which may
    be the one IR inside a folder (the format table's ``weight_payload``)."""
    xml = path
    if path.is_dir():
        complete = 1 + len(spec.companions)  # the .xml and its .bin
        xmls = [x for suffix in spec.suffixes for x in sorted(path.glob(f"*{suffix}"))
                if len(spec.artifact_files(x)) == complete]
        if len(xmls) != 1:
            raise ArtifactIntegrityError(f"{path} must hold exactly one OpenVINO .xml with its .bin")
        xml = xmls[0]
    (weights,) = (xml.with_suffix(c) for c in spec.companions)
    try:
        size = weights.stat().st_size
    except FileNotFoundError as exc:  # the same words as the runtime's own check
        raise ArtifactIntegrityError(f"OpenVINO IR {xml} has no weights file {weights.name} beside it; "
                                     "copy the .bin together with the .xml") from exc
    except OSError as exc:
        raise ArtifactIntegrityError(f"{weights}: the OpenVINO weights file cannot be read "
                                     f"({exc.strerror or exc}); copy it beside {xml.name} again") from exc
    return [("openvino:bin", weights, 0, size)]


def coreml_regions(path: Path, spec: Any, buffers: dict) -> list[Region]:
    """CoreML: every file under ``Data/com.apple.CoreML/weights/`` in the package (the format
    table's ``weight_payload``)."""
    folder = path / "Data" / "com.apple.CoreML" / "weights"
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(f"coreml:{p.relative_to(folder).as_posix()}", p, 0, p.stat().st_size) for p in files]


def payload_regions(path: str | os.PathLike, fmt: str, _buffers: dict | None = None) -> list[Region]:
    """The (role, file, offset, length) byte ranges the digest of ``fmt``'s artifact at
    ``path`` covers, in order (see the module docstring). Raises
    :class:`~staredge.errors.ArtifactIntegrityError` for a file whose structure cannot be
    followed, and :class:`~staredge.errors.ConfigError` for a format without a digest."""
    from staredge.errors import ConfigError

    if not has_digest(fmt):
        with_digest = ", ".join(name for name in _TABLE if has_digest(name))
        raise ConfigError(f"{fmt} artifacts have no weight digest (formats with one: {with_digest})")
    spec = _TABLE[fmt]
    try:
        return load_object(spec.weight_payload)(Path(path), spec, {} if _buffers is None else _buffers)
    except (ValueError, OSError, IndexError, struct.error) as exc:
        raise ArtifactIntegrityError(f"{path}: its weights cannot be read to check their digest ({exc}); the file "
                                     f"is damaged or truncated, re-export it") from exc


def payload_digest(path: str | os.PathLike, fmt: str) -> str:
    """Hex SHA-256 of the weight payload of the artifact at ``path`` (:func:`payload_regions`)."""
    h = hashlib.sha256(SCHEME.encode())
    buffers: dict = {}  # files a walker already read whole (ONNX): hashed from memory
    for role, file, offset, length in payload_regions(path, fmt, buffers):
        h.update(f"\0{role}\0{length}\0".encode())
        if file in buffers:
            h.update(buffers[file][offset : offset + length])  # the walker checked the bounds
            continue
        try:
            with open(file, "rb") as fh:
                fh.seek(offset)
                left = length
                while left:
                    chunk = fh.read(min(_CHUNK, left))
                    if not chunk:
                        raise ArtifactIntegrityError(f"{file} is shorter than its own structure says "
                                                     f"(truncated); re-export or copy it again")
                    h.update(chunk)
                    left -= len(chunk)
        except OSError as exc:
            raise ArtifactIntegrityError(f"{file} cannot be read to check its weights ({exc.strerror or exc})") from exc
    return h.hexdigest()


# --------------------------------------------------------------------------- export and load hooks


def seal(path: str | os.PathLike, fmt: str) -> str:
    """Record the weight digest of the freshly written artifact at ``path`` in its embedded
    metadata (re-read from the file, rewritten through the format's metadata writer); returns
    the digest. Called once per artifact by the export, after the artifact is written and
    before it is validated and moved into place."""
    from staredge.metadata import read_metadata, write_metadata

    if not has_digest(fmt):
        return ""
    digest = payload_digest(path, fmt)
    meta = read_metadata(path, fmt)
    meta.extra[EXTRA_KEY] = {"scheme": SCHEME, "sha256": digest}
    write_metadata(path, meta, fmt)
    return digest


def recorded_digest(metadata: Any) -> str | None:
    """The digest recorded in ``metadata`` (an :class:`~staredge.metadata.ArtifactMetadata`),
    or None when it has none (an export from before digests existed). A malformed record is
    a :class:`~staredge.metadata.MetadataError` naming ``extra.integrity``."""
    from staredge.metadata import MetadataError

    extra = getattr(metadata, "extra", None)
    record = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
    if record is None:
        return None
    if (not isinstance(record, dict) or record.get("scheme") != SCHEME or not isinstance(record.get("sha256"), str)
            or not _HEX64.fullmatch(record["sha256"])):
        raise MetadataError(f"the metadata field 'extra.{EXTRA_KEY}' must be {{'scheme': '{SCHEME}', 'sha256': "
                            f"<64 hex digits>}}, got {str(record)[:200]}; re-export the artifact")
    return record["sha256"]


def verify(path: Any, fmt: str | None = None, metadata: Any = None, *, enabled: bool = True) -> str | None:
    """Check the weights of the artifact at ``path`` against the digest recorded at export.

    Returns the digest when it was checked, None when nothing was checked: ``enabled`` is
    False (``verify_integrity=False``), ``STAREDGE_SKIP_INTEGRITY`` is set, ``path`` is not a
    file path (a PyTorch module), the format has no digest, or the artifact carries none (an
    older export; its metadata, else ``metadata``, is consulted). Unreadable metadata is left
    for the runtime's loader to report. Raises :class:`~staredge.errors.ArtifactIntegrityError`
    naming the file when the weights differ.
    """
    from staredge.errors import StarEdgeError

    if not enabled or skipped_by_environment() or not isinstance(path, (str, os.PathLike)):
        return None
    p = Path(path)
    try:
        if fmt is None:
            from staredge.formats import detect_format

            fmt = detect_format(p).name
        if not has_digest(fmt):
            return None
        from staredge.metadata import read_metadata

        embedded = read_metadata(p, fmt)
    except StarEdgeError:
        embedded = None  # no readable metadata: the loader reports what is wrong with the file
    want = recorded_digest(embedded if embedded is not None else metadata)
    if want is None or not has_digest(fmt):
        return None
    have = payload_digest(p, fmt)
    if have != want:
        files = sorted({str(f) for _, f, _, _ in payload_regions(p, fmt)}) or [str(p)]
        raise ArtifactIntegrityError(
            f"{', '.join(files)}: the weights do not match the digest recorded at export (sha256 {want[:16]}..., "
            f"the file has {have[:16]}...): the artifact was damaged or changed after export and would compute "
            f"wrong results. Copy or export it again (to skip this check for a file you trust: "
            f"{ENV_SKIP}=1 or verify_integrity=False)")
    return have


__all__ = ["ENV_SKIP", "EXTRA_KEY", "FORMATS", "SCHEME", "coreml_regions", "has_digest", "onnx_regions", "openvino_regions",
           "payload_digest", "payload_regions", "recorded_digest", "seal", "skipped_by_environment",
           "tflite_regions", "verify"]
