"""Seed inputs and a deterministic byte mutator for the hardening fuzz tests and scripts/fuzz.py.

Every seed is built here from code (no binary files checked in besides tests/fuzz_corpus/),
and every mutation is a pure function of ``(seed bytes, random.Random)``, so a failing case
is reproduced from its case number alone.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

#: Integers that tend to break length and offset fields.
INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFF)


# ----------------------------------------------------------------------------- images


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def image_seeds() -> list[bytes]:
    """Small valid images in every format Pillow decodes here, plus PNGs with the chunks
    the issue's reproducers damage (cHRM, gAMA, pHYs, tRNS, zTXt, iCCP, APNG acTL/fcTL)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    seeds = [
        _save(rgb, "PNG"),
        _save(rgb.convert("L"), "PNG"),
        _save(rgb.convert("P"), "PNG", transparency=0),
        _save(rgb.convert("RGBA"), "PNG"),
        _save(Image.fromarray((rng.integers(0, 65535, (6, 5))).astype(np.uint16)), "PNG"),
        _save(rgb, "JPEG", quality=80),
        _save(rgb, "JPEG", quality=80, progressive=True),
        _save(rgb, "GIF"),
        _save(rgb, "BMP"),
        _save(rgb, "TIFF"),
        _save(rgb, "TIFF", compression="tiff_deflate"),
        _save(rgb, "WEBP", quality=80),
        _save(rgb, "PPM"),
        _save(rgb, "ICO"),
        _save(rgb, "TGA"),
        _save(rgb.convert("CMYK"), "JPEG"),
    ]
    # JPEG with an EXIF orientation tag
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds.append(_save(rgb, "JPEG", exif=exif.tobytes()))
    # APNG with two frames (acTL / fcTL / fdAT chunks)
    seeds.append(_save(rgb, "PNG", save_all=True, append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]))
    # PNG with ancillary chunks inserted after IHDR
    base = _save(rgb, "PNG")
    extra = (png_chunk(b"cHRM", struct.pack(">8I", *range(8)))
             + png_chunk(b"gAMA", struct.pack(">I", 45455))
             + png_chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1))
             + png_chunk(b"tEXt", b"Comment\x00hello")
             + png_chunk(b"zTXt", b"Title\x00\x00" + zlib.compress(b"x" * 200))
             + png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 128)))
    seeds.append(base[:33] + extra + base[33:])
    return checked_seeds(seeds)


def checked_seeds(seeds: list[bytes]) -> list[bytes]:
    """Seeds must be distinct and non-empty (a broken builder would fuzz nothing)."""
    assert all(seeds) and len(set(seeds)) == len(seeds)
    return seeds


def ztxt_bomb_png(inflated: int = 50_000_000) -> bytes:
    """A valid 8x8 PNG with a zTXt chunk that inflates to ``inflated`` bytes."""
    from PIL import Image

    base = _save(Image.new("RGB", (8, 8)), "PNG")
    return base[:33] + png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * inflated, 9)) + base[33:]


def strip_png(width: int, height: int) -> bytes:
    """A valid black PNG of the given size (cheap to build even for 100000 x 1)."""
    from PIL import Image

    return _save(Image.new("L", (width, height)), "PNG")


# ----------------------------------------------------------------------------- mutation


