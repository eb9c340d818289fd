"""Every artifact format and every runtime, described once.

A :class:`FormatSpec` says what a format is: its name and aliases, how an artifact of it is
recognised (file suffix or folder layout), where the exporter lives and what it needs,
whether its artifacts take a dynamic batch, which tasks it carries, the rewrite passes it
gets by default, how its embedded metadata is read and which runtime runs it. A
:class:`RuntimeSpec` says what a runtime is: its backend class, the packages it needs, the
pip extra, the formats it runs and the accelerators it can be asked for.

Everything else (the exporter dispatch, the backend table, format detection, metadata
readers, the benchmark's runtime list, the demo's format list) is derived from
:data:`FORMATS` and :data:`RUNTIMES`. Adding a format is one entry here, one exporter
module and one runtime module (see ``docs/architecture.md``).

This module imports nothing heavy: code is referred to by ``"module:attribute"`` strings
and imported only when used (:func:`load_object`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from staredge.errors import ConfigError, MetadataError, MissingDependencyError

#: Tasks an artifact can carry (defined here once; everything else imports them).
IMAGE_CLASSIFICATION = "image-classification"
TEXT_GENERATION = "text-generation"
TASKS = (IMAGE_CLASSIFICATION, TEXT_GENERATION)
#: Every artifact precision any format exports (each format says which it does per task:
#: :meth:`FormatSpec.precisions_for`).
PRECISIONS = ("fp32", "fp16", "int8", "int4")
#: What image exporters write: fp32, fp16 weights, int8 (calibrated: exporters/quantize.py).
IMAGE_PRECISIONS = ("fp32", "fp16", "int8")
#: What every language-model exporter writes: fp32 weights (the state precision of a CoreML
#: stateful package is the ``coreml_state`` option, not a precision).
LM_PRECISIONS = ("fp32",)
#: Language-model exporters that also write weight-only int8 / int4 (exporters/lm_quantize.py:
#: ONNX Runtime MatMulNBits, NNCF compress_weights, ai-edge-quantizer). A format gains them
#: with this tuple in its ``precisions``.
LM_WEIGHT_ONLY_PRECISIONS = ("fp32", "int8", "int4")


def load_object(ref: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class ExportOption:
    """One export option of the options schema (:data:`EXPORT_OPTIONS`).

    ``name`` is the keyword of :func:`staredge.exporters.export`, ``flag`` the command-line
    flag ``staredge export`` builds from it (None: Python only). The option applies to the
    ``tasks`` listed and, when ``formats`` is not empty, only to those formats; ``export()``
    refuses it (a :class:`ConfigError` naming the flag) for any other model or format list,
    never ignores it. ``kind`` is ``"int"`` (at least ``minimum``), ``"bool"`` or
    ``"choice"`` (one of ``choices``). ``exporter_keyword``: the keyword the format's
    exporter takes it as (default ``name``).
    """

    name: str
    flag: str | None
    help: str
    tasks: tuple[str, ...]
    formats: tuple[str, ...] = ()
    kind: str = "int"
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    metavar: str | None = None
    exporter_keyword: str | None = None

    @property
    def label(self) -> str:
        """How errors name the option: the flag and the keyword (``--max-context (max_context=)``)."""
        return f"{self.flag} ({self.name}=)" if self.flag else f"{self.name}="

    def check_value(self, value: Any) -> Any:
        """``value`` converted and range-checked, else a :class:`ConfigError` naming the option."""
        if self.kind == "bool":
            if value not in (True, False, "auto"):
                raise ConfigError(f"{self.label} must be True, False or 'auto', got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"{self.label} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                value = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{self.label} must be a whole number, got {value!r}") from None
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.label} must be at least {self.minimum}, got {value}")
        return value


@dataclass(frozen=True)
class FormatSpec:
    """What one artifact format is (see the module docstring).

    ``unit`` and ``entry`` are name templates (``{stem}`` is replaced): the unit is what is
    written and moved into place as one piece (a file or a folder); the entry is the path a
    runtime loads (the same file, or a file inside the unit folder). ``dynamic_batch``: the exporter
    can give artifacts a symbolic batch axis; ``resizable_batch``: a static artifact can be
    re-shaped for another batch size when it is loaded (``load_backend(..., batch=N)``).
    ``validation_options``: backend options export validation loads artifacts with.
    ``precisions``: per task, the precisions the format's exporter writes
    (:meth:`precisions_for`). ``detector``: ``"module:function"`` telling whether a path is
    an artifact of this format (:func:`detect_format` asks every format; None: the suffix
    alone decides). ``metadata_writer``: ``"module:function"`` ``(path, text)`` replacing the
    embedded metadata document, beside the ``metadata_reader``. ``companions``: suffixes of
    files beside an artifact's entry file that belong to it (OpenVINO's ``.bin``): they travel
    with it, count in its size (:meth:`artifact_files`) and are written beside a
    language-model artifact, which is named ``{stem}`` + :attr:`primary_suffix`.
    ``weight_payload``: ``"module:function"`` ``(path, spec, buffers) -> regions`` listing the
    byte ranges of the artifact's weights that its integrity digest covers
    (:mod:`staredge.integrity`; None: the format has no digest). ``lm_quant_options``: the
    ``quantization={...}`` keys the format's LM exporter takes for weight-only int8 / int4;
    ``lm_precision_refusals``: ``(precision, why)`` pairs naming why a language-model
    precision is not offered (shown in the error). ``pickle_suffixes``: suffixes whose files
    are Python pickles (read only with torch's weights-only unpickler; refused where no
    pickle is read).
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    runtime: str
    metadata_reader: str
    aliases: tuple[str, ...] = ()
    unit: str = ""
    entry: str = ""
    exporter: str | None = None
    export_requires: tuple[tuple[str, str], ...] = ()
    extra: str = ""
    dynamic_batch: bool = False
    resizable_batch: bool = False
    #: An image artifact can be traced with a static batch above 1 (``--batch N``); CoreML's
    #: image input takes one image per prediction.
    static_batch: bool = True
    validation_options: tuple[tuple[str, Any], ...] = ()
    tasks: tuple[str, ...] = (IMAGE_CLASSIFICATION,)
    #: What ``--rewrite auto`` applies. Fuse only for every format: pointwise conv → Linear
    #: was not faster on any CPU runtime in every run (StarNet-S1 and EfficientFormerV2-S0;
    #: the measurements are in docs/benchmarks.md, "--rewrite auto", and docs/exports.md).
    default_passes: tuple[str, ...] = ("fuse_batchnorm",)
    #: ``"module:function"`` writing a STAR language model's decode graph in this format
    #: (``docs/lm-artifacts.md``; None: no LM artifacts). ``staredge export`` of an LM
    #: dispatches here; the artifact's suffix is ``suffixes[0]``.
    lm_exporter: str | None = None
    precisions: tuple[tuple[str, tuple[str, ...]], ...] = (
        (IMAGE_CLASSIFICATION, IMAGE_PRECISIONS), (TEXT_GENERATION, LM_PRECISIONS))
    detector: str | None = None
    metadata_writer: str | None = None
    companions: tuple[str, ...] = ()
    weight_payload: str | None = None
    lm_quant_options: tuple[str, ...] = ()
    lm_precision_refusals: tuple[tuple[str, str], ...] = ()
    pickle_suffixes: tuple[str, ...] = ()

    @property
    def primary_suffix(self) -> str:
        """The suffix StarEdge gives the files it writes in this format (the first of ``suffixes``)."""
        return self.suffixes[0]

    def artifact_files(self, path: Path) -> list[Path]:
        """Every file the artifact at ``path`` consists of: every file below a folder artifact,
        sorted; else the file and its :attr:`companions` that exist beside it."""
        p = Path(path)
        if p.is_dir():
            return sorted(f for f in p.rglob("*") if f.is_file())
        companions = [p.with_suffix(c) for c in self.companions] if p.suffix.lower() in self.suffixes else []
        return [p, *(c for c in companions if c.is_file())]

    def lm_precision_refusal(self, precision: str) -> str:
        """Why this format's language-model exporter does not write ``precision``."""
        takes = ", ".join(self.precisions_for(TEXT_GENERATION)) or "none"
        return dict(self.lm_precision_refusals).get(
            precision, f"{self.name} language-model artifacts take weight precisions {takes}")

    def precisions_for(self, task: str) -> tuple[str, ...]:
        """The precisions this format exports for ``task`` (empty: none)."""
        if task not in self.tasks or not self.exportable_for(task):
            return ()
        return dict(self.precisions).get(task, ())

    def exportable_for(self, task: str) -> bool:
        """Whether StarEdge writes artifacts of this format for ``task``."""
        if task == TEXT_GENERATION:
            return self.lm_exporter is not None
        return self.exporter is not None and task in self.tasks

    def detect(self, path: Path) -> bool:
        """Whether ``path`` (which exists) is an artifact of this format: the format's
        ``detector`` when it has one, else a file with one of its suffixes."""
        if self.detector is not None:
            return bool(load_object(self.detector)(Path(path)))
        p = Path(path)
        return p.is_file() and p.suffix.lower() in self.suffixes

    def task_paths(self, task: str, out_dir: Path, stem: str) -> tuple[tuple[Path, ...], Path]:
        """(units, entry) of an artifact of ``task`` named ``stem`` in ``out_dir``: the files or
        folders moved into place as one artifact (the entry last), and the path a runtime loads.

        Image artifacts use the ``unit``/``entry`` templates (one unit); a language-model
        artifact is ``{stem}`` + :attr:`primary_suffix` with its ``companions`` beside it."""
        if not self.exportable_for(task):
            raise ConfigError(f"StarEdge does not export {self.title} artifacts for {task}")
        if task == TEXT_GENERATION:
            entry = Path(out_dir) / f"{stem}{self.primary_suffix}"
            return (*(entry.with_suffix(c) for c in self.companions), entry), entry
        unit, entry = self.artifact_paths(out_dir, stem)
        return (unit,), entry

    def write_metadata_text(self, path: Path, text: str) -> None:
        """Replace the metadata document embedded in the artifact at ``path``
        (:attr:`metadata_writer`)."""
        if self.metadata_writer is None:
            raise ConfigError(f"StarEdge cannot write metadata into {self.title} files")
        load_object(self.metadata_writer)(Path(path), text)

    @property
    def exportable(self) -> bool:
        """Whether StarEdge writes artifacts of this format."""
        return self.exporter is not None

    def artifact_paths(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        """(unit, entry) for an artifact named ``stem`` in ``out_dir``."""
        if not self.exportable:
            raise ConfigError(f"StarEdge does not export {self.title} artifacts")
        return Path(out_dir) / self.unit.format(stem=stem), Path(out_dir) / self.entry.format(stem=stem)

    def converter_distributions(self) -> tuple[str, ...]:
        """Pip distribution names of the converter packages export needs (``export_requires``;
        each module's underscores are its distribution's dashes, as for every converter here)."""
        return tuple(module.replace("_", "-") for module, _ in self.export_requires)

    def missing_for_export(self) -> list[tuple[str, str]]:
        """(module, extra) pairs of the converter packages that are not installed."""
        return [(m, e) for m, e in self.export_requires if not _importable(m)]

    def require_export(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra if the converter is missing."""
        missing = self.missing_for_export()
        if missing:
            mods = ", ".join(m for m, _ in missing)
            extras = ",".join(dict.fromkeys(e for _, e in missing))
            raise MissingDependencyError(
                f"{self.title} export needs {mods}, which is not installed. "
                f"Install it with: pip install -c constraints.txt 'staredge[{extras}]'"
            )

    def exporter_function(self):
        """The exporter entry point (imported now)."""
        if self.exporter is None:
            raise ConfigError(f"StarEdge does not export {self.title} artifacts")
        return load_object(self.exporter)

    def lm_exporter_function(self):
        """The LM exporter entry point (imported now); ConfigError when the format has none."""
        if self.lm_exporter is None:
            raise ConfigError(f"StarEdge does not export language models as {self.title} artifacts")
        return load_object(self.lm_exporter)

    def read_metadata_text(self, path: Path) -> Any:
        """The raw metadata document of an artifact of this format (see :mod:`staredge.metadata`)."""
        return load_object(self.metadata_reader)(path)


@dataclass(frozen=True)
class RuntimeSpec:
    """What one runtime is (see the module docstring).

    ``modules``: the runtime is available when any of them can be imported (listed in
    order of preference). ``distributions``: the pip distributions whose version is
    reported with timings. ``apple_only``: timings mean something only on macOS (off it,
    the CoreML backend runs a numpy reference executor).
    """

    name: str
    title: str
    backend: str
    modules: tuple[str, ...]
    extra: str
    formats: tuple[str, ...]
    distributions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    accelerators: tuple[str, ...] = ("cpu",)
    apple_only: bool = False
    #: ``"module:Class"`` of the runtime's text-generation backend: ``load_backend`` picks it
    #: for an artifact whose metadata says ``task == "text-generation"`` (None: the runtime
    #: runs no language models).
    text_backend: str | None = None
    #: ``"module:Class"`` of the runtime's :class:`~staredge.runtimes.lm.LMStepper` (one
    #: decode stream over an LM artifact, numpy in and out; ``load_lm_artifact`` picks it).
    lm_stepper: str | None = None

    def available(self) -> bool:
        """Whether one of the runtime's packages can be imported here."""
        return any(_importable(m) for m in self.modules)

    def install_hint(self) -> str:
        """What the runtime needs and how to install it."""
        return (
            f"{self.title} needs the Python package '{self.modules[0].split('.')[0]}', which is not installed. "
            f"Install it with: pip install -c constraints.txt 'staredge[{self.extra}]'"
        )

    def missing_reason(self) -> str | None:
        """None when the runtime is installed, else what to install."""
        return None if self.available() else self.install_hint()

    def timing_refusal(self) -> str | None:
        """Why timings of this runtime would mean nothing here, or None."""
        reason = self.missing_reason()
        if reason:
            return reason
        if self.apple_only and sys.platform != "darwin":
            return (
                f"{self.title} models run only on Apple platforms; off macOS StarEdge has a reference "
                f"executor for validation, which is not meant to be timed"
            )
        return None

    def version(self) -> str | None:
        """``"distribution version"`` of the first installed distribution, or None."""
        import importlib.metadata

        for dist in self.distributions:
            try:
                return f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    def backend_class(self):
        """The Backend subclass (imported now)."""
        return load_object(self.backend)

    def lm_stepper_class(self):
        """The LMStepper subclass (imported now); ConfigError when there is none."""
        if self.lm_stepper is None:
            raise ConfigError(f"{self.title} has no language-model stepper in StarEdge")
        return load_object(self.lm_stepper)

    def text_backend_class(self):
        """The text-generation Backend subclass (imported now); ConfigError when there is none."""
        if self.text_backend is None:
            raise ConfigError(f"{self.title} has no text-generation backend in StarEdge")
        return load_object(self.text_backend)


#: Every artifact format, in the order ``--formats all`` exports them.
FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            name="onnx", title="ONNX", aliases=("ort",), suffixes=(".onnx",),
            unit="{stem}.onnx", entry="{stem}.onnx",
            exporter="staredge.exporters.onnx:export_onnx",
            lm_exporter="staredge.exporters.onnx_lm:export_lm_onnx",
            export_requires=(("torch", "torch"), ("onnx", "onnx"), ("onnxruntime", "onnx")), extra="onnx",
            runtime="onnxruntime", dynamic_batch=True,
            tasks=(IMAGE_CLASSIFICATION, TEXT_GENERATION),
            precisions=((IMAGE_CLASSIFICATION, IMAGE_PRECISIONS), (TEXT_GENERATION, LM_WEIGHT_ONLY_PRECISIONS)),
            metadata_reader="staredge.metadata:read_onnx_text",
            metadata_writer="staredge.metadata:write_onnx_text",
            weight_payload="staredge.integrity:onnx_regions",
            lm_quant_options=("block_size", "symmetric", "embedding", "head", "accuracy_level"),
        ),
        FormatSpec(
            name="openvino", title="OpenVINO IR", aliases=("ov", "ir"), suffixes=(".xml",),
            detector="staredge.metadata:is_openvino_ir", companions=(".bin",),
            unit="{stem}_openvino", entry="{stem}_openvino/{stem}.xml",
            exporter="staredge.exporters.openvino:export_openvino",
            lm_exporter="staredge.exporters.openvino_lm:export_lm_openvino",
            export_requires=(("torch", "torch"), ("openvino", "openvino")), extra="openvino",
            runtime="openvino", dynamic_batch=True, resizable_batch=True,
            tasks=(IMAGE_CLASSIFICATION, TEXT_GENERATION),
            precisions=((IMAGE_CLASSIFICATION, IMAGE_PRECISIONS), (TEXT_GENERATION, LM_WEIGHT_ONLY_PRECISIONS)),
            metadata_reader="staredge.metadata:read_openvino_text",
            metadata_writer="staredge.metadata:write_openvino_text",
            weight_payload="staredge.integrity:openvino_regions",
            lm_quant_options=("group_size", "embedding", "head", "symmetric"),
        ),
        FormatSpec(
            name="tflite", title="TFLite", aliases=("litert",), suffixes=(".tflite",),
            unit="{stem}.tflite", entry="{stem}.tflite",
            exporter="staredge.exporters.tflite:export_tflite",
            lm_exporter="staredge.exporters.tflite_lm:export_lm_tflite",
            export_requires=(("torch", "torch"), ("litert_torch", "tflite"), ("ai_edge_litert", "tflite")),
            extra="tflite", runtime="litert", dynamic_batch=False, resizable_batch=True,
            tasks=(IMAGE_CLASSIFICATION, TEXT_GENERATION),
            precisions=((IMAGE_CLASSIFICATION, IMAGE_PRECISIONS), (TEXT_GENERATION, LM_WEIGHT_ONLY_PRECISIONS)),
            metadata_reader="staredge.metadata:read_tflite_text",
            metadata_writer="staredge.exporters.tflite:write_tflite_text",
            weight_payload="staredge.integrity:tflite_regions",
            lm_quant_options=("mode", "embedding", "head"),
        ),
        FormatSpec(
            name="coreml", title="CoreML", aliases=("mlpackage",), suffixes=(".mlpackage",),
            detector="staredge.metadata:is_coreml_package",
            unit="{stem}.mlpackage", entry="{stem}.mlpackage",
            exporter="staredge.exporters.coreml:export_coreml",
            lm_exporter="staredge.exporters.coreml_lm:export_lm_coreml",
            export_requires=(("torch", "torch"), ("coremltools", "coreml")), extra="coreml",
            runtime="coreml", dynamic_batch=False, static_batch=False,
            tasks=(IMAGE_CLASSIFICATION, TEXT_GENERATION),
            # the numpy MIL executor on every OS: Apple's image inputs take uint8 pixels only,
            # so random validation inputs would be clipped there
            validation_options=(("reference", True),),
            metadata_reader="staredge.metadata:read_coreml_text",
            metadata_writer="staredge.metadata:write_coreml_text",
            weight_payload="staredge.integrity:coreml_regions",
            lm_precision_refusals=(
                ("int8", "CoreML LM weight quantisation (linear_quantize_weights) is not implemented yet"),
                ("int4", "CoreML LM per-block int4 (iOS 18) is not implemented yet")),
        ),
        FormatSpec(
            name="pytorch", title="PyTorch checkpoint", aliases=("torch",),
            suffixes=(".safetensors", ".pt", ".pth", ".tar", ".bin"), pickle_suffixes=(".pt", ".pth", ".tar", ".bin"),
            runtime="pytorch", extra="torch", dynamic_batch=True,
            tasks=(IMAGE_CLASSIFICATION, TEXT_GENERATION),
            metadata_reader="staredge.metadata:read_safetensors_text",
        ),
    )
}

