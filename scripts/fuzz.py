"""Long mutation-fuzz run of StarEdge's parsers and loaders (outside CI).

Targets: ``image``, ``genome``, ``checkpoint``, ``metadata`` (issue 16), and from issue 23
``lm-metadata`` (mutated ``lm`` sections of an LM artifact's embedded metadata, loaded and
streamed), ``lm-feed`` (ids of every shape, dtype and range fed to a decode stream, and
``stream()`` arguments) and ``download`` (the weights download client against a loopback
server sending mutated status lines, headers and bodies). ``tests/test_fuzz_surface.py`` runs
a fixed, seeded budget of the issue 23 targets in the test suite.

    .venv/bin/python scripts/fuzz.py --minutes 10                 # every target, 10 min each
    .venv/bin/python scripts/fuzz.py --targets image genome --minutes 3 --out fuzz-out

Property of every case: the call returns a value or raises a ``StarEdgeError`` subclass,
within ``--hang-s`` seconds. Each target runs in a child process (address space limited
with ``--memory-gb``) that reports its progress through shared memory; a child that makes
no progress for ``--hang-s`` seconds is killed, the case is recorded as a hang, and a
new child continues with the next case. Case ``i`` of a target is a pure function of
``(--seed, i)``, so any finding is reproduced with ``--replay TARGET:I``.

Findings (untyped exceptions and hangs) are written to ``--out`` as the failing input plus
a JSON line with the exception type, message and the innermost frame; a summary with the
counts per target is printed at the end and written to ``--out/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


# ----------------------------------------------------------------------------- targets
# A target is (make_case(i, rng, state) -> input, run(input, state) -> None, setup() -> state).


def _image_setup():
    import _fuzz_seeds as S
    from staredge.preprocess import PreprocessConfig

    return {"seeds": S.image_seeds(), "cfg": PreprocessConfig(input_size=(3, 32, 32))}


def _image_case(i, rng, st):
    import _fuzz_seeds as S

    return S.mutate(rng.choice(st["seeds"]), rng, pool=st["seeds"])


def _image_run(data, st):
    from staredge.preprocess import preprocess

    preprocess(data, st["cfg"])


def _genome_setup():
    return {}


def _genome_case(i, rng, st):
    import _fuzz_seeds as S

    return (S.random_genome_input(rng), S.random_depth(rng), rng.random() < 0.5)


def _genome_run(args, st):
    from staredge.models.star import parse_genome

    genome, depth, repair = args
    parse_genome(genome, depth=depth, repair=repair)


def _checkpoint_setup():
    import _fuzz_seeds as S

    tmp = Path(tempfile.mkdtemp(prefix="staredge-fuzz-ckpt-"))
    return {"seeds": S.checkpoint_seeds(), "tmp": tmp}


def _checkpoint_case(i, rng, st):
    import _fuzz_seeds as S

    return S.mutate(rng.choice(st["seeds"]), rng, pool=st["seeds"])


def _checkpoint_run(data, st):
    from staredge.models.checkpoint import read_state_dict

    path = st["tmp"] / "case.pth"
    path.write_bytes(data)
    read_state_dict(path)


def _metadata_setup():
    """Small real artifacts of every format whose metadata reader is pure Python/C++ parsing."""
    import _fuzz_seeds as S

    tmp = Path(tempfile.mkdtemp(prefix="staredge-fuzz-meta-"))
    return {"seeds": S.artifact_seeds(tmp), "tmp": tmp}


def _metadata_case(i, rng, st):
    import _fuzz_seeds as S

    suffix, data = rng.choice(st["seeds"])
    return suffix, S.mutate(data, rng, pool=[d for _, d in st["seeds"]])


def _metadata_run(args, st):
    from staredge.metadata import read_metadata

    import _fuzz_seeds as S

    suffix, data = args
    if suffix == ".mlmodel":  # a CoreML spec lives inside a package folder
        path = S.write_coreml_package(st["tmp"] / "case.mlpackage", data)
    else:
        path = st["tmp"] / f"case{suffix}"
        path.write_bytes(data)
    read_metadata(path)


_LM_SEED: dict[str, Path] = {}


def _lm_artifact(tmp: Path) -> Path:
    """A tiny language-model ONNX artifact (transformer_pp, dim 32, 2 LIVs, context 32),
    exported once per process (the LM targets share it)."""
    from staredge.exporters.lm_export import export_lm, resolve_lm

    if "path" not in _LM_SEED or not _LM_SEED["path"].is_file():
        model, _ = resolve_lm("transformer_pp", dim=32, depth=2)
        rows = export_lm(model, ["onnx"], tmp, max_context=32, validate=False, force=True)
        if not rows[0].get("path"):
            raise RuntimeError(f"the fuzz seed LM did not export: {rows[0].get('error')}")
        _LM_SEED["path"] = Path(rows[0]["path"])
    return _LM_SEED["path"]


def _lm_metadata_setup():
    """Issue 23: the ``lm`` section of an LM artifact's embedded metadata, mutated."""
    from staredge.metadata import read_metadata

    from staredge.runtimes import load_backend

    tmp = Path(tempfile.mkdtemp(prefix="staredge-fuzz-lm-"))
    path = _lm_artifact(tmp / "seed")
    # the runtime's imports and first load belong to the setup: charged to case 0 they made a
    # false hang on a busy machine (13 s for a case that replays in well under a second)
    load_backend(path, device="cpu", threads=1).close()
    return {"tmp": tmp, "bytes": path.read_bytes(), "meta": read_metadata(path)}


