"""The iOS benchmark (ios_bench/) against the Python side: same statistics, mergeable results.

* the shared vectors (ios_bench/TestVectors/stats_vectors.json) are what
  ``staredge.bench.stats`` computes; the Swift tests check the same file;
* the golden document the Swift core writes in its tests (golden_ios_bench.json) holds,
  run for run, the Python statistics of the latencies it replayed, and
  ``staredge bench --merge`` puts it in one table with CPU results;
* ``staredge ios-bundle`` writes packages and the manifest the Swift reader parses;
* where Swift is installed (CI), the ``staredge-bench-mac`` binary is built and run with a
  replayed recording, and its output is checked the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from staredge.bench.results import load, merge
from staredge.bench.stats import RunStats, mean
from staredge.cli import main
from staredge.commands import ios_bundle
from staredge.errors import ArtifactExistsError
from staredge.metadata import ArtifactMetadata

ROOT = Path(__file__).resolve().parents[1]
IOS = ROOT / "ios_bench"
VECTORS = IOS / "TestVectors"
GOLDEN = VECTORS / "golden_ios_bench.json"
RECORDING = VECTORS / "replay_example.json"
CPU_RESULTS = ROOT / "docs" / "img" / "bench-results" / "main.json"


def _swift() -> str | None:
    found = shutil.which("swift")
    if found:
        return found
    fallback = Path("/opt/swift/usr/bin/swift")
    return str(fallback) if fallback.exists() else None


def _replayed_runs(latencies: list[float], protocol: dict) -> list[RunStats]:
    """What a replay of ``latencies`` under ``protocol`` must give, computed in Python.

    Every inference (cold, warm-up, timed; run after run) takes the next recorded value,
    the list starting over when used up, exactly as ReplayRunner does.
    """
    position = 0

    def take(k: int) -> list[float]:
        nonlocal position
        out = [latencies[(position + i) % len(latencies)] for i in range(k)]
        position += k
        return out

    trim = (protocol["trim_low"], protocol["trim_high"]) if (protocol["trim_low"] or protocol["trim_high"]) else None
    runs = []
    for _ in range(protocol["repeats"]):
        first = take(1)[0]
        take(protocol["warmup"])
        runs.append(RunStats.from_samples(take(protocol["iters"]), first, trim=trim, warmup=protocol["warmup"]))
    return runs


def _check_replayed_document(doc_json: dict, recording: dict) -> int:
    """Every ok result's runs and figure equal the Python statistics of its replayed series."""
    checked = 0
    for r in doc_json["results"]:
        if r["status"] != "ok":
            continue
        protocol = doc_json["protocols"][r["protocol"]]
        series = next(s for s in recording["series"] if s["model"] == r["model"] and s["backend"] == r["backend"])
        expected = _replayed_runs(series["latencies_ms"], protocol)
        assert len(r["runs"]) == len(expected)
        for got, want in zip(r["runs"], expected):
            for key, value in want.to_dict().items():
                assert got[key] == value, (r["model"], r["backend"], key)
        stats = [run.statistic(protocol["statistic"]) for run in expected]
        figure = stats[-1] if protocol["reduce"] == "last" else mean(stats)  # as the Python harness reports
        assert r["latency_ms"] == round(figure, 5)
        assert r["reported_run"] == (len(expected) - 1 if protocol["reduce"] == "last" else None)
        loaded = [run.get("load_ms") for run in r["runs"]]
        assert loaded[0] == series["load_ms"]
        assert all(v == (series["load_ms"] if protocol["recreate_per_run"] else None) for v in loaded[1:])
        checked += 1
    return checked


