"""The latency harness: statistics, protocols, results format, reports, GPU selection, Ctrl-C.

Timings in these tests come from a fake clock (virtual time advanced by the fake runner),
so every statistic has an exact expected value and nothing depends on machine load. One
real end-to-end run (StarNet-050, PyTorch + plain ONNX + our ONNX Runtime export) checks
the whole path, with no assertion on how fast anything was.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from staredge.bench import report
from staredge.bench.device import resolve_device, torch_synchronizer
from staredge.bench.runners import Runner, RunnerFactory, threads_in_effect
from staredge.bench.specs import (
    BackendSpec,
    BackendUnavailable,
    compare_rewrite_specs,
    expand_backends,
    parse_backend,
    with_baselines,
)
from staredge.errors import DeviceError as DeviceUnavailableError
from staredge.runtimes.onnxruntime import select_providers


def ort_providers(accelerator, available):
    """The provider names the one provider selection gives for a benchmark's accelerator."""
    return [name for name, _ in select_providers("cuda", available, accelerator=accelerator)]
from staredge.bench.harness import reported_latency, run_bench
from staredge.bench.machine import parse_cpuinfo, short_machine_label
from staredge.bench.measure import RunInterrupted, time_run
from staredge.bench.protocols import PRESETS, Protocol, get_protocol
from staredge.bench.results import (
    SCHEMA_VERSION,
    BenchDocument,
    BenchFormatError,
    BenchResult,
    compute_speedups,
    load,
    merge,
    save,
)
from staredge.bench.stats import RunStats, percentile, trimmed
from staredge.cli import main
from staredge.errors import ConfigError

NS = 1_000_000  # nanoseconds per millisecond


