"""The benchmark loop: every model × variant × protocol × backend, into one document.

Failures of one backend (a missing package, no GPU, a runtime error) are recorded as that
result's status and message, and the loop goes on. Ctrl-C stops the loop but keeps what
was measured, including the timed part of an interrupted run; ``checkpoint(doc)`` is
called after every result so a caller can write partial results as they come.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from staredge.bench.runners import Runner, RunnerFactory, fixed_input
from staredge.bench.specs import BackendSpec, BackendUnavailable
from staredge.errors import DeviceError
from staredge.bench.machine import load_average, machine_info
from staredge.bench.measure import RunInterrupted, time_run
from staredge.bench.protocols import Protocol
from staredge.bench.results import BenchDocument, BenchResult, compute_speedups
from staredge.bench.reliability import assess
from staredge.bench.stats import RunStats, mean, percentile
from staredge.errors import ConfigError, StarEdgeError

VARIANTS = ("star", "sum")
#: What the timed models' weights are: ``build_model`` never loads a checkpoint. Latency does
#: not depend on the weights' values; accuracy does, which is why plots quote the papers'.
WEIGHTS = "random init (seeded); the papers' accuracies need the released weights"


def reported_latency(runs: Sequence[RunStats], protocol: Protocol) -> tuple[float, int | None]:
    """The figure a protocol reports from its runs, and the index of the reported run.

    ``reduce="last"`` reports the last run's statistic (the StarNet iOS practice: the first
    runs are discarded, all are shown); ``"mean"`` the mean of the per-run statistic
    (ModelBench's mean over rounds), with no single reported run (index None).
    """
    if not runs:
        raise ConfigError("no runs to report")
    if protocol.reduce == "last":
        return runs[-1].statistic(protocol.statistic), len(runs) - 1
    return mean([r.statistic(protocol.statistic) for r in runs]), None


def has_sum_variant(name: str) -> bool:
    """Whether ``name`` can be built with every star replaced by a sum (StarNet)."""
    from staredge.models import get_entry

    return not artifact_source(name) and get_entry(name).family == "starnet"


def artifact_source(name: str) -> str | None:
    """``name`` when it is an exported artifact on disk (any format but a PyTorch checkpoint),
    else None: ``staredge bench ARTIFACT`` times that file as it is (like ``benchmark_app -m``)."""
    if not os.path.exists(name):
        return None
    from staredge.formats import CHECKPOINT_FORMAT, detect_format
    from staredge.metadata import MetadataError

    try:
        fmt = detect_format(name)
    except MetadataError:
        return None
    return None if fmt.name == CHECKPOINT_FORMAT else name


class ArtifactFileFactory(RunnerFactory):
    """Runners over one given artifact file (no export): its runtime, or the one a spec names."""

    def __init__(self, path: str, workdir: str | os.PathLike | None = None, default_rewrite: str = "auto",
                 **options: Any) -> None:
        from staredge.metadata import MetadataError, read_metadata

        self.path = path
        self.model = None
        self.calibration = None
        self.calibration_samples = None
        self._calibration = None
        self.default_rewrite = default_rewrite
        self._torch_cuda = options.get("torch_cuda")
        self._providers = options.get("providers")
        try:
            self.meta = read_metadata(path)
        except MetadataError:
            self.meta = None
        if self.meta is not None and self.meta.task != "image-classification":
            raise ConfigError(f"{path} is a {self.meta.task} artifact; time it with `staredge bench {path} "
                              f"--task generate` (the decode benchmark)")
        self.input_size = tuple(self.meta.input_size) if self.meta is not None else (3, 224, 224)
        self.x = fixed_input(self.input_size)

    @property
    def fingerprint(self) -> str:
        """The artifact's path (its weights are whatever the file holds)."""
        return str(self.path)

    def build(self, spec: BackendSpec, threads: int | None) -> Runner:
        """A runner over the artifact on ``spec``'s runtime and device."""
        self.check(spec)
        return self._artifact(spec, spec.runtime, self.path, [], threads, foreign=self.meta is None)


def build_model(name: str, variant: str = "star") -> Any:
    """The registered model ``name``; ``variant="sum"`` replaces every star with a sum (StarNet only)."""
    import torch

    from staredge.models import create, get_entry

    # Seeded: random-init weights are the same in every process, so cached artifacts
    # (--workdir) and fresh baselines hold the same model.
    torch.manual_seed(0)
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "sum":
        entry = get_entry(name)
        if entry.family != "starnet":
            raise ConfigError(f"the star→sum comparison applies to StarNet only, not '{name}' ({entry.family})")
        return create(name, mode="sum")
    return create(name)


def measure_backend(
    factory: RunnerFactory,
    spec: BackendSpec,
    protocol: Protocol,
    *,
    keep_samples: bool = False,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], int] | None = None,
) -> tuple[list[RunStats], Any]:
    """All runs of one backend under ``protocol``; returns (runs, the last runner).

    On Ctrl-C raises :class:`RunInterrupted` whose ``runs`` attribute holds the finished
    runs plus the partial one. ``clock`` replaces ``time.perf_counter_ns`` (tests). Runs
    keep their timings (for the spread the reports draw); :func:`_fill` drops them from
    the result unless ``keep_samples``.
    """
    timing = {} if clock is None else {"clock": clock, "cpu_clock": None}
    runner = factory.build(spec, protocol.threads)
    runs: list[RunStats] = []
    done = 0
    try:
        for index in range(protocol.repeats):
            if index and protocol.recreate_per_run:
                runner.close()
                runner = factory.build(spec, protocol.threads)

            def progress(k: int, base: int = done) -> None:
                if on_progress is not None:
                    on_progress(base + k)

            try:
                runs.append(
                    time_run(
                        runner.infer, protocol.warmup, protocol.iters, sync=runner.sync, trim=protocol.trim,
                        keep_samples=True, on_progress=progress, **timing,
                    )
                )
            except KeyboardInterrupt as stop:
                # Ctrl-C during the cold inference or warm-up arrives as a plain KeyboardInterrupt.
                partial = stop.stats if isinstance(stop, RunInterrupted) else None
                raise RunInterrupted(partial, runs + ([partial] if partial else []), runner) from None
            done += protocol.iters
    finally:
        runner.close()
    return runs, runner


