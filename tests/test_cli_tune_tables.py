"""Issue 22: ``staredge tune`` prints the same rich table as every other command, and neither
its table nor tune.md cuts a note mid-sentence (tune.md cut notes at 120 characters)."""

from __future__ import annotations

import io

from rich.console import Console

from staredge.commands.tune import rich_table
from staredge.tune import Candidate, TuneReport, markdown_table

NOTE = ("int8 calibrated on 128 scikit-image photos outside the validation set because the model has no data "
        "of its own and no --calibration was given | second line\nthird line ends here.")


def _report() -> TuneReport:
    report = TuneReport(model="starnet_digits", out_dir="t", threads=1, machine="x86_64 2 cores")
    report.candidates = [
        Candidate("onnx", "fp32", "onnxruntime", "t/a.onnx", 2048, True, median_ms=1.0, p90_ms=1.2),
        Candidate("onnx", "int8", "onnxruntime", "t/b.onnx", 1024, False, median_ms=0.5, p90_ms=0.6, note=NOTE),
    ]
    report.winner, report.winner_path = 0, "t/a.onnx"
    return report


def test_tune_md_keeps_every_note_whole():
    md = markdown_table(_report())
    row = next(line for line in md.splitlines() if "| int8 |" in line)
    assert row.endswith(" ".join(NOTE.split()).replace("|", "\\|") + " |")
    assert row.count(" | ") == 10  # the escaped pipe adds no column


def test_tune_prints_a_rich_table_with_the_whole_note():
    out = io.StringIO()
    Console(file=out, width=150, color_system=None).print(rich_table(_report()))
    text = out.getvalue()
    assert "staredge tune: starnet_digits" in text and "┃ format" in text  # a rich table, like bench/models
    words = " ".join(line.split("│")[-2] for line in text.splitlines() if line.count("│") > 2).split()
    assert " ".join(NOTE.split()) in " ".join(words)  # folded across lines, never cut