class FakeClock:
    """Virtual time in ns; a fake runner advances it by scripted durations."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class ScriptedInfer:
    """An ``infer()`` that costs the next scripted duration (ms) of virtual time."""

    def __init__(self, clock: FakeClock, durations_ms, interrupt_at: int | None = None) -> None:
        self.clock = clock
        self.durations = list(durations_ms)
        self.calls = 0
        self.interrupt_at = interrupt_at

    def __call__(self) -> None:
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.clock.now += int(round(self.durations.pop(0) * NS))


# ----------------------------------------------------------------------------- statistics


def test_percentile_matches_numpy_linear_definition():
    values = [random.Random(3).uniform(0.5, 9.0) for _ in range(137)]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ConfigError):
        percentile([], 50)
    with pytest.raises(ConfigError):
        percentile([1.0], 101)


def test_run_stats_from_samples_exact_values():
    samples = [float(v) for v in range(1, 11)]  # 1..10 ms
    s = RunStats.from_samples(samples, first_ms=42.0, trim=(2, 3))
    assert s.n == 10 and s.first_ms == 42.0
    assert s.mean_ms == pytest.approx(5.5)
    assert s.median_ms == pytest.approx(5.5)
    assert s.p90_ms == pytest.approx(9.1)
    assert s.p99_ms == pytest.approx(9.91)
    assert s.min_ms == 1.0 and s.max_ms == 10.0
    assert s.std_ms == pytest.approx(float(np.std(samples)))
    assert s.trimmed_mean_ms == pytest.approx(np.mean([3, 4, 5, 6, 7]))
    assert s.statistic("trimmed_mean") == s.trimmed_mean_ms
    assert s.statistic("p90") == s.p90_ms
    with pytest.raises(ConfigError):
        s.statistic("fastest")
    with pytest.raises(ConfigError):
        trimmed(samples, 5, 5)


def test_time_run_with_fake_clock_times_each_inference_and_excludes_warmup():
    clock = FakeClock()
    # first (cold) call 30 ms, 3 warm-up calls of 100 ms (must not count), then 5 timed calls
    infer = ScriptedInfer(clock, [30, 100, 100, 100, 1, 2, 3, 4, 10])
    seen = []
    s = time_run(infer, warmup=3, iters=5, clock=clock, cpu_clock=None, keep_samples=True, on_progress=seen.append)
    assert infer.calls == 9
    assert s.first_ms == pytest.approx(30.0)
    assert s.samples_ms == pytest.approx([1, 2, 3, 4, 10])
    assert s.mean_ms == pytest.approx(4.0)
    assert s.median_ms == pytest.approx(3.0)
    assert s.warmup == 3 and s.n == 5
    assert seen == [1, 2, 3, 4, 5]


def test_time_run_synchronises_before_reading_the_clock():
    clock = FakeClock()
    pending = []

    def infer() -> None:  # like a CUDA launch: returns at once, work is pending
        pending.append(7 * NS)

    def sync() -> None:  # like torch.cuda.synchronize: the pending work completes here
        while pending:
            clock.now += pending.pop()

    s = time_run(infer, warmup=0, iters=4, sync=sync, clock=clock, cpu_clock=None)
    assert s.mean_ms == pytest.approx(7.0) and s.min_ms == pytest.approx(7.0)
    no_sync = time_run(infer, warmup=0, iters=4, clock=clock, cpu_clock=None)
    assert no_sync.mean_ms == 0.0  # without the sync the clock saw only the launch


def test_modelbench_trimmed_mean_over_rounds_on_synthetic_timings():
    protocol = get_protocol("modelbench")
    clock = FakeClock()
    rng = random.Random(0)
    rounds = []
    expected_per_round = []
    for r in range(protocol.repeats):
        base = [10.0 + r + 0.01 * i for i in range(30)]       # the 30 that survive the trim
        outliers = [1.0] * 10 + [500.0] * 10                  # 10 too fast, 10 too slow
        timed = base + outliers
        rng.shuffle(timed)
        rounds.append([99.0] + [77.0] * protocol.warmup + timed)  # cold + warm-up + 50 timed
        expected_per_round.append(float(np.mean(base)))
    runs = []
    for durations in rounds:
        runs.append(
            time_run(ScriptedInfer(clock, durations), protocol.warmup, protocol.iters, trim=protocol.trim,
                     clock=clock, cpu_clock=None)
        )
    assert [r.trimmed_mean_ms for r in runs] == pytest.approx(expected_per_round)
    latency, index = reported_latency(runs, protocol)
    assert index is None  # mean over rounds, not one round
    assert latency == pytest.approx(np.mean(expected_per_round))
    assert all(r.mean_ms > r.trimmed_mean_ms for r in runs)  # the slow outliers were dropped


# ----------------------------------------------------------------------------- protocols


def test_presets_match_the_papers():
    cpu = PRESETS["paper-cpu"]
    assert (cpu.threads, cpu.warmup, cpu.iters, cpu.repeats, cpu.statistic) == (4, 50, 500, 1, "mean")
    assert cpu.backends == ("onnxruntime",) and cpu.device == "cpu"
    gpu = PRESETS["paper-gpu"]
    assert gpu.device == "cuda" and (gpu.warmup, gpu.iters) == (50, 500)
    assert "pointwise_conv_to_linear" in gpu.rewrite and gpu.backends == ("onnxruntime:cuda",)
    ios = PRESETS["ios-settings-on-host"]  # renamed by issue 15: it times the host CPU, not an iPhone
    assert ios.repeats == 3 and ios.reduce == "last"
    mb = PRESETS["modelbench-settings-on-host"]  # renamed by issue 15, like ios
    assert (mb.repeats, mb.iters, mb.warmup, mb.trim_low, mb.trim_high) == (20, 50, 1, 10, 10)
    assert mb.statistic == "trimmed_mean" and mb.reduce == "mean" and mb.recreate_per_run


def test_protocol_overrides_are_applied_and_recorded():
    p = get_protocol("paper-cpu", threads=2, iters=100, warmup=None)
    assert (p.threads, p.iters, p.warmup) == (2, 100, 50)
    assert p.overrides == ("iters", "threads")
    assert get_protocol("paper-cpu").overrides == ()
    assert get_protocol("paper-cpu", threads=4, iters=500).overrides == ()  # same as the preset
    assert Protocol.from_dict(p.to_dict()) == p
    with pytest.raises(ConfigError, match="unknown protocol"):
        get_protocol("paper-tpu")
    with pytest.raises(ConfigError, match="raise --iters"):
        get_protocol("modelbench", iters=15)  # cannot drop 10 + 10 of 15
    with pytest.raises(ConfigError):
        get_protocol("paper-cpu", threads=0)
    with pytest.raises(ConfigError):
        get_protocol("paper-cpu", statistic="fastest")


def test_ios_protocol_reports_the_last_of_three_runs(tmp_path):
    clock = FakeClock()
    # three runs with means 5, 4, 3 ms: the last one is reported, all three are kept
    per_run = [[20.0] + [1.0] * 2 + [m] * 4 for m in (5.0, 4.0, 3.0)]
    script = [d for run in per_run for d in run]
    protocol = get_protocol("ios", warmup=2, iters=4, backends=("pytorch",))
    doc = run_bench(
        ["starnet_s050"], [BackendSpec("pytorch")], [protocol], show_progress=False, workdir=str(tmp_path),
        factory_class=_fake_factory(clock, {"pytorch": script}), clock=clock,
    )
    (r,) = doc.results
    assert r.status == "ok" and len(r.runs) == 3
    assert [run.mean_ms for run in r.runs] == pytest.approx([5.0, 4.0, 3.0])
    assert r.latency_ms == pytest.approx(3.0) and r.reported_run == 2


def test_interleaved_runs_alternate_backends_round_robin(tmp_path):
    clock = FakeClock()
    order = []

    class LoggingFactory:
        def __init__(self, model, workdir, default_rewrite="auto", **_):
            pass

        def build(self, spec, threads):
            ms = {"pytorch": 10.0, "onnx-plain": 4.0}[spec.label]

            def infer() -> None:
                order.append(spec.label)
                clock.now += int(ms * NS)

            return Runner(infer=infer, threads=threads)

    protocol = get_protocol("paper-cpu", warmup=0, iters=2, repeats=3, reduce="mean")
    doc = run_bench(["starnet_s050"], [BackendSpec("pytorch"), BackendSpec("onnx-plain")], [protocol],
                    show_progress=False, workdir=str(tmp_path), factory_class=LoggingFactory, clock=clock,
                    interleave=True)
    # each run is 1 cold + 2 timed calls; runs alternate between the backends
    runs_order = order[::3]
    assert runs_order == ["pytorch", "onnx-plain"] * 3
    by = {r.backend: r for r in doc.results}
    assert len(by["pytorch"].runs) == 3 and by["pytorch"].latency_ms == pytest.approx(10.0)
    assert by["onnx-plain"].speedup_vs["pytorch"] == pytest.approx(2.5)


# ----------------------------------------------------------------------------- backends and GPU selection


def test_backend_specs_parse_and_expand():
    s = parse_backend("onnxruntime:cuda@fuse+pwlinear")
    assert s == BackendSpec("onnxruntime", "cuda", ("fuse_batchnorm", "pointwise_conv_to_linear"))
    assert s.label == "onnxruntime:cuda@fuse+pwlinear" and parse_backend(s.label) == s
    assert parse_backend("pytorch").baseline == "pytorch"
    assert parse_backend("pytorch@pwlinear").baseline is None
    assert parse_backend("onnxruntime@none").rewrites == ()
    with pytest.raises(ConfigError, match="unknown backend"):
        parse_backend("tensorflow")
    with pytest.raises(ConfigError, match="supports"):
        parse_backend("openvino:tensorrt")
    with pytest.raises(ConfigError, match="baseline"):
        parse_backend("onnx-plain@fuse")
    cpu_all = [s.label for s in expand_backends(["all"], device="cpu")]
    assert cpu_all == ["pytorch", "onnx-plain", "onnxruntime", "openvino", "litert", "coreml"]
    gpu_all = expand_backends(["all"], device="cuda")
    assert {s.device for s in gpu_all} == {"cuda"}
    for runtime, accel in (("onnxruntime", "cuda"), ("onnxruntime", "tensorrt"), ("pytorch", "cuda")):
        rewrites = {s.rewrites for s in gpu_all if (s.runtime, s.accelerator) == (runtime, accel)}
        assert any(r and "pointwise_conv_to_linear" in r for r in rewrites)  # with the rewrite
        assert any(not r or "pointwise_conv_to_linear" not in r for r in rewrites)  # and without
    assert [s.label for s in expand_backends(["pytorch,pytorch", "onnxruntime"])] == ["pytorch", "onnxruntime"]
    assert [s.label for s in with_baselines([BackendSpec("onnxruntime"), BackendSpec("pytorch")])] == [
        "onnx-plain", "onnxruntime", "pytorch"]
    assert [s.label for s in with_baselines([], device="cuda")] == ["pytorch:cuda", "onnx-plain:cuda"]
    pairs = compare_rewrite_specs([BackendSpec("pytorch"), BackendSpec("openvino")])
    assert [p.label for p in pairs] == ["pytorch", "openvino@fuse", "openvino@fuse+pwlinear"]


def test_device_selection_with_mocked_availability():
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    assert resolve_device("tensorrt", cuda_available=True) == "cuda"
    with pytest.raises(DeviceUnavailableError, match="staredge\\[gpu\\]"):
        resolve_device("cuda", cuda_available=False)
    gpu_providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("cpu", gpu_providers) == ["CPUExecutionProvider"]
    assert ort_providers("cuda", gpu_providers) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("tensorrt", gpu_providers)[0] == "TensorrtExecutionProvider"
    with pytest.raises(DeviceUnavailableError, match="TensorrtExecutionProvider"):
        ort_providers("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        ort_providers("cuda", ["CPUExecutionProvider"])


def test_gpu_synchronisation_is_selected_per_device():
    calls = []

    class FakeCuda:
        @staticmethod
        def synchronize() -> None:
            calls.append("sync")

    class FakeTorch:
        cuda = FakeCuda

    assert torch_synchronizer("cpu", FakeTorch) is None
    sync = torch_synchronizer("cuda", FakeTorch)
    sync()
    assert calls == ["sync"]


def test_onnx_io_binding_through_the_backend_matches_forward(tmp_path):
    """IO binding lives in the ONNX Runtime backend (prepare): bound once, run, synced, same numbers."""
    from staredge.bench.artifacts import ArtifactCache
    from staredge.metadata import ArtifactMetadata
    from staredge.runtimes import load_backend

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)
    path = ArtifactCache(model, tmp_path).plain_onnx(x)  # the onnx-plain baseline: no StarEdge metadata
    meta = ArtifactMetadata(model="conv", family="custom", input_size=[3, 8, 8])
    backend = load_backend(str(path), device="cpu", io_binding=True, metadata=meta)
    run = backend.prepare(x)
    run()
    run.sync()
    bound = run.outputs()[0]
    np.testing.assert_allclose(bound, backend.forward(x)[0], rtol=0, atol=0)
    with torch.no_grad():
        np.testing.assert_allclose(bound, model(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_threads_in_effect_asks_the_runtime():
    class Options:
        intra_op_num_threads = 3

    class OrtLike:
        threads = 99
        session = type("S", (), {"get_session_options": lambda self: Options()})()

    class OpenVinoLike:
        threads = 99
        compiled = type("C", (), {"get_property": lambda self, key: {"INFERENCE_NUM_THREADS": 2}[key]})()

    assert threads_in_effect(OrtLike()) == 3
    assert threads_in_effect(OpenVinoLike()) == 2
    assert threads_in_effect(type("Other", (), {"threads": 5})()) == 5


def test_gpu_backends_without_cuda_are_reported_unavailable(tmp_path):
    model = torch.nn.Conv2d(3, 4, 1).eval()
    factory = RunnerFactory(model, tmp_path, torch_cuda=False, providers=["CPUExecutionProvider"])
    for spec in (BackendSpec("pytorch", "cuda"), BackendSpec("onnxruntime", "cuda"), BackendSpec("onnx-plain", "tensorrt")):
        with pytest.raises(DeviceUnavailableError):
            factory.check(spec)
    # with CUDA "present" the same specs pass the selection (nothing is run)
    gpu = RunnerFactory(model, tmp_path, torch_cuda=True,
                        providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    for spec in (BackendSpec("pytorch", "cuda"), BackendSpec("onnxruntime", "cuda"), BackendSpec("onnx-plain", "tensorrt")):
        gpu.check(spec)
    with pytest.raises(BackendUnavailable, match="Apple"):
        factory.check(BackendSpec("coreml"))


def test_paper_gpu_protocol_on_a_cpu_machine_records_why(tmp_path):
    protocol = get_protocol("paper-gpu", warmup=1, iters=2)
    specs = expand_backends(list(protocol.backends), device=protocol.device)
    doc = run_bench(["starnet_s050"], specs, [protocol], show_progress=False, workdir=str(tmp_path),
                    factory_options={"torch_cuda": False, "providers": ["CPUExecutionProvider"]})
    (r,) = doc.results
    assert r.status == "unavailable" and "CUDAExecutionProvider" in r.error and r.latency_ms is None


# ----------------------------------------------------------------------------- results format, ratios, reports


def _result(model, backend, ms, machine="m1", protocol="paper-cpu", variant="star", **kw):
    baseline = backend if backend in ("pytorch", "onnx-plain") else None
    runs = [RunStats.from_samples([ms, ms], first_ms=ms * 3)] if ms is not None else []
    return BenchResult(model=model, backend=backend, machine=machine, protocol=protocol, variant=variant,
                       runtime=backend.split("@")[0], baseline=baseline, latency_ms=ms, reported_run=0 if runs else None, runs=runs,
                       params_m=2.9, macs_m=421.9, threads_requested=4, **kw)


def _doc(machine_label="box A", results=None):
    doc = BenchDocument(tool="test")
    doc.machines["m1"] = {"label": machine_label, "cpu_model": "X", "hostname": machine_label}
    doc.protocols["paper-cpu"] = get_protocol("paper-cpu").to_dict()
    doc.results = results if results is not None else [
        _result("starnet_s1", "pytorch", 10.0),
        _result("starnet_s1", "onnx-plain", 5.0),
        _result("starnet_s1", "onnxruntime", 4.0),
        _result("starnet_s1", "openvino", 8.0),
        _result("starnet_s1", "coreml", None, status="unavailable", error="CoreML runs only on Apple platforms"),
    ]
    compute_speedups(doc.results)
    return doc


def test_speedups_are_baseline_over_runtime_within_a_group():
    doc = _doc()
    by = {r.backend: r for r in doc.results}
    assert by["onnxruntime"].speedup_vs == {"pytorch": 2.5, "onnx-plain": 1.25}
    assert by["openvino"].speedup_vs == {"pytorch": 1.25, "onnx-plain": 0.625}
    assert by["pytorch"].speedup_vs["pytorch"] == 1.0
    assert by["coreml"].speedup_vs == {}
    # a result under another protocol does not use these baselines
    other = _result("starnet_s1", "onnxruntime", 4.0, protocol="ios")
    compute_speedups(doc.results + [other])
    assert other.speedup_vs == {}


def test_json_round_trip_and_format_errors(tmp_path):
    doc = _doc()
    path = save(doc, tmp_path / "r.json")
    back = load(path)
    assert back.to_dict() == doc.to_dict()
    data = json.loads(path.read_text())
    assert data["schema"] == "staredge-bench" and data["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ConfigError, match="--force"):
        save(doc, path, force=False)
    newer = dict(data, schema_version=SCHEMA_VERSION + 1)
    (tmp_path / "new.json").write_text(json.dumps(newer))
    with pytest.raises(BenchFormatError, match="upgrade"):
        load(tmp_path / "new.json")
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    with pytest.raises(BenchFormatError, match="staredge-bench"):
        load(tmp_path / "other.json")
    broken = dict(data)
    broken["results"] = [dict(data["results"][0], machine="nowhere")]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(BenchFormatError, match="unknown machine"):
        load(tmp_path / "broken.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(BenchFormatError, match="not valid JSON"):
        load(tmp_path / "junk.json")


def test_merge_combines_machines_into_one_table(tmp_path):
    linux = _doc("linux box")
    phone = BenchDocument(tool="StarEdge iOS app")
    phone.machines["m1"] = {"label": "iPhone 13", "hostname": "iphone"}  # same id, different machine
    phone.protocols["ios"] = get_protocol("ios", backends=("coreml",)).to_dict()
    phone.results = [_result("starnet_s1", "coreml", 0.8, protocol="ios"),
                     _result("starnet_s2", "coreml", 0.9, protocol="ios")]
    save(linux, tmp_path / "a.json")
    save(phone, tmp_path / "b.json")
    merged = merge([load(tmp_path / "a.json"), load(tmp_path / "b.json")])
    assert len(merged.machines) == 2 and len(merged.results) == 7
    phone_ids = {r.machine for r in merged.results if r.backend == "coreml" and r.ok}
    assert phone_ids == {"m1~2"} and merged.machines["m1~2"]["label"] == "iPhone 13"
    table = report.build_table(merged)
    labels = [c.label for c in table.columns]
    assert any("coreml" in lab and "iPhone 13" in lab for lab in labels)
    assert any(lab.startswith("onnxruntime") and "linux box" in lab for lab in labels)
    assert [r.name for r in table.rows] == ["starnet_s1", "starnet_s2"]
    # the CLI merges too, writing one table
    out = tmp_path / "m.md"
    assert main(["bench", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--markdown", str(out)]) == 0
    assert "iPhone 13" in out.read_text()


def test_markdown_and_csv_rendering():
    doc = _doc()
    md = report.to_markdown(doc)
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| model | params"))
    assert "pytorch (ms)" in header and "onnxruntime (ms)" in header
    assert "paper: E5-2680 v4 CPU, 4 threads, ONNX Runtime (ms)" in header
    assert "coreml (ms)" not in header  # never measured: listed below the table instead
    row = next(l for l in lines if l.startswith("| starnet_s1 | 2.90"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["starnet_s1", "2.90", "421.9", "73.5"]
    assert cells[4:8] == ["10.00", "5.00", "4.00", "8.00"]
    assert cells[8:] == ["4.3", "2.3", "0.7"]  # the paper's E5 CPU, P100, iPhone13
    assert "×2.50 / ×1.25" in md and "×1.25 / ×0.62" in md
    assert "`coreml` not measured" in md and "Apple" in md
    rows = list(csv.DictReader(io.StringIO(report.to_csv(doc))))
    assert len(rows) == 5
    ort = next(r for r in rows if r["backend"] == "onnxruntime")
    assert float(ort["latency_ms"]) == 4.0 and float(ort["speedup_vs_pytorch"]) == 2.5
    assert float(ort["first_ms"]) == 12.0 and ort["paper_top1"] == "73.5"
    assert next(r for r in rows if r["backend"] == "coreml")["status"] == "unavailable"


def test_star_sum_table_follows_paper_table_8():
    results = [
        _result("starnet_s1", "onnxruntime", 4.0),
        _result("starnet_s1", "onnxruntime", 3.5, variant="sum"),
    ]
    doc = _doc(results=results)
    table = report.build_table(doc)
    assert [r.name for r in table.rows] == ["starnet_s1", "starnet_s1 (sum)"]
    (row,) = report.star_sum_rows(table)
    assert row[0] == "starnet_s1" and row[1] == "3.50 / 4.00 (+0.50)"
    assert "3.8 / 4.3 (+0.5)" in row  # the paper's CPU figures, Table 8
    assert "sum / star" in report.to_markdown(doc)


def test_plot_writes_a_png_with_one_series_per_runtime(tmp_path):
    results = [_result(m, b, ms) for m, b, ms in (
        ("starnet_s1", "pytorch", 10.0), ("starnet_s2", "pytorch", 12.0),
        ("starnet_s1", "onnxruntime", 4.0), ("starnet_s2", "onnxruntime", 5.0))]
    path = tmp_path / "fig.png"
    drawn = report.plot_latency_vs_top1(_doc(results=results), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn[:2] == ["pytorch", "onnxruntime"]
    assert "paper: E5-2680 v4 CPU, 4 threads, ONNX Runtime" in drawn


def test_machine_parsing_and_label():
    info = parse_cpuinfo("model name\t: Test CPU\ncpu cores\t: 8\nflags\t\t: sse avx2 avx512f avx512_bf16\n")
    assert info == {"cpu_model": "Test CPU", "physical_cores": 8, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]}
    assert short_machine_label({**info, "usable_cpus": 8}) == "Test CPU, 8 cores, AVX-512"


# ----------------------------------------------------------------------------- Ctrl-C


def _fake_factory(clock: FakeClock, scripts: dict[str, list[float]], interrupt: dict[str, int] | None = None):
    """A RunnerFactory stand-in whose runners spend scripted virtual time."""

    class FakeFactory:
        def __init__(self, model, workdir, default_rewrite="auto", **_):
            self.default_rewrite = default_rewrite

        def build(self, spec, threads):
            infer = ScriptedInfer(clock, scripts[spec.label], (interrupt or {}).get(spec.label))
            return Runner(infer=infer, threads=threads, runtime_version="fake")

    return FakeFactory


def test_ctrl_c_keeps_results_measured_so_far(tmp_path):
    clock = FakeClock()
    protocol = get_protocol("paper-cpu", warmup=1, iters=4)
    scripts = {"pytorch": [9, 9, 10, 10, 10, 10], "onnx-plain": [9, 9, 5, 5, 5, 5], "onnxruntime": [9] * 6}
    # onnx-plain: cold + warm-up + 2 timed inferences, then Ctrl-C on the 5th call
    checkpoints = []
    doc = run_bench(
        ["starnet_s050"], [BackendSpec("pytorch"), BackendSpec("onnx-plain"), BackendSpec("onnxruntime")],
        [protocol], show_progress=False, workdir=str(tmp_path), clock=clock,
        factory_class=_fake_factory(clock, scripts, {"onnx-plain": 5}),
        checkpoint=lambda d: checkpoints.append(d.to_dict()),
    )
    assert not doc.complete and "interrupted" in doc.notes[0]
    assert [r.backend for r in doc.results] == ["pytorch", "onnx-plain"]  # onnxruntime never started
    full, partial = doc.results
    assert full.status == "ok" and full.latency_ms == pytest.approx(10.0)
    assert partial.status == "interrupted" and partial.runs[0].n == 2 and partial.runs[0].interrupted
    assert partial.latency_ms == pytest.approx(5.0)
    assert full.speedup_vs["onnx-plain"] == pytest.approx(0.5)
    assert len(checkpoints[-1]["results"]) == 2


def test_ctrl_c_in_the_cli_writes_partial_json(tmp_path, monkeypatch):
    import staredge.bench.harness as harness

    clock = FakeClock()
    scripts = {"pytorch": [1.0] * 10, "onnx-plain": [1.0] * 10}
    monkeypatch.setattr(harness, "RunnerFactory", _fake_factory(clock, scripts, {"onnx-plain": 1}))
    out = tmp_path / "r.json"
    code = main(["bench", "starnet_s050", "--backends", "onnx-plain", "--warmup", "1", "--iters", "3",
                 "--out", str(out), "--no-progress"])
    assert code == 130
    data = json.loads(out.read_text())
    assert data["complete"] is False
    assert [(r["backend"], r["status"]) for r in data["results"]] == [("pytorch", "ok")]


def test_cli_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert main(["bench", "starnet_s050", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "{}"


# ----------------------------------------------------------------------------- real end-to-end


def test_real_tiny_end_to_end_run(tmp_path):
    """StarNet-050 on PyTorch eager, plain ONNX Runtime and our ONNX export: 2 warm-up, 3 timed."""
    out, md, csv_path, png = (tmp_path / n for n in ("r.json", "r.md", "r.csv", "r.png"))
    code = main([
        "bench", "starnet_s050", "--backends", "onnxruntime", "--threads", "1",
        "--warmup", "2", "--iters", "3", "--out", str(out), "--markdown", str(md), "--csv", str(csv_path),
        "--plot", str(png), "--no-progress", "--workdir", str(tmp_path / "work"),
    ])
    assert code == 0
    doc = load(out)
    assert doc.complete
    by = {r.backend: r for r in doc.results}
    assert set(by) == {"pytorch", "onnx-plain", "onnxruntime"}
    for r in by.values():
        assert r.status == "ok", r.error
        assert r.latency_ms > 0 and r.runs[0].n == 3 and r.runs[0].warmup == 2
        assert r.threads_in_effect == 1 and r.threads_requested == 1
        assert r.macs_m == pytest.approx(91.3, abs=0.1)
    from staredge.exporters.passes import resolve_passes

    assert by["onnxruntime"].rewrites == resolve_passes("auto", "onnx")  # what --rewrite auto chose for ONNX
    assert "fuse_batchnorm" in by["onnxruntime"].rewrites
    assert by["onnxruntime"].speedup_vs["pytorch"] == pytest.approx(
        by["pytorch"].latency_ms / by["onnxruntime"].latency_ms, rel=1e-3)
    machine = doc.machines[by["pytorch"].machine]
    assert machine["versions"]["onnxruntime"] and machine["logical_cpus"] >= 1
    assert "starnet_s050" in md.read_text() and png.read_bytes()[:4] == b"\x89PNG"
    assert len(list(csv.DictReader(io.StringIO(csv_path.read_text())))) == 3


def test_runners_compute_the_same_logits_as_pytorch(tmp_path):
    """What is timed is the model: each runner's output equals PyTorch's within 1e-4."""
    from staredge.models import create

    model = create("starnet_s050")
    factory = RunnerFactory(model, tmp_path)
    with torch.no_grad():
        want = model(torch.from_numpy(factory.x)).numpy()
    for spec in (BackendSpec("pytorch"), BackendSpec("onnx-plain"), BackendSpec("onnxruntime")):
        runner = factory.build(spec, threads=1)
        try:
            got = runner.infer()
        finally:
            runner.close()
        got = got.numpy() if isinstance(got, torch.Tensor) else np.asarray(got[0])
        assert np.abs(got - want).max() < 1e-4, spec.label


def test_the_documented_minimal_document_loads_and_merges(tmp_path):
    """The example in docs/bench-format.md (what the iOS app writes) is a valid document."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "bench-format.md").read_text()
    example = text.split("```json", 1)[1].split("```", 1)[0]
    (tmp_path / "ios.json").write_text(example)
    phone = load(tmp_path / "ios.json")
    (r,) = phone.results
    assert r.latency_ms == 0.71 and len(r.runs) == 3 and r.runs[r.reported_run].mean_ms == 0.71
    merged = merge([_doc(), phone])
    labels = [c.label for c in report.build_table(merged).columns]
    assert any(lab.startswith("coreml:all") and "iPhone 13" in lab for lab in labels)


