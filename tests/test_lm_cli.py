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