def _assert_next_to_cpu(phone_path: Path, tmp_path: Path, phone_label: str) -> str:
    """Merge with the committed CPU results through the CLI; the phone column sits in the
    StarNet-S1 row next to ONNX Runtime's. Returns the Markdown."""
    from staredge.bench.report import build_table

    out_json, out_md = tmp_path / "merged.json", tmp_path / "merged.md"
    code = main(["bench", "--merge", str(CPU_RESULTS), str(phone_path), "--out", str(out_json),
                 "--markdown", str(out_md), "--force"])
    assert code == 0
    merged = load(out_json)
    table = build_table(merged)
    row = next(r for r in table.rows if r.model == "starnet_s1" and r.variant == "star")
    phone_cols = [c for c in row.latency if c.backend == "coreml:all" and phone_label in c.label]
    cpu_cols = [c for c in row.latency if c.backend == "onnxruntime"]
    assert phone_cols and cpu_cols, [c.label for c in row.latency]
    phone = load(phone_path)
    s1 = next(r for r in phone.results if r.model == "starnet_s1" and r.backend == "coreml:all")
    assert row.latency[phone_cols[0]] == s1.latency_ms
    assert all(row.latency[c] > 0 for c in cpu_cols)
    text = out_md.read_text()
    assert phone_label in text and f"{s1.latency_ms:.2f}" in text
    return text


# --------------------------------------------------------------------------- shared vectors


def test_vectors_file_is_what_python_computes():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = json.loads((VECTORS / "stats_vectors.json").read_text())
    fresh = json.loads(module.render(module.build_vectors()))
    # exact equality: the Swift tests compare the same numbers bit for bit
    assert committed == fresh, "rerun ios_bench/TestVectors/make_vectors.py and the Swift tests"
    assert len(committed["stats"]) >= 15
    ties = next(c for c in committed["stats"] if c["name"].startswith("exact ties"))
    assert ties["expected"]["min_ms"] == 0.007812  # round half to even on the exact binary value
    trimmed = next(c for c in committed["stats"] if c["name"].startswith("modelbench"))
    assert trimmed["expected"]["trimmed_mean_ms"] != trimmed["expected"]["mean_ms"]


# --------------------------------------------------------------------------- golden document


def test_golden_runs_are_python_statistics_of_the_replayed_latencies():
    doc_json = json.loads(GOLDEN.read_text())
    recording = json.loads(RECORDING.read_text())
    assert _check_replayed_document(doc_json, recording) == 3
    statuses = sorted(r["status"] for r in doc_json["results"])
    assert statuses == ["ok", "ok", "ok", "unavailable"]
    first = doc_json["results"][0]
    assert first["runs"][0]["load_ms"] == 41.5  # a key beyond the format: the Python reader ignores it


def test_golden_document_loads_and_merges_next_to_cpu_results(tmp_path):
    doc = load(GOLDEN)
    assert doc.tool.startswith("StarEdge iOS")
    assert {r.backend for r in doc.results} == {"coreml:all", "coreml:cpuOnly"}
    assert all(r.runtime == "coreml" for r in doc.results)
    ok = [r for r in doc.results if r.ok]
    assert len(ok) == 3 and all(r.reported_run == 2 and len(r.runs) == 3 for r in ok)
    assert merge([doc]).results[0].latency_ms == doc.results[0].latency_ms
    text = _assert_next_to_cpu(GOLDEN, tmp_path, "iPhone 13 (synthetic replay)")
    assert "coreml:cpuOnly" in text


# --------------------------------------------------------------------------- manifest


def _example_entry(name: str, params: float, macs: float, diff: float, size: int) -> dict:
    meta = ArtifactMetadata(model=name, family="starnet", format="coreml", precision="fp32",
                            rewrites=["fuse_batchnorm"], pixels_in_model=True)
    return ios_bundle.manifest_entry(name, f"/somewhere/{name}.mlpackage", meta, params_m=params, macs_m=macs,
                                     validated=True, max_abs_diff=diff, size_bytes=size)