def test_star_sum_comparison_skips_models_without_a_sum_variant(tmp_path):
    clock = FakeClock()
    protocol = get_protocol("paper-cpu", warmup=0, iters=2)
    scripts = {"pytorch": [1.0] * 100}
    doc = run_bench(["starnet_s050", "efficientformerv2_s0"], [BackendSpec("pytorch")], [protocol],
                    variants=("star", "sum"), show_progress=False, workdir=str(tmp_path), clock=clock,
                    factory_class=_fake_factory(clock, scripts))
    assert [(r.model, r.variant) for r in doc.results] == [
        ("starnet_s050", "star"), ("starnet_s050", "sum"), ("efficientformerv2_s0", "star")]
    assert any("efficientformerv2_s0 has no star→sum variant" in n for n in doc.notes)


# ----------------------------------------------------------------------------- issue 15: numbers a user can trust

from staredge.bench import reliability as rel
from staredge.bench.estimate import describe_estimate, estimate_seconds, format_duration, planned_inferences
from staredge.bench.machine import compact_machine_label, count_physical_cores
from staredge.bench.protocols import ALIASES, default_threads


def _heavy_tail_runs():
    """95 inferences of 5 ms and 5 of 40 ms: median 5, p99 40 (a busy machine's tail)."""
    return [RunStats.from_samples([5.0] * 95 + [40.0] * 5)]


