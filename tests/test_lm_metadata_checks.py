"""Issue 23: an LM artifact's metadata is checked against its graph at load, before any allocation.

Each case edits the ``staredge`` document of a real artifact of every LM format (with the
format's own metadata writer: ONNX ``metadata_props``, the OpenVINO ``.xml``, the TFLite
flatbuffer, the CoreML spec) and loads it with ``Predictor``: each disagreement is one
:class:`~staredge.errors.MetadataError` naming the field and its value (and, where the
graph decides, what the graph says), raised before any stream state is allocated.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")

from lm_helpers import SMALL_CONTEXT as CONTEXT  # noqa: E402
from lm_helpers import small_artifact  # noqa: E402
from staredge.errors import ConfigError, MetadataError  # noqa: E402

FORMATS = ["onnx", "openvino", "tflite", "coreml"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The shared small hybrid LM (attention, so a kv state sized by the context) in every format."""
    return {fmt: small_artifact(tmp_path_factory, fmt) for fmt in FORMATS}


def lying_copy(src: Path, dst_dir: Path, fmt: str, edit) -> Path:
    """A copy of ``src`` whose metadata document went through ``edit(doc)``."""
    from staredge.formats import get_format
    from staredge.metadata import read_metadata

    dst = dst_dir / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
        if fmt == "openvino":
            shutil.copy(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    doc = read_metadata(src).to_dict()
    edit(doc)
    get_format(fmt).write_metadata_text(dst, json.dumps(doc))
    return dst


def load(path: Path, monkeypatch):
    """``Predictor(path)`` with every stepper's state allocation recorded."""
    from staredge import Predictor
    from staredge.runtimes.coreml_lm import CoreMLReferenceLM
    from staredge.runtimes.litert_lm import LiteRTLM
    from staredge.runtimes.lm import LMStepper
    from staredge.runtimes.onnxruntime_lm import OnnxRuntimeLM
    from staredge.runtimes.openvino_lm import OpenVINOLM

    allocated = []
    for cls in (LMStepper, OnnxRuntimeLM, OpenVINOLM, LiteRTLM, CoreMLReferenceLM):
        real = cls.__dict__.get("reset")
        if real is not None:
            monkeypatch.setattr(cls, "reset", lambda self, _r=real: allocated.append(type(self)) or _r(self))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Predictor(path, device="cpu", threads=1)
        finally:
            load.allocated = allocated


def _state(doc, i=0):
    return doc["lm"]["state"][i]


def _kv(doc):
    return next(s for s in doc["lm"]["state"] if s["kind"] == "kv")


def _set(key, value):
    return lambda doc: doc["lm"].__setitem__(key, value)


def _grow_state(doc):
    s = _kv(doc)
    s["shape"] = [s["shape"][0], s["shape"][1] * 1000, s["shape"][2] * 1000, s["shape"][3]]


def _flip_dtype(doc):
    s = _kv(doc)
    s["dtype"] = "float32" if s.get("dtype") == "float16" else "float16"


def _swap_past_present(doc):
    s = _state(doc)
    s["input"], s["output"] = s["output"], s["input"]


def _cross_outputs(doc):
    """State 0 (a key) returns state 1's output (its value, the same shape) and the reverse."""
    a, b = _state(doc, 0), _state(doc, 1)
    a["output"], b["output"] = b["output"], a["output"]


def _misshaped_output(doc):
    """State 0 (a kv cache) returns state 2's output (a recurrence, another shape) and the reverse."""
    a, b = _state(doc, 0), _state(doc, 2)
    assert a["shape"] != b["shape"]
    a["output"], b["output"] = b["output"], a["output"]


def _duplicate(key):
    return lambda doc: _state(doc, 1).__setitem__(key, _state(doc, 0)[key])


#: (case id, edit, words the message must hold)
CASES = [
    ("missing-max_context", lambda d: d["lm"].pop("max_context"), ["lm.max_context", "missing"]),
    ("state-larger-than-graph", _grow_state, ["shape", "graph"]),
    ("max_context-8", _set("max_context", 8), ["lm.max_context", "8", "graph", str(CONTEXT)]),
    ("max_context-9999", _set("max_context", 9999), ["lm.max_context", "9999", "graph", str(CONTEXT)]),
    ("state-dtype", _flip_dtype, ["dtype", "graph"]),
    ("vocab-10", _set("vocab_size", 10), ["lm.vocab_size", "10", "259"]),
    ("prefill_chunk-0", _set("prefill_chunk", 0), ["lm.prefill_chunk", "0"]),
    ("prefill_chunk-negative", _set("prefill_chunk", -4), ["lm.prefill_chunk", "-4"]),
    ("prefill_chunk-1e6", _set("prefill_chunk", 10**6), ["lm.prefill_chunk", "1,000,000"]),
    ("max_context-0", _set("max_context", 0), ["lm.max_context", "0"]),
    ("max_context-negative", _set("max_context", -1), ["lm.max_context", "-1"]),
    ("empty-lm-section", lambda d: d.__setitem__("lm", {}), ["lm section", "empty"]),
    ("unknown-state-input", lambda d: _state(d).__setitem__("input", "past_nothing"),
     ["lm.state[0].input", "past_nothing", "no such state input"]),
    # the state checks of d383952 (each was a TypeError or a runtime's own error before)
    ("state-dtype-not-a-string", lambda d: _state(d).__setitem__("dtype", 16), ["lm.state[0].dtype", "is 16"]),
    ("state-kind-not-a-string", lambda d: _state(d).__setitem__("kind", ["kv"]),
     ["lm.state[0].kind", "['kv']", "string"]),
    ("past-present-swapped", _swap_past_present, ["lm.state[0].input", "present_key_values"]),
    ("state-outputs-crossed", _cross_outputs, ["lm.state[0] (key_values.0.key) pairs input", "past_X with present_X"]),
    ("unlisted-graph-state", lambda d: d["lm"]["state"].pop(), ["does not list", "13 entries"]),
    ("duplicated-state-name", _duplicate("name"), ["lm.state[1].name", "key_values.0.key", "appears twice"]),
    ("duplicated-state-input", _duplicate("input"), ["lm.state[1].input", "past_key_values", "appears twice"]),
    ("duplicated-state-output", _duplicate("output"), ["lm.state[1].output", "present_key_values", "appears twice"]),
    ("state-output-key-missing", lambda d: _state(d).pop("output"), ["lm.state[0]", "name, input and output"]),
    ("state-output-not-in-graph", lambda d: _state(d).__setitem__("output", "present_nothing"),
     ["lm.state[0]", "present_nothing"]),
    ("state-output-misshaped", _misshaped_output, ["lm.state[0]", "past_key_values", "present_ssm"]),
]
#: CoreML stateful packages bind their states by the ``coreml_state`` name, not ``input``.
COREML_STATE_CASE = (lambda d: _state(d).__setitem__("coreml_state", "state_nothing"),
                     ["lm.state[0].coreml_state", "state_nothing", "no such state"])
#: What the graph adds to the message, by how the format keeps its state: ONNX and TFLite
#: graphs return each state as an output (checked by name and shape); OpenVINO and CoreML
#: keep it inside (stateful), so only the past_X/present_X contract speaks for the output.
_RETURNED, _KEPT = ("onnx", "tflite"), ("openvino", "coreml")
EXTRA_WORDS = {
    **{("state-output-not-in-graph", f): ["lm.state[0].output", "no such output"] for f in _RETURNED},
    **{("state-output-not-in-graph", f): ["pairs input", "past_X with present_X"] for f in _KEPT},
    **{("state-output-misshaped", f): ["must have its input's shape", "[1, 1, 32, 16]"] for f in _RETURNED},
    **{("state-output-misshaped", f): ["pairs input", "past_X with present_X"] for f in _KEPT},
    **{("past-present-swapped", f): ["no such state input"] for f in ("onnx", "tflite", "openvino")},
    ("past-present-swapped", "coreml"): ["names state inputs past_X"],
    ("unlisted-graph-state", "onnx"): ["past_key_values.5.key"],
    ("unlisted-graph-state", "openvino"): ["past_key_values.5.key"],
    ("unlisted-graph-state", "tflite"): ["past_key_values_5_key"],
    ("unlisted-graph-state", "coreml"): ["state_13"],
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case, edit, words", CASES, ids=[c[0] for c in CASES])
def test_lying_lm_metadata_is_one_metadata_error_before_allocation(artifacts, fmt, case, edit, words, tmp_path,
                                                                   monkeypatch):
    if case == "unknown-state-input" and fmt == "coreml":
        edit, words = COREML_STATE_CASE
    path = lying_copy(artifacts[fmt], tmp_path, fmt, edit)
    with pytest.raises(MetadataError) as info:
        load(path, monkeypatch)
    message = str(info.value)
    for word in [*words, *EXTRA_WORDS.get((case, fmt), [])]:
        assert word in message, (word, message)
    assert load.allocated == [], "state was allocated before the metadata was checked"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_unedited_artifacts_load(artifacts, fmt, monkeypatch):
    """The control: the same copies without an edit load and stream."""
    p = load(artifacts[fmt], monkeypatch)
    assert p.generate("The", max_new_tokens=3, temperature=0) is not None


@pytest.mark.parametrize("threads", [10**9, 0, -1, "2", 2.0])
def test_thread_counts_are_checked_before_the_runtime_sees_them(artifacts, threads):
    from staredge import Predictor

    with pytest.raises(ConfigError, match="threads") as info:
        Predictor(artifacts["onnx"], threads=threads)
    if threads == 10**9:
        assert "at most" in str(info.value) or "limit" in str(info.value)


def test_an_image_artifact_claiming_to_be_a_language_model(tmp_path, monkeypatch):
    """An image ONNX file whose metadata says text-generation (with a plausible lm section)."""
    import torch

    from staredge.formats import get_format
    from staredge.metadata import read_metadata

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    path = tmp_path / "img.onnx"
    torch.onnx.export(Tiny(), (torch.zeros(1, 3, 8, 8),), str(path), input_names=["input"], output_names=["logits"],
                      dynamo=False)
    doc = {"model": "tiny", "family": "tiny", "format": "onnx", "task": "text-generation", "input_name": "input",
           "input_size": [3, 8, 8], "lm": {"max_context": 32, "prefill_chunk": 4, "vocab_size": 259, "state": []}}
    get_format("onnx").write_metadata_text(path, json.dumps(doc))
    assert read_metadata(path).task == "text-generation"
    with pytest.raises(MetadataError, match="input_ids"):
        load(path, monkeypatch)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("input_size", [[32], [1], [3, 224, 224]])
def test_a_language_model_claiming_to_be_an_image_classifier(artifacts, fmt, input_size, tmp_path, monkeypatch):
    """The reverse: an LM ONNX file whose metadata says image-classification (its lm section
    gone). A one-axis ``input_size`` used to match the ids input's shape, so the image backend
    loaded it and the first call failed with ONNX Runtime's "Required inputs ... are missing"
    (an InferenceError; OpenVINO ran it and returned, LiteRT raised a bare ValueError); every
    image backend now refuses a graph that takes more than one input (Backend.check_graph_input)."""

    def claim_image(doc):
        doc.update(task="image-classification", input_size=input_size)
        doc.pop("lm", None)

    path = lying_copy(artifacts[fmt], tmp_path, fmt, claim_image)
    if fmt == "coreml":  # the MIL reference executor refuses the stateful program as it reads it
        from staredge.runtimes.mil_reference.errors import MILProgramError

        with pytest.raises(MILProgramError, match="program input 'state_0' is not a tensor"):
            load(path, monkeypatch)
        return
    with pytest.raises(MetadataError) as info:
        load(path, monkeypatch)
    words = ["image-classification", "inputs", "re-export"]
    if fmt == "onnx":
        words += ["16 inputs", "input_ids", "position", "past_key_values.0.key"]
    for word in words:
        assert word in str(info.value), (word, str(info.value))
