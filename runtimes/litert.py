"""LiteRT (TFLite) backend: ``ai_edge_litert``'s interpreter, falling back to ``tflite_runtime``.

``ai-edge-litert`` is preferred: ``tflite-runtime`` 2.14 is the old runtime and is built
against numpy 1.x. The interpreter runs on the CPU with explicit threads, through the
XNNPACK delegate by default (``xnnpack=False`` runs the reference built-in kernels).
An interpreter is not thread-safe, so ``thread_safe`` is False and the Predictor locks.

Metadata lives in the flatbuffer's ``metadata`` table (entry ``staredge`` pointing at a
buffer holding the JSON document); it is read by :mod:`staredge.metadata`'s reader.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, DeviceError, MissingDependencyError
from staredge.runtimes.base import ArtifactError, Backend, Engine, TensorInfo, check_artifact_file
from staredge.threads import resolve_threads

#: Interpreter modules in order of preference.
INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def import_interpreter_module():
    """The first importable interpreter module, or MissingDependencyError naming the extra."""
    errors = []
    for name in INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise MissingDependencyError(
        "the LiteRT backend needs 'ai-edge-litert' (or the older 'tflite-runtime'), and neither imports "
        f"({'; '.join(errors)}). Install it with: pip install -c constraints.txt 'staredge[tflite]'"
    )


def signature_inputs(model_content: bytes) -> dict[str, list[str]]:
    """Each signature of an in-memory TFLite model and its input names (``{key: [names]}``).

    Exporters read a flatbuffer they have just converted through this, so the LiteRT
    interpreter is built only in the runtime layer (:class:`LiteRtEngine`).
    """
    engine = LiteRtEngine(None, model_content=bytes(model_content), threads=1, allocate=False)
    return {key: list(sig["inputs"]) for key, sig in engine.interpreter.get_signature_list().items()}


_TFL_DTYPES = {np.dtype(t).type: np.dtype(t).name for t in ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")}


class LiteRtEngine(Engine):
    """The one place a LiteRT (TFLite) interpreter is constructed (image and LM).

    Interpreter module: ``ai_edge_litert``, else ``tflite_runtime`` (:func:`import_interpreter_module`),
    for every task. ``num_threads`` = :func:`staredge.threads.resolve_threads`; the XNNPACK
    delegate unless ``xnnpack=False``; ``batch`` resizes the first input before the tensors
    are allocated (``allocate=False`` leaves that to signature runners). Capabilities: named
    feeds, ``signatures`` when the model has any (an LM's ``decode`` / ``prefill``). The
    interpreter is not re-entrant: :attr:`lock` serialises callers that share it.
    """

    runtime = "litert"

    def __init__(self, path: str | os.PathLike | None, device: str = "auto", threads: int | None = None, *,
                 xnnpack: bool = True, batch: int | None = None, allocate: bool = True,
                 model_content: bytes | None = None) -> None:
        mod = import_interpreter_module()
        if device in ("cuda", "gpu"):
            raise DeviceError(
                "the LiteRT backend runs on the CPU here (its GPU delegate targets mobile GPUs); use device='cpu'")
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            check_artifact_file(self.path, "TFLite")
            if self.path.is_dir():
                raise ArtifactError(f"{self.path} is a directory; point at the .tflite file")
        self.threads = resolve_threads(threads)
        self.xnnpack = bool(xnnpack)
        resolver = mod.OpResolverType.AUTO if self.xnnpack else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        source = {"model_path": str(self.path)} if model_content is None else {"model_content": model_content}
        try:
            self.interpreter = mod.Interpreter(**source, num_threads=self.threads,
                                               experimental_op_resolver_type=resolver)
            if batch is not None:
                first = self.interpreter.get_input_details()[0]
                if int(first["shape"][0]) != batch:
                    self.interpreter.resize_tensor_input(first["index"], [batch, *first["shape"][1:]], strict=False)
            if allocate:
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            what = self.path if self.path is not None else "the TFLite model"
            raise ArtifactError(
                f"LiteRT cannot load {what}: it is damaged, truncated or not a TFLite model "
                f"({(str(exc).splitlines() or [''])[0][:300]}). Re-export it with `staredge export`"
            ) from exc
        self.interpreter_module = mod.__name__
        self.signatures = dict(self.interpreter.get_signature_list())
        self.capabilities = frozenset({"named_feeds"} | ({"signatures"} if self.signatures else set()))
        self.lock = threading.Lock()
        self.device = "cpu"

    def runner(self, signature: str) -> Any:
        """The signature runner ``signature`` (e.g. an LM's ``decode``)."""
        if signature not in self.signatures:
            raise ArtifactError(f"{self.path}: the TFLite model has no signature {signature!r} "
                                f"(it has: {', '.join(self.signatures) or 'none'})")
        return self.interpreter.get_signature_runner(signature)

    def call(self, runner: Any, feeds: dict[str, Any]) -> dict[str, Any]:
        """One signature call under :attr:`lock`, runtime failures as InferenceError."""
        with self.lock:
            try:
                return runner(**feeds)
            except (ValueError, RuntimeError) as exc:
                raise self.run_failed(exc) from exc

    def run_feeds(self, feeds: dict[str, Any], signature: str | None = None) -> dict[str, np.ndarray]:
        """One call by name: through ``signature`` (default: the only one, or the primary
        subgraph when the model has none), under :attr:`lock`."""
        if signature is None and len(self.signatures) == 1:
            signature = next(iter(self.signatures))
        if signature is not None:
            return {k: np.array(v) for k, v in self.call(self.runner(signature), feeds).items()}
        with self.lock:
            for d in self.interpreter.get_input_details():
                if d["name"] not in feeds:
                    raise ConfigError(f"missing input {d['name']!r} for {self.path}")
                self.interpreter.set_tensor(d["index"], np.asarray(feeds[d["name"]], dtype=d["dtype"]))
            self.invoke()
            return {d["name"]: self.interpreter.get_tensor(d["index"]) for d in self.interpreter.get_output_details()}

    def invoke(self) -> None:
        """``interpreter.invoke()`` with runtime failures as InferenceError (callers hold the lock)."""
        try:
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise self.run_failed(exc) from exc

    def signature_tensors(self, signature: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """(inputs, outputs) of a signature by their signature names, with shapes and dtypes."""
        runner = self.runner(signature)
        conv = lambda d: {k: TensorInfo(k, tuple(int(x) if int(x) > 0 else None for x in v.get("shape_signature", v["shape"])),
                                        _TFL_DTYPES.get(v["dtype"])) for k, v in d.items()}  # noqa: E731
        return list(conv(runner.get_input_details()).values()), list(conv(runner.get_output_details()).values())

    def inputs(self) -> list[TensorInfo]:
        """The model's (primary subgraph's) inputs."""
        return [TensorInfo(d["name"], tuple(int(x) if int(x) > 0 else None for x in d.get("shape_signature", d["shape"])),
                           _TFL_DTYPES.get(d["dtype"])) for d in self.interpreter.get_input_details()]

    def threads_in_effect(self) -> int:
        """The ``num_threads`` the interpreter was built with."""
        return self.threads

    def op_histogram(self) -> dict[str, int]:
        """Op names of the interpreter's primary subgraph (``_get_ops_details``)."""
        counts: dict[str, int] = {}
        for op in self.interpreter._get_ops_details():  # noqa: SLF001 - the only op listing LiteRT offers
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class LiteRtBackend(Backend):
    """A ``.tflite`` file on the LiteRT interpreter (CPU, XNNPACK).

    Options: ``xnnpack`` (default True); ``batch`` resizes the input tensor for that batch
    size before the tensors are allocated. Inputs are NCHW float32 like every backend's;
    when the artifact's metadata says ``input_layout="NHWC"`` they are transposed here.
    """

    name = "litert"
    thread_safe = False
    OPTIONS = ("xnnpack",)

    def load(self) -> None:
        assert self.path is not None
        self.engine = LiteRtEngine(self.path, self.requested_device, self.threads,
                                   xnnpack=bool(self.options.get("xnnpack", True)), batch=self.options.get("batch"))
        self.interpreter = self.engine.interpreter
        self._metadata = self.read_artifact_metadata(self.path)
        self.interpreter_module = self.engine.interpreter_module
        self.xnnpack = self.engine.xnnpack
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = self.interpreter.get_output_details()
        self.device = "cpu"

    def graph_input_shape(self) -> tuple[int | None, ...]:
        """The interpreter's input shape (``shape_signature``: -1 marks a dynamic axis)."""
        sig = self._input.get("shape_signature")
        dims = sig if sig is not None and len(sig) else self._input["shape"]
        return tuple(int(d) if int(d) > 0 else None for d in dims)

    @property
    def supports_batch(self) -> bool:
        """False: the interpreter's tensors are allocated for the exported (batch-1) shape."""
        return False

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.metadata.input_layout.upper() == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        self.interpreter.set_tensor(self._input["index"], x)
        self.engine.invoke()
        # get_tensor copies, so the result survives the next invoke
        return [self.interpreter.get_tensor(o["index"]) for o in self._outputs]

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus the interpreter module and whether XNNPACK is on."""
        d = super().describe()
        d.update(interpreter=self.interpreter_module, xnnpack=self.xnnpack)
        return d
