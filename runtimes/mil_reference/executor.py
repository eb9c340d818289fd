"""The executor: loads an ``.mlpackage``'s ML Program and runs its ``main`` function op by op."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import StarEdgeError
from staredge.runtimes.mil_reference.blobs import BlobFile
from staredge.runtimes.mil_reference.dtypes import MIL_DTYPES, FeatureInfo, tensor_shape
from staredge.runtimes.mil_reference.errors import MILInputError, MILProgramError, UnsupportedOpError
from staredge.runtimes.mil_reference.kernels import KERNELS, SUPPORTED_OPS, Args
from staredge.runtimes.mil_reference.package import load_model_spec, model_spec_path, proto_modules


def _blas_threads(threads: int | None):
    """A context limiting BLAS threads (threadpoolctl, when installed), else a no-op."""
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


class MILExecutor:
    """Runs an ``.mlpackage``'s ML Program with numpy (validation, not speed).

    ``MILExecutor(path).predict({name: value})`` returns every output of the program by
    name. Image inputs accept a PIL image, an ``(H, W, C)`` / ``(H, W)`` uint8 array, or a
    float array ``(1, C, H, W)`` / ``(C, H, W)`` of pixel values in [0, 255] (the tensor the
    image becomes inside CoreML, channels in the declared colour order). The image's size
    must match the declared one (CoreML does not resize either). Multi-array inputs take
    an array of the declared shape.

    Classifier programs return the predicted label under the predicted-feature name (a
    0-d string array) and the probabilities, in :attr:`class_labels` order, as a float
    array under the probabilities name (Apple's runtime returns a label → probability
    dict there). Other outputs (e.g. ``logits``) are arrays in the program's declared dtype.

    Loading refuses a program that holds any op outside :data:`SUPPORTED_OPS` with
    :class:`UnsupportedOpError`. ``threads`` caps BLAS threads while predicting (default 1;
    None leaves numpy's setting).

    A multifunction package (iOS 18) holds several functions; ``function`` names the one to
    run (default ``main``), :attr:`functions` lists them, and :meth:`for_function` gives an
    executor of another function of the same package that shares this one's parsed spec and
    weight arrays (coremltools stores weights common to the functions once).
    """

    def __init__(self, path: str | Path, threads: int | None = 1, function: str = "main",
                 _shared: "MILExecutor | None" = None) -> None:
        self.path = Path(path)
        self.function = function
        #: BLAS threads while predicting (None: numpy's default). One thread is the default
        #: because the executor's GEMMs are small: on a busy machine multi-threaded OpenBLAS
        #: spends most of its time waiting (measured 30x slower on a loaded 2-core box).
        self.threads = threads
        _, mil_pb2 = proto_modules()
        self._mil_pb2 = mil_pb2
        self.spec = _shared.spec if _shared is not None else load_model_spec(self.path)
        #: Weight arrays read from blob files, by (file, offset): shared across functions.
        self._weights: dict[tuple, np.ndarray] = _shared._weights if _shared is not None else {}
        kind = self.spec.WhichOneof("Type")
        self.user_metadata: dict[str, str] = dict(self.spec.description.metadata.userDefined)
        self.model_name = self._model_name()
        if kind != "mlProgram":
            raise MILProgramError(
                f"{self.path} ({self.model_name}) is a CoreML '{kind}' model; the reference executor runs "
                f"ML Programs (convert_to='mlprogram') only"
            )
        program = self.spec.mlProgram
        #: The program's function names (more than one in a multifunction package).
        self.functions: list[str] = sorted(program.functions)
        if function not in program.functions:
            raise MILProgramError(f"{self.path} ({self.model_name}): the ML Program has no '{function}' function "
                                  f"(it has: {', '.join(self.functions) or 'none'})")
        func = program.functions[function]
        self.opset = func.opset
        if func.opset not in func.block_specializations:
            raise MILProgramError(f"{self.path}: {function} has no block for its opset {func.opset!r}")
        block = func.block_specializations[func.opset]
        self._ops = list(block.operations)
        self.output_names: list[str] = list(block.outputs)
        self.op_counts: Counter = Counter(op.type for op in self._ops)
        self._check_supported()
        self._spec_dir = model_spec_path(self.path).parent
        self._blobs: dict[str, BlobFile] = _shared._blobs if _shared is not None else {}
        self._program_inputs = {nv.name: nv.type for nv in func.inputs}
        self.inputs: dict[str, FeatureInfo] = self._describe_inputs()
        self.class_labels: list[Any] | None = None
        self._consts: dict[str, Any] = {}
        for op in self._ops:
            if op.type == "const":
                self._consts[op.outputs[0].name] = self._const_value(op)
            elif op.type.startswith("constexpr_"):  # weight decompression: evaluated once at load
                self._consts.update(self._constexpr_values(op))
            elif op.type == "classify":
                classes = op.inputs["classes"].arguments[0]
                if classes.WhichOneof("binding") == "name":
                    value = self._consts.get(classes.name)
                else:
                    value = self._value(classes.value)
                self.class_labels = list(np.asarray(value, dtype=object).reshape(-1)) if value is not None else None
        self._plan = [(op, self._bindings(op)) for op in self._ops
                      if op.type != "const" and not op.type.startswith("constexpr_")]
        self.predicted_feature_name = self.spec.description.predictedFeatureName or None
        self.probabilities_name = self.spec.description.predictedProbabilitiesName or None

    def for_function(self, function: str) -> "MILExecutor":
        """An executor (same class and threads) of another function of this package, sharing
        the parsed spec, the blob files and the weight arrays already read."""
        return type(self)(self.path, threads=self.threads, function=function, _shared=self)

    # ------------------------------------------------------------------ loading

    def _model_name(self) -> str:
        text = self.user_metadata.get("staredge")
        if text:
            try:
                return str(json.loads(text).get("model", self.path.name))
            except (ValueError, AttributeError):
                pass
        return self.path.name

    def _check_supported(self) -> None:
        nested = [op for op in self._ops if len(op.blocks)]
        missing = sorted({op.type for op in self._ops} - SUPPORTED_OPS)
        if nested:
            missing = sorted(set(missing) | {op.type for op in nested})
        if missing:
            detail = ", ".join(f"{t} (x{self.op_counts[t]})" for t in missing)
            raise UnsupportedOpError(
                f"the MIL reference executor cannot run {self.path.name} (model '{self.model_name}'): it holds "
                f"op(s) it does not implement: {detail}. Supported ops: {', '.join(sorted(SUPPORTED_OPS))}. "
                f"Validate this package on macOS with Apple's runtime, or export a model whose ops are covered."
            )

    def _describe_inputs(self) -> dict[str, FeatureInfo]:
        from_description = {f.name: f for f in self.spec.description.input}
        infos = {}
        for name, vtype in self._program_inputs.items():
            if vtype.WhichOneof("type") != "tensorType":
                raise MILProgramError(f"{self.path}: program input '{name}' is not a tensor")
            shape = tensor_shape(vtype.tensorType)
            if shape is None:
                raise UnsupportedOpError(
                    f"{self.path} ({self.model_name}): input '{name}' has a flexible shape; the reference "
                    f"executor runs fixed-shape programs only"
                )
            dtype = self._np_dtype(vtype.tensorType.dataType, name)
            feat = from_description.get(name)
            if feat is not None and feat.type.WhichOneof("Type") == "imageType":
                space = type(feat.type.imageType).ColorSpace.Name(feat.type.imageType.colorSpace)
                if space not in ("RGB", "BGR", "GRAYSCALE", "GRAYSCALE_FLOAT16"):
                    raise MILProgramError(f"{self.path}: image input '{name}' has colour space {space}")
                infos[name] = FeatureInfo(name, "image", shape, dtype, space)
            else:
                infos[name] = FeatureInfo(name, "tensor", shape, dtype)
        return infos

    def _np_dtype(self, code: int, what: str) -> Any:
        name = self._mil_pb2.DataType.Name(code)
        if name not in MIL_DTYPES:
            raise UnsupportedOpError(
                f"{self.path}: '{what}' has data type {name}, which the reference executor does not support"
            )
        return MIL_DTYPES[name]

    def _blob(self, file_name: str) -> BlobFile:
        if file_name not in self._blobs:
            rel = file_name.replace("@model_path/", "", 1) if file_name.startswith("@model_path/") else file_name
            self._blobs[file_name] = BlobFile(self._spec_dir / rel)
        return self._blobs[file_name]

    def _const_value(self, op) -> Any:
        if "val" not in op.attributes:
            raise MILProgramError(f"{self.path}: const '{op.outputs[0].name}' has no value")
        return self._value(op.attributes["val"])

    def _constexpr_values(self, op) -> dict[str, Any]:
        """A ``constexpr_*`` op (quantised / palettised weights) run by its kernel at load time;
        its arguments are attributes (iOS16 ops) or inputs bound to constants (iOS18 ops)."""
        values = {k: [self._value(v)] for k, v in op.attributes.items() if k != "name"}
        for key, arg in op.inputs.items():
            values[key] = [self._consts[b.name] if b.WhichOneof("binding") == "name" else self._value(b.value)
                           for b in arg.arguments]
        results = KERNELS[op.type](Args(op.type, op.outputs[0].name, values))
        return {o.name: self._store(o, r) for o, r in zip(op.outputs, results)}

    def _value(self, value) -> Any:
        """A MIL ``Value`` (immediate or stored in a blob file) as numpy / Python data."""
        which = value.WhichOneof("value")
        vtype = value.type
        if which == "blobFileValue":
            tt = vtype.tensorType
            shape = tensor_shape(tt)
            if shape is None:
                raise MILProgramError(f"{self.path}: a weight blob has no static shape")
            dtype = self._np_dtype(tt.dataType, "weight blob")
            key = (value.blobFileValue.fileName, int(value.blobFileValue.offset), tuple(shape), np.dtype(dtype).str)
            if key not in self._weights:
                self._weights[key] = self._blob(key[0]).read(key[1], shape, dtype)
            return self._weights[key]
        if which != "immediateValue":
            raise MILProgramError(f"{self.path}: a value of kind {which!r} cannot be read")
        imm = value.immediateValue
        kind = imm.WhichOneof("value")
        if kind == "list":
            return [self._value(v) for v in imm.list.values]
        if kind == "tuple":
            return tuple(self._value(v) for v in imm.tuple.values)
        if kind != "tensor" or vtype.WhichOneof("type") != "tensorType":
            raise MILProgramError(f"{self.path}: immediate values of kind {kind!r} are not supported")
        tt = vtype.tensorType
        shape = tensor_shape(tt)
        dtype = self._np_dtype(tt.dataType, "constant")
        tensor = imm.tensor
        field = tensor.WhichOneof("value")
        if field is None:
            data: Any = np.zeros(0, dtype=dtype if dtype is not object else np.float32)
        elif field == "bytes":
            data = np.frombuffer(tensor.bytes.values, dtype=dtype)
        elif field == "strings":
            data = np.asarray(list(tensor.strings.values), dtype=object)
        else:
            data = np.asarray(list(getattr(tensor, field).values))
            data = data.astype(dtype) if dtype is not object else data
        if shape is not None:
            count = int(np.prod(shape)) if shape else 1
            if data.size == count:
                data = data.reshape(shape)
            elif data.size == 1:  # a splat constant stores one value for the whole shape
                data = np.full(shape, data.reshape(-1)[0], dtype=data.dtype)
        if shape == () and dtype is object:
            return str(data.reshape(-1)[0])
        return data.copy() if isinstance(data, np.ndarray) else data

    # ------------------------------------------------------------------ running

    def _input_array(self, info: FeatureInfo, value: Any) -> np.ndarray:
        if info.kind == "image":
            return self._image_array(info, value)
        arr = np.asarray(value)
        if arr.shape != info.shape:
            if arr.size == int(np.prod(info.shape)) and arr.ndim == len(info.shape) - 1:
                arr = arr.reshape(info.shape)
            else:
                raise MILInputError(f"input '{info.name}' must have shape {info.shape}, got {arr.shape}")
        return arr.astype(info.dtype)

    def _image_array(self, info: FeatureInfo, value: Any) -> np.ndarray:
        _, c, h, w = info.shape
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a core dependency
            Image = None
        gray = info.color_space in ("GRAYSCALE", "GRAYSCALE_FLOAT16")
        if Image is not None and isinstance(value, Image.Image):
            value = np.asarray(value.convert("L" if gray else "RGB"))
        arr = np.asarray(value)
        if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[0] == c and arr.shape[-1] not in (1, 3, 4)):
            # already the program's (1, C, H, W) pixel tensor (values in [0, 255])
            chw = arr.reshape(arr.shape[-3:]) if arr.ndim == 4 and arr.shape[0] == 1 else arr
            if chw.ndim != 3:
                raise MILInputError(f"image input '{info.name}' takes one image (batch 1), got shape {arr.shape}")
            planar = chw.astype(np.float32)
        else:
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.ndim != 3:
                raise MILInputError(
                    f"image input '{info.name}' takes a PIL image or an (H, W, C) uint8 array, got shape {arr.shape}"
                )
            if arr.shape[2] == 4:  # drop alpha, as CoreML does for RGBA pixel buffers
                arr = arr[:, :, :3]
            if gray and arr.shape[2] == 3:
                arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("L"))[:, :, None]
            if not gray and arr.shape[2] == 1:
                arr = np.repeat(arr, 3, axis=2)
            if info.color_space == "BGR":
                arr = arr[:, :, ::-1]
            planar = arr.transpose(2, 0, 1).astype(np.float32)
        if planar.shape != (c, h, w):
            raise MILInputError(
                f"image input '{info.name}' must be {w}x{h} pixels with {c} channel(s), got {planar.shape[2]}x"
                f"{planar.shape[1]} with {planar.shape[0]}; resize and centre-crop first (Predictor.classify does)"
            )
        return planar[None].astype(info.dtype)

    def predict(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run the program on ``inputs`` (name → image or array); every program output by name."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise MILInputError(
                f"missing input(s) {sorted(missing)} for {self.path.name}; it takes {sorted(self.inputs)}"
            )
        extra = set(inputs) - set(self.inputs)
        if extra:
            raise MILInputError(f"unknown input(s) {sorted(extra)} for {self.path.name}; it takes {sorted(self.inputs)}")
        env: dict[str, Any] = {name: self._input_array(info, inputs[name]) for name, info in self.inputs.items()}
        env.update(self._consts)
        with _blas_threads(self.threads):
            for op, bindings in self._plan:
                self._run_op(op, bindings, env)
        out = {}
        for name in self.output_names:
            value = env[name]
            out[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        return out

    def _bindings(self, op) -> dict[str, list[tuple[bool, Any]]]:
        """Per input: (is a variable name, name or decoded immediate value), decoded once at load."""
        out = {}
        for key, arg in op.inputs.items():
            out[key] = [
                (True, b.name) if b.WhichOneof("binding") == "name" else (False, self._value(b.value))
                for b in arg.arguments
            ]
        return out

    def _run_op(self, op, bindings: dict[str, list[tuple[bool, Any]]], env: dict[str, Any]) -> None:
        op_name = op.outputs[0].name if op.outputs else op.type
        values: dict[str, list[Any]] = {}
        for key, bound_args in bindings.items():
            bound = []
            for is_name, item in bound_args:
                if is_name:
                    if item not in env:
                        raise MILProgramError(f"{self.path}: op '{op_name}' ({op.type}) reads '{item}' before it is defined")
                    bound.append(env[item])
                else:
                    bound.append(item)
            values[key] = bound
        try:
            results = KERNELS[op.type](Args(op.type, op_name, values))
        except StarEdgeError:
            raise
        except Exception as exc:
            raise MILProgramError(
                f"{self.path.name} (model '{self.model_name}'): op '{op_name}' ({op.type}) failed in the "
                f"reference executor: {type(exc).__name__}: {exc}"
            ) from exc
        if len(results) != len(op.outputs):
            raise MILProgramError(
                f"op '{op_name}' ({op.type}) produced {len(results)} outputs, the program declares {len(op.outputs)}"
            )
        for spec_out, result in zip(op.outputs, results):
            env[spec_out.name] = self._store(spec_out, result)

    def _store(self, spec_out, result: Any) -> Any:
        """Cast a result to the dtype the program declares for it (fp16 programs round here)."""
        if spec_out.type.WhichOneof("type") != "tensorType":
            return result
        code = spec_out.type.tensorType.dataType
        name = self._mil_pb2.DataType.Name(code)
        dtype = MIL_DTYPES.get(name)
        if dtype is None or dtype is object:
            return result
        return np.asarray(result).astype(dtype, copy=False)

    def describe(self) -> dict[str, Any]:
        """What the program is: model name, opset, inputs, outputs and op counts."""
        return {
            "path": str(self.path),
            "model": self.model_name,
            "function": self.function,
            "functions": list(self.functions),
            "opset": self.opset,
            "inputs": {
                n: {"kind": i.kind, "shape": list(i.shape), "color_space": i.color_space} for n, i in self.inputs.items()
            },
            "outputs": list(self.output_names),
            "ops": dict(self.op_counts),
        }