#: Every runtime, in the order benchmarks list them.
RUNTIMES: dict[str, RuntimeSpec] = {
    spec.name: spec
    for spec in (
        RuntimeSpec(
            name="onnxruntime", title="ONNX Runtime", aliases=("ort", "onnx"),
            backend="staredge.runtimes.onnxruntime:OnnxRuntimeBackend", modules=("onnxruntime",), extra="onnx",
            formats=("onnx",), distributions=("onnxruntime", "onnxruntime-gpu"),
            accelerators=("cpu", "cuda", "tensorrt"),
            text_backend="staredge.runtimes.onnxruntime_lm:OnnxRuntimeTextBackend",
            lm_stepper="staredge.runtimes.onnxruntime_lm:OnnxRuntimeLM",
        ),
        RuntimeSpec(
            name="openvino", title="OpenVINO", aliases=("ov",),
            backend="staredge.runtimes.openvino:OpenVinoBackend", modules=("openvino",), extra="openvino",
            formats=("openvino",), distributions=("openvino",),
            text_backend="staredge.runtimes.openvino_lm:OpenVinoTextBackend",
            lm_stepper="staredge.runtimes.openvino_lm:OpenVINOLM",
        ),
        RuntimeSpec(
            name="litert", title="LiteRT", aliases=("tflite", "tflite_runtime", "tflite-runtime"),
            backend="staredge.runtimes.litert:LiteRtBackend",
            modules=("ai_edge_litert", "tflite_runtime"), extra="tflite",
            formats=("tflite",), distributions=("ai-edge-litert", "tflite-runtime"),
            text_backend="staredge.runtimes.litert_lm:LiteRtTextBackend",
            lm_stepper="staredge.runtimes.litert_lm:LiteRTLM",
        ),
        RuntimeSpec(
            name="coreml", title="CoreML", aliases=("mlpackage",),
            backend="staredge.runtimes.coreml:CoreMLBackend", modules=("coremltools",), extra="coreml",
            formats=("coreml",), distributions=("coremltools",), apple_only=True,
            text_backend="staredge.runtimes.coreml_lm:CoreMLTextBackend",
            lm_stepper="staredge.runtimes.coreml_lm:CoreMLReferenceLM",
        ),
        RuntimeSpec(
            name="pytorch", title="PyTorch", aliases=("torch",),
            backend="staredge.runtimes.pytorch:PyTorchBackend", modules=("torch",), extra="torch",
            formats=("pytorch",), distributions=("torch",), accelerators=("cpu", "cuda"),
            text_backend="staredge.runtimes.text:PyTorchTextBackend",
        ),
    )
}


