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
