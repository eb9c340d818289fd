"""``staredge bench`` with precision as a dimension: ``onnxruntime@int8``, ``--precision fp32,int8``.

Parsing and errors are checked without timing anything; one real run times the digits model
(32x32) at fp32 and int8 on ONNX Runtime with 3 timed calls, and checks that the int8 artifact
was exported at int8, that the reports show the precision, and that the cache keys on it.
No assertion is made on which is faster.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from staredge.bench.specs import (
    BackendSpec,
    compare_rewrite_specs,
    expand_backends,
    parse_backend,
    parse_precisions,
    with_baselines,
    with_precisions,
)
from staredge.cli import main
from staredge.errors import ConfigError


def test_precision_in_a_backend_spec_parses_and_round_trips():
    assert parse_backend("onnxruntime@int8") == BackendSpec("onnxruntime", precision="int8")
    assert parse_backend("ort@INT8").label == "onnxruntime@int8"
    # a precision among passes keeps the passes; '@int8' alone keeps the protocol's rewrites (None)
    spec = parse_backend("openvino@fuse+int8")
    assert spec.rewrites == ("fuse_batchnorm",) and spec.precision == "int8"
    assert spec.label == "openvino@fuse+int8"
    assert parse_backend("onnxruntime@int8").rewrites is None
    assert parse_backend("onnxruntime@none+fp16") == BackendSpec("onnxruntime", "cpu", (), "fp16")
    assert parse_backend("tflite@int8").label == "litert@int8"
    assert parse_backend("onnxruntime@fp32") == BackendSpec("onnxruntime")  # fp32 is the default: same column
    for text in ("onnxruntime@int8", "openvino@fuse+int8", "onnxruntime@none+fp16", "onnxruntime:cuda@int8"):
        spec = parse_backend(text)
        assert parse_backend(spec.label) == spec, text
    # a precision is not a baseline: the baseline property is only for fp32 pytorch / onnx-plain
    assert parse_backend("onnxruntime@int8").baseline is None and parse_backend("onnxruntime@int8").format == "onnx"


@pytest.mark.parametrize("text, words", [
    ("onnxruntime@int4", ["unknown precision 'int4'", "fp32, fp16, int8"]),
    ("openvino@fuse+bf16", ["unknown precision 'bf16'"]),
    ("onnxruntime@int8+fp16", ["more than one precision"]),
    ("pytorch@int8", ["baseline runs fp32 only", "onnxruntime@int8"]),
    ("onnx-plain@fp16", ["baseline runs fp32 only"]),
])
def test_bad_precision_in_a_spec_is_a_config_error(text, words):
    with pytest.raises(ConfigError) as err:
        parse_backend(text)
    for w in words:
        assert w in str(err.value)


def test_precision_flag_multiplies_exported_runtimes_only():
    specs = with_baselines(expand_backends(["onnxruntime,openvino@int8,litert@fp16"]))
    out = with_precisions(specs, parse_precisions("fp32,int8"))
    assert [s.label for s in out] == [
        "pytorch", "onnx-plain", "onnxruntime", "onnxruntime@int8", "openvino@int8", "litert@fp16",
    ]
    # int8 alone: the exported fp32 runtimes become int8, baselines stay, duplicates go
    out = with_precisions(expand_backends(["pytorch,onnxruntime,onnxruntime@int8"]), ["int8"])
    assert [s.label for s in out] == ["pytorch", "onnxruntime@int8"]
    assert with_precisions(specs, []) == specs
    assert parse_precisions(" INT8 ,fp32,int8") == ["int8", "fp32"] and parse_precisions(None) == []
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        parse_precisions("fp32,int4")
    with pytest.raises(ConfigError, match="comma list"):
        parse_precisions(",")
    # comparing rewrites keeps the precision of each spec
    pairs = compare_rewrite_specs([parse_backend("onnxruntime@int8")])
    assert [s.label for s in pairs] == ["onnxruntime@fuse+int8", "onnxruntime@fuse+pwlinear+int8"]


def test_cli_unknown_precision_fails_before_any_work(tmp_path, capsys):
    # --precision is checked by the shared argument module now: an argparse error (exit 2, the usage)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "starnet_digits", "--backends", "onnxruntime", "--precision", "fp32,int4",
              "--no-progress", "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "r.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown precision 'int4'" in err and "fp32, fp16, int8" in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.json").exists()
    assert main(["bench", "starnet_digits", "--backends", "onnxruntime@int4", "--no-progress"]) == 2
    assert "unknown precision 'int4'" in capsys.readouterr().err


def test_digits_bench_at_fp32_and_int8_shows_the_precision(tmp_path):
    """Real run: the int8 column is an int8 artifact, calibrated on the digits training split."""
    from staredge.bench.artifacts import MARKER
    from staredge.bench.results import load
    from staredge.runtimes import load_backend

    work = tmp_path / "work"
    code = main([
        "bench", "starnet_digits", "--backends", "onnxruntime", "--precision", "fp32,int8", "--threads", "1",
        "--warmup", "1", "--iters", "3", "--no-progress", "--workdir", str(work), "--out", str(tmp_path / "out"),
    ])
    assert code == 0
    doc = load(tmp_path / "out" / "results.json")
    by = {r.backend: r for r in doc.results}
    assert set(by) == {"pytorch", "onnx-plain", "onnxruntime", "onnxruntime@int8"}
    for r in by.values():
        assert r.status == "ok", r.error
    assert by["onnxruntime@int8"].precision == "int8" and by["onnxruntime"].precision == "fp32"
    assert any("training split" in n for n in by["onnxruntime@int8"].notes)
    assert by["onnxruntime@int8"].speedup_median_vs["onnx-plain"] > 0
    # the artifact timed is int8: quantised weights in the file, int8 in its metadata
    folders = sorted(p.name for p in (work / "starnet_digits-star").iterdir())
    assert "onnx-fuse_batchnorm-int8" in folders and "onnx-fuse_batchnorm" in folders
    int8_dir = work / "starnet_digits-star" / "onnx-fuse_batchnorm-int8"
    marker = json.loads((int8_dir / MARKER).read_text())
    assert marker["calibration"] and len(marker["calibration"]) == 64
    backend = load_backend(str(int8_dir / marker["artifact"]))
    try:
        assert backend.metadata.precision == "int8"
        ops = {n.op_type for n in __import__("onnx").load(str(int8_dir / marker["artifact"])).graph.node}
        assert "DequantizeLinear" in ops
    finally:
        backend.close()
    # the reports name the precision: Markdown latency and speed-up columns, CSV column
    md = (tmp_path / "out" / "results.md").read_text()
    assert "onnxruntime@int8 (ms)" in md
    speedup_part = md[md.index("peed-up"):]
    assert "onnxruntime@int8" in speedup_part
    rows = {r["backend"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text()))}
    assert rows["onnxruntime@int8"]["precision"] == "int8" and rows["onnxruntime"]["precision"] == "fp32"


def test_int8_calibration_for_a_benchmark_and_the_cache_key(tmp_path):
    """No data given: a zoo model calibrates on photos outside the validation set (and says so);
    a cached int8 artifact is reused only for the same calibration inputs."""
    import numpy as np

    from staredge.bench.artifacts import ArtifactCache, calibration_for
    from staredge.exporters.quantize import CALIBRATION_PHOTOS
    from staredge.exporters.validate import PHOTOS
    from staredge.models import create

    assert not set(CALIBRATION_PHOTOS) & set(PHOTOS)
    model = create("starnet_s050")
    x, note = calibration_for(model)
    assert x.shape[1:] == (3, 224, 224) and x.dtype == np.float32 and len(x) >= 10
    np.testing.assert_array_equal(x[len(x) // 2], x[0][..., ::-1])  # the second half mirrors the first
    assert "scikit-image photos" in note and "--calibration DIR" in note
    given, note = calibration_for(model, x[:3])
    assert len(given) == 3 and "3 inputs (the given array)" in note
    cache = ArtifactCache(model, tmp_path)
    folder = tmp_path / "onnx-fuse_batchnorm-int8"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(b"x")
    cache.remember(folder, folder / "m.onnx", ["fuse_batchnorm"], calibration="abc")
    assert cache.cached(folder, "abc") == (folder / "m.onnx", ["fuse_batchnorm"])
    assert cache.cached(folder, "other") is None and cache.cached(folder) is None
