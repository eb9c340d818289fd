"""Long mutation-fuzz run of StarEdge's parsers and loaders (outside CI).

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


TARGETS = {
    "image": (_image_setup, _image_case, _image_run),
    "genome": (_genome_setup, _genome_case, _genome_run),
    "checkpoint": (_checkpoint_setup, _checkpoint_case, _checkpoint_run),
    "metadata": (_metadata_setup, _metadata_case, _metadata_run),
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


def _worker(target, seed, start, counter, results, memory_gb, stop_at):
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
    st = setup()
    i = start
    while time.time() < stop_at:
        counter.value = i
        rng = _case_rng(seed, target, i)
        case = make_case(i, rng, st)
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


def fuzz_target(target: str, minutes: float, seed: int, out: Path, hang_s: float, memory_gb: float) -> dict:
    """Run one target for ``minutes``; returns its counts."""
    ctx = mp.get_context("fork")
    stop_at = time.time() + minutes * 60
    counts = {"ok": 0, "typed": 0, "untyped": 0, "hangs": 0, "slowest_s": 0.0, "slowest_case": None,
              "untyped_kinds": {}}
    start = 0
    setup, make_case, _ = TARGETS[target]
    state_for_replay = None
    while time.time() < stop_at:
        counter = ctx.Value("q", start)
        results = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(target, seed, start, counter, results, memory_gb, stop_at), daemon=True)
        proc.start()
        last_i, last_change = counter.value, time.time()
        while proc.is_alive():
            time.sleep(0.2)
            while not results.empty():
                i, kind, dt, detail = results.get()
                counts[kind] += 1
                if dt > counts["slowest_s"]:
                    counts["slowest_s"], counts["slowest_case"] = round(dt, 3), i
                if kind == "untyped":
                    key = f"{detail['type']} @ {detail['where']}"
                    counts["untyped_kinds"][key] = counts["untyped_kinds"].get(key, 0) + 1
                    if counts["untyped_kinds"][key] <= 3:
                        state_for_replay = state_for_replay or setup()
                        _save_finding(out, target, seed, i, make_case, state_for_replay, detail)
            if counter.value != last_i:
                last_i, last_change = counter.value, time.time()
            elif counter.value >= 0 and time.time() - last_change > hang_s:
                proc.kill()
                proc.join()
                counts["hangs"] += 1
                state_for_replay = state_for_replay or setup()
                _save_finding(out, target, seed, last_i, make_case, state_for_replay,
                              {"type": "HANG", "message": f"no result after {hang_s} s", "where": "?"})
                break
        proc.join()
        if proc.exitcode not in (0, None, -9) and counter.value >= 0:
            # killed by the OS (e.g. out of memory): record it like a crash and go on
            counts["untyped"] += 1
            key = f"worker died (exit {proc.exitcode})"
            counts["untyped_kinds"][key] = counts["untyped_kinds"].get(key, 0) + 1
        start = max(counter.value, last_i) + 1
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
    case = make_case(i, _case_rng(seed, target, i), st)
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
        summary[target] = fuzz_target(target, args.minutes, args.seed, args.out, args.hang_s, args.memory_gb)
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
