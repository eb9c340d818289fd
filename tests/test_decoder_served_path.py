"""Issue 19: what export validates for a language model is the path ``Predictor.stream`` serves.

For every LM format the export's validation is spied on: the stepper it receives must be
the very class, on the very engine class with the same settings (threads in effect,
device), that ``Predictor(path)`` hands a stream; and the greedy tokens the validation
decoded must be the token ids ``Predictor(path).stream(..., temperature=0)`` produces for the
same prompt (CoreML: through the MIL reference executor off macOS). One decode loop
(:func:`staredge.decoding.decode_tokens`) runs both.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("torch")

from lm_helpers import small_lm  # noqa: E402

#: The small model's whole context: validation fits it (a shortened prompt, fewer steps).
CONTEXT = 64


@pytest.fixture(scope="module")
def model():
    return small_lm()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite", "coreml"])
def test_export_validation_runs_the_served_stepper(fmt, model, tmp_path, monkeypatch):
    import staredge.exporters.lm_validate as lm_validate
    from staredge import Predictor
    from staredge.exporters import export

    seen: dict = {}
    real = lm_validate.validate_lm

    def spy(stepper, model, *args, **kwargs):
        run_greedy = stepper.greedy

        def greedy(prompt, new_tokens, record=None):
            seen["prompt"] = list(prompt)
            seen["tokens"] = run_greedy(prompt, new_tokens, record=record)
            return seen["tokens"]

        stepper.greedy = greedy
        seen.update(stepper=type(stepper), engine=type(stepper.engine),
                    threads=stepper.engine.threads_in_effect(), device=stepper.engine.device,
                    chunk=stepper.prefill_chunk)
        return real(stepper, model, *args, **kwargs)

    monkeypatch.setattr(lm_validate, "validate_lm", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MIL reference executor's notice
        report = export(model, [fmt], tmp_path, max_context=CONTEXT, prefill_chunk=4)
        row = report.artifacts[0]
        assert row.error is None and row.passed, row
        predictor = Predictor(row.path, device="cpu")
        served = predictor.backend.new_stepper()
        assert type(served) is seen["stepper"], (type(served), seen["stepper"])
        assert type(served.engine) is seen["engine"]
        assert served.engine.threads_in_effect() == seen["threads"] and served.engine.device == seen["device"]
        assert served.prefill_chunk == seen["chunk"] == 4
        assert row.validation["stepper"] == type(served).__name__
        stream = predictor.stream(seen["prompt"], max_new_tokens=len(seen["tokens"]), temperature=0,
                                  add_bos=False, ignore_eos=True)
        stream.text()
    assert stream.stats.generated_ids == seen["tokens"], "the served stream decoded other tokens than validation"
    assert len(seen["tokens"]) >= 16
