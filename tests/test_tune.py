"""``staredge tune`` on the (tiny) digits model writes an artifact that loads in the Predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from staredge.errors import ConfigError  # noqa: E402


def test_tune_writes_a_winner_that_loads_in_predictor(tmp_path):
    from staredge import Predictor
    from staredge.commands.tune import tune

    report = tune("starnet_digits", tmp_path, "onnx", "fp32,int8", calibration_samples=100, iters=5, warmup=1,
                  rounds=2)
    assert [(c.format, c.precision) for c in report.candidates] == [("onnx", "fp32"), ("onnx", "int8")]
    for c in report.candidates:  # timed round-robin: one median per round, the reported one is their median
        assert len(c.round_medians_ms) == 2 and min(c.round_medians_ms) <= c.median_ms <= max(c.round_medians_ms)
    assert report.winner is not None
    win = report.candidates[report.winner]
    assert win.passed and win.median_ms is not None and win.median_ms > 0
    data = json.loads((tmp_path / "tune.json").read_text())
    assert len(data["candidates"]) == 2 and data["winner_path"] == report.winner_path
    assert "(winner)" in (tmp_path / "tune.md").read_text()
    assert "median of 2 round-robin rounds" in (tmp_path / "tune.md").read_text()
    predictor = Predictor(report.winner_path)
    image = np.zeros((8, 8), np.uint8)
    ranking = predictor.classify(image, top_k=3)
    assert len(ranking.labels if hasattr(ranking, "labels") else ranking) == 3


def test_tune_rejects_unknown_precision(tmp_path):
    from staredge.commands.tune import tune

    with pytest.raises(ConfigError, match="precision"):
        tune("starnet_digits", tmp_path, "onnx", "int4")
    with pytest.raises(ConfigError, match="rounds must be a positive integer"):
        tune("starnet_digits", tmp_path, "onnx", "fp32", rounds=0)


def test_tune_is_a_cli_command():
    from staredge.cli import build_parser

    args = build_parser().parse_args(["tune", "starnet_digits", "--formats", "onnx", "--precision", "int8"])
    assert args.command == "tune" and args.precision == ["int8"]
    old = build_parser().parse_args(["tune", "starnet_digits", "--precisions", "fp32,int8", "--rounds", "2"])
    assert old.precision == ["fp32", "int8"] and old.repeats == 2  # the old spellings still parse


def test_tune_library_api_lives_in_staredge_tune():
    """Issue 19: tune() is library code (staredge.tune); the command module re-exports it."""
    import staredge.tune
    from staredge.commands import tune as command

    assert command.tune is staredge.tune.tune and staredge.tune.tune.__module__ == "staredge.tune"


def test_tune_int8_without_calibration_falls_back_like_bench(tmp_path, capsys):
    """Issue 22: `staredge tune MODEL` with int8 (a default precision) calibrates on the bench's
    photos instead of failing, and says so."""
    from staredge.cli import main

    out = tmp_path / "t"
    rc = main(["tune", "starnet_s050", "--formats", "onnx", "--precision", "int8", "--out", str(out),
               "--calibration-samples", "4", "--iters", "2", "--warmup", "0", "--repeats", "1", "--threads", "1"])
    captured = capsys.readouterr()
    assert "scikit-image photos" in captured.err
    doc = json.loads((out / "tune.json").read_text())
    assert "photos" in doc["calibration"] and [c["precision"] for c in doc["candidates"]] == ["int8"]
    assert rc in (0, 1) and "staredge tune" in captured.out  # the rich table, on stdout
    # a second run without --force refuses before any work and keeps the first run's files
    before = (out / "tune.json").read_bytes()
    assert main(["tune", "starnet_s050", "--formats", "onnx", "--precision", "int8", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "tune.json").read_bytes() == before


@pytest.mark.parametrize("flag,value,words", [
    ("--threads", "1000000000", "at most"), ("--warmup", "-1", ">= 0"), ("--iters", "0", "positive"),
    ("--repeats", "0", "positive"), ("--precision", "int4", "fp32, fp16, int8"),
])
def test_tune_numbers_are_refused_by_the_shared_checks(flag, value, words, capsys):
    from staredge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tune", "starnet_digits", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and words in err and "staredge tune" in err.splitlines()[0]


def test_tune_python_threads_are_checked_before_work(tmp_path):
    with pytest.raises(ConfigError, match="threads"):
        from staredge.tune import tune

        tune("starnet_digits", tmp_path, "onnx", "fp32", threads=10**9)
    assert not any(tmp_path.iterdir())


def test_tune_an_exported_artifact_reads_its_architecture(tmp_path_factory, worker_id, tmp_path, capsys):
    """Issue 22: `staredge tune exports/x.onnx` tunes the architecture the artifact's metadata names
    (the digits model: its shipped weights), instead of asking for a --model flag tune lacked."""
    from staredge.cli import main
    from tests._cli_artifacts import digits_onnx

    path = digits_onnx(tmp_path_factory, worker_id)
    out = tmp_path / "t"
    assert main(["tune", str(path), "--formats", "onnx", "--precision", "fp32", "--out", str(out),
                 "--iters", "2", "--warmup", "0", "--repeats", "1", "--threads", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "starnet_digits" and doc["candidates"][0]["passed"]
