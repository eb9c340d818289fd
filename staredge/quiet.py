"""Keep converter and runtime chatter out of the terminal: one context manager.

Converters and runtimes write to the process's stderr at every level: Python warnings and
``logging`` (coremltools, torch), and C++ code that writes straight to file descriptor 2
(absl, oneDNN, TFLite, torchao's loader). :func:`captured` points descriptor 2 at a log
file for the duration, so all of that lands in the log (the path is on
:attr:`Capture.log_path`); StarEdge's own progress bars, tables and notices go to
:attr:`Capture.stderr`, a duplicate of the real stderr taken before the redirect.
Warnings raised by StarEdge's own modules are notices meant for the user: they are shown
on the real stderr as one line (``staredge: ...``), and logged too.

With ``verbose=True`` nothing is redirected (everything shows, as without StarEdge).
Standard library only.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from staredge.paths import log_dir

#: Environment settings that make converters log less at the source (kept if the user set them).
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "ABSL_MIN_LOG_LEVEL": "3"}

#: Top-level packages whose warnings are StarEdge's own notices.
_OWN_PACKAGES = ("staredge", "models", "exporters", "runtimes")


@dataclass
class Capture:
    """What :func:`captured` gives: the real stderr for StarEdge's output, and the log."""

    stderr: TextIO
    log_path: Path | None = None
    verbose: bool = False
    notices: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The captured lines so far (empty when verbose or nothing was written)."""
        if self.log_path is None or not self.log_path.is_file():
            return []
        return [ln for ln in self.log_path.read_text("utf-8", errors="replace").splitlines() if ln.strip()]


def _is_own(filename: str) -> bool:
    """Whether a warning was raised by StarEdge's code (a source checkout or an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        rel = Path(filename).resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return len(rel.parts) > 1 and rel.parts[0] in _OWN_PACKAGES and ".venv" not in rel.parts


def _writes_to_fd2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


#: The capture in effect (None outside :func:`captured`).
_ACTIVE: list[Capture] = []


def terminal() -> TextIO:
    """Where StarEdge's own progress and notices go: the real stderr, also under a capture."""
    return _ACTIVE[-1].stderr if _ACTIVE else sys.stderr


def notice(message: str, capture: Capture | None = None) -> None:
    """Print one StarEdge notice line on the real stderr (the captured one when given)."""
    stream = capture.stderr if capture is not None else terminal()
    print(f"staredge: {message}", file=stream, flush=True)


@contextlib.contextmanager
def captured(command: str = "staredge", verbose: bool = False, take_warnings: bool = True) -> Iterator[Capture]:
    """Send everything written to file descriptor 2 to ``<cache>/logs/<command>.log``.

    Yields a :class:`Capture` whose ``stderr`` is the real terminal. The log holds only the
    last run of each command. When the log folder cannot be created (read-only home), or
    ``verbose`` is True, nothing is redirected. ``take_warnings=False`` leaves Python's
    warning display as it is (someone records warnings: ``warnings.catch_warnings``).
    """
    if verbose:
        yield Capture(stderr=sys.stderr, verbose=True)
        return
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{command}.log"
        log_path.write_text("", encoding="utf-8")
        # append mode: Python's writes and descriptor 2's (the same file) never overwrite each other
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        yield Capture(stderr=sys.stderr)
        return
    log.write(f"# staredge {command}: converter and runtime messages, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    log.flush()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    own_stream = _writes_to_fd2(sys.stderr)
    # StarEdge's own output: a duplicate of the real descriptor 2, or Python's sys.stderr
    # when that is not descriptor 2 (e.g. replaced by a test harness)
    real = (io.TextIOWrapper(os.fdopen(os.dup(saved_fd), "wb", buffering=0), encoding="utf-8",
                             errors="replace", line_buffering=True, write_through=True)
            if own_stream else sys.stderr)
    env_before = {k: os.environ.get(k) for k in _QUIET_ENV}
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    capture = Capture(stderr=real, log_path=log_path)
    old_showwarning = warnings.showwarning

    def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        text = str(message).splitlines()[0] if str(message) else category.__name__
        if _is_own(filename):
            if text not in capture.notices:
                capture.notices.append(text)
                notice(text, capture)
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
        log.flush()

    os.dup2(log.fileno(), 2)
    if take_warnings:
        warnings.showwarning = showwarning
    _ACTIVE.append(capture)
    try:
        yield capture
    finally:
        _ACTIVE.remove(capture)
        if take_warnings:
            warnings.showwarning = old_showwarning
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if own_stream:
            with contextlib.suppress(Exception):
                real.flush()
                real.close()
        log.close()
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- the Python API

#: Environment switch that shows converter and runtime output from Python calls as well.
VERBOSE_ENV = "STAREDGE_VERBOSE"
_verbose_api = False
_api_lock = threading.Lock()
_DEFAULT_SHOWWARNING = warnings.showwarning


def set_verbose(on: bool = True) -> None:
    """Show (True) or log (False, the default) what converters and runtimes print during
    StarEdge's Python calls (``export()``, ``Predictor(...)``); ``STAREDGE_VERBOSE=1`` does
    the same from the environment. The log is ``<cache>/logs/python-<call>.log``."""
    global _verbose_api
    _verbose_api = bool(on)


def api_verbose() -> bool:
    """Whether Python calls show converter and runtime output (see :func:`set_verbose`)."""
    return _verbose_api or os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_api(name: str):
    """Decorator for a public Python entry point (``export``, ``Predictor.__init__``): what
    converters and runtimes write to stderr during the call goes to the log, as under the CLI,
    unless :func:`api_verbose`. Inside a capture already in effect (the CLI), or while another
    thread holds one, the call runs as it is (descriptor 2 is process-wide)."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if _ACTIVE or api_verbose() or not _api_lock.acquire(blocking=False):
                return fn(*args, **kwargs)
            try:  # warnings being recorded (warnings.catch_warnings, pytest) stay with their recorder
                with captured(f"python-{name}", take_warnings=warnings.showwarning is _DEFAULT_SHOWWARNING):
                    return fn(*args, **kwargs)
            finally:
                _api_lock.release()

        return call

    return wrap


__all__ = ["Capture", "api_verbose", "captured", "notice", "quiet_api", "set_verbose", "terminal"]
