"""``staredge bench``: what issue 22/23 found (artifacts timed as they are, a device that is
not there, inputs checked before the first second of timing, merged thread counts, numbers)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from staredge.bench.results import BenchDocument, BenchResult, load, merge, save  # noqa: E402
from staredge.bench.stats import RunStats  # noqa: E402
from staredge.cli import main  # noqa: E402
from tests._cli_artifacts import digits_onnx  # noqa: E402


def test_bench_times_an_exported_artifact(tmp_path_factory, worker_id, tmp_path, capsys):
    pytest.importorskip("sklearn")
    path = digits_onnx(tmp_path_factory, worker_id)
    out = tmp_path / "r.json"
    rc = main(["bench", str(path), "--protocol", "quick", "--iters", "3", "--warmup", "1", "--threads", "1",
               "--no-progress", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = load(out)
    (result,) = doc.results
    assert result.ok and result.runtime == "onnxruntime" and result.model == str(path) and result.latency_ms > 0
    # a flag that cannot apply to a file timed as it is: refused, not ignored
    assert main(["bench", str(path), "--precision", "int8", "--no-progress"]) == 2
    assert "does not apply to an exported artifact" in capsys.readouterr().err


def test_bench_json_without_file_prints_the_document(tmp_path_factory, worker_id, capsys):
    pytest.importorskip("sklearn")
    path = digits_onnx(tmp_path_factory, worker_id)
    assert main(["bench", str(path), "--protocol", "quick", "--iters", "2", "--warmup", "0", "--threads", "1",
                 "--no-progress", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout holds the JSON only
    assert doc["schema"] and doc["results"][0]["runtime"] == "onnxruntime"


def test_bench_cuda_without_a_gpu_is_a_device_error(monkeypatch, capsys):
    import staredge.bench.device as device

    monkeypatch.setattr(device, "detect_ort_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(device, "detect_torch_cuda", lambda: False)
    assert main(["bench", "starnet_s050", "--device", "cuda", "--no-progress"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_missing_calibration_is_reported_before_any_timing(monkeypatch, tmp_path, capsys):
    import staredge.bench.harness as harness

    def never(*a, **k):
        raise AssertionError("timing started before the inputs were checked")

    monkeypatch.setattr(harness, "run_bench", never)
    assert main(["bench", "starnet_s050", "--precision", "int8", "--calibration", str(tmp_path / "photos"),
                 "--protocol", "quick", "--no-progress"]) == 2
    assert "photos" in capsys.readouterr().err


def test_int8_says_which_calibration_data_it_used(monkeypatch, capsys):
    pytest.importorskip("skimage")
    import staredge.bench.harness as harness

    seen = {}

    def fake(models, specs, protocols, **kw):
        seen.update(kw)
        return BenchDocument(tool="test")

    monkeypatch.setattr(harness, "run_bench", fake)
    main(["bench", "starnet_s050", "--precision", "int8", "--protocol", "quick", "--no-progress",
          "--calibration-samples", "4"])
    out = capsys.readouterr().out
    assert "starnet_s050: int8 calibrated on 4 scikit-image photos" in out


def _result(threads: int, ms: float) -> BenchResult:
    runs = [RunStats.from_samples([ms, ms], first_ms=ms)]
    return BenchResult(model="starnet_s1", backend="onnxruntime", machine="m1", protocol="quick", variant="star",
                       runtime="onnxruntime", latency_ms=ms, reported_run=0, runs=runs, threads_requested=None,
                       threads_in_effect=threads)


def test_merge_keeps_different_thread_counts_apart(tmp_path):
    from staredge.bench import report
    from staredge.bench.protocols import get_protocol

    docs = []
    for threads, ms in ((1, 9.0), (2, 5.0)):
        d = BenchDocument(tool="test")
        d.machines["m1"] = {"label": "box", "hostname": "box", "cpu_model": "X"}
        d.protocols["quick"] = get_protocol("quick").to_dict()
        d.results = [_result(threads, ms)]
        save(d, tmp_path / f"{threads}.json")
        docs.append(load(tmp_path / f"{threads}.json"))
    merged = merge(docs)
    assert len({r.protocol for r in merged.results}) == 2  # not one column holding two thread counts
    labels = [c.label for c in report.build_table(merged).columns]
    assert sum("onnxruntime" in lab for lab in labels) == 2


@pytest.mark.parametrize("argv,words", [
    (["--threads", "1000000000"], "argument --threads: must be a positive integer of at most"),
    (["--threads", "0"], "argument --threads"),
    (["--iters", "0"], "argument --iters: must be a positive integer"),
    (["--warmup", "-1"], "argument --warmup: must be an integer >= 0"),
    (["--repeats", "0"], "argument --repeats"),
    (["--device", "tpu"], "argument --device"),
    (["--precision", "int4"], "argument --precision"),
])
def test_bench_numbers_are_checked_by_the_shared_module(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "starnet_s1", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "usage: staredge bench" in err


def test_existing_outputs_are_refused_and_unwritable_ones_named(tmp_path, capsys):
    target = tmp_path / "r.json"
    target.write_text("keep me")
    assert main(["bench", "starnet_s1", "--json", str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main(["bench", "starnet_s1", "--json", "/proc/x/r.json"]) == 2
    assert "/proc/x" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["bench", "tune"])
def test_calibration_without_int8_is_refused_not_ignored(command, monkeypatch, capsys):
    """A flag that does not apply is an error (issue 22), before any work."""
    import staredge.bench.harness as harness

    monkeypatch.setattr(harness, "run_bench", lambda *a, **k: (_ for _ in ()).throw(AssertionError("timed")))
    argv = [command, "starnet_s050", "--precision", "fp32", "--calibration", "photos/"]
    assert main(argv + (["--no-progress", "--protocol", "quick"] if command == "bench" else [])) == 2
    assert "applies to int8 only" in capsys.readouterr().err


def _fake_decode_bench(monkeypatch):
    """The LM decode benchmark replaced by a recorded document (what is tested is the CLI's
    plumbing of --json / --markdown / refusals, not the timing)."""
    import staredge.bench.generate as gen

    calls = []

    def fake(model, **kw):
        calls.append((model, kw))
        return {"schema": "staredge-bench", "tool": "staredge bench --task generate", "results": [], "model": model}

    monkeypatch.setattr(gen, "run_generate_bench", fake)
    monkeypatch.setattr(gen, "markdown_table", lambda doc: "| decode table |\n")
    return calls


def test_bench_generate_json_without_file_prints_the_document_like_every_command(monkeypatch, tmp_path, capsys):
    """``bench --task generate --json`` used to drop the JSON (the no-FILE value became None)."""
    calls = _fake_decode_bench(monkeypatch)
    assert main(["bench", "--task", "generate", "--json", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["model"] == "star_lm_pydoc" and "decode table" not in out  # stdout: the JSON only
    assert calls[0][1]["threads"] == [1]
    # --json FILE writes it (and the table goes to the terminal); an existing FILE needs --force
    target = tmp_path / "g.json"
    assert main(["bench", "--task", "generate", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["model"] == "star_lm_pydoc" and "decode table" in capsys.readouterr().out
    assert main(["bench", "--task", "generate", "--json", str(target)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["bench", "--task", "generate", "--json", str(target), "--force"]) == 0


@pytest.mark.parametrize("flag", [["--precision", "int8"], ["--protocol", "quick"], ["--iters", "3"], ["--device", "cpu"],
                                  ["--compare-star-sum"], ["--statistic", "p90"], ["--csv", "x.csv"]])
def test_bench_generate_refuses_flags_it_does_not_read(flag, monkeypatch, capsys):
    calls = _fake_decode_bench(monkeypatch)
    assert main(["bench", "--task", "generate", *flag]) == 2
    err = capsys.readouterr().err
    assert flag[0] in err and "does not apply to --task generate" in err and calls == []


@pytest.mark.parametrize("backends", ["pytorch", "onnxruntime,pytorch"])
def test_bench_generate_refuses_a_backend_that_runs_no_exported_lm(backends, monkeypatch, capsys):
    """``bench --task generate --backends pytorch`` was a StopIteration traceback from the
    artifact step: the eager model is a baseline, not a backend, and the CLI says so first."""
    calls = _fake_decode_bench(monkeypatch)
    assert main(["bench", "--task", "generate", "--backends", backends]) == 2
    err = capsys.readouterr().err
    assert "--backends pytorch" in err and "baselines" in err and "Traceback" not in err and calls == []
    assert main(["bench", "--task", "generate", "--backends", "onnxruntime", "--json"]) == 0
    assert calls[0][1]["runtimes"] == ["onnxruntime"]


def test_time_estimates_say_they_assume_an_idle_machine_and_give_the_load(monkeypatch):
    """Issue 22: an estimate says what it assumes and measures the load now."""
    import staredge.bench.estimate as estimate

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setattr("os.getloadavg", lambda: (0.3, 0.0, 0.0))
    assert estimate.idle_machine_note() == "Estimates assume an idle machine; load average now 0.3 on 4 cores."
    monkeypatch.setattr("os.getloadavg", lambda: (3.5, 0.0, 0.0))
    assert estimate.idle_machine_note().endswith("load average now 3.5 on 4 cores (busy: expect longer).")
    from staredge.bench.protocols import get_protocol

    line = estimate.describe_estimate(["a", "b"], 3, [get_protocol("paper-cpu")], probe=lambda m, t: 10.0)
    assert line.endswith("(busy: expect longer).")
