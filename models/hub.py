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
- with limits (issue 23): a connect timeout and a stall timeout (``STAREDGE_DOWNLOAD_TIMEOUT``
  seconds, default :data:`TIMEOUT_S`), a minimum average speed once that time has passed (an
  endless trickle ends), and a size cap: the release table's ``max_bytes`` or
  :data:`MAX_DOWNLOAD_BYTES`, checked against ``Content-Length`` before the body and against
  every byte received; a body longer or shorter than announced is refused,
- checked for completeness before it is kept: a zip checkpoint must have its directory and
  every entry inside the file, a safetensors file exactly the bytes its header describes (a
  wrong ``Content-Length`` can cut a body short; such a file is never cached nor its digest
  recorded),
- with a progress bar on stderr,
- recording the file's SHA-256 (``sha256.json`` in the weights folder) when the registry
  does not know it; every later load checks the file against the known or recorded digest.

Errors are :class:`WeightsError` (a :class:`~staredge.errors.CheckpointError`) saying what
to do: offline without the file, the URL failing, a digest that does not match, a limit
(naming it), a cache folder that cannot be written or a folder where the file should be
(naming the path). Loading
the file into a model (``weights_only`` with the allow-list, strict keys and shapes) is
:func:`staredge.models.checkpoint.load_checkpoint`'s job.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from staredge.errors import CheckpointError, ConfigError, OutputPathError
from staredge.fileio import atomic_write_text, atomic_write_with
from staredge.paths import ENV_CACHE, ENV_DOWNLOAD_TIMEOUT, ENV_OFFLINE, offline, weights_dir

