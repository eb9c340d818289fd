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
from typing import Any

import numpy as np

from staredge.errors import DeviceError, MissingDependencyError
from staredge.runtimes.base import ArtifactError, Backend, check_artifact_file

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
    interpreter is built only here, in the runtime layer.
    """
    mod = import_interpreter_module()
    try:
        interpreter = mod.Interpreter(model_content=bytes(model_content))
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"LiteRT cannot read the TFLite model ({str(exc).splitlines()[0][:300]})") from exc
    return {key: list(sig["inputs"]) for key, sig in interpreter.get_signature_list().items()}


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
        mod = import_interpreter_module()
        assert self.path is not None
        if self.requested_device in ("cuda", "gpu"):
            raise DeviceError(
                "the LiteRT backend runs on the CPU here (its GPU delegate targets mobile GPUs); use device='cpu'"
            )
        check_artifact_file(self.path, "TFLite")
        if self.path.is_dir():
            raise ArtifactError(f"{self.path} is a directory; point at the .tflite file")
        resolver = (
            mod.OpResolverType.AUTO
            if self.options.get("xnnpack", True)
            else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            self.interpreter = mod.Interpreter(
                model_path=str(self.path), num_threads=self.threads, experimental_op_resolver_type=resolver
            )
            batch = self.options.get("batch")
            if batch is not None:
                first = self.interpreter.get_input_details()[0]
                if int(first["shape"][0]) != batch:
                    self.interpreter.resize_tensor_input(first["index"], [batch, *first["shape"][1:]], strict=False)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"LiteRT cannot load {self.path}: it is damaged, truncated or not a TFLite model "
                f"({str(exc).splitlines()[0][:300]}). Re-export it with `staredge export`"
            ) from exc
        self._metadata = self.read_artifact_metadata(self.path)
        self.interpreter_module = mod.__name__
        self.xnnpack = bool(self.options.get("xnnpack", True))
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
        self.interpreter.invoke()
        # get_tensor copies, so the result survives the next invoke
        return [self.interpreter.get_tensor(o["index"]) for o in self._outputs]

    def describe(self) -> dict[str, Any]:
        """Runtime facts, plus the interpreter module and whether XNNPACK is on."""
        d = super().describe()
        d.update(interpreter=self.interpreter_module, xnnpack=self.xnnpack)
        return d