def _quiet_machine(cores=8, load=(0.1, 0.1, 0.1)):
    return {"label": "quiet box", "hostname": "quiet", "usable_cpus": cores, "logical_cpus": cores,
            "load_average": list(load)}


def test_reliability_flags_a_heavy_tail_a_wide_spread_oversubscription_and_load():
    quiet = rel.assess([RunStats.from_samples([5.0 + 0.01 * i for i in range(100)])], cores=8, threads=4,
                       load_start=[0.2, 0.2, 0.2], load_after=[4.1, 1, 1], own_busy=3.9)
    assert not quiet.flagged and quiet.reasons == [] and quiet.tail_ratio < 1.1
    assert quiet.other_load_per_core == pytest.approx(0.2 / 8, abs=1e-3)  # the run's own 3.9 cores are not "other"
    tail = rel.assess(_heavy_tail_runs(), cores=8, threads=4)
    assert tail.flagged and tail.tail_ratio == pytest.approx(8.0)
    assert any("heavy tail" in r for r in tail.reasons) and any("wide spread" in r for r in tail.reasons)
    over = rel.assess([RunStats.from_samples([5.0] * 20)], cores=2, threads=4)
    assert over.flagged and over.reasons == ["4 threads on 2 cores: the threads compete for the cores"]
    busy = rel.assess([RunStats.from_samples([5.0] * 20)], cores=2, threads=2, load_start=[7.1, 6.0, 5.0])
    assert busy.flagged and busy.other_load_per_core == pytest.approx(3.55)
    assert any("busy machine" in r and "7.1" in r for r in busy.reasons)
    # too few timings to judge a spread: not flagged for it (a 2-sample run's p99 is its max)
    assert not rel.assess([RunStats.from_samples([1.0, 9.0])], cores=8, threads=1).flagged


