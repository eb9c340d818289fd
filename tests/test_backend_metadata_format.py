"""``Backend.read_artifact_metadata`` reads an artifact as its own (detected) format, not as
the first format its runtime lists (issue 19)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from _digits_artifacts import artifact_paths, shared_demo_summary
from staredge import formats
from staredge.errors import ArtifactError
from staredge.metadata import read_metadata
from staredge.runtimes import load_backend


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, worker_id):
    return artifact_paths(shared_demo_summary(tmp_path_factory, worker_id))


def test_metadata_is_read_as_the_artifacts_own_format(artifacts, monkeypatch):
    pytest.importorskip("onnxruntime")
    path = Path(artifacts["onnx"])
    spec = formats.RUNTIMES["onnxruntime"]
    # a runtime that runs a second format listed first: formats[0] is not the artifact's format
    monkeypatch.setitem(formats.RUNTIMES, "onnxruntime", dataclasses.replace(spec, formats=("tflite", "onnx")))
    backend = load_backend(path, backend="onnxruntime")
    try:
        assert backend.metadata.format == "onnx"
        assert backend.metadata == read_metadata(path)
    finally:
        backend.close()


def test_an_artifact_of_a_format_the_runtime_does_not_run_is_refused(artifacts):
    pytest.importorskip("onnxruntime")
    backend = load_backend(Path(artifacts["onnx"]))
    try:
        with pytest.raises(ArtifactError, match=r"TFLite artifact.*onnxruntime backend runs onnx artifacts only"):
            backend.read_artifact_metadata(Path(artifacts["tflite"]))
    finally:
        backend.close()
