"""Every fenced block in README.md and docs/*.md runs as written, or says why it cannot here.

The line right before each fence is a marker:

- ``<!-- runnable -->`` (or ``<!-- runnable: note -->``): the suite runs it. The runnable blocks
  of one file run in order, as a reader would, in one scratch folder that holds ``docs/``
  (so ``docs/img/seven.png`` is there) and small stand-ins for the files the examples name
  (``starnet_s1.pth.tar``, ``ft.safetensors``, ``labels.txt``) and a cache that already
  holds the released StarNet-S1 weights (offline: never the internet).
- ``<!-- not-run: REASON ... -->``: REASON is one of :data:`NOT_RUN` (a GPU, a Mac, the
  network, an install, longer than the suite's budget, or output shown, not commands).

Blocks tagged as data (:data:`DATA_LANGS`) need no marker. A block with no marker fails
``test_every_block_is_marked``: new README or docs sections must mark theirs.

A line ``<!-- docs-test: new-folder -->`` starts a new group: the blocks after it run in a
fresh folder, as a separate test (so that independent sections run in parallel under
``-n 2``). Use it only where the following blocks need nothing the earlier ones made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Why a block may be left out of the run (the first word after ``not-run:``).
NOT_RUN = {
    "gpu": "needs an NVIDIA GPU",
    "macos": "needs a Mac / Xcode / an Apple device",
    "network": "downloads from the internet",
    "install": "creates environments or installs packages",
    "long": "takes longer than the suite's budget (benchmarks, training, every-format exports)",
    "output": "shows output, not commands",
    "placeholder": "names files the reader supplies (path/to/..., MODEL_OR_PATH)",
    "tested": "the same code runs in the test the marker names (tests/x.py::test_y, checked to exist)",
}
#: Fence languages that hold data or output, never commands.
DATA_LANGS = {"text", "json", "csv", "console-output", "output"}
RUNNABLE_LANGS = {"python", "bash"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(runnable|not-run)\s*(?::\s*(.*?))?\s*-->\s*$")
NEW_FOLDER = "<!-- docs-test: new-folder -->"


def blocks(path: Path) -> list[dict]:
    """Every fenced block of ``path``: line, language, code and the marker before it."""
    lines = path.read_text("utf-8").split("\n")
    out, i, group = [], 0, 1
    while i < len(lines):
        if lines[i].strip() == NEW_FOLDER:
            group += 1
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        out.append({"file": path.name, "group": group, "line": i + 1, "lang": m.group(1),
                    "code": "\n".join(lines[i + 1:j]),
                    "kind": marker.group(1) if marker else None, "note": (marker.group(2) or "") if marker else ""})
        i = j + 1
    return out


ALL = [b for f in DOC_FILES for b in blocks(f)]


def test_every_block_is_marked():
    problems = []
    for b in ALL:
        where = f"{b['file']}:{b['line']} ({b['lang'] or 'no language'})"
        if b["kind"] is None and b["lang"] not in DATA_LANGS:
            problems.append(f"{where}: no marker; put <!-- runnable --> or <!-- not-run: "
                            f"{'|'.join(NOT_RUN)} --> on the line before the fence (or tag data as text)")
        elif b["kind"] == "not-run" and (b["note"].split() or [""])[0].rstrip(".,;:") not in NOT_RUN:
            problems.append(f"{where}: not-run needs a reason among {', '.join(NOT_RUN)}, got {b['note']!r}")
        elif b["kind"] == "runnable" and b["lang"] not in RUNNABLE_LANGS:
            problems.append(f"{where}: runnable blocks are python or bash")
        elif b["kind"] == "not-run" and b["note"].split()[0] == "tested":
            ref = (b["note"].split() + [""])[1]
            test_file, _, test_name = ref.partition("::")
            target = ROOT / test_file
            if not (target.is_file() and test_name and f"def {test_name}(" in target.read_text("utf-8")):
                problems.append(f"{where}: 'tested' must name an existing test as tests/x.py::test_y, got {ref!r}")
    assert not problems, "\n".join(problems)


def test_the_docs_have_runnable_blocks():
    readme = [b for b in ALL if b["file"] == "README.md" and b["kind"] == "runnable"]
    assert {b["lang"] for b in readme} == {"python", "bash"} and len(readme) >= 8


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """Stand-ins every file's folder gets (see the module docstring)."""
    from tests.test_readme_examples import make_standins

    return make_standins(tmp_path_factory.mktemp("docs-standins"))


def _run_group(name: str, group: int, standins: Path, tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "work"
    shutil.copytree(standins, work, symlinks=True)
    (work / "docs").symlink_to(ROOT / "docs")
    if (ROOT / ".venv").is_dir():  # blocks may call .venv/bin/python as a reader in the checkout would
        (work / ".venv").symlink_to(ROOT / ".venv")
    env = {**os.environ, "STAREDGE_CACHE": str(work / "cache"), "STAREDGE_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for b in (b for b in ALL if b["file"] == name and b["group"] == group and b["kind"] == "runnable"):
        code = b["code"]
        cmd = [sys.executable, "-c", code] if b["lang"] == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"{name} line {b['line']} ({b['lang']}) failed:\n{proc.stdout[-2000:]}\n"
                                      f"{proc.stderr[-4000:]}")
        if b["lang"] == "python":  # a bash block may only write files; a Python example shows something
            assert proc.stdout.strip(), f"{name} line {b['line']} printed nothing"


RUN_GROUPS = sorted({(b["file"], b["group"]) for b in ALL if b["kind"] == "runnable"})


@pytest.mark.slow  # each block starts a Python with torch; exports take seconds each
@pytest.mark.parametrize("name,group", RUN_GROUPS, ids=[f"{f}#{g}" for f, g in RUN_GROUPS])
def test_doc_blocks_run_as_written(name, group, standins, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    _run_group(name, group, standins, tmp_path)


def test_readme_model_table_is_what_staredge_models_prints():
    """The README's model table is `staredge models --markdown` (it went stale once: no starnet_digits)."""
    pytest.importorskip("torch")
    from staredge.commands.models import markdown_table, model_rows

    text = (ROOT / "README.md").read_text("utf-8")
    start = text.index("<!-- model-table -->\n") + len("<!-- model-table -->\n")
    table = text[start:text.index("<!-- /model-table -->")].strip()
    assert table == markdown_table(model_rows()).strip()