def test_manifest_example_is_what_the_writer_writes(tmp_path):
    entries = [_example_entry("starnet_s1", 2.8692, 421.88, 2.1e-05, 11612345),
               _example_entry("starnet_s2", 3.682, 544.11, 1.9e-05, 14823456)]
    manifest = ios_bundle.build_manifest(entries, rewrite="auto", created_utc="2026-12-01T00:00:00Z",
                                         staredge_version="0.1.0")
    path = ios_bundle.write_manifest(tmp_path, manifest)
    # the Swift tests parse the committed example: it must be exactly the writer's output
    assert path.read_text() == (VECTORS / "manifest_example.json").read_text()
    assert ios_bundle.read_manifest(tmp_path) == manifest
    with pytest.raises(ArtifactExistsError):
        ios_bundle.write_manifest(tmp_path, manifest)


def test_language_model_entries_carry_the_decode_contract():
    meta = ArtifactMetadata(model="star_lm_pydoc", family="star_lm", format="coreml", task="text-generation",
                            input_name="input_ids")
    lm = {"max_context": 256, "prefill_chunk": 32, "bos_id": 256, "vocab_size": 259, "state_bytes": 123,
          "inputs": ["input_ids", "position"], "outputs": ["logits"]}
    if hasattr(meta, "lm"):
        meta.lm = lm
    else:
        meta.extra = {"lm": lm}
    entry = ios_bundle.manifest_entry("star_lm_pydoc", "star_lm_pydoc.mlpackage", meta)
    assert entry["task"] == "text-generation"
    assert entry["lm"]["max_context"] == 256 and entry["lm"]["prefill_chunk"] == 32
    assert entry["lm"]["input_ids_name"] == "input_ids" and entry["lm"]["logits_name"] == "logits"


@pytest.mark.parametrize("bad, message", [
    ({"schema": "other"}, "not a 'staredge-ios-bundle'"),
    ({"schema": "staredge-ios-bundle", "schema_version": 2, "models": []}, "upgrade staredge"),
    ({"schema": "staredge-ios-bundle", "schema_version": 1}, "no 'models' list"),
    ({"schema": "staredge-ios-bundle", "schema_version": 1, "models": [{"name": "x", "package": "../x.mlpackage"}]},
     "inside the models folder"),
    ({"schema": "staredge-ios-bundle", "schema_version": 1,
      "models": [{"name": "x", "package": "x.mlpackage"}, {"name": "y", "package": "x.mlpackage"}]}, "listed twice"),
])
def test_manifest_validation_names_the_problem(bad, message):
    with pytest.raises(ios_bundle.IOSBundleError, match=message.replace("(", r"\(").replace("'", "'")):
        ios_bundle.validate_manifest(bad)


def test_ios_bundle_refuses_to_overwrite_a_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["ios-bundle", "starnet_s1", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "manifest.json").read_text() == "{}"
    assert not list(tmp_path.glob("*.mlpackage")), "nothing is exported before the check"


