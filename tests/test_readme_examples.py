"""README examples run as written: every fenced ``python`` or ``bash`` block preceded by an
``<!-- runnable ... -->`` comment is extracted and run, in a folder that holds small
stand-ins for the files a block names (a release checkpoint, a fine-tuned checkpoint, a
labels file) and with a cache that already holds the released weights (offline: never the
internet)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- runnable[^>]*-->\s*\n```(python|bash)\n(.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[int, str, str]]:
    """(line number, language, code) of every block marked runnable."""
    text = README.read_text("utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def test_the_readme_has_runnable_blocks():
    langs = [lang for _, lang, _ in runnable_blocks()]
    assert langs.count("python") >= 2 and "bash" in langs


def make_standins(work: Path) -> Path:
    """Stand-ins in ``work``: starnet_s1.pth.tar (release layout), ft.safetensors (10 classes),
    labels.txt, and the release file already in ``work/cache`` (so pretrained=True works offline)."""
    import torch
    from safetensors.torch import save_file

    from staredge.models import create, get_entry
    from staredge.models.hub import cached_path

    cache = work / "cache"
    s1 = create("starnet_s1")
    release = {"state_dict": s1.state_dict(), "args": argparse.Namespace(model="starnet_s1")}
    torch.save(release, work / "starnet_s1.pth.tar")
    old = os.environ.get("STAREDGE_CACHE")
    os.environ["STAREDGE_CACHE"] = str(cache)
    try:
        target = cached_path("starnet_s1", get_entry("starnet_s1").weights)
    finally:
        if old is None:
            os.environ.pop("STAREDGE_CACHE")
        else:
            os.environ["STAREDGE_CACHE"] = old
    target.parent.mkdir(parents=True)
    target.write_bytes((work / "starnet_s1.pth.tar").read_bytes())
    ft = create("starnet_s1", num_classes=10)
    save_file({k: v.contiguous() for k, v in ft.state_dict().items()}, str(work / "ft.safetensors"))
    (work / "labels.txt").write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    return work


# The blocks themselves run in tests/test_docs_examples.py (every README and docs block, in order,
# one scratch folder per file, with these stand-ins).


def test_readme_says_what_the_shipped_language_model_is():
    """Issue 22: the README says plainly that star_lm_pydoc is a ~1.3 M-parameter smoke-test
    model whose greedy text loops, and both halves are true of the shipped model."""
    pytest.importorskip("torch")
    from staredge.generation import load_lm

    text = " ".join(README.read_text("utf-8").split())
    said = re.search(r"`star_lm_pydoc` has about ([\d.]+) M parameters \(without embeddings\)", text)
    assert said and "smoke-test model" in text and "its greedy text loops" in text
    lm = load_lm("star_lm_pydoc")
    assert float(said.group(1)) == round((lm.num_parameters - lm.model.embed.weight.numel()) / 1e6, 1)
    greedy = lm.generate("The ", max_new_tokens=200, temperature=0)
    assert max(greedy.count(greedy[i:i + 24]) for i in range(len(greedy) - 24)) >= 3, greedy  # it loops