def _lm_metadata_case(i, rng, st):
    import _fuzz_seeds as S

    if rng.random() < 0.1:  # the task claim itself
        return {"task": rng.choice(("image-classification", "text-generation", "", None, 5)), "lm": st["meta"].lm}
    return {"lm": S.mutate_lm(st["meta"].lm, rng)}


def _lm_metadata_run(change, st):
    import dataclasses

    from staredge.metadata import write_metadata
    from staredge.runtimes import load_backend

    path = st["tmp"] / "case.onnx"
    path.write_bytes(st["bytes"])
    write_metadata(path, dataclasses.replace(st["meta"], **change), "onnx")
    backend = load_backend(path, device="cpu", threads=1)
    try:
        if not hasattr(backend, "open_session"):  # the metadata now says "image model": run it as one
            import numpy as np

            backend.forward(np.zeros((1, *backend.metadata.input_size), np.float32))
            return
        session = backend.open_session()
        session.feed([1, 2, 3])
        session.feed([4])
        session.close()
    finally:
        backend.close()


def _lm_feed_setup():
    """Issue 23: what a caller feeds a decode stream: ids of every shape, dtype and range,
    and ``stream()`` arguments."""
    from staredge.runtimes import load_backend

    tmp = Path(tempfile.mkdtemp(prefix="staredge-fuzz-feed-"))
    return {"tmp": tmp, "backend": load_backend(_lm_artifact(tmp), device="cpu", threads=1)}


def _lm_feed_case(i, rng, st):
    import _fuzz_seeds as S

    if rng.random() < 0.3:
        return ("stream", S.random_stream_args(rng))
    return ("feed", (*S.random_feed(rng), rng.random() < 0.1))


def _lm_feed_run(case, st):
    kind, args = case
    backend = st["backend"]
    if kind == "stream":
        from staredge.decoding import stream

        for _ in zip(range(64), stream(backend, **args)):  # bounded even if a limit failed
            pass
        return
    ids, all_rows, reuse_closed = args
    session = backend.open_session()
    try:
        if reuse_closed:
            session.close()
        session.feed(ids, all_rows)
    finally:
        session.close()


