"""A fixed, seeded budget of scripts/fuzz.py's issue 23 targets in the suite: LM metadata
(mutated ``lm`` sections), LM stream feeds, and the download client against a loopback server
sending mutated responses. Property: every case returns or raises a StarEdgeError.

Case ``i`` of a target is a pure function of (seed 0, target, i): a failure here is
reproduced with ``.venv/bin/python scripts/fuzz.py --replay TARGET:I``. Longer runs:
``scripts/fuzz.py --targets lm-metadata lm-feed download --minutes 10``.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import pytest

from staredge.errors import StarEdgeError

_spec = importlib.util.spec_from_file_location("staredge_fuzz_script", Path(__file__).parents[1] / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

#: Cases per target: a few seconds each on this machine class (plus one tiny LM export).
BUDGET = {"lm-metadata": 120, "lm-feed": 300, "download": 40}


def _untyped(target: str, cases: int) -> list[str]:
    setup, make_case, run = fuzz.TARGETS[target]
    state = setup()
    found = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(cases):
                case = make_case(i, fuzz._case_rng(0, target, i), state)
                try:
                    run(case, state)
                except StarEdgeError:
                    continue
                except Exception as exc:  # noqa: BLE001 - the property under test
                    found.append(f"{target}:{i} {type(exc).__name__} at {fuzz._innermost(exc.__traceback__)}: "
                                 f"{str(exc)[:120]}")
    finally:  # the targets' setups leave a temporary folder, a backend or a loopback server
        if "backend" in state:
            state["backend"].close()
        if "server" in state:
            state["server"].server.shutdown()
            state["server"].server.server_close()
        shutil.rmtree(state["tmp"], ignore_errors=True)
    return found


@pytest.mark.parametrize("target", [
    "lm-metadata",
    "lm-feed",
    "download",
])
def test_fuzz_finds_nothing_untyped(target):
    found = _untyped(target, BUDGET[target])
    assert found == [], "\n".join(found[:10])
