"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees a half-written file, and a failure (or Ctrl-C) leaves the old file, or
nothing, in place. Every text or binary output StarEdge writes goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from staredge.errors import ArtifactExistsError


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; with ``force=False`` an existing file is an error.

    Raises :class:`~staredge.errors.ArtifactExistsError` (nothing written) when ``path``
    exists and ``force`` is False. The file gets ordinary permissions (0666 less the umask).
    """
    target = Path(path)
    if target.exists() and not force:
        raise ArtifactExistsError(f"{target} exists; pass force=True (--force) to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str, force: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), force=force)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None], force: bool = True,
                      suffix: str = ".tmp") -> Path:
    """Let ``write(tmp)`` produce the file at a temporary path beside ``path``, then move it
    into place (for writers that want a file name: matplotlib, ``torch.onnx.export``).

    ``suffix`` is the temporary file's suffix (some writers pick the format from it).
    Raises :class:`~staredge.errors.ArtifactExistsError` when ``path`` exists and ``force``
    is False; nothing is left behind when ``write`` fails.
    """
    target = Path(path)
    if target.exists() and not force:
        raise ArtifactExistsError(f"{target} exists; pass force=True (--force) to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def replace_folder_or_file(staged: Path, final: Path, scratch: Path) -> None:
    """Move ``staged`` (a file or a folder) to ``final``; an old folder is moved aside into
    ``scratch`` first (rename(2) cannot replace a non-empty folder) and restored on failure."""
    if final.is_dir() and not final.is_symlink():
        aside = scratch / f"old-{final.name}"
        os.replace(final, aside)
        try:
            os.replace(staged, final)
        except BaseException:
            os.replace(aside, final)
            raise
    else:
        os.replace(staged, final)
