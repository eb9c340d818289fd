"""Released weights: where they are, downloading them into the user cache, and checking them.

The registry (``staredge.models.registry.RELEASED_WEIGHTS``) names, per model, the URL of
the file its authors released (or the timm-hosted copy where the official file is not
directly downloadable) and, where known, its SHA-256. :func:`fetch_weights` returns the
cached file, downloading it first when it is not there:

- into ``staredge.paths.weights_dir()/<model>/<file>`` (``STAREDGE_CACHE`` moves it;
  ``STAREDGE_OFFLINE=1`` forbids the network),
- atomically: the bytes go to a temporary file beside the target, which is moved into
  place only when the download is complete (length as announced, digest as expected), so a
  partial file is never used,
- with a progress bar on stderr,
- recording the file's SHA-256 (``sha256.json`` in the weights folder) when the registry
  does not know it; every later load checks the file against the known or recorded digest.

Errors are :class:`WeightsError` (a :class:`~staredge.errors.CheckpointError`) saying what
to do: offline without the file, the URL failing, a digest that does not match. Loading
the file into a model (``weights_only`` with the allow-list, strict keys and shapes) is
:func:`staredge.models.checkpoint.load_checkpoint`'s job.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from staredge.errors import CheckpointError
from staredge.fileio import atomic_write_text, atomic_write_with
from staredge.paths import ENV_CACHE, ENV_OFFLINE, offline, weights_dir

#: Seconds a connection may stay silent before the download is abandoned.
TIMEOUT_S = 60.0
#: Bytes read per chunk while downloading and hashing.
CHUNK = 1 << 20
#: The file (in the weights folder) that records digests learnt on first download.
DIGESTS_FILE = "sha256.json"


class WeightsError(CheckpointError):
    """Released weights cannot be fetched or do not match their recorded SHA-256."""


class _DownloadFailed(WeightsError):
    """The transfer itself failed (network, HTTP status, short read)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's released weights are.

    ``url``: the file to download; ``filename``: its name in the cache; ``sha256``: its
    digest when known in advance (None: recorded on first download and checked from then
    on); ``source``: who released it, in words; ``page``: the release page for people.
    """

    url: str
    filename: str
    sha256: str | None = None
    source: str = ""
    page: str = ""


def cached_path(name: str, src: WeightsSource) -> Path:
    """Where ``name``'s released weights live in the cache (whether or not they are there)."""
    return weights_dir() / name / src.filename


def is_cached(name: str, src: WeightsSource) -> bool:
    """Whether the file is in the cache (its digest is checked only when it is loaded)."""
    return cached_path(name, src).is_file()


def _digests_path() -> Path:
    return weights_dir() / DIGESTS_FILE


def recorded_digests() -> dict[str, str]:
    """``{"<model>/<file>": sha256}`` learnt on first downloads (empty when none)."""
    path = _digests_path()
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WeightsError(f"the digest record {path} is unreadable ({exc}); delete it and the weights "
                           f"folder {weights_dir()} to download again") from exc
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record_digest(key: str, digest: str) -> None:
    digests = recorded_digests()
    digests[key] = digest
    atomic_write_text(_digests_path(), json.dumps(digests, indent=2, sort_keys=True) + "\n")


def expected_digest(name: str, src: WeightsSource) -> str | None:
    """The digest the cached file must have: the registry's, else the one recorded at download."""
    return src.sha256 or recorded_digests().get(f"{name}/{src.filename}")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(total: int | None, label: str, enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from staredge.quiet import terminal

    # the real stderr, also while the CLI captures converter output
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(file=terminal()), transient=True, disable=not enabled)


def _download(url: str, tmp: Path, label: str, progress: bool) -> str:
    """Stream ``url`` into ``tmp``; returns the SHA-256. Raises WeightsError for any failure."""
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "staredge"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            got = 0
            with _progress(total, label, progress) as bar, open(tmp, "wb") as fh:
                task = bar.add_task(f"downloading {label}", total=total)
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(task, advance=len(chunk))
    except urllib.error.HTTPError as exc:
        raise _DownloadFailed(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:  # includes timeouts and dropped connections
        reason = getattr(exc, "reason", None) or exc
        raise _DownloadFailed(f"could not download {url}: {reason}") from exc
    if total is not None and got != total:
        raise _DownloadFailed(f"download of {url} stopped after {got} of {total} bytes; nothing was kept, try again")
    if got == 0:
        raise _DownloadFailed(f"download of {url} gave an empty file; nothing was kept")
    return h.hexdigest()


def fetch_weights(name: str, src: WeightsSource, *, progress: bool = True) -> Path:
    """The cached file of ``name``'s released weights, downloaded first if needed.

    The file's SHA-256 is checked against the registry's digest or, when the registry has
    none, against the one recorded when it was downloaded (recorded now on a first
    download). Raises :class:`WeightsError` when offline without the file, when the
    download fails, or when a digest does not match (a mismatching download is not kept).
    """
    target = cached_path(name, src)
    key = f"{name}/{src.filename}"
    manual = (f"download {src.url} yourself and put it at {target} (or pass it as checkpoint=... / "
              f"--checkpoint FILE)")
    if target.is_file():
        want = expected_digest(name, src)
        have = sha256_of(target)
        if want is None:  # placed by hand: record it now, check it from now on
            _record_digest(key, have)
        elif have != want:
            raise WeightsError(
                f"the cached weights {target} do not match their SHA-256 (expected {want}, file has {have}): "
                f"the file was changed or damaged. Delete it to download it again"
            )
        return target
    if offline():
        raise WeightsError(
            f"{name}: released weights are not in the cache ({target}) and {ENV_OFFLINE} forbids downloading. "
            f"Unset {ENV_OFFLINE}, or {manual}"
        )
    want = expected_digest(name, src)
    digest: dict[str, str] = {}

    def write(tmp: Path) -> None:
        digest["sha256"] = _download(src.url, tmp, f"{name} ({src.filename})", progress)
        if want is not None and digest["sha256"] != want:
            raise WeightsError(
                f"the file downloaded from {src.url} has SHA-256 {digest['sha256']}, expected {want}; "
                f"it was not kept. If the release changed on purpose, delete the record in "
                f"{_digests_path()}; otherwise {manual}"
            )

    try:
        atomic_write_with(target, write)
    except _DownloadFailed as exc:
        raise WeightsError(f"{exc}. Check the connection (or set {ENV_CACHE} to a folder that has the file), "
                           f"or {manual}") from exc.__cause__
    if want is None:
        _record_digest(key, digest["sha256"])
    return target


def describe(name: str, src: WeightsSource | None) -> dict[str, Any]:
    """What ``staredge models`` shows about a model's released weights."""
    if src is None:
        return {"released": False, "url": None, "cached": False, "path": None}
    path = cached_path(name, src)
    return {"released": True, "url": src.url, "source": src.source, "cached": path.is_file(),
            "path": str(path), "sha256": src.sha256}


__all__ = [
    "WeightsError",
    "WeightsSource",
    "cached_path",
    "describe",
    "expected_digest",
    "fetch_weights",
    "is_cached",
    "recorded_digests",
    "sha256_of",
]