#: The export options schema: every option ``staredge.exporters.export`` takes beyond the
#: model, formats, output folder and precision. ``staredge export`` builds its format flags
#: from it and ``export()`` refuses an option that does not apply to the model's task or to
#: the formats asked for (:func:`check_export_options`).
EXPORT_OPTIONS: dict[str, ExportOption] = {
    opt.name: opt
    for opt in (
        ExportOption(
            name="dynamic_batch", flag="--dynamic-batch", kind="bool", tasks=(IMAGE_CLASSIFICATION,),
            help="image models: a symbolic batch axis where the format can carry one (ONNX, OpenVINO; "
                 "the others keep batch 1)"),
        ExportOption(
            name="img_size", flag="--img-size", minimum=32, metavar="PX", tasks=(IMAGE_CLASSIFICATION,),
            help="image models: input height and width of the artifact (default: the model's, e.g. 224; "
                 "EfficientFormerV2 takes multiples of 32 and rebuilds its attention biases for the size)"),
        ExportOption(
            name="batch", flag="--batch", minimum=1, metavar="N", tasks=(IMAGE_CLASSIFICATION,),
            help="image models: the batch the artifact is traced with and runs (default 1; with "
                 "--dynamic-batch the traced batch of a symbolic axis)"),
        ExportOption(
            name="max_context", flag="--max-context", minimum=1, metavar="N", tasks=(TEXT_GENERATION,),
            help="language models: fixed context of the artifacts (default: the model's max_seq_len)"),
        ExportOption(
            name="prefill_chunk", flag="--prefill-chunk", minimum=1, metavar="T", tasks=(TEXT_GENERATION,),
            help="language models: tokens per prefill call (ONNX: the validated chunk of its dynamic token "
                 "axis; TFLite: the prefill signature's length; CoreML stateful: the prefill function's length; "
                 "default 16)"),
        ExportOption(
            name="coreml_state", flag="--coreml-state", kind="choice", choices=("fp16", "fp16x2"),
            tasks=(TEXT_GENERATION,), formats=("coreml",), exporter_keyword="state_precision",
            help="language models, CoreML stateful: state stored as fp16 (default), or as fp16 high/low pairs "
                 "(fp32-class accuracy, twice the bytes); docs/lm-artifacts.md"),
        ExportOption(
            name="coreml_stateful", flag=None, kind="choice", choices=(True, False),
            tasks=(TEXT_GENERATION,), formats=("coreml",), exporter_keyword="stateful",
            help="language models, CoreML: the iOS 18 stateful program (True, default) or the explicit "
                 "iOS 16 past/present form (False)"),
    )
}


