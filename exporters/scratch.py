"""Scratch folders of an export: ``.staredge-tmp-*`` inside the output folder.

Each format is converted and validated in a scratch folder next to its final place, then
moved in with one rename, so a reader never sees a half-written artifact. A process killed
with SIGKILL cannot clean up after itself, so every scratch folder carries an owner file
(process id and that process's start time). The next export to the same folder removes the
scratch folders whose owner is gone (:func:`remove_stale_scratch`) and leaves alone those
of a process that is still running (a concurrent export) and any folder without an owner
file (not made by this version of StarEdge). Nothing ever loads an artifact from a scratch
folder: runtimes open the path they are given, and the folders are hidden (dot-prefixed).

SIGINT (Ctrl-C) unwinds through the exporter's ``finally`` blocks, and is never lost: a
converter that turns the ``KeyboardInterrupt`` into its own error (a native module's
"initialization failed" ``ImportError``) or swallows it is caught by :func:`interrupt_guard`,
which re-raises it after the format. While a converter runs, Python's temporary folder is a
folder inside the scratch folder (:func:`converter_tempdir`), so what a converter writes to
"the temp dir" (an intermediate ``graph.onnx``) goes with the scratch folder, and
TorchInductor's cache goes to the StarEdge cache instead of ``$TMPDIR`` or the working folder. SIGTERM, whose default
action ends the process at once, gets a handler while scratch folders exist: it removes
them, then ends the process with SIGTERM as before (installed only from the main thread,
and only when the application has not installed its own handler).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

#: Name prefix of every scratch folder.
SCRATCH_PREFIX = ".staredge-tmp-"
#: The owner file inside each scratch folder (JSON: pid, process start time, creation time).
OWNER_FILE = ".staredge-owner.json"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), or None if it
    does not exist or /proc is not available. Together with the pid it names a process
    uniquely: a recycled pid has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5); 3 fields precede this split


_live: set[Path] = set()  # scratch folders of this process that may still exist
_lock = threading.Lock()


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess by the tests
    with _lock:
        folders = list(_live)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_cleanup() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter / no signals here
        pass


def make_scratch(out: Path) -> Path:
    """A new scratch folder in ``out`` with this process's owner file (removed on SIGTERM)."""
    _install_sigterm_cleanup()
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out))
    with _lock:
        for old in [p for p in _live if not p.exists()]:
            _live.discard(old)
        _live.add(scratch)
    owner = {"pid": os.getpid(), "start": _process_start(os.getpid()), "created": time.time()}
    (scratch / OWNER_FILE).write_text(json.dumps(owner))
    return scratch


def owner_alive(owner: dict) -> bool:
    """Whether the process that made a scratch folder may still be using it."""
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True  # this process (another thread may be exporting to the same folder)
    start = _process_start(pid)
    if start is not None:
        return owner.get("start") in (None, start)  # a recycled pid has another start time
    if Path("/proc/self/stat").is_file():
        return False  # /proc works and has no such process
    try:  # no /proc (macOS): ask the kernel whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch(out: Path) -> list[Path]:
    """Remove the scratch folders in ``out`` whose owning process is gone; returns them.

    Folders without a readable owner file are left alone: StarEdge removes only what it
    can tell it made.
    """
    removed: list[Path] = []
    try:
        candidates = sorted(Path(out).glob(SCRATCH_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(owner, dict) or owner_alive(owner):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


def failed_paths(unit: Path, entry: Path) -> tuple[Path, Path]:
    """Where an artifact that failed validation is kept for inspection: ``x.failed.onnx``
    (or ``x_openvino.failed/``), never under the final name a runtime or script would load."""
    if unit == entry:
        failed = unit.with_name(f"{unit.stem}.failed{unit.suffix}")
        return failed, failed
    failed = unit.with_name(f"{unit.name}.failed")
    return failed, failed / entry.relative_to(unit)


def failed_units(units: tuple[Path, ...] | list[Path], entry: Path) -> tuple[list[Path], Path]:
    """:func:`failed_paths` for an artifact of several units (an OpenVINO language model's
    ``.xml`` with its ``.bin`` beside it): (failed name of each unit, failed entry)."""
    names: list[Path] = []
    failed_entry = entry
    for unit in units:
        if unit == entry or entry.is_relative_to(unit):
            failed, failed_entry = failed_paths(unit, entry)
        else:  # a companion file: x.bin -> x.failed.bin, found beside x.failed.xml
            failed = unit.with_name(f"{unit.stem}.failed{unit.suffix}")
        names.append(failed)
    return names, failed_entry


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a ``KeyboardInterrupt`` (a converter that wrapped
    Ctrl-C in its own error: it must end the export, not be recorded as a failed format)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class InterruptGuard:
    """Notes every SIGINT that arrives while it is active (and still lets the previous handler
    raise ``KeyboardInterrupt``); :meth:`check` re-raises one that a converter swallowed."""

    def __init__(self) -> None:
        self.hit = False

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT arrived (and reset)."""
        if self.hit:
            self.hit = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_guard() -> Iterator[InterruptGuard]:
    """An :class:`InterruptGuard` over the block (SIGINT watched from the main thread only)."""
    guard = InterruptGuard()
    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):  # SIG_IGN / SIG_DFL: the application decided; leave it alone
                def on_sigint(signum, frame):
                    guard.hit = True
                    previous(signum, frame)

                signal.signal(signal.SIGINT, on_sigint)
            else:
                previous = None
        except (ValueError, OSError):  # not the main interpreter / no signals here
            previous = None
    try:
        yield guard
    finally:
        if previous is not None:
            try:
                signal.signal(signal.SIGINT, previous)
            except (ValueError, OSError):  # pragma: no cover
                pass


#: Scratch that converters leave in the working folder; removed after each format when it
#: was not there before the export.
_WORKDIR_LITTER = (".ses", "torchinductor_")


@contextlib.contextmanager
def converter_tempdir(scratch: Path) -> Iterator[Path]:
    """While converters run: Python's temporary folder is ``scratch/tmp`` (removed with the
    scratch folder, or by the next export if the process is killed), TorchInductor's cache is
    the StarEdge cache (``TORCHINDUCTOR_CACHE_DIR``, unless set), and converter scratch that
    appears in the working folder (``.ses``, ``torchinductor_*``) is removed afterwards."""
    tmp = Path(scratch) / "tmp"
    tmp.mkdir(exist_ok=True)
    redirect_converter_caches()
    before = _litter()
    saved_tempdir, saved_env = tempfile.tempdir, {k: os.environ.get(k) for k in ("TMPDIR", "TEMP", "TMP")}
    tempfile.tempdir = str(tmp)
    os.environ["TMPDIR"] = str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for path in _litter() - before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


def redirect_converter_caches() -> None:
    """Point TorchInductor's cache (which torch otherwise makes in ``$TMPDIR``, or in the working
    folder when no temp dir is writable, and never removes) at the StarEdge cache, unless the
    user chose one (``TORCHINDUCTOR_CACHE_DIR``). Called before an export touches the model."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from staredge.paths import cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "torchinductor")


def _litter() -> set[Path]:
    try:
        return {p for p in Path.cwd().iterdir() if p.name.startswith(_WORKDIR_LITTER)}
    except OSError:
        return set()
