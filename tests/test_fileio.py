"""Atomic writes shared by exporters, bench and generation."""

from __future__ import annotations

import pytest

from staredge.errors import ArtifactExistsError, ConfigError, StarEdgeError
from staredge.fileio import atomic_write_bytes, atomic_write_text


def test_write_replace_and_refuse(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_text(p, "one")
    assert p.read_text() == "one"
    atomic_write_text(p, "two")  # force defaults to True
    assert p.read_text() == "two"
    with pytest.raises(ArtifactExistsError, match="--force"):
        atomic_write_text(p, "three", force=False)
    assert p.read_text() == "two"
    assert issubclass(ArtifactExistsError, (StarEdgeError, ConfigError, FileExistsError))
    assert sorted(x.name for x in p.parent.iterdir()) == ["r.json"]  # no temporary left


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "w.bin"
    atomic_write_bytes(p, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["w.bin"]