class _RawServer:
    """A loopback (127.0.0.1) TCP server answering every request with the raw bytes of the
    current case, optionally trickled; used only by the download target."""

    def __init__(self) -> None:
        import socketserver
        import threading

        self.response, self.trickle = b"", 0.0
        srv = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(3.0)
                got = b""
                try:
                    while b"\r\n\r\n" not in got and len(got) < 65536:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return
                        got += chunk
                    data, trickle = srv.response, srv.trickle
                    if trickle:
                        step = max(1, len(data) // 10)
                        for k in range(0, len(data), step):
                            sock.sendall(data[k : k + step])
                            time.sleep(trickle / 10)
                    else:
                        sock.sendall(data)
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def _download_setup():
    """Issue 23: the download client against a loopback server sending mutated responses."""
    import io

    import torch
    from safetensors.torch import save

    buf = io.BytesIO()
    torch.save({"w": torch.arange(300, dtype=torch.float32)}, buf)
    tmp = Path(tempfile.mkdtemp(prefix="staredge-fuzz-dl-"))
    return {"tmp": tmp, "server": _RawServer(),
            "bodies": [buf.getvalue(), save({"w": torch.arange(300, dtype=torch.float32)})]}


def _download_case(i, rng, st):
    import hashlib

    import _fuzz_seeds as S

    which = rng.randrange(2)
    body = st["bodies"][which]
    raw, trickle = S.random_http_response(rng, body)
    sha = rng.choice((None, None, hashlib.sha256(body).hexdigest(), "0" * 64))
    return (raw, trickle, ("w.pth", "w.safetensors")[which], sha, rng.choice((None, None, 100, 10**6)))


def _download_run(case, st):
    import shutil

    from staredge.models.checkpoint import read_state_dict
    from staredge.models.hub import WeightsSource, fetch_weights

    raw, trickle, filename, sha, max_bytes = case
    srv = st["server"]
    srv.response, srv.trickle = raw, trickle
    cache = st["tmp"] / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    saved = {k: os.environ.get(k) for k in ("STAREDGE_CACHE", "STAREDGE_DOWNLOAD_TIMEOUT", "STAREDGE_OFFLINE")}
    os.environ.update(STAREDGE_CACHE=str(cache), STAREDGE_DOWNLOAD_TIMEOUT="1")
    os.environ.pop("STAREDGE_OFFLINE", None)
    try:
        src = WeightsSource(url=srv.url("/weights"), filename=filename, sha256=sha, max_bytes=max_bytes)
        read_state_dict(fetch_weights("m", src, progress=False))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TARGETS = {
    "image": (_image_setup, _image_case, _image_run),
    "genome": (_genome_setup, _genome_case, _genome_run),
    "checkpoint": (_checkpoint_setup, _checkpoint_case, _checkpoint_run),
    "metadata": (_metadata_setup, _metadata_case, _metadata_run),
    "lm-metadata": (_lm_metadata_setup, _lm_metadata_case, _lm_metadata_run),
    "lm-feed": (_lm_feed_setup, _lm_feed_case, _lm_feed_run),
    "download": (_download_setup, _download_case, _download_run),
}


# ----------------------------------------------------------------------------- worker


def _case_rng(seed: int, target: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{target}:{i}")


def _innermost(tb) -> str:
    frames = traceback.extract_tb(tb)
    if not frames:
        return "?"
    f = frames[-1]
    return f"{os.path.relpath(f.filename, ROOT) if f.filename.startswith(str(ROOT)) else f.filename}:{f.lineno} in {f.name}"


def _worker(target, seed, start, counter, results, memory_gb, stop_at, end=None):
    import warnings

    warnings.simplefilter("ignore")
    # libtiff and friends print to fd 2 for every damaged file; keep the report readable
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    if memory_gb:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    from staredge.errors import StarEdgeError

    setup, make_case, run = TARGETS[target]
    counter.value = -2  # setting up (an LM target exports its seed artifact): not a hang
    try:
        st = setup()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops
        results.put((-1, "setup-failed", 0.0, {"type": type(exc).__name__, "message": str(exc)[:300],
                                               "where": _innermost(exc.__traceback__)}))
        counter.value = -1
        return
    i = start
    while time.time() < stop_at and (end is None or i < end):
        counter.value = i
        rng = _case_rng(seed, target, i)
        try:
            case = make_case(i, rng, st)
        except Exception as exc:  # noqa: BLE001 - a bug of the mutator, not of StarEdge: report it as one
            results.put((i, "untyped", 0.0, {"type": f"fuzzer bug: {type(exc).__name__}", "message": str(exc)[:300],
                                             "where": _innermost(exc.__traceback__)}))
            i += 1
            continue
        t0 = time.perf_counter()
        try:
            run(case, st)
            kind, detail = "ok", None
        except StarEdgeError:
            kind, detail = "typed", None
        except BaseException as exc:  # noqa: BLE001 - the fuzzer's job is to see everything
            kind = "untyped"
            detail = {"type": type(exc).__name__, "message": str(exc)[:300], "where": _innermost(exc.__traceback__)}
        dt = time.perf_counter() - t0
        results.put((i, kind, dt, detail))
        i += 1
    counter.value = -1


def fuzz_target(target: str, minutes: float, seed: int, out: Path, hang_s: float, memory_gb: float,
                cases: int | None = None) -> dict:
    """Run one target for ``minutes`` (or until ``cases`` cases ran: cases 0..cases-1, the same
    every run); returns its counts."""
    ctx = mp.get_context("fork")
    stop_at = time.time() + minutes * 60
    counts = {"ok": 0, "typed": 0, "untyped": 0, "hangs": 0, "slowest_s": 0.0, "slowest_case": None,
              "untyped_kinds": {}}
    start = 0
    setup, make_case, _ = TARGETS[target]
    state_for_replay = None
    def take(result) -> None:
        nonlocal state_for_replay, done_max
        i, kind, dt, detail = result
        if kind == "setup-failed":
            raise RuntimeError(f"fuzz target {target}: setup failed: {detail['type']}: {detail['message']} "
                               f"at {detail['where']}")
        done_max = max(done_max, i)
        counts[kind] += 1
        if dt > counts["slowest_s"]:
            counts["slowest_s"], counts["slowest_case"] = round(dt, 3), i
        if kind == "untyped":
            key = f"{detail['type']} @ {detail['where']}"
            counts["untyped_kinds"][key] = counts["untyped_kinds"].get(key, 0) + 1
            if counts["untyped_kinds"][key] <= 3:
                state_for_replay = state_for_replay or setup()
                _save_finding(out, target, seed, i, make_case, state_for_replay, detail)

    done_max = -1
    while time.time() < stop_at and (cases is None or start < cases):
        # -2 (setting up, not a hang) from the fork on: the worker's imports (torch) come before its
        # setup, and a counter starting at `start` charged them to that case (a false hang under load)
        counter = ctx.Value("q", -2)
        results = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(target, seed, start, counter, results, memory_gb, stop_at, cases),
                           daemon=True)
        proc.start()
        last_i, last_change, killed = counter.value, time.time(), False
        try:
            while proc.is_alive():
                time.sleep(0.2)
                while not results.empty():
                    take(results.get())
                if counter.value != last_i:
                    last_i, last_change = counter.value, time.time()
                elif counter.value >= 0 and time.time() - last_change > hang_s:
                    proc.kill()
                    proc.join()
                    killed = True
                    counts["hangs"] += 1
                    state_for_replay = state_for_replay or setup()
                    _save_finding(out, target, seed, last_i, make_case, state_for_replay,
                                  {"type": "HANG", "message": f"no result after {hang_s} s", "where": "?"})
                    break
            if not killed:  # what the worker queued just before it ended
                import queue

                try:
                    while True:
                        take(results.get(timeout=1.0))
                except queue.Empty:
                    pass
        finally:  # never leave a worker behind (an error above, Ctrl-C)
            if proc.is_alive():
                proc.kill()
            proc.join()
        if counter.value == -2:
            raise RuntimeError(f"fuzz target {target}: the worker died while setting up (exit {proc.exitcode})")
        if proc.exitcode not in (0, None, -9) and counter.value >= 0:
            # killed by the OS (e.g. out of memory): record it like a crash and go on
            counts["untyped"] += 1
            key = f"worker died (exit {proc.exitcode})"
            counts["untyped_kinds"][key] = counts["untyped_kinds"].get(key, 0) + 1
        # the next case: after the last result, after a hung or crashing case (counter.value)
        start = max(done_max + 1, counter.value + 1, start + (1 if counter.value >= 0 else 0))
    counts["cases"] = counts["ok"] + counts["typed"] + counts["untyped"] + counts["hangs"]
    counts["minutes"] = minutes
    return counts


def _safe_repr(obj, limit: int = 500) -> str:
    try:
        return repr(obj)[:limit]
    except ValueError:  # an int over the int-string limit
        return f"<{type(obj).__name__} that cannot be printed>"


def _save_finding(out: Path, target: str, seed: int, i: int, make_case, st, detail: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    try:
        case = make_case(i, _case_rng(seed, target, i), st)
    except Exception as exc:  # noqa: BLE001 - a mutator bug (reported as such by the worker)
        case = f"<make_case failed: {type(exc).__name__}: {exc}>"
    data = case if isinstance(case, bytes) else case[1] if isinstance(case, tuple) and isinstance(case[1], bytes) else None
    if data is not None:
        (out / f"{target}-{i}.bin").write_bytes(data)
    with open(out / "findings.jsonl", "a") as fh:
        fh.write(json.dumps({"target": target, "case": i, "seed": seed, **detail,
                             "input": None if data is not None else _safe_repr(case)}) + "\n")


def replay(spec: str, seed: int) -> int:
    """Run one case in this process and show what it raises (``--replay image:1234``)."""
    target, _, i = spec.partition(":")
    setup, make_case, run = TARGETS[target]
    st = setup()
    case = make_case(int(i), _case_rng(seed, target, int(i)), st)
    print(f"case {spec}: {_safe_repr(case, 300)}")
    t0 = time.perf_counter()
    try:
        run(case, st)
        print("ok")
    finally:
        print(f"{time.perf_counter() - t0:.3f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--minutes", type=float, default=10.0, help="per target (default 10)")
    ap.add_argument("--cases", type=int, default=None,
                    help="stop each target after this many cases (0..N-1; a fixed budget), or at --minutes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=10.0, help="a case running longer is a hang (default 10)")
    ap.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit of the worker (default 4)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-out"))
    ap.add_argument("--replay", default=None, metavar="TARGET:I")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.seed)
    summary = {}
    for target in args.targets:
        t0 = time.time()
        summary[target] = fuzz_target(target, args.minutes, args.seed, args.out, args.hang_s, args.memory_gb,
                                      args.cases)
        c = summary[target]
        print(f"{target}: {c['cases']:,} cases in {(time.time() - t0) / 60:.1f} min: {c['ok']:,} ok, "
              f"{c['typed']:,} typed errors, {c['untyped']} untyped, {c['hangs']} hangs; slowest "
              f"{c['slowest_s']} s (case {c['slowest_case']})", flush=True)
        for k, n in sorted(c["untyped_kinds"].items(), key=lambda kv: -kv[1]):
            print(f"    {n:6d}  {k}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    bad = sum(c["untyped"] + c["hangs"] for c in summary.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
