"""Checks of the files and folders a command will write, made before it does any work.

A command that exports for minutes and then cannot write its report (a path under /proc, a
folder that is a file) used to end in a traceback after the artifacts were written; one that
silently replaced an existing report lost data. These checks run first and raise typed errors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from staredge.errors import ArtifactExistsError, ConfigError


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
        raise ConfigError(f"{flag} {p}: cannot write there ({reason}); choose a folder you can write to") from exc
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
