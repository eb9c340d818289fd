"""Issue 19: the package's import layers, checked on every import in the source.

Layers, lowest first (a module may import its own layer and the layers below):

0. **core**: errors, the format table, metadata readers and writers, fileio, paths,
   preprocess, labels, quiet, limits, threads, tokenizer and chat templates, sampler, the decode loop
   (``staredge.decoding``), ``staredge/__init__`` (its public names are lazy strings);
1. **models** (``models/``, ``staredge.models``);
2. **exporters** and **runtimes** (``exporters/``, ``runtimes/``): exporters may use
   runtimes (validation runs artifacts), runtimes never import exporters;
3. **front**: Predictor, ``staredge.generation`` (the user-facing façade), the CLI
   (``staredge/commands``, ``cli``), bench, tune, profiler.

Every ``import`` / ``from ... import`` is read with ``ast``, function-level ones included
(lazy imports hide cycles, they do not remove them). The test fails on an upward import or
on an import cycle between modules. Dynamic dispatch through the format table's
``"module:Class"`` strings (``staredge.formats.load_object``) is the documented way a lower
layer reaches a higher one and is not an import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder → package it installs as (pyproject's package-dir)
PACKAGES = {"staredge": "staredge", "models": "staredge.models", "exporters": "staredge.exporters",
            "runtimes": "staredge.runtimes"}
CORE = {"errors", "formats", "metadata", "fileio", "paths", "preprocess", "labels", "quiet", "limits", "threads",
        "tokenizer", "chat", "sampling", "decoding", "_version", "__init__", "integrity", "data"}
RANK = {"core": 0, "models": 1, "exporters": 2, "runtimes": 2, "front": 3}

#: Violations accepted for now, as (importer, imported) pairs with their owner in a comment:
#: none (the ones issue 19 found, and those that appeared while it was fixed, are gone).
KNOWN: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    """Dotted module name → source file, for every module of the package."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "staredge" and rel.parts[0] in ("models", "exporters", "runtimes"):
                continue
            out[".".join([package, *parts])] = path
    return out


def layer(module: str) -> str:
    """The layer of a dotted module name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("models", "exporters", "runtimes"):
        return parts[1]
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    return "front"


def imports(mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import of a package module."""
    edges = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                while target and target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    edges.append((name, target, node.lineno))
    return edges


def upward(edges) -> list[tuple[str, str, int]]:
    bad = []
    for src, dst, line in edges:
        a, b = layer(src), layer(dst)
        if RANK[b] > RANK[a] or (a == "runtimes" and b == "exporters"):
            bad.append((src, dst, line))
    return bad


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges:
        graph.setdefault(src, set()).add(dst)
        graph.setdefault(dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _where(mods, src, line):
    return f"{mods[src].relative_to(ROOT).as_posix()}:{line}"


def test_no_upward_import():
    mods = modules()
    found = upward(imports(mods))
    new = [f"{_where(mods, s, line)}: {s} ({layer(s)}) imports {d} ({layer(d)})"
           for s, d, line in found if (s, d) not in KNOWN]
    assert not new, "upward imports:\n" + "\n".join(new)


def test_no_import_cycle():
    mods = modules()
    edges = [(s, d, line) for s, d, line in imports(mods) if (s, d) not in KNOWN]
    lines = []
    for comp in cycles(edges):
        members = set(comp)
        lines.append(" <-> ".join(comp) + "\n    " + "\n    ".join(
            f"{_where(mods, s, line)}: {s} -> {d}" for s, d, line in edges if s in members and d in members))
    assert not lines, "import cycles:\n" + "\n".join(lines)


def test_the_walker_sees_function_level_imports_and_layers(tmp_path, monkeypatch):
    """A planted function-level import from core to the front is an upward import, and a
    pair of modules importing each other inside functions is a cycle."""
    pkg = tmp_path / "staredge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from staredge.predictor import Predictor\n")
    (pkg / "predictor.py").write_text("def g():\n    import staredge.errors\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"staredge": "staredge"})
    mods = modules()
    edges = imports(mods)
    assert ("staredge.errors", "staredge.predictor", 2) in edges
    assert upward(edges) == [("staredge.errors", "staredge.predictor", 2)]
    assert cycles(edges) == [["staredge.errors", "staredge.predictor"]]


def test_version_and_help_import_no_numpy():
    """``staredge --version`` and ``staredge --help`` stay light: no numpy, torch or runtime."""
    code = ("import sys\nsys.argv = ['staredge', ARG]\nfrom staredge.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'torch', 'onnxruntime', 'openvino') if m in sys.modules), "
            "file=sys.stderr)\n")
    for arg in ("--version", "--help"):
        out = subprocess.run([sys.executable, "-c", code.replace("ARG", repr(arg))], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip().splitlines()[-1] == "[]", (arg, out.stderr[-500:])
