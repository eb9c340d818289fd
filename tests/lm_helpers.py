"""Shared helpers of the LM artifact tests (tests/test_lm_*.py): the genome cases, the shipped
model's artifacts (each converted once per test run, shared by modules and xdist workers),
and the pass criteria.

Models come from ``_lm_cases`` (the parity suite's random genomes at small width, both
baselines); the exporter of each format is the one the format table names
(``FormatSpec.lm_exporter``), so the tests exercise the same dispatch as ``staredge export``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import pytest
from filelock import FileLock  # a torch dependency

from _lm_cases import MIXED, baseline, small_model
from staredge.exporters.lm_export import lm_formats
from staredge.exporters.lm_validate import FP16_MIN_GREEDY, FP16_STATE_ATOL, FP32_ATOL, MIN_DECODE_STEPS, validate_lm
from staredge.formats import get_format
from staredge.runtimes.lm import load_lm_artifact

#: Context of the shipped model's test artifacts (the 97-token prompt + 128 tokens fit).
SHIPPED_CONTEXT = 256
#: The six mixed genomes (all 17 classes, sharing, residual groups) and both baselines.
GENOME_CASES = MIXED + [("transformer_pp", None), ("striped_mamba", None)]
GENOME_IDS = [n for n, _ in GENOME_CASES]


def case_model(name: str, genome):
    """The seeded small model of a :data:`GENOME_CASES` entry."""
    return baseline(name) if genome is None else small_model(genome, seed=sum(map(ord, name)))


@functools.lru_cache(maxsize=1)
def shipped_model():
    """The shipped ``star_lm_pydoc`` model (loaded once per process)."""
    from staredge.generation import load_lm

    return load_lm().model


def _shared_root(tmp_path_factory) -> Path:
    """A folder of this test run that every xdist worker sees (the run's base temp)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "lm_artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def export(fmt: str, model, path, **options) -> Path:
    """Export ``model`` with the format table's LM exporter of ``fmt``."""
    return get_format(fmt).lm_exporter_function()(model, path, **options)


def shipped_artifact(tmp_path_factory, fmt: str, **options) -> Path:
    """The shipped model exported to ``fmt`` at :data:`SHIPPED_CONTEXT` (plus ``options``),
    converted once per test run: later calls, from any module or xdist worker, get the same
    file (a lock serialises the first conversion)."""
    options = {"max_context": SHIPPED_CONTEXT, "name": "star_lm_pydoc", **options}
    key = hashlib.sha1(repr(sorted(options.items())).encode()).hexdigest()[:10]
    root = _shared_root(tmp_path_factory)
    path = root / f"star_lm_pydoc_{fmt}_{key}{lm_formats()[fmt]}"
    with FileLock(str(root / f"{path.name}.lock")):
        if not path.exists():
            export(fmt, shipped_model(), path, **options)
    return path


#: The small hybrid LM of the engine, stream and metadata tests (attention, so it has a kv
#: state sized by the context; convolutions and a recurrence): context and prefill chunk.
SMALL_CONTEXT = 32
SMALL_CHUNK = 4


@functools.lru_cache(maxsize=1)
def small_lm():
    """The seeded small hybrid LM of :func:`small_artifact`."""
    return small_model(MIXED[0][1], seed=3, max_seq_len=64)


def small_artifact(tmp_path_factory, fmt: str) -> Path:
    """:func:`small_lm` exported to ``fmt`` (context :data:`SMALL_CONTEXT`, chunk
    :data:`SMALL_CHUNK`), converted once per test run and shared like :func:`shipped_artifact`."""
    import warnings

    root = _shared_root(tmp_path_factory)
    path = root / f"small_lm_{fmt}{lm_formats()[fmt]}"
    with FileLock(str(root / f"{path.name}.lock")):
        if not path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(fmt, small_lm(), path, max_context=SMALL_CONTEXT, prefill_chunk=SMALL_CHUNK)
    return path


def shipped_fixture(fmt: str, **options):
    """A module-scoped fixture returning ``(model, path)`` of :func:`shipped_artifact`."""

    @pytest.fixture(scope="module")
    def shipped(tmp_path_factory):
        return shipped_model(), shipped_artifact(tmp_path_factory, fmt, **options)

    return shipped


def assert_passes(result: dict) -> None:
    """fp32 artifacts: >= 64 decode steps, max |Δ| <= 1e-4, all greedy tokens identical."""
    assert result["decode_steps"] >= MIN_DECODE_STEPS and result["max_abs_diff"] <= FP32_ATOL, result
    assert result["greedy_identical"] and result["passed"], result


def assert_fp16_state_passes(result: dict) -> None:
    """fp16-state artifacts: their tolerance (1e-2) and the first 32 greedy tokens identical."""
    assert result["decode_steps"] >= MIN_DECODE_STEPS and result["max_abs_diff"] <= FP16_STATE_ATOL, result
    assert result["greedy_agree"] >= FP16_MIN_GREEDY and result["passed"], result


def validate_path(path, model, fp16_state: bool = False) -> dict:
    """Validate the artifact at ``path`` through its runtime's stepper against ``model``."""
    if fp16_state:
        return validate_lm(load_lm_artifact(path), model, atol=FP16_STATE_ATOL, min_greedy=FP16_MIN_GREEDY)
    return validate_lm(load_lm_artifact(path), model)


def export_and_check(fmt: str, model, path, **options) -> dict:
    """Export, validate (fp32 criteria) and assert it passes; returns the numbers."""
    result = validate_path(export(fmt, model, path, **options), model)
    assert_passes(result)
    return result


__all__ = ["SHIPPED_CONTEXT", "GENOME_CASES", "GENOME_IDS", "case_model", "shipped_model", "shipped_artifact",
           "shipped_fixture", "export", "assert_passes", "assert_fp16_state_passes", "validate_path",
           "export_and_check"]
