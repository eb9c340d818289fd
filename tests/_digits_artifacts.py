"""Shared test data: the digits model exported to every format once per test session.

Exporting to TFLite and CoreML takes tens of seconds, so the runtime, predictor, bad-input
and demo tests share one run of the demo job (``run_demo`` exports, validates and
classifies). Under pytest-xdist the workers share the session's base temporary folder:
the first worker runs the job under a file lock and writes a JSON summary, the others
read it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from filelock import FileLock

#: Held-out digits the shared demo run classifies (a reduced subset of the 450).
DEMO_LIMIT = 24


def shared_demo_summary(tmp_path_factory, worker_id: str) -> dict:
    """The summary of one ``run_demo`` over every available format (rows as dicts)."""
    from staredge.commands.demo import run_demo

    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent
    out = root / "digits_artifacts"
    summary_file = root / "digits_demo_summary.json"
    with FileLock(str(root / "digits_artifacts.lock")):
        if summary_file.is_file():
            return json.loads(summary_file.read_text())
        summary = run_demo(out, limit=DEMO_LIMIT, threads=1, repeats=2, progress=False)
        data = dict(summary, rows=[dataclasses.asdict(r) for r in summary["rows"]])
        summary_file.write_text(json.dumps(data, default=str))
        return data


def artifact_paths(summary: dict) -> dict[str, Path]:
    """format → artifact path, PyTorch checkpoint included."""
    return {row["format"]: Path(row["path"]) for row in summary["rows"]}


def heldout_images(n: int):
    """The first ``n`` held-out digits as 8x8 uint8 arrays, with their labels."""
    from staredge.commands.demo import digits_images, heldout_indices

    images, targets = digits_images()
    idx = heldout_indices()[:n]
    return [images[i] for i in idx], [int(targets[i]) for i in idx]
