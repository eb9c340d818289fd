"""Kill safety of exports (issue 23): SIGKILL and SIGINT at seeded random times during real
``staredge export`` runs (the digits model to ONNX, and a tiny language model to ONNX).

After every kill, nothing in the output folder is a partial artifact under a final name: each
artifact there loads and matches the weight digest recorded at export (so it is complete), or
is a ``.failed.`` one; Ctrl-C (SIGINT) ends the export with a non-zero exit and leaves no scratch
folder; a SIGKILL's scratch folder is removed by the next export's clean-up (its owner is dead);
no converter scratch (``.ses``, ``torchinductor_*``) is left in the working folder.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from staredge.exporters.scratch import SCRATCH_PREFIX, remove_stale_scratch

pytestmark = pytest.mark.slow

#: (id, CLI arguments after ``export``); each runs in its own process.
JOBS = {
    "image": ["starnet_digits", "--formats", "onnx"],
    "lm": ["transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "32", "--formats", "onnx"],
}
#: (job, signal, seed): 3 SIGKILL + 3 SIGINT of the image export, one of each for the LM.
CASES = ([("image", signal.SIGKILL, s) for s in range(3)] + [("image", signal.SIGINT, s) for s in range(3)]
         + [("lm", signal.SIGKILL, 0), ("lm", signal.SIGINT, 0)])
#: Python's own Ctrl-C handler first: a process started with SIGINT ignored (a test run in
#: the background of a non-interactive shell, e.g. ``nohup make test &``) passes that on, and
#: Python then installs no KeyboardInterrupt handler, so the export would never see Ctrl-C.
_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from staredge.cli import main; sys.exit(main(sys.argv[1:]))")


def _start(job: str, out: Path, cwd: Path, cache: Path) -> subprocess.Popen:
    """The export in a process group of its own (its pid is the group's id), so that the
    converters' children can be found and ended with it (:func:`_reap`)."""
    env = dict(os.environ, STAREDGE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", _CLI, "export", *JOBS[job], "--out", str(out)], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _group_alive(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _reap(proc: subprocess.Popen, limit_s: float = 60.0) -> list[int]:
    """SIGKILL every process left in the export's group, reap the export itself, and wait
    until the group is gone; returns the pids that were still alive (besides the export)."""
    survivors = [pid for pid in _group_alive(proc.pid) if pid != proc.pid]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + limit_s
    while _group_alive(proc.pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the export's group {proc.pid} outlived SIGKILL: "
                               f"{_group_alive(proc.pid)}")
        time.sleep(0.05)
    return survivors


@pytest.fixture
def exports():
    """Starts exports (:func:`_start`); at teardown, however the test ended, each one's whole
    process group is killed and waited for, so no export or converter child outlives a test."""
    started: list[subprocess.Popen] = []

    def start(*args) -> subprocess.Popen:
        proc = _start(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        _reap(proc)


def _wait_for_scratch(proc: subprocess.Popen, out: Path, limit_s: float = 240.0) -> bool:
    """Poll until the export has made its scratch folder (True) or ended (False)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if out.is_dir() and any(p.name.startswith(SCRATCH_PREFIX) for p in out.iterdir()):
            return True
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the export made no scratch folder within {limit_s} s")


def _check_final_names(out: Path) -> list[str]:
    """Every non-hidden entry is a complete artifact (loads, digest matches) or a .failed. one."""
    from staredge.integrity import verify
    from staredge.runtimes import load_backend

    seen = []
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        if entry.name.startswith("."):
            continue
        seen.append(entry.name)
        if ".failed." in entry.name:
            continue
        assert entry.suffix == ".onnx", f"unexpected file {entry} after a kill"
        assert verify(entry) is not None, f"{entry} has no weight digest: a partial or foreign file"
        load_backend(entry, device="cpu").close()
    return seen


@pytest.mark.parametrize("job, sig, seed", CASES, ids=[f"{j}-{s.name}-{n}" for j, s, n in CASES])
def test_a_killed_export_leaves_no_partial_artifact(tmp_path, exports, job, sig, seed):
    out, cwd = tmp_path / "out", tmp_path / "cwd"
    cwd.mkdir()
    proc = exports(job, out, cwd, tmp_path / "cache")
    started = _wait_for_scratch(proc, out)
    if started:
        time.sleep(random.Random(f"{job}:{sig}:{seed}").uniform(0.0, 2.5))
    alive = proc.poll() is None
    if alive:
        proc.send_signal(sig)
    code = proc.wait(timeout=240)
    # a SIGKILL leaves the converters' children running (nothing can stop them); Ctrl-C must not
    survivors = _reap(proc)
    if sig == signal.SIGINT or not alive:
        assert survivors == [], f"the export ended but its children {survivors} ran on"
    if not alive:  # the export finished before the signal: it must have succeeded
        assert code == 0
    elif sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code != 0, "Ctrl-C was swallowed: the export went on and exited 0"
    _check_final_names(out)
    scratch = [p for p in out.iterdir() if p.name.startswith(SCRATCH_PREFIX)] if out.is_dir() else []
    if sig == signal.SIGINT or not alive:
        assert scratch == [], f"Ctrl-C left scratch folders: {scratch}"
    else:
        remove_stale_scratch(out)  # what the next export to this folder does first
        assert not [p for p in out.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
    litter = [p.name for p in cwd.iterdir() if p.name.startswith((".ses", "torchinductor_"))]
    assert litter == [], f"converter scratch left in the working folder: {litter}"