def check_export_options(task: str, formats: list[str] | tuple[str, ...], options: dict[str, Any],
                         model: str = "this model") -> dict[str, Any]:
    """The options in ``options`` that were given (not None, not False), checked against
    :data:`EXPORT_OPTIONS` for ``task`` and ``formats``; a :class:`ConfigError` naming the flag
    for an unknown option, a bad value, or one that does not apply (never silently ignored)."""
    given: dict[str, Any] = {}
    for name, value in options.items():
        opt = EXPORT_OPTIONS.get(name)
        if value is None or (value is False and (opt is None or opt.kind == "bool")):
            continue
        if opt is None:
            raise ConfigError(f"unknown export option {name!r}; options are {', '.join(EXPORT_OPTIONS)}")
        if task not in opt.tasks:
            kinds = " and ".join(_TASK_WORDS.get(t, t) for t in opt.tasks)
            raise ConfigError(f"{opt.label} applies to {kinds} only; {model} is {_TASK_WORD.get(task, task)}: "
                              f"drop the option")
        if opt.formats and not set(opt.formats) & set(formats):
            names = ", ".join(FORMATS[f].title for f in opt.formats)
            raise ConfigError(f"{opt.label} applies to {names} only, which is not among the formats asked for "
                              f"({', '.join(formats)}): drop the option or add --formats {','.join(opt.formats)}")
        given[name] = opt.check_value(value)
    return given


