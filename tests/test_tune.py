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

    with pytest.raises(ConfigError, match="--precisions"):
        tune("starnet_digits", tmp_path, "onnx", "int4")
    with pytest.raises(ConfigError, match="rounds must be a positive integer"):
        tune("starnet_digits", tmp_path, "onnx", "fp32", rounds=0)


def test_tune_is_a_cli_command():
    from staredge.cli import build_parser

    args = build_parser().parse_args(["tune", "starnet_digits", "--formats", "onnx", "--precisions", "int8"])
    assert args.command == "tune" and args.precisions == "int8"
