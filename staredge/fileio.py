"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees a half-written file, and a failure (or Ctrl-C) leaves the old file, or
nothing, in place. Every text or binary output StarEdge writes goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from staredge.errors import ArtifactExistsError, ConfigError, OutputPathError


def _temporary_beside(target: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file in ``target``'s folder (created if missing); a place that cannot be
    written (``/proc/x``, a read-only folder, a file in the way) is an :class:`OutputPathError`
    naming ``target``."""
    if target.is_dir() and not target.is_symlink():
        raise OutputPathError(f"{target} is a folder; give a file name to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write {target}: {exc.strerror or exc}; choose a place you can write to") from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; with ``force=False`` an existing file is an error.

    Raises :class:`~staredge.errors.ArtifactExistsError` (nothing written) when ``path``
    exists and ``force`` is False. The file gets ordinary permissions (0666 less the umask).
    """
    target = Path(path)
    if target.exists() and not force:
        raise ArtifactExistsError(f"{target} exists; pass force=True (--force) to overwrite it")
    fd, tmp = _temporary_beside(target, ".tmp")
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


def atomic_write_json(path: str | os.PathLike, doc: Any, force: bool = True) -> Path:
    """Write ``doc`` as indented JSON (one trailing newline) to ``path`` atomically: the one
    spelling of the result files benchmarks and scripts write."""
    import json

    return atomic_write_text(path, json.dumps(doc, indent=1) + "\n", force=force)


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
    fd, tmp = _temporary_beside(target, suffix)
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


# Checks of the files and folders a command will write, made before it does any work: a
# command that exported for minutes and then could not write its report (a path under /proc,
# a folder that is a file) used to end in a traceback; one that silently replaced an existing
# report lost data.


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a folder this process can write into (created if missing), else ConfigError."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{flag} {p} is a file, not a folder; give a folder to write into")
        base = _first_existing(p)
        if base != p and not base.is_dir():
            raise ConfigError(f"{flag} {p}: {base} is a file, so no folder can be created below it")
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".staredge-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OutputPathError(f"{flag} {p}: cannot write there ({reason}); choose a folder you can write to") from exc
    return p


def check_output_file(path: str | os.PathLike, force: bool, flag: str = "--report") -> Path:
    """``path`` as a file this process may write: its folder is writable (created if missing)
    and it does not exist yet unless ``force`` (ArtifactExistsError: nothing is overwritten)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder; give a file name, e.g. {p / 'report.json'}")
    if (p.exists() or p.is_symlink()) and not force:
        raise ArtifactExistsError(f"{flag} {p} already exists; nothing was done. Pass --force to overwrite it, "
                                  f"or choose another file")
    check_output_folder(p.parent if str(p.parent) else Path("."), flag=f"{flag} folder")
    return p
