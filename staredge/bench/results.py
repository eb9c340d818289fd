"""The benchmark result document (schema ``staredge-bench``, see docs/bench-format.md).

One JSON document holds machines, protocols and results; each result points at its
machine and protocol by id, so documents from different tools (``staredge bench``, the
iOS app) and different machines merge by concatenation. Readers ignore keys they do not
know; a document with a newer major ``schema_version`` is refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from staredge.bench.stats import RunStats
from staredge.errors import ConfigError, StarEdgeError
from staredge.fileio import atomic_write_text

SCHEMA_NAME = "staredge-bench"
SCHEMA_VERSION = 1
#: Result status values.
STATUSES = ("ok", "error", "unavailable", "interrupted")


class BenchFormatError(StarEdgeError):
    """A file is not a readable ``staredge-bench`` result document."""


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a trailing Z."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def content_id(prefix: str, payload: dict[str, Any]) -> str:
    """A short stable id from a dict's canonical JSON (same content, same id)."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}-{digest[:10]}"


@dataclass
class BenchResult:
    """One model (variant) on one backend under one protocol on one machine.

    ``latency_ms`` is the protocol's reported figure (its ``statistic`` of the reported
    run, or the mean over runs); ``runs`` holds every run, so nothing the protocol
    discards is lost. ``speedup_vs`` maps a baseline name to baseline latency / this
    latency (above 1: faster than the baseline), filled by :func:`compute_speedups`;
    ``speedup_median_vs`` is the same ratio of medians (what the tables print: a median is
    not dragged by a few slow inferences on a busy machine).

    ``load_average`` is the machine's load right after this result's runs;
    ``reliability`` the verdict of :func:`staredge.bench.reliability.assess` (``flagged``
    and its ``reasons``); ``spread_ms`` the p10/p25/median/p75/p90 of the reported run (or
    of all runs pooled) for the bar chart; ``weights`` what the timed model's weights were.
    """

    model: str
    backend: str
    machine: str
    protocol: str
    variant: str = "star"
    runtime: str = ""
    device: str = "cpu"
    baseline: str | None = None
    rewrites: list[str] = field(default_factory=list)
    precision: str = "fp32"
    threads_requested: int | None = None
    threads_in_effect: int | None = None
    runtime_version: str | None = None
    params_m: float | None = None
    macs_m: float | None = None
    status: str = "ok"
    error: str | None = None
    latency_ms: float | None = None
    reported_run: int | None = None
    runs: list[RunStats] = field(default_factory=list)
    speedup_vs: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measured_utc: str = field(default_factory=utc_now)
    speedup_median_vs: dict[str, float] = field(default_factory=dict)
    load_average: list[float] | None = None
    reliability: dict[str, Any] | None = None
    spread_ms: dict[str, float] | None = None
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["runs"] = [r.to_dict() for r in self.runs]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        """Build from a dict; unknown keys are ignored, required ones checked."""
        missing = {"model", "backend", "machine", "protocol"} - set(data)
        if missing:
            raise BenchFormatError(f"a result lacks required keys {sorted(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["runs"] = [RunStats.from_dict(r) for r in data.get("runs", [])]
        if kw.get("status", "ok") not in STATUSES:
            raise BenchFormatError(f"result status must be one of {STATUSES}, got {kw['status']!r}")
        return cls(**kw)

    @property
    def ok(self) -> bool:
        """Whether this result has a latency to report (complete or interrupted run)."""
        return self.latency_ms is not None and self.status in ("ok", "interrupted")

    def stat(self, name: str) -> float | None:
        """A run statistic (``median``, ``p90``, ``mean``...) as the protocol reduces runs.

        The reported run's value, or the mean over runs when the protocol averages them;
        the reported figure itself for a result recorded without runs.
        """
        if not self.runs:
            return self.latency_ms
        if self.reported_run is not None and 0 <= self.reported_run < len(self.runs):
            return self.runs[self.reported_run].statistic(name)
        values = [r.statistic(name) for r in self.runs]
        return sum(values) / len(values)

    @property
    def median_ms(self) -> float | None:
        """The median latency (see :meth:`stat`)."""
        return self.stat("median")


@dataclass
class BenchDocument:
    """A results file: machines and protocols by id, and the results that refer to them."""

    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[BenchResult] = field(default_factory=list)
    tool: str = ""
    created_utc: str = field(default_factory=utc_now)
    complete: bool = True
    notes: list[str] = field(default_factory=list)

    def add_machine(self, info: dict[str, Any]) -> str:
        """Register a machine record; returns its id (stable for identical hardware)."""
        identity = {k: info.get(k) for k in ("hostname", "cpu_model", "logical_cpus", "cpu_flags", "gpus", "label")}
        mid = content_id("machine", identity)
        self.machines.setdefault(mid, dict(info))
        return mid

    def add_protocol(self, protocol: dict[str, Any]) -> str:
        """Register a protocol record; returns its id: the preset name plus its overrides."""
        pid = protocol_id(protocol)
        self.protocols.setdefault(pid, dict(protocol))
        return pid

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see docs/bench-format.md)."""
        return {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "tool": self.tool,
            "created_utc": self.created_utc,
            "complete": self.complete,
            "notes": list(self.notes),
            "machines": self.machines,
            "protocols": self.protocols,
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "document") -> "BenchDocument":
        """Parse and check a document; raises :class:`BenchFormatError` with what is wrong."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
            raise BenchFormatError(f"{source} is not a '{SCHEMA_NAME}' result document (missing 'schema')")
        version = data.get("schema_version")
        if not isinstance(version, int) or version < 1:
            raise BenchFormatError(f"{source}: schema_version must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise BenchFormatError(
                f"{source} uses schema_version {version}, this StarEdge reads up to {SCHEMA_VERSION}: upgrade staredge"
            )
        doc = cls(
            machines=dict(data.get("machines", {})),
            protocols=dict(data.get("protocols", {})),
            results=[BenchResult.from_dict(r) for r in data.get("results", [])],
            tool=str(data.get("tool", "")),
            created_utc=str(data.get("created_utc", "")),
            complete=bool(data.get("complete", True)),
            notes=list(data.get("notes", [])),
        )
        for r in doc.results:
            if r.machine not in doc.machines:
                raise BenchFormatError(f"{source}: result {r.model}/{r.backend} refers to unknown machine '{r.machine}'")
            if r.protocol not in doc.protocols:
                raise BenchFormatError(f"{source}: result {r.model}/{r.backend} refers to unknown protocol '{r.protocol}'")
        return doc

    def to_json(self) -> str:
        """Pretty JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def protocol_id(protocol: dict[str, Any]) -> str:
    """``paper-cpu`` for a preset as is; ``paper-cpu[iters=100,threads=2]`` when overridden."""
    name = protocol.get("name", "custom")
    overrides = protocol.get("overrides") or []
    if not overrides:
        return name
    parts = []
    for key in overrides:
        value = protocol.get(key)
        if isinstance(value, (list, tuple)):
            value = "+".join(map(str, value))
        parts.append(f"{key}={value}")
    return f"{name}[{','.join(parts)}]"


def save(doc: BenchDocument, path: str | os.PathLike, force: bool = True) -> Path:
    """Write ``doc`` as JSON atomically (see :func:`atomic_write_text`)."""
    return atomic_write_text(path, doc.to_json(), force=force)


def load(path: str | os.PathLike) -> BenchDocument:
    """Read a result document, with errors that name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchFormatError(f"cannot read {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:  # e.g. an image passed to --merge
        raise BenchFormatError(
            f"{p} is not a results file (not UTF-8 text: byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
            f"--merge takes the JSON files `staredge bench` writes") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BenchFormatError(f"{p} is not valid JSON: {exc}") from exc
    return BenchDocument.from_dict(data, source=str(p))


def merge(docs: list[BenchDocument]) -> BenchDocument:
    """One document holding every machine, protocol and result of ``docs``.

    Ids are content-derived, so the same machine or protocol in two files collapses to
    one entry; if two files use one id for different content, the later file's entry
    is renamed (suffix ``~2``...) and its results re-pointed. Speed-ups are recomputed.
    """
    if not docs:
        raise ConfigError("nothing to merge: give at least one results file")
    out = BenchDocument(tool="staredge bench --merge", complete=all(d.complete for d in docs))
    for d in docs:
        remap: dict[tuple[str, str], str] = {}
        for kind, table, mine in (("machine", d.machines, out.machines), ("protocol", d.protocols, out.protocols)):
            for key, value in table.items():
                new_key = key
                n = 2
                while new_key in mine and _comparable(mine[new_key], kind) != _comparable(value, kind):
                    new_key = f"{key}~{n}"
                    n += 1
                mine.setdefault(new_key, value)
                remap[(kind, key)] = new_key
        for r in d.results:
            copy = BenchResult.from_dict(r.to_dict())
            copy.machine = remap[("machine", r.machine)]
            copy.protocol = _apart_by_threads(out, copy, remap[("protocol", r.protocol)])
            out.results.append(copy)
        out.notes += [n for n in d.notes if n not in out.notes]
    compute_speedups(out.results)
    return out


def _threads_of(r: BenchResult) -> int | None:
    return r.threads_in_effect if r.threads_in_effect is not None else r.threads_requested


def _apart_by_threads(out: BenchDocument, result: BenchResult, pid: str) -> str:
    """The protocol id ``result`` goes under in the merged document: ``pid``, unless a result
    of the same model, variant, backend and machine under ``pid`` ran with another thread count
    (the protocol left threads to the runtime, e.g.); then a copy of the protocol that names the
    count, so that the two runs stay apart in the tables instead of being read as one."""
    threads = _threads_of(result)
    clash = any(o.protocol == pid and (o.model, o.variant, o.backend, o.machine) ==
                (result.model, result.variant, result.backend, result.machine) and _threads_of(o) != threads
                for o in out.results)
    if not clash:
        return pid
    new = f"{pid}[threads in effect={threads if threads is not None else 'default'}]"
    if new not in out.protocols:
        record = dict(out.protocols.get(pid, {}))
        record["threads"] = threads
        out.protocols[new] = record
    return new


def _comparable(record: dict[str, Any], kind: str) -> Any:
    """The part of a record that decides identity (load average and versions may differ)."""
    if kind == "machine":
        return {k: record.get(k) for k in ("hostname", "cpu_model", "logical_cpus", "cpu_flags", "gpus", "label")}
    return {k: v for k, v in record.items() if k != "description"}


def group_key(r: BenchResult) -> tuple[str, str, str, str]:
    """Results comparable with each other: same model, variant, machine and protocol."""
    return (r.model, r.variant, r.machine, r.protocol)


def compute_speedups(results: list[BenchResult]) -> None:
    """Fill ``speedup_vs`` (reported figures) and ``speedup_median_vs`` (medians) of every result.

    Each is baseline latency / the result's latency, per baseline.

    Baselines are found in the same group (model, variant, machine, protocol); a result
    without a measured baseline gets no entry for it.
    """
    baselines: dict[tuple, dict[str, tuple[float, float | None]]] = {}
    for r in results:
        if r.baseline and r.ok:
            baselines.setdefault(group_key(r), {})[r.baseline] = (r.latency_ms, r.median_ms)
    for r in results:
        r.speedup_vs = {}
        r.speedup_median_vs = {}
        if not r.ok:
            continue
        median = r.median_ms
        for name, (base, base_median) in baselines.get(group_key(r), {}).items():
            if r.latency_ms > 0:
                r.speedup_vs[name] = round(base / r.latency_ms, 4)
            if base_median is not None and median:
                r.speedup_median_vs[name] = round(base_median / median, 4)