def test_unreliable_run_is_flagged_in_the_json_and_marked_in_the_tables(tmp_path, monkeypatch, capsys):
    import staredge.bench.harness as harness

    clock = FakeClock()
    monkeypatch.setattr(harness, "machine_info", lambda: _quiet_machine())
    monkeypatch.setattr(harness, "load_average", lambda: [0.1, 0.1, 0.1])
    heavy = [5.0] * 95 + [40.0] * 5
    random.Random(1).shuffle(heavy)
    scripts = {"pytorch": [9.0] + heavy, "onnxruntime": [9.0] + [4.0 + 0.001 * i for i in range(100)]}
    protocol = get_protocol("paper-cpu", warmup=0, iters=100, threads=4)
    doc = run_bench(["starnet_s050"], [BackendSpec("pytorch"), BackendSpec("onnxruntime")], [protocol],
                    show_progress=False, workdir=str(tmp_path), clock=clock, factory_class=_fake_factory(clock, scripts))
    by = {r.backend: r for r in doc.results}
    assert by["pytorch"].reliability["flagged"] and "heavy tail" in by["pytorch"].reliability["reasons"][0]
    assert by["onnxruntime"].reliability["flagged"] is False
    # the spread for the bar chart is kept, the samples are not (no --keep-samples)
    assert by["pytorch"].spread_ms["median"] == 5.0 and by["pytorch"].spread_ms["p90"] == 5.0
    assert by["pytorch"].runs[0].samples_ms is None
    # mean 6.75 vs median 5: the speed-up the tables print is the ratio of medians
    assert by["onnxruntime"].speedup_vs["pytorch"] == pytest.approx(6.75 / by["onnxruntime"].latency_ms, rel=1e-3)
    assert by["onnxruntime"].speedup_median_vs["pytorch"] == pytest.approx(5.0 / by["onnxruntime"].median_ms, rel=1e-3)
    data = json.loads(save(doc, tmp_path / "r.json").read_text())
    assert data["schema_version"] == 1  # new keys only: older readers ignore them (docs/bench-format.md)
    (flagged,) = [r for r in data["results"] if r["reliability"]["flagged"]]
    assert flagged["backend"] == "pytorch" and flagged["reliability"]["tail_ratio"] == pytest.approx(8.0)
    assert load(tmp_path / "r.json").to_dict() == doc.to_dict()
    md = report.to_markdown(doc)
    assert "5.00!" in md and rel.CAPTION in md and "starnet_s050 · pytorch: heavy tail" in md
    by_median = f"×{5.0 / by['onnxruntime'].median_ms:.2f}"  # ×1.23: 5.0 / 4.05 by medians
    assert by_median == "×1.23" and by_median in md and "×1.67" not in md  # not 6.75 / 4.05 by means
    out = io.StringIO()
    from rich.console import Console

    report.print_tables(doc, Console(file=out, width=100))
    text = out.getvalue()
    assert "5.00!" in text and "! = unreliable" in text
    rows = list(csv.DictReader(io.StringIO(report.to_csv(doc))))
    assert {r["backend"]: r["unreliable"] for r in rows} == {"pytorch": "1", "onnxruntime": "0"}