_TASK_WORDS = {IMAGE_CLASSIFICATION: "image classifiers", TEXT_GENERATION: "language models"}
_TASK_WORD = {IMAGE_CLASSIFICATION: "an image classifier", TEXT_GENERATION: "a language model"}


def check_precision(task: str, formats: list[str] | tuple[str, ...], precision: Any) -> str:
    """``precision`` if every format in ``formats`` exports it for ``task``; else a
    :class:`ConfigError` saying which formats cannot and which precisions they can."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision (precision=) must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    refused = [f for f in formats if precision not in FORMATS[f].precisions_for(task)]
    if refused:
        can = "; ".join(f"{FORMATS[f].title}: {', '.join(FORMATS[f].precisions_for(task)) or 'none'}" for f in refused)
        raise ConfigError(f"--precision {precision} is not available for {_TASK_WORDS.get(task, task)} in "
                          f"{', '.join(FORMATS[f].title for f in refused)} ({can}); nothing was written. "
                          f"Export at a precision every format asked for can write")
    return precision


def runtimes_for_format(fmt: str) -> tuple[RuntimeSpec, ...]:
    """Every runtime that runs format ``fmt``, the format's default runtime first."""
    spec = get_format(fmt)
    others = [r for r in RUNTIMES.values() if spec.name in r.formats and r.name != spec.runtime]
    return (RUNTIMES[spec.runtime], *others)


