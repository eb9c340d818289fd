"""Class names given by the user: a list of strings or a text file with one name per line.

Standard library only; used by :func:`staredge.models.create` (``labels=``, carried into
exported artifacts) and :class:`staredge.Predictor` (``labels=``, overriding the artifact's).
"""

from __future__ import annotations

import os
from typing import Any

from staredge.errors import ConfigError
from staredge.metadata import MAX_LABELS  # the same limit as for labels read from an artifact


def read_labels(labels: Any) -> list[str]:
    """Class names from a list/tuple of strings or a UTF-8 text file (one name per line;
    blank lines at the end are ignored). Raises :class:`ConfigError` for anything else."""
    if isinstance(labels, (str, os.PathLike)):
        path = os.fspath(labels)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(64 << 20)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read labels file {path}: {exc}") from exc
        names = text.rstrip("\n\r ").splitlines()
        names = [n.strip() for n in names]
    elif isinstance(labels, (list, tuple)):
        names = list(labels)
    else:
        raise ConfigError(f"labels must be a list of names or a text file, got {type(labels).__name__}")
    if not names or len(names) > MAX_LABELS:
        raise ConfigError(f"labels: expected 1 to {MAX_LABELS} names, got {len(names)}")
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"labels: entry {bad[0]} is empty or not a string; give one non-empty name per class")
    return [n.strip() for n in names]


__all__ = ["MAX_LABELS", "read_labels"]