def test_star_vs_sum_at_high_load_is_not_a_result():
    doc = _doc(results=[
        _result("starnet_s1", "onnxruntime", 4.0),
        _result("starnet_s1", "onnxruntime", 3.5, variant="sum"),
    ])
    doc.machines["m1"].update(usable_cpus=4, load_average=[7.1, 6.9, 6.0])  # the issue: +56.9 ms "result" at load 7.1
    table = report.build_table(doc)
    (row,) = report.star_sum_rows(table)
    assert row[1] == "3.50 / 4.00 (not a result!)"
    assert "+0.50" not in row[1]
    md = report.to_markdown(doc)
    assert report.STAR_SUM_CAPTION in md and "busy machine" in md
    from rich.console import Console

    out = io.StringIO()
    report.print_tables(doc, Console(file=out, width=100))
    assert "not a result!" in out.getvalue() and "says nothing about star vs. sum" in out.getvalue()
    # the same pair on a quiet machine is a result
    doc.machines["m1"].update(load_average=[0.1, 0.1, 0.1])
    assert report.star_sum_rows(report.build_table(doc))[0][1] == "3.50 / 4.00 (+0.50)"


def test_default_threads_are_the_physical_cores_at_most_the_presets():
    import argparse

    from staredge.commands.bench import build_protocols

    cpuinfo = "".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n\n" for i in range(4))
    assert count_physical_cores(cpuinfo) == 2  # 4 hyper-threads on 2 cores
    assert count_physical_cores(cpuinfo, usable={0, 1}) == 1
    assert count_physical_cores("processor\t: 0\n") is None
    args = argparse.Namespace(protocol="paper-cpu", threads=None, warmup=None, iters=None, repeats=None,
                              device=None, rewrite=None, statistic=None, reduce=None)
    (two,) = build_protocols(args, physical_cores=2)
    assert two.threads == 2 and "threads" in two.overrides  # not the paper's 4 on a 2-core box
    (many,) = build_protocols(args, physical_cores=32)
    assert many.threads == 4 and many.overrides == ()  # the paper's count where the cores allow it
    args.threads = "1,3"
    assert [p.threads for p in build_protocols(args, physical_cores=2)] == [1, 3]  # asked for: as asked
    assert default_threads(PRESETS["paper-gpu"], 2) is None


