"""``staredge classify`` on folders, with JSON / CSV outputs written through the one atomic
writer, and a language model pointed at ``staredge generate`` (issues 22 and 23)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from staredge.cli import main  # noqa: E402
from tests._cli_artifacts import digit_png, digits_onnx  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory, worker_id):
    return digits_onnx(tmp_path_factory, worker_id), digit_png(tmp_path_factory, worker_id)


def test_classify_a_folder_to_json_and_csv(files, tmp_path, capsys):
    onnx, png = files
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        shutil.copy(png, folder / name)
    (folder / "notes.txt").write_text("not an image")
    out_csv = tmp_path / "r.csv"
    assert main(["classify", str(onnx), str(folder), "--json", "--csv", str(out_csv), "--top-k", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in doc["results"]] == [str(folder / "a.png"), str(folder / "b.png")]
    assert doc["results"][0]["top_k"][0]["label"] == "7"
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 and rows[0]["rank"] == "1" and rows[0]["label"] == "7"


def test_existing_outputs_are_kept_without_force(files, tmp_path, capsys):
    onnx, png = files
    target = tmp_path / "r.json"
    target.write_text("keep me")
    assert main(["classify", str(onnx), str(png), "--json", str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main(["classify", str(onnx), str(png), "--json", str(target), "--force"]) == 0
    assert json.loads(target.read_text())["results"][0]["image"] == str(png)
    assert main(["classify", str(onnx), str(png), "--csv", "/proc/x/r.csv"]) == 2
    assert "/proc/x" in capsys.readouterr().err


def test_a_language_model_artifact_points_at_generate(files, tmp_path, capsys):
    from staredge.metadata import read_metadata, write_metadata

    onnx, png = files
    lm = tmp_path / "lm.onnx"
    shutil.copy(onnx, lm)
    meta = read_metadata(lm)
    meta.task = "text-generation"
    write_metadata(lm, meta)
    assert main(["classify", str(lm), str(png)]) == 2
    assert "staredge generate" in capsys.readouterr().err


def test_python_and_the_cli_give_one_answer_for_a_language_model(tmp_path, capsys):
    """Issue 22: the CLI said "run staredge generate" and Python "call predict() with its
    inputs" for a language model given to classify: both now point at generating text."""
    from staredge import Predictor
    from staredge.errors import ConfigError

    out = tmp_path / "lm"
    assert main(["export", "transformer_pp", "--dim", "32", "--depth", "2", "--max-context", "10", "--no-validate",
                 "--out", str(out)]) == 0
    (lm,) = out.glob("*.onnx")
    png = Path(__file__).resolve().parents[1] / "docs" / "img" / "seven.png"  # a shipped digit photo
    capsys.readouterr()
    assert main(["classify", str(lm), str(png)]) == 2
    cli = capsys.readouterr().err
    with pytest.raises(ConfigError) as python:
        Predictor(str(lm)).classify(str(png))
    assert "is a language model" in cli and "staredge generate" in cli
    assert "a language model: call generate() or stream()" in str(python.value)
    assert "predict()" not in str(python.value)


def test_an_empty_folder_is_named(files, tmp_path, capsys):
    onnx, _ = files
    assert main(["classify", str(onnx), str(tmp_path)]) == 2
    assert "without images" in capsys.readouterr().err