def mutate(data: bytes, rng: random.Random, max_ops: int = 8, pool: list[bytes] | None = None) -> bytes:
    """1..``max_ops`` random edits of ``data``: bit flips, byte sets, interesting integers in
    length/offset fields, inserted/deleted/duplicated runs, truncation, splices from ``pool``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(9)
        n = len(buf)
        if n == 0:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            continue
        i = rng.randrange(n)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.randrange(256)
        elif op == 2:
            v = rng.choice(INTERESTING_INTS)
            width, endian = rng.choice(((1, "<"), (2, "<"), (2, ">"), (4, "<"), (4, ">")))
            fmt = {1: "B", 2: "H", 4: "I"}[width]
            packed = struct.pack(endian + fmt, v & ((1 << (8 * width)) - 1))
            buf[i:i + width] = packed
        elif op == 3:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 4:
            del buf[i:i + rng.randint(1, 64)]
        elif op == 5:
            j = rng.randrange(n)
            buf[i:i] = buf[j:j + rng.randint(1, 64)]
        elif op == 6:
            del buf[rng.randint(0, n):]
        elif op == 7 and pool:
            other = rng.choice(pool)
            j = rng.randrange(len(other))
            buf[i:i + rng.randint(1, 64)] = other[j:j + rng.randint(1, 64)]
        else:
            buf[i:i + 4] = bytes(rng.choice((0x00, 0xFF)) for _ in range(4))
    return bytes(buf)


# ----------------------------------------------------------------------------- genomes

_GENOME_CHARS = "0123456789" * 4 + ".-_|, \t\n" + "a+x\x00é٣"  # ٣ is an Arabic-Indic digit


def random_genome_input(rng: random.Random):
    """A random genome argument: text, nested lists of mixed types, or odd objects."""
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice(_GENOME_CHARS) for _ in range(rng.randint(0, 40)))
    if kind == 1:
        n = rng.randint(1, 8)
        return "-".join("".join(rng.choice("0123456789") for _ in range(rng.choice((1, 2, 5, 6))))
                        for _ in range(n))
    if kind == 2:
        return [_random_value(rng) for _ in range(rng.randint(0, 6))]
    if kind == 3:
        return [[_random_value(rng) for _ in range(rng.choice((1, 5, 6, 0, 3)))] for _ in range(rng.randint(1, 6))]
    if kind == 4:
        return rng.choice([None, b"11111", 11111, 1.5, {"a": 1}, object(), "1" * 5000, "9" * 4301 + "-91111"])
    return [rng.choice(["11111", "91111", "12121", b"11111", "1.2.1.1.1", "10.1.1.1.1"]) for _ in range(rng.randint(1, 4))]


def _random_value(rng: random.Random):
    return rng.choice([rng.randint(-3, 20), rng.randint(-(10**6), 10**6), 10**30, -1, 0, 1.0, 1.9, float("inf"),
                       float("nan"), True, None, "1", b"1", [1], "x", 10**5000 if rng.random() < 0.01 else 3])


def random_depth(rng: random.Random):
    """A random ``depth`` argument, mostly small, sometimes hostile."""
    return rng.choice([None, None, rng.randint(-2, 40), 0, 100000, 10**9, 2**63, 4.0, "4", True, float("inf"), [4]])


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_seeds() -> list[bytes]:
    """A small state_dict saved three ways: zip .pth, legacy .pth and safetensors; plus a
    nested training checkpoint with an argparse.Namespace (the official layout)."""
    import argparse

    import torch
    from safetensors.torch import save

    sd = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.zeros(2),
          "b": torch.ones(3, dtype=torch.float16)}
    out = []
    for zipped in (True, False):
        buf = io.BytesIO()
        torch.save(sd, buf, _use_new_zipfile_serialization=zipped)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1), "epoch": 3}, buf)
    out.append(buf.getvalue())
    out.append(save({k: v.contiguous() for k, v in sd.items()}, metadata={"format": "pt"}))
    return checked_seeds(out)


# ----------------------------------------------------------------------------- artifacts


def sample_metadata_json(fmt: str) -> str:
    """A realistic metadata document (labels with non-ASCII names, preprocessing)."""
    from staredge.metadata import ArtifactMetadata

    return ArtifactMetadata(
        model="tinynet", family="custom", format=fmt, input_size=[3, 32, 32],
        preprocessing={"crop_pct": 0.875, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        labels=["cat", "dog", "über"], checkpoint_sha256="ab" * 32,
    ).to_json()


def _pb_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def artifact_seeds(tmp) -> list[tuple[str, bytes]]:
    """(suffix, bytes) of small artifacts whose metadata slot :func:`read_metadata` parses:
    an ONNX model proto, a TFLite flatbuffer, an OpenVINO .xml, a safetensors file and a
    CoreML model spec (``.mlmodel``: written into a package by the fuzz target). Built
    directly (no converter runs), so they cost milliseconds."""
    import onnx
    from onnx import TensorProto, helper

    out: list[tuple[str, bytes]] = []
    # ONNX: a one-node graph with the metadata entry
    node = helper.make_node("Relu", ["input"], ["logits"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"staredge": sample_metadata_json("onnx")})
    out.append((".onnx", model.SerializeToString()))
    # TFLite: an empty model with the metadata entry (the exporter's own writer)
    import flatbuffers

    from staredge.exporters.tflite import _schema, add_metadata

    schema = _schema()
    m = schema.ModelT()
    m.version, m.buffers, m.subgraphs, m.description = 3, [schema.BufferT()], [schema.SubGraphT()], "fuzz"
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out.append((".tflite", add_metadata(bytes(b.Output()), "staredge", sample_metadata_json("tflite").encode())))
    # OpenVINO IR .xml (the reader never opens the .bin)
    from xml.sax.saxutils import quoteattr

    xml = (f'<?xml version="1.0"?>\n<net name="tiny" version="11"><layers/><edges/>'
           f'<rt_info><staredge value={quoteattr(sample_metadata_json("openvino"))}/></rt_info></net>\n')
    out.append((".xml", xml.encode()))
    # safetensors with the metadata in its header
    import torch
    from safetensors.torch import save

    out.append((".safetensors", save({"w": torch.zeros(2)}, metadata={"staredge": sample_metadata_json("pytorch")})))
    # CoreML model spec: description (2) -> metadata (100) -> userDefined (100) {key 1, value 2}
    entry = _pb_field(1, b"staredge") + _pb_field(2, sample_metadata_json("coreml").encode())
    spec = _pb_field(1, b"\x08\x07") + _pb_field(2, _pb_field(100, _pb_field(100, entry)))
    out.append((".mlmodel", spec))
    assert onnx is not None
    return out


def write_coreml_package(folder, spec: bytes):
    """A minimal ``.mlpackage`` folder around ``spec`` (Manifest.json + Data/.../model.mlmodel)."""
    import json
    from pathlib import Path

    pkg = Path(folder)
    (pkg / "Data" / "com.apple.CoreML").mkdir(parents=True, exist_ok=True)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec)
    manifest = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": "A",
                "itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel", "name": "model.mlmodel"}}}
    (pkg / "Manifest.json").write_text(json.dumps(manifest))
    return pkg


# ----------------------------------------------------------------------------- language-model metadata and feeds

#: Values that break fields of a JSON document: wrong types, signs, sizes and special floats.
HOSTILE_VALUES = (None, -1, 0, 1, 2, 7, 2**31, 2**63, 10**6, 10**12, 1.5, -0.0, float("inf"), float("nan"), "",
                  "abc", "1", [], {}, True, False, [1, 2], [-1], [0, 0], [2**40, 2**40], "float16", "int8", "int64",
                  "bfloat16", {"a": 1}, "past_nothing", "x" * 300)


def _pick_path(doc, rng: random.Random):
    """A random (container, key) inside a nested dict/list document (None when empty)."""
    node, key = None, None
    here = doc
    for _ in range(rng.randint(1, 4)):
        if isinstance(here, dict) and here:
            k = rng.choice(sorted(here, key=str))
        elif isinstance(here, list) and here:
            k = rng.randrange(len(here))
        else:
            break
        node, key = here, k
        here = here[k]
        if rng.random() < 0.35:
            break
    return node, key


def mutate_lm(lm: dict, rng: random.Random, max_ops: int = 4) -> dict:
    """A copy of an artifact's ``lm`` section with 1..``max_ops`` hostile edits: a key
    deleted or set to a hostile value, a state entry dropped, duplicated or reordered, two
    names swapped, a shape scaled or made negative, or the whole section replaced."""
    import copy

    doc = copy.deepcopy(lm)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(8)
        state = doc.get("state") if isinstance(doc, dict) else None
        if op == 0:
            node, key = _pick_path(doc, rng)
            if node is not None:
                del node[key]
        elif op in (1, 2):
            node, key = _pick_path(doc, rng)
            if node is not None:
                node[key] = rng.choice(HOSTILE_VALUES)
        elif op == 3 and isinstance(state, list) and state:
            i = rng.randrange(len(state))
            rng.choice((lambda: state.pop(i), lambda: state.append(copy.deepcopy(state[i])),
                        lambda: rng.shuffle(state)))()
        elif op == 4 and isinstance(state, list) and len(state) > 1:
            a, b = rng.sample(range(len(state)), 2)
            if isinstance(state[a], dict) and isinstance(state[b], dict):
                field = rng.choice(("name", "input", "output", "shape", "dtype"))
                state[a][field], state[b][field] = state[b].get(field), state[a].get(field)
        elif op == 5 and isinstance(state, list) and state and isinstance(state[0], dict):
            entry = rng.choice(state)
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if isinstance(shape, list) and shape:
                j = rng.randrange(len(shape))
                v = shape[j] if isinstance(shape[j], int) else 1
                shape[j] = rng.choice((v * 2, v + 1, v - 1, -v, 0, v * 1000, 2**31))
        elif op == 6 and isinstance(doc, dict):
            key = rng.choice(("max_context", "prefill_chunk", "vocab_size", "bos_id", "eos_id", "pad_id",
                              "state_bytes", "dim", "depth"))
            doc[key] = rng.choice(HOSTILE_VALUES)
        elif op == 7:
            doc = rng.choice(({}, [], "lm", None, {"state": []}, {"max_context": 8}))
    return doc


def random_feed(rng: random.Random, vocab: int = 256):
    """(ids, all_rows) for ``DecodeSession.feed``: valid ids mostly, then every wrong shape,
    dtype and range a caller could pass."""
    import numpy as np

    n = rng.choice((0, 1, 1, 2, 3, 5, 16, 17, 40))
    good = [rng.randrange(vocab) for _ in range(n)]
    kind = rng.randrange(12)
    ids: object = good
    if kind == 1:
        ids = [rng.choice((-1, vocab, vocab + 1, 2**31, 2**63, -(2**63))) for _ in range(max(n, 1))]
    elif kind == 2:
        ids = np.asarray(good, dtype=np.int64).astype(rng.choice(("float32", "float16", "uint64", "int8", "bool", "complex64")))
    elif kind == 3:
        ids = np.asarray(good, dtype=np.int64).reshape(1, -1) if n else np.zeros((1, 0), np.int64)
    elif kind == 4:
        ids = np.zeros(rng.choice(((2, 2), (1, 1, 1), (0,), ())), dtype=np.int64)
    elif kind == 5:
        ids = [float(x) + rng.choice((0.0, 0.5)) for x in good]
    elif kind == 6:
        ids = rng.choice(("hello", b"hello", None, 3, 3.5, {1: 2}, {1, 2}, [[1, 2]], [None], ["1"]))
    elif kind == 7:
        ids = iter(good)
    elif kind == 8:
        ids = [True, False] * max(1, n // 2)
    return ids, rng.choice((False, False, True, 1, "yes", None))


def random_stream_args(rng: random.Random) -> dict:
    """Keyword arguments for :func:`staredge.decoding.stream` with hostile values mixed in."""
    args = {"prompt": rng.choice(("hi", "", b"\xff\xfe", [1, 2, 3], "x" * 100, None, 5, [300], [-1])),
            "max_new_tokens": rng.choice((1, 2, 4, 0, -1, "lots", "abc", 2.5, 10**12, None, True)),
            "temperature": rng.choice((0.0, 0.8, -1.0, float("nan"), "hot")),
            "seed": rng.choice((0, 1, None, -1, 2**64, "abc")),
            "stop": rng.choice((None, "\n", 3, {}, [b"x"], [None], ["", "a"], 10**9))}
    if rng.random() < 0.3:
        args["truncate"] = rng.choice(("left", "right", None, 1))
    return args


# ----------------------------------------------------------------------------- HTTP responses

_STATUS = (b"200 OK", b"200 OK", b"200 OK", b"206 Partial Content", b"404 Not Found", b"500 Oops",
           b"301 Moved", b"302 Found", b"999 What", b"abc", b"", b"200")


def random_http_response(rng: random.Random, body: bytes) -> tuple[bytes, float]:
    """(raw HTTP/1.1 response bytes, seconds to trickle it over) built from a real file's
    ``body``: odd status lines, Content-Length right, short, long, negative, huge or garbage,
    chunked encodings (valid and broken), gzip claims, redirects (to the same server, or to
    ``file:``), stray header bytes, a mutated or cut body. Only ever served on 127.0.0.1."""
    status = rng.choice(_STATUS)
    data = body
    op = rng.randrange(6)
    if op == 1:
        data = mutate(body, rng)
    elif op == 2:
        data = body[: rng.randrange(len(body))]
    elif op == 3:
        data = body + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    headers: list[bytes] = []
    length = rng.choice(("right", "right", "none", "short", "long", "neg", "huge", "junk", "twice"))
    if length == "right":
        headers.append(b"Content-Length: %d" % len(data))
    elif length == "short":
        headers.append(b"Content-Length: %d" % max(0, len(data) - rng.randint(1, 5000)))
    elif length == "long":
        headers.append(b"Content-Length: %d" % (len(data) + rng.randint(1, 5000)))
    elif length == "neg":
        headers.append(b"Content-Length: -5")
    elif length == "huge":
        headers.append(b"Content-Length: " + rng.choice((b"99999999999999999999999", b"18446744073709551616")))
    elif length == "junk":
        headers.append(b"Content-Length: " + rng.choice((b"12abc", b"", b"0x10", b" 5 ", b"\xff\xfe")))
    elif length == "twice":
        headers += [b"Content-Length: %d" % len(data), b"Content-Length: %d" % (len(data) // 2)]
    if rng.random() < 0.15:
        headers.append(b"Transfer-Encoding: chunked")
        if rng.random() < 0.5:
            data = b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
        else:
            data = rng.choice((b"zz\r\nabc\r\n", b"ffffffffffffffff\r\n", b"5\r\nab", b"-1\r\n"))
    if rng.random() < 0.1:
        headers.append(b"Content-Encoding: gzip")
    if status[:1] == b"3":
        headers.append(b"Location: " + rng.choice((b"/again", b"file:///etc/hostname", b"", b"//", b"/\xff")))
    if rng.random() < 0.1:
        headers.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    if rng.random() < 0.05:
        headers.append(b"X-Long: " + b"a" * 70000)
    head = b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Connection: close\r\n\r\n"
    if rng.random() < 0.05:
        head = head[: rng.randrange(len(head))]  # the connection ends inside the headers
        data = b""
    return head + data, rng.choice((0.0, 0.0, 0.0, 0.3, 1.5))
