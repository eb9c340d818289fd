"""Issue 23: streams used wrongly fail with typed errors naming the argument, on every runtime.

A closed session fed again, one stream iterated from two threads at once, ``max_new_tokens``
that is not a count, ``stop`` given as a dict: each is a
:class:`~staredge.errors.StarEdgeError` (a ``ConfigError``) saying what was wrong, never
``'NoneType' object has no attribute ...``, ``generator already executing`` or a silent
acceptance. Parametrised over the LM runtimes (the small artifacts of every format) and the
PyTorch engine.
"""

from __future__ import annotations

import threading
import warnings

import pytest

pytest.importorskip("torch")

from lm_helpers import small_artifact, small_lm  # noqa: E402
from staredge.errors import ConfigError, StarEdgeError, StreamError  # noqa: E402

SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite", "coreml": ".mlpackage"}


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    """A Predictor per LM format (the shared small artifacts) and the PyTorch engine's backend."""
    from staredge import Predictor

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in SUFFIX:
            out[fmt] = Predictor(small_artifact(tmp_path_factory, fmt), device="cpu", threads=1)
        out["pytorch"] = Predictor(small_lm(), device="cpu", threads=1)
    return out


RUNTIMES = ["onnx", "openvino", "tflite", "coreml", "pytorch"]


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_a_closed_session_used_again_is_a_stream_error(predictors, which):
    session = predictors[which].backend.open_session()
    assert session.feed([256, 84]).shape[-1] == 259
    session.close()
    session.close()  # idempotent
    with pytest.raises(StreamError, match="closed"):
        session.feed([104])


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_a_closed_backend_used_again_is_a_stream_error(tmp_path_factory, which):
    """Closing the backend ends its streams; a new stream is refused by name, not with
    ``'NoneType' object has no attribute ...``."""
    from staredge import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = small_lm() if which == "pytorch" else small_artifact(tmp_path_factory, which)
        predictor = Predictor(source, device="cpu", threads=1)
    live = predictor.backend.open_session()
    predictor.backend.close()
    assert live.closed
    with pytest.raises(StreamError, match="closed"):
        predictor.generate("The", max_new_tokens=2)


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_one_stream_from_two_threads_is_a_stream_error(predictors, which, monkeypatch):
    """Thread A is inside the stream's next(); thread B's next() gets a typed error at once."""
    from staredge.runtimes.lm import StepperSession

    inside, release = threading.Event(), threading.Event()
    real_feed = StepperSession.feed

    def slow_feed(self, ids, all_rows=False):
        inside.set()
        release.wait(30)
        return real_feed(self, ids, all_rows)

    monkeypatch.setattr(StepperSession, "feed", slow_feed)
    stream = predictors[which].stream("The", max_new_tokens=4, temperature=0)
    errors: list[BaseException] = []

    def consume():
        try:
            list(stream)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=consume)
    worker.start()
    assert inside.wait(30)
    with pytest.raises(StreamError, match="another thread"):
        next(stream)
    release.set()
    worker.join(30)
    assert not worker.is_alive() and not errors


@pytest.mark.parametrize("value", ["lots", "abc", -1, 2.5, None])
def test_max_new_tokens_that_is_not_a_count_names_the_argument(predictors, value):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        predictors["onnx"].stream("The", max_new_tokens=value)


@pytest.mark.parametrize("stop", [{}, {"a": 1}])
def test_stop_given_as_a_mapping_is_refused(predictors, stop):
    with pytest.raises(ConfigError, match="stop"):
        predictors["onnx"].stream("The", max_new_tokens=2, stop=stop)


def test_the_errors_are_star_edge_errors():
    assert issubclass(StreamError, ConfigError) and issubclass(StreamError, StarEdgeError)