#: The format of PyTorch checkpoints (read, never exported) and the runtime that runs a
#: PyTorch module eagerly: other code names them through these constants.
CHECKPOINT_FORMAT = "pytorch"
EAGER_RUNTIME = "pytorch"


def apple_format() -> FormatSpec:
    """The format an Apple app bundle carries: the exported format whose default runtime is
    Apple-only (``staredge ios-bundle`` exports it and its manifest lists its packages)."""
    (spec,) = (s for s in FORMATS.values() if s.exportable and RUNTIMES[s.runtime].apple_only)
    return spec


def checkpoint_format() -> FormatSpec:
    """The :class:`FormatSpec` of PyTorch checkpoints: StarEdge writes them with its
    ``primary_suffix`` (safetensors, no pickle); its ``pickle_suffixes`` are the pickles
    torch's weights-only unpickler reads."""
    return FORMATS[CHECKPOINT_FORMAT]


def checkpoint_suffixes() -> tuple[str, ...]:
    """File suffixes of PyTorch checkpoints, longest first (``.pth.tar`` before ``.tar``)."""
    return tuple(sorted({".pth.tar", *FORMATS[CHECKPOINT_FORMAT].suffixes}, key=len, reverse=True))


def export_formats() -> tuple[str, ...]:
    """Names of the formats StarEdge exports, in ``all`` order."""
    return tuple(name for name, spec in FORMATS.items() if spec.exportable)


