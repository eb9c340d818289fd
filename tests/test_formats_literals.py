"""Format names and artifact suffixes are spelled in the format table only (issue 19).

Counts the string literals equal to a format name (``"onnx"``, ``"pytorch"``...) or an
artifact suffix (``".onnx"``, ``".xml"``...) in the package, outside ``staredge/formats.py``,
each format's own modules (``exporters/<format>[_lm].py``, ``runtimes/<runtime>[_lm].py``, the
MIL executor) and the per-format readers, detectors and writers the table names. Docstrings do
not count. Files that still hold some are listed in ``REMAINING`` with their count: the number
may only go down (each is for that file's owner to remove); any other file must have none.
"""

from __future__ import annotations

import ast
from pathlib import Path

from staredge.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("staredge", "exporters", "runtimes", "models")

#: Files outside the table that still spell format names, and how many times (issue 19
#: notes; owners remove them). A file not listed here must have none.
REMAINING: dict[str, int] = {}


def _names() -> set[str]:
    return set(FORMATS) | {s for spec in FORMATS.values() for s in spec.suffixes}


def _own_modules() -> set[str]:
    own = {"staredge/formats.py"}
    for name, spec in FORMATS.items():
        for folder in ("exporters", "runtimes"):
            for stem in (name, f"{name}_lm", spec.runtime, f"{spec.runtime}_lm"):
                own.add(f"{folder}/{stem}.py")
    return own


def _table_functions() -> dict[str, set[str]]:
    """module path → names of the per-format functions the table points at (readers, ...)."""
    out: dict[str, set[str]] = {}
    for spec in FORMATS.values():
        for ref in (spec.metadata_reader, spec.metadata_writer, spec.detector):
            if ref and ref.startswith("staredge."):
                module, _, attr = ref.partition(":")
                parts = module.split(".")[1:]
                path = ("staredge/" if parts[0] not in ("exporters", "runtimes", "models") else "") + "/".join(parts) + ".py"
                out.setdefault(path, set()).add(attr)
    return out


def literal_hits() -> dict[str, list[tuple[int, str]]]:
    """file → (line, literal) of every format-name literal outside the table and the formats' own code."""
    names, own, table_functions = _names(), _own_modules(), _table_functions()
    hits: dict[str, list[tuple[int, str]]] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in own or "/mil_reference/" in rel:
                continue
            tree = ast.parse(path.read_text("utf-8"))
            skip: set[int] = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    body = node.body
                    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                        skip.add(id(body[0].value))  # a docstring
                    if isinstance(node, ast.FunctionDef) and node.name in table_functions.get(rel, ()):
                        skip |= {id(n) for n in ast.walk(node)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                        and node.value.lower() in names):
                    hits.setdefault(rel, []).append((node.lineno, node.value))
    return hits


def test_format_names_are_spelled_in_the_table_only():
    hits = literal_hits()
    new = {f: sorted(v) for f, v in hits.items() if len(v) > REMAINING.get(f, 0)}
    assert new == {}, f"format names spelled outside staredge/formats.py: {new}"


def test_the_export_layer_spells_no_format_name():
    """The files of the one export function and its CLI hold none at all."""
    hits = literal_hits()
    mine = ("exporters/api.py", "exporters/lm_export.py", "exporters/lm_source.py", "exporters/scratch.py",
            "exporters/validate.py",
            "exporters/__init__.py", "staredge/commands/export.py", "staredge/commands/export_lm.py",
            "staredge/bench/specs.py", "staredge/bench/generate.py", "staredge/metadata.py")
    assert {f: hits[f] for f in mine if f in hits} == {}
