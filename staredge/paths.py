"""Where StarEdge keeps files of its own: the user cache (downloaded weights, logs).

Standard library only (``import staredge`` stays light). The cache folder is, in order:

1. ``$STAREDGE_CACHE`` (the folder itself),
2. ``$STAREDGE_HOME/cache``,
3. ``$XDG_CACHE_HOME/staredge``,
4. ``~/.cache/staredge``.

``STAREDGE_OFFLINE=1`` (also ``true``/``yes``/``on``) forbids network access: released
weights are then read from the cache only, and a missing file is a clear error.
``STAREDGE_DOWNLOAD_TIMEOUT`` (seconds) sets the connect and stall timeout of downloads
(:mod:`staredge.models.hub`).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables StarEdge reads for its folders and network policy.
ENV_CACHE = "STAREDGE_CACHE"
ENV_HOME = "STAREDGE_HOME"
ENV_OFFLINE = "STAREDGE_OFFLINE"
ENV_DOWNLOAD_TIMEOUT = "STAREDGE_DOWNLOAD_TIMEOUT"


def cache_dir() -> Path:
    """The user cache folder (not created here; see the module docstring for the order)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser() / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: relative paths are invalid and ignored
        return Path(xdg) / "staredge"
    return Path.home() / ".cache" / "staredge"


def weights_dir() -> Path:
    """Where released weights are downloaded (``<cache>/weights``)."""
    return cache_dir() / "weights"


def log_dir() -> Path:
    """Where converter and runtime messages are logged (``<cache>/logs``)."""
    return cache_dir() / "logs"


def offline() -> bool:
    """Whether ``STAREDGE_OFFLINE`` forbids downloads."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


__all__ = ["ENV_CACHE", "ENV_DOWNLOAD_TIMEOUT", "ENV_HOME", "ENV_OFFLINE", "cache_dir", "log_dir", "offline", "weights_dir"]
