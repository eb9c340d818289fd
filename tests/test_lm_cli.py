"""`staredge export` with a language model name: decode-graph artifacts, validated."""

from __future__ import annotations

import json

from staredge.cli import main
from staredge.metadata import read_metadata


def test_export_baseline_lm_by_name(tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["export", "transformer_pp", "--dim", "64", "--depth", "2", "--max-context", "232",
                 "--format", "onnx", "--out", str(tmp_path / "out"), "--json", str(report)])
    assert code == 0
    rows = json.loads(report.read_text())["artifacts"]
    assert [r["format"] for r in rows] == ["onnx"] and rows[0]["passed"]
    assert rows[0]["state_bytes"] == rows[0]["analysis_state_bytes"] == 2 * 64 * 232 * 4
    meta = read_metadata(rows[0]["path"])
    assert meta.task == "text-generation" and meta.lm["max_context"] == 232 and meta.lm["depth"] == 2


def test_models_lists_language_models(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["language_models"]}
    assert set(rows) == {"star_lm_pydoc", "transformer_pp", "striped_mamba"}
    shipped = rows["star_lm_pydoc"]
    assert shipped["params"] == 1_281_664 and shipped["context"] == 1024
    assert shipped["cache_bytes_fp16"] == 535_040  # docs/star-lm.md: 535.0 kB at 1024 tokens
