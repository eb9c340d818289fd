"""Scratch folders of an export: ``.staredge-tmp-*`` inside the output folder.

Each format is converted and validated in a scratch folder next to its final place, then
moved in with one rename, so a reader never sees a half-written artifact. A process killed
with SIGKILL cannot clean up after itself, so every scratch folder carries an owner file
(process id and that process's start time). The next export to the same folder removes the
scratch folders whose owner is gone (:func:`remove_stale_scratch`) and leaves alone those
of a process that is still running (a concurrent export) and any folder without an owner
file (not made by this version of StarEdge). Nothing ever loads an artifact from a scratch
folder: runtimes open the path they are given, and the folders are hidden (dot-prefixed).

SIGINT (Ctrl-C) unwinds through the exporter's ``finally`` blocks. SIGTERM, whose default
action ends the process at once, gets a handler while scratch folders exist: it removes
them, then ends the process with SIGTERM as before (installed only from the main thread,
and only when the application has not installed its own handler).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
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
