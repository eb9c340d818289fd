"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees a half-written file, and a failure (or Ctrl-C) leaves the old file, or
nothing, in place. Every text or binary output StarEdge writes goes through here.
"""

from __future__ import annotations

import os
import tempfile
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
