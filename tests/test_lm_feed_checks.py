"""Issue 23: the ids fed to a decode stream are checked once, for every runtime, before any
runtime sees them.

``StepperSession.feed`` (what every text backend's ``open_session()`` returns, and what the
one decode loop drives) runs :func:`staredge.decoding.check_token_ids`: wrong shapes, dtypes
and out-of-range ids are a :class:`~staredge.errors.ConfigError` naming the problem, never a
``TypeError`` / ``ValueError`` / ``OverflowError`` from numpy or a runtime (or a float or
bool silently truncated into an id), and a refused feed leaves the stream as it was.
Parametrised over the LM runtimes (the shared small artifacts of every format) and the
PyTorch engine. Before this check, ``scripts/fuzz.py --replay lm-feed:4`` (an iterator)
raised ``TypeError: object of type 'list_iterator' has no len()``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from staredge.decoding import check_token_ids
from staredge.errors import ConfigError

VOCAB = 259

#: (case id, ids, words the message must hold)
BAD_IDS = [
    ("iterator", lambda: iter([1, 2]), ["iterator", "list(ids)"]),
    ("generator", lambda: (i for i in [1, 2]), ["iterator"]),
    ("dict", lambda: {1: 2}, ["dict"]),
    ("set", lambda: {1, 2}, ["set"]),
    ("str", lambda: "hello", ["str", "tokenizer"]),
    ("bytes", lambda: b"hello", ["bytes", "tokenizer"]),
    ("none", lambda: None, ["NoneType"]),
    ("bare-int", lambda: 3, ["single int", "[3]"]),
    ("bare-float", lambda: 3.5, ["float"]),
    ("empty-list", lambda: [], ["empty"]),
    ("empty-tuple", lambda: (), ["empty"]),
    ("empty-array", lambda: np.zeros((0,), np.int64), ["empty"]),
    ("nested-list", lambda: [[1, 2]], ["ids[0]", "nested"]),
    ("floats", lambda: [1.0, 2.0], ["ids[0]", "float"]),
    ("half-floats", lambda: [1, 2.5], ["ids[1]", "float"]),
    ("bools", lambda: [True, False], ["ids[0]", "bool"]),
    ("numpy-bool", lambda: [np.True_], ["ids[0]", "bool"]),
    ("none-in-list", lambda: [1, None], ["ids[1]", "NoneType"]),
    ("str-in-list", lambda: ["1"], ["ids[0]", "str"]),
    ("negative", lambda: [5, -1], ["-1", "ids[1]", "0..258"]),
    ("vocab", lambda: [VOCAB], [str(VOCAB), "ids[0]", "0..258"]),
    ("int64-overflow", lambda: [2**63], [str(2**63), "0..258"]),
    ("huge-negative", lambda: [-(2**63)], ["0..258"]),
    ("array-2d-batch", lambda: np.array([[1, 2]]), ["(1, 2)", "ids[0]"]),
    ("array-2d", lambda: np.zeros((2, 2), np.int64), ["(2, 2)"]),
    ("array-3d", lambda: np.zeros((1, 1, 1), np.int64), ["(1, 1, 1)"]),
    ("array-0d", lambda: np.array(5), ["()"]),
    ("array-float32", lambda: np.array([1, 2], np.float32), ["float32", "astype"]),
    ("array-float16", lambda: np.array([1, 2], np.float16), ["float16"]),
    ("array-bool", lambda: np.array([1, 0], bool), ["bool"]),
    ("array-complex", lambda: np.array([1, 2], np.complex64), ["complex64"]),
    ("array-object", lambda: np.array([1, 2**70], dtype=object), ["object"]),
    ("array-uint64-huge", lambda: np.array([2**64 - 1], np.uint64), [str(2**64 - 1), "0..258"]),
    ("array-out-of-range", lambda: np.array([3, 300, 4], np.int32), ["300", "ids[1]", "0..258"]),
    ("array-negative", lambda: np.array([3, -7], np.int8), ["-7", "ids[1]"]),
]


@pytest.mark.parametrize("case, make, words", BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_check_token_ids_refuses_with_a_config_error(case, make, words):
    with pytest.raises(ConfigError) as info:
        check_token_ids(make(), VOCAB)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


GOOD_IDS = [
    ("list", lambda: [256, 84, 104], [256, 84, 104]),
    ("tuple", lambda: (256, 84, 104), [256, 84, 104]),
    ("range", lambda: range(3, 6), [3, 4, 5]),
    ("numpy-scalars", lambda: [np.int64(256), np.uint8(84), np.int32(104)], [256, 84, 104]),
    ("numpy-0d", lambda: [np.array(256), 84], [256, 84]),
    ("int32-array", lambda: np.array([256, 84, 104], np.int32), [256, 84, 104]),
    ("uint8-array", lambda: np.array([0, 84, 255], np.uint8), [0, 84, 255]),
    ("uint64-array", lambda: np.array([258], np.uint64), [258]),
    ("edges", lambda: [0, VOCAB - 1], [0, VOCAB - 1]),
]


@pytest.mark.parametrize("case, make, want", GOOD_IDS, ids=[c[0] for c in GOOD_IDS])
def test_check_token_ids_accepts_sequences_and_integer_arrays(case, make, want):
    got = check_token_ids(make(), VOCAB)
    assert [int(t) for t in got] == want
    assert all(type(t) is int for t in got) if isinstance(got, list) else got.dtype == np.int64


class _NoIteration(np.ndarray):
    """An array that fails if anything loops over it element by element in Python."""

    def __iter__(self):
        raise AssertionError("the ids array was iterated in Python")

    def tolist(self):
        raise AssertionError("the ids array was converted to a list")


def test_the_per_step_check_is_cheap():
    """The decode loop's ``[token]`` comes back as the same list (no copy, no conversion),
    and an array is checked without a Python loop over its ids (vectorised)."""
    one = [42]
    assert check_token_ids(one, VOCAB) is one
    arr = np.arange(10_000, dtype=np.int64) % VOCAB
    got = check_token_ids(arr.view(_NoIteration), VOCAB)
    assert got.dtype == np.int64 and np.array_equal(np.asarray(got), arr)
    with pytest.raises(ConfigError, match="ids\\[9999\\]"):
        bad = arr.copy()
        bad[-1] = VOCAB
        check_token_ids(bad.view(_NoIteration), VOCAB)


# ----------------------------------------------------------------------------- every runtime

RUNTIMES = ["onnx", "openvino", "tflite", "coreml", "pytorch"]


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """A text backend per LM format (the shared small artifacts) and the PyTorch engine's."""
    pytest.importorskip("torch")
    from lm_helpers import small_artifact, small_lm

    from staredge import Predictor

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for which in RUNTIMES:
            source = small_lm() if which == "pytorch" else small_artifact(tmp_path_factory, which)
            out[which] = Predictor(source, device="cpu", threads=1).backend
    yield out
    for backend in out.values():
        backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_bad_ids_fed_to_a_stream_are_config_errors_and_leave_it_intact(backends, which):
    """Every bad-id class through each runtime's own session: a ConfigError, the position
    unchanged, and the next valid feed gives what a fresh stream gives."""
    backend = backends[which]
    ref = backend.open_session()
    want = [ref.feed([256, 84]), ref.feed([104])]
    ref.close()
    session = backend.open_session()
    try:
        assert np.array_equal(session.feed([256, 84]), want[0])
        for case, make, words in BAD_IDS:
            with pytest.raises(ConfigError) as info:
                session.feed(make())
            assert words[0] in str(info.value), (which, case, str(info.value))
            assert session.position == 2, (which, case)
        with pytest.raises(ConfigError, match="all_rows"):
            session.feed([104], all_rows="yes")
        assert session.position == 2
        np.testing.assert_allclose(session.feed([104]), want[1], rtol=0, atol=1e-6)
    finally:
        session.close()


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_valid_id_containers_give_the_same_logits(backends, which):
    """A list, a tuple, numpy integers and integer arrays of any width are the same ids."""
    backend = backends[which]
    rows = []
    for ids in ([256, 84, 104], (256, 84, 104), [np.int64(256), np.int16(84), 104],
                np.array([256, 84, 104], np.int32), np.array([256, 84, 104], np.uint16)):
        session = backend.open_session()
        try:
            rows.append(session.feed(ids, all_rows=True))
        finally:
            session.close()
    for got in rows[1:]:
        np.testing.assert_allclose(got, rows[0], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNTIMES)
def test_a_prompt_past_the_context_is_refused_before_any_chunk_runs(backends, which):
    """Ids that would run past the context: LMContextError, and nothing of them was fed (the
    old chunker ran the chunks that fit first, leaving a half-fed stream)."""
    from staredge.runtimes.lm import LMContextError

    backend = backends[which]
    session = backend.open_session()
    try:
        context = session.stepper.max_context
        first = [256] + [84] * (context // 2 - 1)
        session.feed(first)
        with pytest.raises(LMContextError, match="context"):
            session.feed([84] * (context - len(first) + 1))
        assert session.position == len(first)
        session.feed([84] * (context - len(first)))  # exactly the rest still fits
        assert session.position == context
    finally:
        session.close()
