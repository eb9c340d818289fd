"""CoreML LM artifacts (iOS 18 stateful with fp16 state, and the explicit past/present form),
converted with coremltools and run by StarEdge's MIL executor (read_state / write_state),
vs PyTorch. Stateful packages are multifunction: ``main`` (decode, T = 1) and ``prefill``
(T = ``prefill_chunk``) over the same states and weights."""

from __future__ import annotations

import numpy as np
import pytest

from _lm_cases import CONTEXT, MIXED, baseline, small_model
from lm_helpers import assert_fp16_state_passes, export, export_and_check, shipped_fixture, validate_path
from staredge.errors import ConfigError
from staredge.exporters.lm_validate import FP16_MIN_GREEDY, FP16_STATE_ATOL, prompt_ids, validate_lm
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
    # the prompt went through the prefill function in chunks of 16; greedy is still 128/128
    assert result["prefill_chunk"] == 16 and result["greedy_identical"], result
    # fp16 state costs accuracy: measurably more than the fp32 artifacts' 1e-5
    assert result["max_abs_diff"] > 1e-4


def test_stateful_package_has_decode_and_prefill_functions(stateful):
    """One package, two functions over the same states and one copy of the weights (prefill's
    only blobs of its own are T-dependent constants, under 1% of the weight file)."""
    import struct

    from staredge.runtimes.mil_reference import BlobFile, load_model_spec

    _, path = stateful
    spec = load_model_spec(path)
    assert sorted(spec.mlProgram.functions) == ["main", "prefill"] and spec.description.defaultFunctionName == "main"
    meta = read_metadata(path)
    assert meta.lm["prefill_chunk"] == 16 and meta.extra["coreml"]["functions"] == {"main": 1, "prefill": 16}
    stepper = load_lm_artifact(path)
    main, prefill = stepper.executor, stepper.prefill_executor
    assert main.inputs["input_ids"].shape == (1, 1) and prefill.inputs["input_ids"].shape == (1, 16)
    assert prefill.state_shapes == main.state_shapes and prefill._weights is main._weights
    funcs = spec.mlProgram.functions
    offsets = {fn: {op.attributes["val"].blobFileValue.offset
                    for op in funcs[fn].block_specializations[funcs[fn].opset].operations
                    if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"}
               for fn in ("main", "prefill")}
    weights = BlobFile(path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin")
    assert offsets["main"] <= offsets["prefill"] and len(offsets["main"] | offsets["prefill"]) == weights.count
    own = sum(struct.unpack_from("<IIQ", weights._data, off)[2] for off in offsets["prefill"] - offsets["main"])
    assert own < 0.01 * len(weights._data), own


def test_stateful_chunked_prefill_equals_token_by_token(stateful):
    """The 97-token validation prompt: 6 calls of the prefill function (16 tokens) + 1 decode
    call, vs 97 decode calls; every logit row within the fp16-state tolerance, same argmax,
    and both within it of PyTorch's parallel forward."""
    import torch

    model, path = stateful
    ids = prompt_ids()
    stepper = load_lm_artifact(path)
    calls = []
    run_prefill = stepper.prefill_executor.predict
    stepper.prefill_executor.predict = lambda feed, states: calls.append(feed["input_ids"].shape) or run_prefill(feed, states)
    chunked = stepper.prefill(ids)
    assert calls == [(1, 16)] * (len(ids) // 16) and stepper.position == len(ids)
    stepper.reset()
    single = np.concatenate([stepper.step([t]) for t in ids])
    diff = float(np.abs(chunked - single).max())
    assert diff <= FP16_STATE_ATOL and (chunked.argmax(-1) == single.argmax(-1)).all(), diff
    with torch.no_grad():
        ref = model(torch.tensor([ids]))[0].float().numpy()
    assert np.abs(chunked - ref).max() <= FP16_STATE_ATOL and np.abs(single - ref).max() <= FP16_STATE_ATOL
    stepper.reset()
    with pytest.raises(ConfigError, match="1 or 16 tokens"):
        stepper.step(ids[:5])


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