def _lookup(table: dict, name: Any, what: str, choices: tuple[str, ...]):
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be a name (one of {', '.join(choices)}), got {type(name).__name__}")
    key = name.strip().lower()
    if key in table:
        return table[key]
    for spec in table.values():
        if key in spec.aliases:
            return spec
    raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}")


def get_format(name: str, exportable: bool = False) -> FormatSpec:
    """The :class:`FormatSpec` called ``name`` (or an alias); ``exportable`` limits to export targets."""
    table = {k: v for k, v in FORMATS.items() if v.exportable} if exportable else FORMATS
    return _lookup(table, name, "export format" if exportable else "format", tuple(table))


def get_runtime(name: str) -> RuntimeSpec:
    """The :class:`RuntimeSpec` called ``name`` (or an alias such as "ort", "ov", "tflite")."""
    return _lookup(RUNTIMES, name, "backend", tuple(RUNTIMES))


def parse_formats(formats: Any, task: str = IMAGE_CLASSIFICATION) -> list[str]:
    """``"all"``, ``"onnx,tflite"`` or a list → canonical export format names for ``task``
    (order kept; ``all``: every format that exports the task)."""
    items = formats.split(",") if isinstance(formats, str) else list(formats or ())
    names = [str(f).strip().lower() for f in items if str(f).strip()]
    choices = tuple(n for n in export_formats() if FORMATS[n].exportable_for(task))
    if not names:
        raise ConfigError(f"no export format given; choose from {', '.join(choices)} or 'all'")
    if "all" in names:
        return list(choices)
    picked = list(dict.fromkeys(get_format(n, exportable=True).name for n in names))
    refused = [n for n in picked if n not in choices]
    if refused:
        raise ConfigError(f"{_TASK_WORDS.get(task, task)} export to {', '.join(choices)}; not to {', '.join(refused)}")
    return picked