#: Seconds to connect, and seconds a connection may stay silent, before the download is
#: abandoned (``STAREDGE_DOWNLOAD_TIMEOUT`` overrides both).
TIMEOUT_S = 60.0
#: Once the timeout has passed, a download must average at least this many bytes per second
#: (a server trickling one byte a second never stalls, but never finishes either).
MIN_BYTES_PER_S = 16 << 10
#: Most bytes a download may have when the release table gives no ``max_bytes``.
MAX_DOWNLOAD_BYTES = 4 << 30
#: The response headers (after any redirects) must arrive within this many timeouts.
HEADER_DEADLINE_FACTOR = 2
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
    on); ``source``: who released it, in words; ``page``: the release page for people;
    ``max_bytes``: the most bytes the file may have (None: :data:`MAX_DOWNLOAD_BYTES`).
    """

    url: str
    filename: str
    sha256: str | None = None
    source: str = ""
    page: str = ""
    max_bytes: int | None = None


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
    except (NotADirectoryError, PermissionError) as exc:  # the cache folder itself is unusable
        raise _cache_problem(path.parent, exc) from exc
    except (OSError, ValueError) as exc:
        raise WeightsError(f"the digest record {path} is unreadable ({exc}); delete it and the weights "
                           f"folder {weights_dir()} to download again") from exc
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record_digest(key: str, digest: str) -> None:
    digests = recorded_digests()
    digests[key] = digest
    try:
        atomic_write_text(_digests_path(), json.dumps(digests, indent=2, sort_keys=True) + "\n")
    except OutputPathError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
        raise _cache_problem(_digests_path(), cause) from exc


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


def download_timeout() -> float:
    """The connect and stall timeout in seconds: ``STAREDGE_DOWNLOAD_TIMEOUT`` or :data:`TIMEOUT_S`."""
    text = os.environ.get(ENV_DOWNLOAD_TIMEOUT, "").strip()
    if not text:
        return TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 86400):
        raise ConfigError(f"{ENV_DOWNLOAD_TIMEOUT}={text!r} is not a number of seconds between 0 and 86400; "
                          f"unset it for the default of {TIMEOUT_S:g} s")
    return value


def _announced_length(resp) -> int | None:
    length = (resp.headers.get("Content-Length") or "").strip()
    if not length:
        return None
    if not length.isdigit() or len(length) > 19:
        raise _DownloadFailed(f"the server announced an invalid Content-Length {length[:40]!r}")
    return int(length)


def _download(url: str, tmp: Path, label: str, progress: bool, max_bytes: int = MAX_DOWNLOAD_BYTES) -> str:
    """Stream ``url`` into ``tmp``; returns the SHA-256. Raises WeightsError for any failure,
    including a limit: the timeouts, :data:`MIN_BYTES_PER_S`, ``max_bytes``."""
    h = hashlib.sha256()
    timeout = download_timeout()
    request = urllib.request.Request(url, headers={"User-Agent": "staredge"})
    got, total = 0, None
    opener, sockets = _opener()
    # Until the response headers are in (redirects included), one deadline for the whole
    # exchange: a server trickling its headers would otherwise never stall nor finish.
    watchdog = threading.Timer(HEADER_DEADLINE_FACTOR * timeout, _shut, (sockets,))
    watchdog.daemon = True
    try:
        watchdog.start()
        # the timeout covers connecting and every later wait for bytes (a stall)
        with opener.open(request, timeout=timeout) as resp:
            watchdog.cancel()
            if sockets.get("shut"):  # the deadline cut the headers short: what arrived is not a response
                raise _DownloadFailed(_header_deadline_message(url, timeout))
            total = _announced_length(resp)
            if total is not None and total > max_bytes:
                raise _DownloadFailed(f"the server announces {total:,} bytes, over the limit of {max_bytes:,} "
                                      f"for this file (max_bytes / MAX_DOWNLOAD_BYTES); nothing was downloaded")
            start = time.monotonic()
            with _progress(total, label, progress) as bar, open(tmp, "wb") as fh:
                task = bar.add_task(f"downloading {label}", total=total)
                while True:
                    chunk = resp.read1(CHUNK)  # returns what has arrived: the checks below run often
                    if not chunk:
                        break
                    fh.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(task, advance=len(chunk))
                    if got > max_bytes:
                        raise _DownloadFailed(f"the download passed the limit of {max_bytes:,} bytes for this file "
                                              f"(max_bytes / MAX_DOWNLOAD_BYTES); nothing was kept")
                    elapsed = time.monotonic() - start
                    if elapsed > timeout and got / elapsed < MIN_BYTES_PER_S:
                        raise _DownloadFailed(
                            f"the download is too slow: {got:,} bytes in {elapsed:.0f} s, under the minimum of "
                            f"{MIN_BYTES_PER_S:,} bytes/s (MIN_BYTES_PER_S) after {timeout:g} s "
                            f"({ENV_DOWNLOAD_TIMEOUT}); nothing was kept")
    except _DownloadFailed:
        raise
    except urllib.error.HTTPError as exc:
        raise _DownloadFailed(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except http.client.IncompleteRead as exc:  # the connection ended before Content-Length bytes
        announced = f" of {total:,}" if total is not None else ""
        raise _DownloadFailed(f"download of {url} stopped after {got + len(exc.partial):,}{announced} bytes (the "
                              f"response was cut or malformed); nothing was kept, try again") from exc
    except TimeoutError as exc:
        raise _DownloadFailed(f"could not download {url}: no bytes for {timeout:g} s (the stall timeout, "
                              f"{ENV_DOWNLOAD_TIMEOUT}); nothing was kept") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, OverflowError) as exc:
        if sockets.get("shut"):
            raise _DownloadFailed(_header_deadline_message(url, timeout)) from exc
        # connect timeouts, dropped connections, malformed responses (a chunk size of 2**64-1 is an
        # OverflowError inside http.client: found by scripts/fuzz.py's download target)
        reason = getattr(exc, "reason", None) or exc
        raise _DownloadFailed(f"could not download {url}: {reason}") from exc
    finally:
        watchdog.cancel()
    if total is not None and got != total:
        raise _DownloadFailed(f"download of {url} stopped after {got:,} of {total:,} bytes; nothing was kept, try again")
    if got == 0:
        raise _DownloadFailed(f"download of {url} gave an empty file; nothing was kept")
    _check_complete(tmp, url)
    return h.hexdigest()


def _opener() -> tuple[urllib.request.OpenerDirector, dict]:
    """A urllib opener whose HTTP(S) connections register their sockets in the returned dict
    (``"list"``), so that the header deadline can shut them down."""
    sockets: dict = {"list": []}

    def tracked(base):
        class Connection(base):
            def connect(self):
                super().connect()
                sockets["list"].append(self.sock)

        return Connection

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(tracked(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(tracked(http.client.HTTPSConnection), req, context=self._context)

    return urllib.request.build_opener(HTTP, HTTPS), sockets


def _header_deadline_message(url: str, timeout: float) -> str:
    return (f"could not download {url}: the response headers did not arrive within "
            f"{HEADER_DEADLINE_FACTOR * timeout:g} s (HEADER_DEADLINE_FACTOR x {ENV_DOWNLOAD_TIMEOUT}); "
            f"nothing was kept")


def _shut(sockets: dict) -> None:
    sockets["shut"] = True
    for sock in sockets["list"]:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _check_complete(path: Path, url: str) -> None:
    """Refuse a downloaded file whose own structure says bytes are missing: a zip archive
    (``torch.save``) without its directory or with an entry reaching past the end, a
    safetensors file shorter or longer than its header describes. A ``Content-Length`` that
    is wrong cuts the body without the transfer noticing; this catches it before anything is
    cached. Other layouts (a legacy pickle) have no such structure and are checked by the
    digest and by loading."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.header_offset + info.compress_size > size:
                        raise zipfile.BadZipFile(f"entry {info.filename} reaches past the end")
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise _DownloadFailed(f"the file downloaded from {url} is an incomplete zip archive ({exc}): the "
                                  f"transfer was cut short; nothing was kept, try again") from exc
        return
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON object
        n = struct.unpack("<Q", head[:8])[0]
        try:
            with open(path, "rb") as fh:
                fh.seek(8)
                header = json.loads(fh.read(min(n, 100_000_000)))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise _DownloadFailed(f"the file downloaded from {url} is not a complete safetensors file ({exc}); "
                                  f"nothing was kept, try again") from exc
        if 8 + n + end != size:
            raise _DownloadFailed(f"the file downloaded from {url} has {size:,} bytes but its safetensors header "
                                  f"describes {8 + n + end:,}: the transfer was cut short; nothing was kept, try again")


