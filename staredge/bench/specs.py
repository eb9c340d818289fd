"""What gets timed: backend specs, parsed from strings like ``onnxruntime:cuda@fuse``.

A backend spec is ``RUNTIME[:ACCELERATOR][@PASS+PASS...]`` (passes by registry name, or
``fuse`` for ``fuse_batchnorm`` and ``pwlinear`` for ``pointwise_conv_to_linear``):

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

from dataclasses import dataclass

from staredge.errors import ConfigError, StarEdgeError
from staredge.formats import FORMATS, RUNTIMES, get_runtime

#: The two baselines a user would otherwise use.
BASELINES = ("pytorch", "onnx-plain")
#: Runtimes reached through our exporters + runtimes, with the export format they run
#: (from the format table).
EXPORTED_RUNTIMES = {spec.runtime: name for name, spec in FORMATS.items() if spec.exportable}
RUNTIME_NAMES = BASELINES + tuple(EXPORTED_RUNTIMES)
#: Accelerators each runtime can be asked for (the baselines use their runtime's).
ACCELERATORS = {
    "pytorch": RUNTIMES["pytorch"].accelerators,
    "onnx-plain": RUNTIMES["onnxruntime"].accelerators,
    **{name: RUNTIMES[name].accelerators for name in EXPORTED_RUNTIMES},
}
FUSE = "fuse_batchnorm"
POINTWISE = "pointwise_conv_to_linear"
#: Short pass names for labels (and accepted in specs): report columns stay readable.
PASS_ALIASES = {"fuse": FUSE, "pwlinear": POINTWISE}
_SHORT_NAMES = {v: k for k, v in PASS_ALIASES.items()}


class BackendUnavailable(StarEdgeError):
    """A backend cannot be timed on this machine (missing package, device or OS)."""


@dataclass(frozen=True)
class BackendSpec:
    """One parsed backend spec (see the module docstring for the syntax)."""

    runtime: str
    accelerator: str = "cpu"
    rewrites: tuple[str, ...] | None = None  # None: the protocol's rewrite setting

    @property
    def label(self) -> str:
        """The canonical spec string, used as the column name in reports."""
        text = self.runtime if self.accelerator == "cpu" else f"{self.runtime}:{self.accelerator}"
        if self.rewrites is not None:
            text += "@" + ("+".join(_SHORT_NAMES.get(p, p) for p in self.rewrites) if self.rewrites else "none")
        return text

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
        return EXPORTED_RUNTIMES.get(self.runtime)


def canonical_runtime(name: str) -> str:
    """A runtime name or alias (``tflite``, ``ort``) → its one name; the baselines as they are."""
    key = name.strip().lower()
    if key in BASELINES:
        return key
    try:
        return get_runtime(key).name
    except ConfigError:
        raise ConfigError(f"unknown backend '{name}': runtimes are {', '.join(RUNTIME_NAMES)} (or 'all')") from None


def parse_backend(text: str) -> BackendSpec:
    """Parse one spec like ``onnxruntime``, ``onnxruntime:cuda@fuse_batchnorm+pointwise_conv_to_linear``.

    Pass names are checked against the pass registry: an unknown one is a ConfigError
    naming the valid ones.
    """
    raw = text.strip()
    body, _, rewrite_text = raw.partition("@")
    runtime, _, accelerator = body.partition(":")
    runtime = canonical_runtime(runtime)
    accelerator = accelerator.strip().lower() or "cpu"
    if runtime not in ACCELERATORS:
        raise ConfigError(f"backend '{raw}': {runtime} runs no exported format; runtimes are {', '.join(RUNTIME_NAMES)}")
    if accelerator not in ACCELERATORS[runtime]:
        raise ConfigError(
            f"backend '{raw}': {runtime} supports {', '.join(ACCELERATORS[runtime])}, not '{accelerator}'"
        )
    rewrites: tuple[str, ...] | None = None
    if "@" in raw:
        names = [PASS_ALIASES.get(n.strip(), n.strip()) for n in rewrite_text.split("+") if n.strip()]
        rewrites = () if names in ([], ["none"]) else tuple(names)
        if rewrites:
            _check_passes(rewrites, raw)
        if runtime == "onnx-plain" and rewrites:
            raise ConfigError("'onnx-plain' is the no-rewrite baseline; use 'onnxruntime@...' for rewrites")
    return BackendSpec(runtime, accelerator, rewrites)


def _check_passes(names: tuple[str, ...], raw: str) -> None:
    """ConfigError (naming the valid passes) for a pass the registry does not know."""
    from staredge.exporters.passes import check_pass_names

    check_pass_names(names)


def runtime_installed(runtime: str) -> str | None:
    """None when ``runtime`` can be timed on this machine, else the reason it cannot."""
    runtime = canonical_runtime(runtime)
    if runtime == "onnx-plain":
        runtime = "onnxruntime"
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
                    BackendSpec("pytorch", "cuda"),
                    BackendSpec("pytorch", "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnx-plain", "cuda"),
                    BackendSpec("onnxruntime", "cuda", (FUSE,)),
                    BackendSpec("onnxruntime", "cuda", (FUSE, POINTWISE)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE,)),
                    BackendSpec("onnxruntime", "tensorrt", (FUSE, POINTWISE)),
                ]
            else:
                specs += [BackendSpec(r) for r in RUNTIME_NAMES]
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
    wanted = [BackendSpec("pytorch", accel), BackendSpec("onnx-plain", accel)]
    return [b for b in wanted if b not in specs] + list(specs)


def compare_rewrite_specs(specs: list[BackendSpec]) -> list[BackendSpec]:
    """Each exported runtime twice: BatchNorm fusing only, and fusing + pointwise→Linear.

    Used to decide, per format, which passes ``--rewrite auto`` should default to (the
    format table's ``default_passes``): the pointwise rewrite only where it is not slower
    than fusing alone.
    """
    out: list[BackendSpec] = []
    for s in specs:
        if s.runtime in EXPORTED_RUNTIMES and s.rewrites is None:
            out += [BackendSpec(s.runtime, s.accelerator, (FUSE,)), BackendSpec(s.runtime, s.accelerator, (FUSE, POINTWISE))]
        else:
            out.append(s)
    return out
