"""CoreML LM artifacts (iOS 18 stateful with fp16 state, and the explicit past/present form),
converted with coremltools and run by StarEdge's MIL executor (read_state / write_state),
token by token vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from _lm_cases import CONTEXT, MIXED, baseline, small_model
from lm_helpers import assert_fp16_state_passes, export, export_and_check, shipped_fixture, validate_path
from staredge.exporters.lm_validate import FP16_MIN_GREEDY, FP16_STATE_ATOL, validate_lm
from staredge.metadata import read_metadata
from staredge.runtimes.lm import load_lm_artifact

pytest.importorskip("coremltools")

stateful = shipped_fixture("coreml", stateful=True)


def test_stateful_shipped_model(stateful):
    model, path = stateful
    stepper = load_lm_artifact(path)
    assert stepper.stateful and set(stepper.states) == {f"state_{k}" for k in range(len(stepper.state_spec))}
    assert all(a.dtype == np.float16 for a in stepper.states.values())
    result = validate_lm(stepper, model, atol=FP16_STATE_ATOL, min_greedy=FP16_MIN_GREEDY)
    assert result["decode_steps"] >= 64 and result["max_abs_diff"] <= FP16_STATE_ATOL, result
    assert result["greedy_agree"] >= FP16_MIN_GREEDY and result["passed"], result
    # fp16 state costs accuracy: measurably more than the fp32 artifacts' 1e-5
    assert result["max_abs_diff"] > 1e-4


def test_stateful_metadata_and_reset(stateful):
    model, path = stateful
    meta = read_metadata(path)
    assert meta.task == "text-generation" and meta.extra["coreml"]["stateful"]
    assert meta.extra["coreml"]["deployment_target"] == "iOS18"
    assert meta.lm["state_bytes"] == sum(int(np.prod(s["shape"])) * 2 for s in meta.lm["state"])
    stepper = load_lm_artifact(path)
    a = stepper.prefill([256, 84, 104, 101])
    assert any(v.any() for v in stepper.states.values())
    stepper.reset()
    assert not any(v.any() for v in stepper.states.values())
    np.testing.assert_array_equal(a, stepper.prefill([256, 84, 104, 101]))


@pytest.mark.slow
def test_stateful_differential_genome(tmp_path):
    """Diff-GConv-2, Diff-SA-2, SA-2 with sharing (coremltools needs λ precomputed for these)."""
    name, genome = MIXED[1]
    model = small_model(genome, seed=sum(map(ord, name)))
    path = export("coreml", model, tmp_path / "m.mlpackage", max_context=CONTEXT, stateful=True)
    assert_fp16_state_passes(validate_path(path, model, fp16_state=True))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["transformer_pp"])
def test_explicit_form_fp32(tmp_path, which):
    model = baseline(which)
    export_and_check("coreml", model, tmp_path / "m.mlpackage", max_context=CONTEXT, stateful=False)
    assert not load_lm_artifact(tmp_path / "m.mlpackage").stateful


@pytest.mark.slow
def test_fp16x2_state_fixes_the_short_conv_genome(tmp_path):
    """mixed-share-9 (Diff-GConv-1, GConv-1, GConv-2): its short-conv rings rounded to fp16 after
    every step move the logits by 1.2e-2, over the fp16-state tolerance; holding each state as
    a high/low fp16 pair brings the artifact within the fp32 criteria (1e-4, 128/128)."""
    name, genome = next((n, g) for n, g in MIXED if n == "mixed-share-9")
    model = small_model(genome, seed=sum(map(ord, name)))
    fp16 = validate_path(export("coreml", model, tmp_path / "a.mlpackage", max_context=CONTEXT), model, fp16_state=True)
    assert fp16["max_abs_diff"] > FP16_STATE_ATOL and not fp16["passed"], fp16  # the documented failure
    path = export("coreml", model, tmp_path / "b.mlpackage", max_context=CONTEXT, state_precision="fp16x2")
    meta = read_metadata(path)
    assert meta.extra["coreml"]["state_dtype"] == "float16x2"
    assert meta.lm["state_bytes"] == sum(int(np.prod(s["shape"])) * 4 for s in meta.lm["state"])
    stepper = load_lm_artifact(path)
    assert set(stepper.states) == {f"state_{k}{t}" for k in range(len(meta.lm["state"])) for t in ("", "_lo")}
    assert all(a.dtype == np.float16 for a in stepper.states.values())
    result = validate_lm(stepper, model)
    assert result["max_abs_diff"] <= 1e-4 and result["greedy_identical"] and result["passed"], result