def _cache_problem(path: Path, exc: OSError | None = None) -> WeightsError:
    why = f": {exc.strerror or exc}" if exc is not None else ""
    return WeightsError(f"cannot write the weights cache at {path}{why}; set {ENV_CACHE} to a folder you can write "
                        f"to (or pass the file as checkpoint=... / --checkpoint FILE)")


def fetch_weights(name: str, src: WeightsSource, *, progress: bool = True) -> Path:
    """The cached file of ``name``'s released weights, downloaded first if needed.

    The file's SHA-256 is checked against the registry's digest or, when the registry has
    none, against the one recorded when it was downloaded (recorded now on a first
    download). Raises :class:`WeightsError` when offline without the file, when the
    download fails or passes a limit, when a digest does not match (a mismatching download
    is not kept), and when the cache cannot be written or holds something other than a file
    at the target path (naming the path).
    """
    target = cached_path(name, src)
    key = f"{name}/{src.filename}"
    manual = (f"download {src.url} yourself and put it at {target} (or pass it as checkpoint=... / "
              f"--checkpoint FILE)")
    try:
        present = target.is_file()
        other = not present and (target.exists() or target.is_symlink())
    except OSError as exc:  # a cache folder that cannot be searched
        raise _cache_problem(target.parent, exc) from exc
    if other:
        kind = "a folder" if target.is_dir() else "not a regular file (a broken link, a device...)"
        raise WeightsError(f"the weights cache path {target} is {kind}, not the weights file; remove it (or set "
                           f"{ENV_CACHE} to another folder) and try again")
    if present:
        want = expected_digest(name, src)
        try:
            have = sha256_of(target)
        except OSError as exc:
            raise WeightsError(f"cannot read the cached weights {target}: {exc.strerror or exc}; fix its "
                               f"permissions or delete it to download it again") from exc
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
        digest["sha256"] = _download(src.url, tmp, f"{name} ({src.filename})", progress,
                                     max_bytes=src.max_bytes or MAX_DOWNLOAD_BYTES)
        if want is not None and digest["sha256"] != want:
            raise WeightsError(
                f"the file downloaded from {src.url} has SHA-256 {digest['sha256']}, expected {want}; "
                f"it was not kept. If the release changed on purpose, delete the record in "
                f"{_digests_path()}; otherwise {manual}"
            )

    try:
        atomic_write_with(target, write)
    except OutputPathError as exc:
        raise _cache_problem(target.parent, exc.__cause__ if isinstance(exc.__cause__, OSError) else None) from exc
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
    "ENV_DOWNLOAD_TIMEOUT",
    "MAX_DOWNLOAD_BYTES",
    "MIN_BYTES_PER_S",
    "WeightsError",
    "WeightsSource",
    "cached_path",
    "describe",
    "download_timeout",
    "expected_digest",
    "fetch_weights",
    "is_cached",
    "recorded_digests",
    "sha256_of",
]

