"""Packaging: one import package, mapped folders, package data, no generic top-level names."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"staredge": "staredge", "staredge.models": "models", "staredge.exporters": "exporters", "staredge.runtimes": "runtimes"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _folder_of(package: str) -> Path:
    best = max((k for k in MAPPED if package == k or package.startswith(k + ".")), key=len)
    rest = package[len(best):].lstrip(".")
    return ROOT / MAPPED[best] / Path(*rest.split(".")) if rest else ROOT / MAPPED[best]


def test_package_dir_mapping():
    tool = _pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == MAPPED


def test_every_package_folder_is_listed():
    listed = {p for p in _pyproject()["tool"]["setuptools"]["packages"] if not p.endswith(".data")}
    on_disk = set()
    for top, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([top, *rel.parts]) if rel.parts else top)
    assert on_disk == listed, f"pyproject packages out of date: {sorted(on_disk ^ listed)}"
    for pkg in listed:
        assert (_folder_of(pkg) / "__init__.py").is_file()
    for pkg in _pyproject()["tool"]["setuptools"]["packages"]:
        assert _folder_of(pkg).is_dir(), f"{pkg} is listed but {_folder_of(pkg)} does not exist"


def test_torch_pinned_and_constraints():
    deps = _pyproject()["project"]["dependencies"]
    extras = _pyproject()["project"]["optional-dependencies"]
    # torch is the `torch` extra (inference needs none), pinned there and in constraints.txt
    assert "torch==2.13.0" in extras["torch"] and not any(d.startswith("torch") for d in deps)
    assert "torch" in extras["all"][0]
    assert not any(d.startswith(("torchvision", "timm")) for d in deps)
    assert {"torch", "onnx", "openvino", "tflite", "coreml", "gpu", "all", "dev"} <= set(extras)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_are_a_full_lock_of_the_ci_environment():
    # CI's fresh install of `.[all,dev]` exceeded pip's resolution depth until every package
    # was pinned: constraints.txt is a lock (name==version per line, comments aside)
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not an exact pin: {line!r}"
        pins[_norm(name)] = version
    assert pins["torch"] == "2.13.0"
    assert tuple(int(p) for p in pins["numpy"].split(".")[:2]) < (2, 4)  # coremltools 9.0 breaks on 2.4
    extras = _pyproject()["project"]["optional-dependencies"]
    direct = list(_pyproject()["project"]["dependencies"])
    for extra in ("torch", "onnx", "openvino", "tflite", "coreml", "dev"):
        direct += extras[extra]
    for requirement in direct:
        name = _norm(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0])
        assert name in pins, f"{requirement} (pyproject) is not pinned in constraints.txt"


def test_generic_names_not_importable_from_elsewhere(tmp_path):
    code = "import importlib.util as u; print([n for n in ('models','exporters','runtimes') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_imagenet_labels_are_package_data():
    from staredge.models import imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    """A normal (non-editable) build puts everything under staredge/ only."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("staredge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"staredge"}
    assert "staredge/models/starnet.py" in names
    assert "staredge/models/data/imagenet_classes.txt" in names
    assert "staredge/exporters/__init__.py" in names and "staredge/runtimes/__init__.py" in names