def test_ios_bundle_checks_every_name_before_exporting(tmp_path, capsys):
    assert main(["ios-bundle", "starnet_digits", "no_such_model", "--out", str(tmp_path)]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing was exported"


def test_ios_bundle_exports_a_validated_package_and_its_manifest(tmp_path):
    pytest.importorskip("coremltools")
    out = tmp_path / "Models"
    assert main(["ios-bundle", "starnet_digits", "--out", str(out)]) == 0
    manifest = ios_bundle.read_manifest(out)
    (entry,) = manifest["models"]
    assert entry["package"] == "starnet_digits.mlpackage" and (out / entry["package"]).is_dir()
    assert entry["validated"] is True and entry["max_abs_diff"] < 1e-3
    assert entry["input_size"] == [3, 32, 32]
    assert entry["params_m"] == pytest.approx(0.415, abs=1e-3)
    assert entry["rewrites"] == ["fuse_batchnorm"]


# --------------------------------------------------------------------------- the Swift CLI


@pytest.fixture(scope="module")
def swift_cli():
    """The built ``staredge-bench-mac`` (swift build, a few seconds when up to date), or None without Swift."""
    swift = _swift()
    if swift is None:
        return None
    env = dict(os.environ, PATH=f"{Path(swift).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    build = subprocess.run([swift, "build", "--package-path", str(IOS), "--product", "staredge-bench-mac"],
                           capture_output=True, text=True, timeout=1200, env=env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    path = subprocess.run([swift, "build", "--package-path", str(IOS), "--show-bin-path"],
                          capture_output=True, text=True, timeout=120, env=env).stdout.strip()
    binary = Path(path) / "staredge-bench-mac"
    assert binary.exists()
    return str(binary)


@pytest.mark.slow  # builds the Swift tool (about a minute from a clean tree on 2 cores)
def test_swift_cli_replay_results_match_python_and_merge(tmp_path, swift_cli):
    if swift_cli is None:
        pytest.skip("Swift is not installed here (CI has it at /opt/swift)")
    out = tmp_path / "phone.json"
    done = subprocess.run(
        [swift_cli, "--replay", str(RECORDING), "--protocol", "modelbench", "--iters", "40", "--repeats", "4",
         "--compute-units", "all,cpuOnly,cpuAndGPU", "--label", "Replayed phone", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    doc_json = json.loads(out.read_text())
    (pid,) = doc_json["protocols"]
    assert pid == "modelbench[iters=40,repeats=4]"
    proto = doc_json["protocols"][pid]
    assert (proto["trim_low"], proto["trim_high"], proto["recreate_per_run"]) == (10, 10, True)
    assert _check_replayed_document(doc_json, json.loads(RECORDING.read_text())) == 3
    assert sorted(r["status"] for r in doc_json["results"]).count("unavailable") == 3
    _assert_next_to_cpu(out, tmp_path, "Replayed phone")
    # refuses to overwrite, and bad options are errors with a message
    again = subprocess.run([swift_cli, "--replay", str(RECORDING), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr
    bad = subprocess.run([swift_cli, "--replay", str(RECORDING), "--protocol", "modelbench", "--iters", "20"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cannot drop 10 lowest and 10 highest of 20" in bad.stderr


@pytest.mark.slow
def test_swift_cli_reads_the_manifest_python_writes(tmp_path, swift_cli):
    if swift_cli is None:
        pytest.skip("Swift is not installed here (CI has it at /opt/swift)")
    entries = [_example_entry("starnet_s1", 2.8692, 421.88, 2.1e-05, 1),
               _example_entry("efficientformerv2_s0", 3.551, 395.9, 3e-05, 2)]
    ios_bundle.write_manifest(tmp_path, ios_bundle.build_manifest(
        entries, rewrite="none", created_utc="2026-12-01T00:00:00Z", staredge_version="0.1.0"))
    done = subprocess.run([swift_cli, "--replay", str(RECORDING), "--models", str(tmp_path), "--list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "model starnet_s1 (star, fp32, image-classification): starnet_s1.mlpackage" in done.stdout
    assert "model efficientformerv2_s0 (star, fp32, image-classification): efficientformerv2_s0.mlpackage" in done.stdout
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "staredge-ios-bundle", "schema_version": 9, "models": []}))
    newer = subprocess.run([swift_cli, "--replay", str(RECORDING), "--models", str(tmp_path), "--list"],
                           capture_output=True, text=True, timeout=60)
    assert newer.returncode == 2 and "update the app" in newer.stderr


@pytest.mark.slow
def test_swift_cli_without_coreml_says_what_to_do(swift_cli, tmp_path):
    if swift_cli is None:
        pytest.skip("Swift is not installed here (CI has it at /opt/swift)")
    import sys

    if sys.platform == "darwin":
        pytest.skip("CoreML exists on macOS: this checks the message elsewhere")
    done = subprocess.run([swift_cli, "--models", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "CoreML is not available on this platform" in done.stderr and "--replay" in done.stderr
