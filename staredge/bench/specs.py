"""What gets timed: backend specs, parsed from strings like ``onnxruntime:cuda@fuse``.

A backend spec is ``RUNTIME[:ACCELERATOR][@PASS+PASS...][+PRECISION]`` (passes by registry
name, or ``fuse`` for ``fuse_batchnorm`` and ``pwlinear`` for ``pointwise_conv_to_linear``;
a precision, ``fp32``, ``fp16`` or ``int8``, may stand among them: ``onnxruntime@int8``,
``openvino@fuse+int8``; the artifact is then exported at that precision, int8 calibrated as
:class:`~staredge.bench.artifacts.ArtifactCache` says):

- ``pytorch`` — the first baseline: PyTorch eager under ``torch.inference_mode()``,
  no rewrites (``pytorch@pointwise_conv_to_linear`` applies our passes to the module);
- ``onnx-plain`` — the second baseline: a plain ``torch.onnx.export`` (TorchScript
  exporter, opset 17) run by ONNX Runtime; never rewritten, it is what a user gets
  without StarEdge;
- every runtime of :data:`staredge.formats.RUNTIMES` that runs an exported format
  (``onnxruntime``, ``openvino``, ``litert``, ``coreml``; aliases such as ``tflite`` are
  accepted) — our exporter then our runtime; the exporter's rewrites are the protocol's
  ``rewrite`` unless the spec names them;
- ``:cuda`` / ``:tensorrt`` select an accelerator (the runtime spec lists which it
  takes); ``all`` expands to every runtime for the device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from staredge.errors import ConfigError, StarEdgeError
from staredge.formats import EAGER_RUNTIME, FORMATS, IMAGE_PRECISIONS, RUNTIMES, get_runtime

#: The two baselines a user would otherwise use.
BASELINES = (EAGER_RUNTIME, "onnx-plain")
#: The runtime each baseline runs on (its accelerators are that runtime's).
BASELINE_RUNTIMES = {EAGER_RUNTIME: EAGER_RUNTIME, "onnx-plain": "onnxruntime"}


def exported_runtimes() -> dict[str, str]:
    """Every runtime that runs an exported format → that format (the first exportable one
    in its :attr:`~staredge.formats.RuntimeSpec.formats`), read from the table now: a second
    runtime for an existing format is benchmarkable as soon as its spec entry exists."""
    out = {}
    for name, spec in RUNTIMES.items():
        fmt = next((f for f in spec.formats if f in FORMATS and FORMATS[f].exportable), None)
        if fmt is not None:
            out[name] = fmt
    return out


def runtime_names() -> tuple[str, ...]:
    """The baselines, then every runtime of :func:`exported_runtimes` (what ``all`` times on CPU)."""
    return BASELINES + tuple(exported_runtimes())


def accelerators() -> dict[str, tuple[str, ...]]:
    """Accelerators each runtime can be asked for (the baselines use their runtime's)."""
    return {**{b: RUNTIMES[r].accelerators for b, r in BASELINE_RUNTIMES.items()},
            **{name: RUNTIMES[name].accelerators for name in exported_runtimes()}}


#: Snapshots of the above for the built-in table (code reads the functions, which follow
#: entries added later).
EXPORTED_RUNTIMES = exported_runtimes()
RUNTIME_NAMES = runtime_names()
ACCELERATORS = accelerators()
FUSE = "fuse_batchnorm"
POINTWISE = "pointwise_conv_to_linear"
#: Short pass names for labels (and accepted in specs): report columns stay readable.
PASS_ALIASES = {"fuse": FUSE, "pwlinear": POINTWISE}
_SHORT_NAMES = {v: k for k, v in PASS_ALIASES.items()}
#: Artifact precisions a spec can ask for (the format table's image precisions: the benchmark
#: times image classifiers; parsing a spec imports no torch).
PRECISIONS = IMAGE_PRECISIONS
#: Words that read as a precision (``int4``, ``bf16``, ``uint8``...): unknown ones are refused
#: as precisions, not as pass names.
_PRECISION_LIKE = re.compile(r"^(fp|bf|int|uint|float|f|i|u|q)\d+$")


class BackendUnavailable(StarEdgeError):
    """A backend cannot be timed on this machine (missing package, device or OS)."""


@dataclass(frozen=True)
class BackendSpec:
    """One parsed backend spec (see the module docstring for the syntax)."""

    runtime: str
    accelerator: str = "cpu"
    rewrites: tuple[str, ...] | None = None  # None: the protocol's rewrite setting
    precision: str = "fp32"

    @property
    def label(self) -> str:
        """The canonical spec string, used as the column name in reports (``onnxruntime@int8``)."""
        text = self.runtime if self.accelerator == "cpu" else f"{self.runtime}:{self.accelerator}"
        parts = []
        if self.rewrites is not None:
            parts.append("+".join(_SHORT_NAMES.get(p, p) for p in self.rewrites) if self.rewrites else "none")
        if self.precision != "fp32":
            parts.append(self.precision)
        return text + ("@" + "+".join(parts) if parts else "")

    @property
    def device(self) -> str:
        """The device this spec runs on ("cpu" or "cuda")."""
        return "cpu" if self.accelerator == "cpu" else "cuda"

    @property
    def baseline(self) -> str | None:
        """Which baseline this is ("pytorch", "onnx-plain"), or None for our runtimes."""
        if self.runtime in BASELINES and not self.rewrites:
            return self.runtime
        return None

    @property
    def format(self) -> str | None:
        """The export format this spec's runtime runs (None for the baselines)."""
        return exported_runtimes().get(self.runtime)


def canonical_runtime(name: str) -> str:
    """A runtime name or alias (``tflite``, ``ort``) → its one name; the baselines as they are."""
    key = name.strip().lower()
    if key in BASELINES:
        return key
    try:
        return get_runtime(key).name
    except ConfigError:
        raise ConfigError(f"unknown backend '{name}': runtimes are {', '.join(runtime_names())} (or 'all')") from None


def check_precision(name: str, where: str = "") -> str:
    """``name`` lower-cased if it is a precision a spec can ask for, else a ConfigError naming them."""
    key = name.strip().lower()
    if key not in PRECISIONS:
        raise ConfigError(f"{where}unknown precision '{name.strip()}': precisions are {', '.join(PRECISIONS)}")
    return key


def parse_precisions(text: str | None) -> list[str]:
    """``--precision fp32,int8`` → ``["fp32", "int8"]`` (order kept, duplicates removed); [] for None."""
    if text is None:
        return []
    names = [check_precision(t, "--precision: ") for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--precision takes a comma list of {', '.join(PRECISIONS)}, got '{text}'")
    return list(dict.fromkeys(names))


def parse_backend(text: str) -> BackendSpec:
    """Parse one spec like ``onnxruntime``, ``onnxruntime:cuda@fuse_batchnorm+pointwise_conv_to_linear``,
    ``onnxruntime@int8`` or ``openvino@fuse+int8``.

    Pass names are checked against the pass registry: an unknown one is a ConfigError
    naming the valid ones; a word that reads as a precision but is not one (``int4``) is a
    ConfigError naming the precisions. The baselines take no precision but fp32.
    """
    raw = text.strip()
    body, _, rewrite_text = raw.partition("@")
    runtime, _, accelerator = body.partition(":")
    runtime = canonical_runtime(runtime)
    accelerator = accelerator.strip().lower() or "cpu"
    table = accelerators()
    if runtime not in table:
        raise ConfigError(f"backend '{raw}': {runtime} runs no exported format; runtimes are {', '.join(runtime_names())}")
    if accelerator not in table[runtime]:
        raise ConfigError(
            f"backend '{raw}': {runtime} supports {', '.join(table[runtime])}, not '{accelerator}'"
        )
    rewrites: tuple[str, ...] | None = None
    precision = "fp32"
    if "@" in raw:
        tokens = [n.strip() for n in rewrite_text.split("+") if n.strip()]
        precisions = [t for t in tokens if t.lower() in PRECISIONS or _PRECISION_LIKE.match(t.lower())]
        names = [PASS_ALIASES.get(t, t) for t in tokens if t not in precisions]
        if len(precisions) > 1:
            raise ConfigError(f"backend '{raw}' names more than one precision ({', '.join(precisions)}); "
                              f"time each as its own backend, e.g. {body}@{precisions[0]},{body}@{precisions[1]}")
        if precisions:
            precision = check_precision(precisions[0], f"backend '{raw}': ")
        if not (precisions and not names):  # '@int8' alone keeps the protocol's rewrites
            rewrites = () if names in ([], ["none"]) else tuple(names)
        if rewrites:
            _check_passes(rewrites, raw)
        if runtime == "onnx-plain" and rewrites:
            raise ConfigError("'onnx-plain' is the no-rewrite baseline; use 'onnxruntime@...' for rewrites")
    if runtime in BASELINES and precision != "fp32":
        raise ConfigError(
            f"backend '{raw}': the {runtime} baseline runs fp32 only; ask for {precision} on an exported runtime, "
            f"e.g. onnxruntime@{precision}")
    return BackendSpec(runtime, accelerator, rewrites, precision)


def _check_passes(names: tuple[str, ...], raw: str) -> None:
    """ConfigError (naming the valid passes) for a pass the registry does not know."""
    from staredge.exporters.passes import check_pass_names

    check_pass_names(names)


def runtime_installed(runtime: str) -> str | None:
    """None when ``runtime`` can be timed on this machine, else the reason it cannot."""
    runtime = canonical_runtime(runtime)
    runtime = BASELINE_RUNTIMES.get(runtime, runtime)
    return RUNTIMES[runtime].timing_refusal()


def expand_backends(texts: list[str], device: str = "cpu") -> list[BackendSpec]:
    """Parse specs, expanding ``all`` for ``device`` and removing duplicates (order kept).

    On CPU ``all`` is both baselines and every exported runtime; on CUDA it is the
    baselines on CUDA plus ONNX Runtime CUDA and TensorRT, and PyTorch CUDA, each with and
    without the pointwise-conv→Linear rewrite (the StarNet paper's GPU setting).
    """
    specs: list[BackendSpec] = []
    for text in texts:
        for part in (p for p in text.split(",") if p.strip()):
            if part.strip().lower() != "all":
                specs.append(parse_backend(part))
            elif device == "cuda":
                specs += [
                    BackendSpec(EAGER_RUNTIME, "cuda"),
                    BackendSpec(EAGER_RUNTIME, "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnx-plain", "cuda"),
                    BackendSpec("onnxruntime", "cuda", (FUSE,)),
                    BackendSpec("onnxruntime", "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE,)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE, POINTWISE)),
                ]
            else:
                specs += [BackendSpec(r) for r in runtime_names()]
    seen: set[BackendSpec] = set()
    unique = []
    for s in specs:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    if not unique:
        raise ConfigError("no backends to benchmark: pass --backends (e.g. all, or pytorch,onnxruntime)")
    return unique


def with_baselines(specs: list[BackendSpec], device: str = "cpu") -> list[BackendSpec]:
    """``specs`` with both baselines (on ``device``) in front, unless already present."""
    accel = "cuda" if device == "cuda" else "cpu"
    wanted = [BackendSpec(EAGER_RUNTIME, accel), BackendSpec("onnx-plain", accel)]
    return [b for b in wanted if b not in specs] + list(specs)


def with_precisions(specs: list[BackendSpec], precisions: list[str]) -> list[BackendSpec]:
    """Each exported runtime's fp32 spec once per precision in ``precisions`` (``--precision``).

    Baselines and specs that already name another precision (``openvino@int8``) are kept as
    they are; duplicates are removed, order kept. An empty ``precisions`` changes nothing.
    """
    if not precisions:
        return list(specs)
    out: list[BackendSpec] = []
    for s in specs:
        if s.runtime in exported_runtimes() and s.precision == "fp32":
            out += [replace(s, precision=p) for p in precisions]
        else:
            out.append(s)
    return list(dict.fromkeys(out))


def compare_rewrite_specs(specs: list[BackendSpec]) -> list[BackendSpec]:
    """Each exported runtime twice: BatchNorm fusing only, and fusing + pointwise→Linear.

    Used to decide, per format, which passes ``--rewrite auto`` should default to (the
    format table's ``default_passes``): the pointwise rewrite only where it is not slower
    than fusing alone.
    """
    out: list[BackendSpec] = []
    for s in specs:
        if s.runtime in exported_runtimes() and s.rewrites is None:
            out += [replace(s, rewrites=(FUSE,)), replace(s, rewrites=(FUSE, POINTWISE))]
        else:
            out.append(s)
    return out
