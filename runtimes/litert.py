"""LiteRT (TFLite) backend: ``ai_edge_litert``'s interpreter, falling back to ``tflite_runtime``.

``ai-edge-litert`` is preferred: ``tflite-runtime`` 2.14 is the old runtime and is built
against numpy 1.x. The interpreter runs on the CPU with explicit threads, through the
XNNPACK delegate by default (``xnnpack=False`` runs the reference built-in kernels).
An interpreter is not thread-safe, so ``thread_safe`` is False and the Predictor locks.

Metadata lives in the flatbuffer's ``metadata`` table (entry ``staredge`` pointing at a
buffer holding the JSON document); it is read with the schema module ai-edge-litert ships.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import MissingDependencyError
from staredge.metadata import ArtifactMetadata
from staredge.runtimes.base import ArtifactError, Backend, DeviceError, check_artifact_file, metadata_from_json

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


def read_tflite_metadata_bytes(data: bytes, key: str = "staredge") -> bytes | None:
    """The bytes of metadata entry ``key`` in a .tflite flatbuffer, or None if it has none."""
    try:
        schema = importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError:
        try:
            schema = importlib.import_module("tflite_runtime.schema_py_generated")  # pragma: no cover
        except ImportError:
            return None
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError("not a TFLite flatbuffer (missing the 'TFL3' identifier)")
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = entry.Name()
        if (name.decode() if isinstance(name, bytes) else name) != key:
            continue
        buf = model.Buffers(entry.Buffer())
        if buf.Offset() > 0:  # large models keep buffers after the flatbuffer
            return bytes(data[buf.Offset() : buf.Offset() + buf.Size()])
        return buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return None


def read_tflite_metadata(path: Path) -> ArtifactMetadata:
    """The StarEdge metadata embedded in a .tflite file."""
    data = Path(path).read_bytes()
    try:
        raw = read_tflite_metadata_bytes(data)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}; re-export it with `staredge export`") from exc
    except Exception as exc:  # a damaged flatbuffer fails with IndexError/struct.error deep inside
        raise ArtifactError(f"{path} is a damaged TFLite file ({type(exc).__name__}); re-export it") from exc
    return metadata_from_json(raw, path)


class LiteRtBackend(Backend):
    """A ``.tflite`` file on the LiteRT interpreter (CPU, XNNPACK).

    Options: ``xnnpack`` (default True). Inputs are NCHW float32 like every backend's; when
    the artifact's metadata says ``input_layout="NHWC"`` they are transposed here.
    """

    name = "litert"
    formats = ("tflite",)
    module = "ai_edge_litert"
    extra = "tflite"
    thread_safe = False

    @classmethod
    def is_available(cls) -> bool:
        """True when ai-edge-litert or tflite-runtime can be imported."""
        return any(importlib.util.find_spec(m.split(".")[0]) is not None for m in INTERPRETER_MODULES)

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
        self._metadata = read_tflite_metadata(self.path)
        resolver = (
            mod.OpResolverType.AUTO
            if self.options.get("xnnpack", True)
            else mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            self.interpreter = mod.Interpreter(
                model_path=str(self.path), num_threads=self.threads, experimental_op_resolver_type=resolver
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"LiteRT cannot load {self.path}: it is truncated, corrupt or not a TFLite model "
                f"({str(exc).splitlines()[0][:300]}). Re-export it with `staredge export`"
            ) from exc
        self.interpreter_module = mod.__name__
        self.xnnpack = bool(self.options.get("xnnpack", True))
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = self.interpreter.get_output_details()
        self.device = "cpu"

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
