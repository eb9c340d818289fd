"""``staredge info ARTIFACT``: format, task, inputs/outputs, precision, metadata, size, hashes."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from tests._cli_artifacts import digits_onnx  # noqa: E402


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, worker_id):
    return digits_onnx(tmp_path_factory, worker_id)


def test_info_json_describes_the_artifact(onnx_path, capsys):
    from staredge.cli import main

    assert main(["info", str(onnx_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "onnx" and doc["task"] == "image-classification" and doc["precision"] == "fp32"
    assert doc["model"] == "starnet_digits" and doc["metadata"]["labels"][:3] == ["0", "1", "2"]
    assert doc["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert doc["outputs"][0]["shape"][-1] == 10
    assert doc["size_bytes"] == onnx_path.stat().st_size
    assert doc["files"][0]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()


def test_info_table_and_json_file(onnx_path, tmp_path, capsys):
    from staredge.cli import main

    assert main(["info", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "onnx" in out and "input [1, 3, 32, 32] float32" in out and "sha256" in out
    target = tmp_path / "info.json"
    assert main(["info", str(onnx_path), "--json", str(target)]) == 0
    assert json.loads(target.read_text())["format"] == "onnx"
    assert main(["info", str(onnx_path), "--json", str(target)]) == 2  # exists: --force needed
    assert "--force" in capsys.readouterr().err


def test_info_on_a_missing_file_is_a_typed_error(tmp_path, capsys):
    from staredge.cli import main

    assert main(["info", str(tmp_path / "nope.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_info_shows_an_embedded_tokenizer_by_size_and_hash_not_its_text(onnx_path, monkeypatch):
    """An LM artifact carries its tokenizer.json inside its metadata (MBs for a 65k
    vocabulary): info reports its kind, hash, vocabulary and byte count instead."""
    import staredge.metadata as md
    from staredge.commands.info import describe_artifact

    real = md.read_metadata
    big = json.dumps({"model": {"vocab": {f"t{i}": i for i in range(5000)}}})

    def with_tokenizer(path, fmt=None):
        meta = real(path, fmt)
        meta.lm = {"max_context": 64, "state": [], "tokenizer": {"kind": "hf", "sha256": "ab" * 32, "vocab_size": 5000,
                                                                   "json": big}}
        return meta

    monkeypatch.setattr(md, "read_metadata", with_tokenizer)
    doc = describe_artifact(str(onnx_path), load=False)
    tok = doc["metadata"]["lm"]["tokenizer"]
    assert "json" not in tok and tok["json_bytes"] == len(big.encode()) and tok["vocab_size"] == 5000
    assert len(json.dumps(doc)) < len(big)