def test_quick_preset_and_the_time_estimate():
    quick = get_protocol("quick")
    assert (quick.warmup, quick.iters, quick.repeats, quick.statistic) == (5, 30, 1, "median")
    paper = get_protocol("paper-cpu")
    assert planned_inferences(2, 3, [paper]) == 2 * 3 * 551
    assert estimate_seconds({"a": 10.0, "b": 10.0}, 3, [paper]) == pytest.approx(33.06)
    line = describe_estimate(["a", "b"], 3, [paper], probe=lambda m, t: 10.0, quick=quick)
    assert line.startswith("Estimated time: about 33 s") and "3,306 inferences" in line
    assert "--protocol quick takes about 2 s" in line
    assert describe_estimate(["a"], 3, [quick], probe=lambda m, t: 10.0) is None  # short: no estimate, no probe
    assert [format_duration(s) for s in (0.2, 75, 1500, 9000)] == ["about 1 s", "about 75 s", "about 25 min", "about 2.5 h"]


def test_cli_quick_preset_prints_the_estimate_and_notices(tmp_path, monkeypatch, capsys):
    import staredge.bench.estimate as estimate
    import staredge.bench.harness as harness
    import staredge.bench.machine as machine

    clock = FakeClock()
    monkeypatch.setattr(harness, "RunnerFactory", _fake_factory(clock, {"pytorch": [1.0] * 10_000, "onnx-plain": [1.0] * 10_000, "litert": [1.0] * 10_000}))
    monkeypatch.setattr(machine, "physical_cores", lambda: 2)
    monkeypatch.setattr(estimate, "probe_model", lambda name, threads: 2.0)
    out = tmp_path / "q.json"
    assert main(["bench", "starnet_s050", "--protocol", "quick", "--backends", "tflite", "--json", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2 thread(s), the physical cores of this machine, instead of the preset's 4" in text
    data = json.loads(out.read_text())
    assert list(data["protocols"]) == ["quick[threads=2]"]
    assert {r["backend"] for r in data["results"]} == {"pytorch", "onnx-plain", "litert"}  # tflite → litert
    assert all(r["runs"][0]["n"] == 30 and r["runs"][0]["warmup"] == 5 for r in data["results"])
    # a long run says how long it will take before it starts (and what quick would take)
    long_out = tmp_path / "long.json"
    assert main(["bench", "starnet_s050", "--backends", "litert", "--iters", "900", "--warmup", "1",
                 "--json", str(long_out)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long lines at the console width
    assert "Estimated time:" in text and "--protocol quick takes" in text
    assert text.index("Estimated time:") < text.index("Latency, batch 1")


def test_protocols_that_imitate_a_phone_say_so(tmp_path, monkeypatch, capsys):
    import staredge.bench.harness as harness

    clock = FakeClock()
    monkeypatch.setattr(harness, "RunnerFactory", _fake_factory(clock, {"pytorch": [1.0] * 100, "onnx-plain": [1.0] * 100}))
    assert ALIASES == {"ios": "ios-settings-on-host", "modelbench": "modelbench-settings-on-host"}
    assert get_protocol("ios") == get_protocol("ios-settings-on-host")
    out = tmp_path / "r.json"
    assert main(["bench", "starnet_s050", "--protocol", "ios", "--backends", "onnx-plain", "--warmup", "0",
                 "--iters", "2", "--threads", "1", "--json", str(out), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--protocol ios is now called ios-settings-on-host" in text
    assert "times this host's CPU: these are not iPhone numbers" in text
    (proto,) = json.loads(out.read_text())["protocols"].values()
    assert proto["name"] == "ios-settings-on-host" and proto["imitates"].startswith("iPhone")
    assert all(not p.imitates for n, p in PRESETS.items() if not n.endswith("-on-host"))


def _many_runtime_merge():
    """A Linux document with six runtimes and a phone document with three CoreML settings."""
    linux = _doc("linux box")
    linux.results += [_result("starnet_s1", "litert", 6.0), _result("starnet_s1", "openvino@fuse+pwlinear", 7.5),
                      _result("starnet_s2", "pytorch", 12.0), _result("starnet_s2", "onnxruntime", 5.0)]
    phone = BenchDocument(tool="StarEdge iOS 1.0")
    phone.machines["iphone"] = {"label": "iPhone 13", "os": "iOS 18.1"}
    phone.protocols["ios"] = {"name": "ios", "threads": None, "warmup": 50, "iters": 500, "repeats": 3,
                              "reduce": "last", "statistic": "mean"}
    phone.results = [_result(m, b, 0.8, machine="iphone", protocol="ios")
                     for m in ("starnet_s1", "starnet_s2") for b in ("coreml:all", "coreml:cpuAndGPU", "coreml:cpuOnly")]
    return linux, phone


def test_merged_tables_fit_100_columns_with_readable_headers(tmp_path, capsys):
    import re

    linux, phone = _many_runtime_merge()
    merged = merge([linux, phone])
    labels = {r.backend for r in merged.results if r.ok}
    assert len(labels) >= 8
    from rich.console import Console

    out = io.StringIO()
    report.print_tables(merged, Console(file=out, width=240))  # a wide terminal still gets <= 100 columns
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    for word in ("model / runtime", "measured on", "median", "p90", "mean", "×PyTorch", "×ORT"):
        assert word in text, word
    for label in labels:  # every runtime label whole, never cut to a few letters
        assert re.search(rf"(^|\s){re.escape(label)}(\s|$)", text, re.M), label
    assert "iPhone 13 · ios" in text and "linux box · paper-cpu" in text
    # the same through the CLI
    save(linux, tmp_path / "a.json")
    save(phone, tmp_path / "b.json")
    assert main(["bench", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    cli_text = capsys.readouterr().out
    assert max(len(line) for line in cli_text.splitlines()) <= 100
    assert "coreml:cpuAndGPU" in cli_text and "openvino@fuse+pwlinear" in cli_text
    # a narrow terminal narrows the tables further, without breaking names or numbers
    out = io.StringIO()
    report.print_tables(merged, Console(file=out, width=88, force_terminal=True, color_system=None))
    assert max(len(line) for line in out.getvalue().splitlines()) <= 88 and "coreml:cpuAndGPU" in out.getvalue()
    # the models table with every paper platform and a long model name: headers break at spaces only
    four = _doc(results=[_result("starnet_s1", "onnxruntime", 4.0), _result("starnet_s1", "onnxruntime", 3.5, variant="sum"),
                         _result("efficientformerv2_s0", "onnxruntime", 9.0)])
    out = io.StringIO()
    report.print_tables(four, Console(file=out, width=100))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    for word in ("E5", "4thr", "P100", "iPhone13", "iPhone12", "params", "MACs", "top-1", "starnet_s1 (sum)"):
        assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", text, re.M), word
    assert compact_machine_label({"cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "usable_cpus": 2}) == \
        "Intel Xeon Platinum 8375C ×2"


def test_bar_chart_and_accuracy_plot_files(tmp_path):
    linux, phone = _many_runtime_merge()
    merged = merge([linux, phone])
    merged.results[0].spread_ms = {"p10": 9.0, "p25": 9.5, "median": 10.0, "p75": 10.5, "p90": 11.0}
    bars = tmp_path / "bars.png"
    labels = report.plot_latency_bars(merged, str(bars))
    data = bars.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "coreml:all [ios] — iPhone 13" in labels and len(labels) == len(report.build_table(merged).columns)
    plot = tmp_path / "acc.png"
    drawn = report.plot_latency_vs_top1(merged, str(plot))
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert len(drawn) <= report.MAX_LEGEND and "papers' own latencies (their hardware)" in drawn
    assert "coreml (3 settings)" in drawn and "openvino (2 settings)" in drawn  # nine columns, one entry per runtime
    assert not any(d.startswith("paper:") for d in drawn)  # grouped, not one entry per paper platform
    with pytest.raises(ConfigError, match="no result has a latency"):
        report.plot_latency_bars(_doc(results=[_result("starnet_s1", "coreml", None, status="unavailable")]),
                                 str(tmp_path / "none.png"))


def test_out_is_a_folder_json_is_the_results_file(tmp_path, capsys):
    linux, phone = _many_runtime_merge()
    save(linux, tmp_path / "a.json")
    save(phone, tmp_path / "b.json")
    folder = tmp_path / "report"
    assert main(["bench", "--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(folder)]) == 0
    from staredge.commands.bench import OUT_FILES

    for name in OUT_FILES.values():
        assert (folder / name).stat().st_size > 0, name
    assert load(folder / "results.json").results
    # a second run refuses to overwrite any of them
    assert main(["bench", "--merge", str(tmp_path / "a.json"), "--out", str(folder)]) == 2
    assert "--force" in capsys.readouterr().err
    # --out FILE.json: the old meaning, with a notice
    assert main(["bench", "--merge", str(tmp_path / "a.json"), "--out", str(tmp_path / "old.json")]) == 0
    assert "deprecated" in " ".join(capsys.readouterr().out.split()) and load(tmp_path / "old.json").results
    (tmp_path / "afile").write_text("x")
    assert main(["bench", "--merge", str(tmp_path / "a.json"), "--out", str(tmp_path / "afile"), "--force"]) == 2
    assert "names a folder" in capsys.readouterr().err


def test_backend_aliases_from_the_format_table():
    assert parse_backend("tflite") == parse_backend("litert") == BackendSpec("litert")
    assert [s.label for s in expand_backends(["litert,tflite,ort"])] == ["litert", "onnxruntime"]