class _Progress:
    """A rich progress display (or nothing), updated between timings, never inside one.

    The overall bar counts timed inferences (so its time-remaining estimate follows the
    work, not the number of measurements); the second line shows the current measurement.
    """

    def __init__(self, enabled: bool, total: int, console: Any = None, inferences: int | None = None) -> None:
        self.enabled = enabled
        self._bar = None
        self.total = total
        self.done = 0
        self._base = 0
        if enabled:
            from rich.progress import (
                BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            # A low refresh rate: the display thread competes with the timed runtime for the CPU.
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn(),
                console=console, refresh_per_second=2, transient=False,
            )
            self._overall = self._bar.add_task(self._label(), total=inferences or total)
            self._per_inference = inferences is not None
            self._current = self._bar.add_task("", total=1, visible=False)

    def _label(self) -> str:
        return f"measurement {min(self.done + 1, self.total)}/{self.total}"

    def __enter__(self) -> "_Progress":
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, label: str, total: int) -> Callable[[int], None] | None:
        """Show the measurement ``label``; returns the per-inference callback."""
        if self._bar is None:
            return None
        self._bar.update(self._current, description=f"  {label}", total=total, completed=0, visible=True)
        step = max(1, total // 50)
        base = self._base
        self._base += total

        def advance(k: int) -> None:
            if k % step == 0 or k == total:
                self._bar.update(self._current, completed=k)
                if self._per_inference:
                    self._bar.update(self._overall, completed=base + k)

        return advance

    def finish(self) -> None:
        """One measurement done."""
        self.done += 1
        if self._bar is not None:
            if self._per_inference:
                self._bar.update(self._overall, completed=self._base, description=self._label())
            else:
                self._bar.update(self._overall, advance=1, description=self._label())


def run_bench(
    models: Sequence[str],
    backends: Sequence[BackendSpec],
    protocols: Sequence[Protocol],
    *,
    variants: Sequence[str] = ("star",),
    workdir: str | None = None,
    keep_samples: bool = False,
    show_progress: bool = True,
    console: Any = None,
    checkpoint: Callable[[BenchDocument], None] | None = None,
    factory_options: dict[str, Any] | None = None,
    factory_class: Callable[..., Any] | None = None,
    clock: Callable[[], int] | None = None,
    interleave: bool = False,
    doc: BenchDocument | None = None,
) -> BenchDocument:
    """Time every ``models`` × ``variants`` × ``protocols`` × ``backends`` combination.

    Each model is exported once per runtime and rewrite setting (in ``workdir``, a
    temporary directory by default) and reused across protocols. Returns the document;
    ``doc.complete`` is False when Ctrl-C stopped the loop (the results so far are kept).
    ``factory_class`` (default :class:`RunnerFactory`), ``factory_options`` and ``clock``
    let tests substitute runners and time. ``interleave=True`` builds every backend of a
    model first and then times them round-robin, one run each per repeat, so that load
    drifting on a shared machine hits all backends alike (use it with ``repeats > 1``).
    """
    from staredge.profiler import profile
    from staredge._version import __version__

    if not models:
        raise ConfigError("no models to benchmark: name at least one (see `staredge models`)")
    if not protocols:
        raise ConfigError("no protocol given")
    doc = doc or BenchDocument(tool=f"staredge bench {__version__}")
    machine_id = doc.add_machine(machine_info())
    machine = doc.machines[machine_id]
    protocol_ids = [doc.add_protocol(p.to_dict()) for p in protocols]
    plan = [(m, v) for m in models for v in variants if v != "sum" or has_sum_variant(m)]
    for m in models:
        if "sum" in variants and not has_sum_variant(m):
            doc.notes.append(f"{m} has no star→sum variant (StarNet only): timed as is")
    total = len(plan) * len(protocols) * len(backends)
    timed = len(plan) * len(backends) * sum(p.repeats * p.iters for p in protocols)
    done = 0
    tmp = tempfile.TemporaryDirectory(prefix="staredge-bench-") if workdir is None else nullcontext(workdir)
    try:
        with tmp as root, _Progress(show_progress, total, console, inferences=timed) as bar:
            for model_name in models:
                for variant in (v for v in variants if (model_name, v) in plan):
                    if artifact_source(model_name):  # an exported file, timed as it is
                        factory = ArtifactFileFactory(model_name, default_rewrite=protocols[0].rewrite)
                        prof = None
                    else:
                        model = build_model(model_name, variant)
                        prof = profile(model)
                        factory = (factory_class or RunnerFactory)(
                            model, f"{root}/{Path(model_name).name}-{variant}",
                            default_rewrite=protocols[0].rewrite, **(factory_options or {}),
                        )
                    for protocol, pid in zip(protocols, protocol_ids):
                        factory.default_rewrite = protocol.rewrite

                        def new_result(spec: BackendSpec) -> BenchResult:
                            return BenchResult(
                                model=model_name, variant=variant, backend=spec.label, runtime=spec.runtime,
                                device=spec.device, baseline=spec.baseline, machine=machine_id, protocol=pid,
                                precision=spec.precision,
                                threads_requested=protocol.threads,
                                params_m=None if prof is None else round(prof.params_m, 4),
                                macs_m=None if prof is None else round(prof.macs_m, 2),
                            )

                        def record(result: BenchResult) -> None:
                            nonlocal done
                            doc.results.append(result)
                            compute_speedups(doc.results)
                            done += 1
                            bar.finish()
                            if checkpoint is not None:
                                checkpoint(doc)

                        tag = f"{model_name}{'' if variant == 'star' else ' (sum)'}"
                        if interleave:
                            _run_interleaved(
                                factory, list(backends), protocol, new_result, record, bar, tag,
                                keep_samples=keep_samples, clock=clock, machine=machine,
                            )
                            continue
                        for spec in backends:
                            result = new_result(spec)
                            advance = bar.start(f"{tag} · {spec.label} · {pid}", protocol.repeats * protocol.iters)
                            try:
                                runs, runner = measure_backend(
                                    factory, spec, protocol, keep_samples=keep_samples, on_progress=advance,
                                    clock=clock,
                                )
                                _fill(result, runs, runner, protocol, machine, keep_samples)
                            except RunInterrupted as stop:
                                if stop.runs:
                                    _fill(result, stop.runs, stop.runner, protocol, machine, keep_samples)
                                    result.status = "interrupted"
                                    doc.results.append(result)
                                raise
                            except Exception as exc:  # a runtime failing must not lose the other results
                                _fail(result, exc)
                            record(result)
        # The load at the end tells a reader whether the machine stayed quiet during the run.
        doc.machines[machine_id]["load_average_end"] = load_average()
    except KeyboardInterrupt:
        doc.complete = False
        doc.notes.append(f"interrupted by the user after {done} of {total} measurements; results so far kept")
        compute_speedups(doc.results)
        if checkpoint is not None:
            checkpoint(doc)
    return doc


def _fail(result: BenchResult, exc: BaseException) -> None:
    """Record why a backend produced no timing."""
    if isinstance(exc, (BackendUnavailable, DeviceError)):
        result.status, result.error = "unavailable", str(exc)
    elif isinstance(exc, StarEdgeError):
        result.status, result.error = "error", str(exc)
    else:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"


def _run_interleaved(
    factory: Any,
    specs: list[BackendSpec],
    protocol: Protocol,
    new_result: Callable[[BackendSpec], BenchResult],
    record: Callable[[BenchResult], None],
    bar: "_Progress",
    tag: str,
    *,
    keep_samples: bool,
    clock: Callable[[], int] | None,
    machine: dict[str, Any] | None = None,
) -> None:
    """Time ``specs`` round-robin: repeat r runs every backend once before repeat r+1."""
    timing = {} if clock is None else {"clock": clock, "cpu_clock": None}
    results = {spec: new_result(spec) for spec in specs}
    runners: dict[BackendSpec, Any] = {}
    runs: dict[BackendSpec, list[RunStats]] = {spec: [] for spec in specs}
    for spec in specs:
        try:
            runners[spec] = factory.build(spec, protocol.threads)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            _fail(results[spec], exc)
    try:
        for index in range(protocol.repeats):
            for spec, runner in list(runners.items()):
                advance = bar.start(f"{tag} · {spec.label} · round {index + 1}/{protocol.repeats}", protocol.iters)
                try:
                    if index and protocol.recreate_per_run:
                        runner.close()
                        runner = runners[spec] = factory.build(spec, protocol.threads)
                    runs[spec].append(
                        time_run(
                            runner.infer, protocol.warmup, protocol.iters, sync=runner.sync, trim=protocol.trim,
                            keep_samples=True, on_progress=advance, **timing,
                        )
                    )
                except KeyboardInterrupt as stop:
                    if isinstance(stop, RunInterrupted) and stop.stats is not None:
                        runs[spec].append(stop.stats)
                    for s, result in results.items():
                        if runs[s]:
                            _fill(result, runs[s], runners.get(s), protocol, machine, keep_samples)
                            result.status = "interrupted"
                            record(result)
                    raise
                except Exception as exc:
                    _fail(results[spec], exc)
                    runners.pop(spec).close()
    finally:
        for runner in runners.values():
            runner.close()
    for spec, result in results.items():
        if runs[spec] and result.error is None:
            _fill(result, runs[spec], runners.get(spec), protocol, machine, keep_samples)
        record(result)


def _fill(
    result: BenchResult,
    runs: list[RunStats],
    runner: Any,
    protocol: Protocol,
    machine: dict[str, Any] | None = None,
    keep_samples: bool = True,
) -> None:
    """Copy runs, the reported figure, spread, reliability and what the runner reports into ``result``."""
    result.runs = runs
    result.latency_ms, result.reported_run = reported_latency(runs, protocol)
    result.latency_ms = round(result.latency_ms, 5)
    if runner is not None:
        result.threads_in_effect = runner.threads
        result.runtime_version = runner.runtime_version
        result.rewrites = list(runner.rewrites)
        result.precision = runner.precision
        result.device = runner.device
        result.notes = list(runner.notes)
    result.spread_ms = spread(runs, result.reported_run)
    if not keep_samples:
        for run in runs:
            run.samples_ms = None
    result.load_average = load_average()
    machine = machine or {}
    utils = [r.cpu_utilisation for r in runs if r.cpu_utilisation is not None]
    result.reliability = assess(
        runs, cores=machine.get("usable_cpus") or machine.get("logical_cpus"),
        threads=result.threads_in_effect or result.threads_requested,
        load_start=machine.get("load_average"), load_after=result.load_average,
        own_busy=max(utils) if utils else None,
    ).to_dict()


def spread(runs: Sequence[RunStats], reported_run: int | None) -> dict[str, float] | None:
    """p10, p25, median, p75 and p90 of the reported run's timings (all runs pooled when none is reported).

    None when the runs kept no timings.
    """
    chosen = [runs[reported_run]] if reported_run is not None else list(runs)
    samples = [v for r in chosen for v in (r.samples_ms or [])]
    if not samples:
        return None
    return {f"p{q}" if q != 50 else "median": round(percentile(samples, q), 6) for q in (10, 25, 50, 75, 90)}