def runtime_for_format(fmt: str) -> RuntimeSpec:
    """The runtime that runs artifacts of format ``fmt`` by default."""
    return RUNTIMES[get_format(fmt).runtime]


def lm_export_formats() -> tuple[str, ...]:
    """Names of the formats StarEdge exports language models to, in ``all`` order."""
    return tuple(name for name, spec in FORMATS.items() if spec.lm_exporter)


def available_export_formats() -> list[str]:
    """Formats whose converter and default runtime are both installed here."""
    return [
        name for name in export_formats()
        if not FORMATS[name].missing_for_export() and RUNTIMES[FORMATS[name].runtime].available()
    ]


def detect_format(path: str | os.PathLike) -> FormatSpec:
    """The :class:`FormatSpec` of the artifact at ``path`` (suffix, or a folder's layout).

    Raises :class:`staredge.errors.MetadataError` for a missing path, an unknown suffix or
    a folder that is no known artifact.
    """
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise MetadataError(f"cannot inspect {str(p)[:200]}: {exc.strerror or exc}") from exc
    if not exists:
        if p.is_symlink():  # exists() follows links: a loop or a dangling link looks missing
            raise MetadataError(f"{p} is a symbolic link that leads nowhere (a link loop, or its target "
                                f"{os.readlink(p)!r} is missing); point at the artifact itself")
        raise MetadataError(f"no such file or directory: {p}")
    for spec in FORMATS.values():  # each format recognises its own artifacts (suffix, folder layout)
        if spec.detect(p):
            return spec
    if is_dir:
        kinds = " nor ".join(load_object(s.detector).__doc__.strip().splitlines()[0].rstrip(".")
                             for s in sorted(FORMATS.values(), key=lambda s: s.title) if s.detector is not None)
        raise MetadataError(f"{p} is a directory but neither {kinds}; point at the artifact file itself")
    suffix = p.suffix.lower()
    for spec in FORMATS.values():
        if suffix in spec.suffixes:
            return spec
    known = ", ".join(sorted(s for spec in FORMATS.values() for s in spec.suffixes))
    raise MetadataError(f"unknown artifact suffix '{p.suffix}' for {p}; known suffixes: {known}")


__all__ = [
    "CHECKPOINT_FORMAT",
    "EAGER_RUNTIME",
    "apple_format",
    "checkpoint_format",
    "checkpoint_suffixes",
    "EXPORT_OPTIONS",
    "ExportOption",
    "FORMATS",
    "IMAGE_PRECISIONS",
    "LM_PRECISIONS",
    "LM_WEIGHT_ONLY_PRECISIONS",
    "PRECISIONS",
    "TASKS",
    "check_export_options",
    "check_precision",
    "runtimes_for_format",
    "lm_export_formats",
    "FormatSpec",
    "IMAGE_CLASSIFICATION",
    "RUNTIMES",
    "RuntimeSpec",
    "TEXT_GENERATION",
    "available_export_formats",
    "detect_format",
    "export_formats",
    "get_format",
    "get_runtime",
    "load_object",
    "parse_formats",
    "runtime_for_format",
]
