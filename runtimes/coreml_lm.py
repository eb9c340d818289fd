"""CoreML LM artifacts run by StarEdge's numpy MIL executor (validation off Apple platforms).

Two forms (``lm.extra``/``metadata.extra["coreml"]["stateful"]``): the explicit one
(``past_*`` inputs, ``present_*`` outputs) runs on :class:`MILExecutor` as it is; the iOS 18
stateful one keeps fp16 ``state_<k>`` buffers that :class:`StatefulMILExecutor` binds by
reference, so ``read_state`` / ``coreml_update_state`` read and write them in place. A
stateful package with ``prefill_chunk`` > 1 is a multifunction package: ``main`` (T = 1) and
``prefill`` (T = ``prefill_chunk``); the stepper keeps the state arrays and hands them to
whichever function runs (as an ``MLState`` belongs to the caller on Apple platforms). On
macOS, Apple's runtime runs the same packages (``model.make_state()``,
``predict(..., state=state)``); it cannot run here. :class:`CoreMLTextBackend` (the
text-generation backend) picks Apple's runtime (:class:`CoreMLAppleLM`) on macOS, this
executor elsewhere.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError, DeviceError, require
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.text import TextBackend, _threads
from staredge.runtimes.mil_reference import MILExecutor
from staredge.runtimes.mil_reference.errors import MILInputError
from staredge.runtimes.mil_reference.dtypes import tensor_shape


class StatefulMILExecutor(MILExecutor):
    """:class:`MILExecutor` for programs with state inputs: ``predict(inputs, states)``
    where ``states`` maps state names to arrays that the program updates in place."""

    def _describe_inputs(self):
        all_inputs = self._program_inputs
        self.state_shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
        tensors = {}
        for name, vtype in all_inputs.items():
            if vtype.WhichOneof("type") == "stateType":
                tt = vtype.stateType.wrappedType.tensorType
                self.state_shapes[name] = (tensor_shape(tt), self._np_dtype(tt.dataType, name))
            else:
                tensors[name] = vtype
        self._program_inputs = tensors
        try:
            return super()._describe_inputs()
        finally:
            self._program_inputs = all_inputs

    def new_states(self) -> dict[str, np.ndarray]:
        """Zero-filled state buffers (what ``make_state()`` gives on Apple platforms)."""
        return {n: np.zeros(shape, dtype=dtype) for n, (shape, dtype) in self.state_shapes.items()}

    def predict(self, inputs: dict[str, Any], states: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run once; ``states`` (from :meth:`new_states`) are read and updated in place."""
        if states is None or set(states) != set(self.state_shapes):
            raise MILInputError(f"{self.path.name} needs its states {sorted(self.state_shapes)}; use new_states()")
        env: dict[str, Any] = {name: self._input_array(info, inputs[name]) for name, info in self.inputs.items()}
        env.update(states)  # by reference: coreml_update_state writes these arrays
        env.update(self._consts)
        for op, bindings in self._plan:
            self._run_op(op, bindings, env)
        return {name: np.asarray(env[name]) for name in self.output_names}


def _prefill_function(metadata) -> str | None:
    """The name of the package's T = ``prefill_chunk`` function, if it has one."""
    functions = metadata.extra.get("coreml", {}).get("functions", {})
    return next((fn for fn, t in functions.items() if fn != "main" and int(t) > 1), None)


class _CoreMLStepper(LMStepper):
    """What both CoreML engines share: the feed (int32 ids and position), the stateful form
    (state kept by the engine, ``prefill`` function for a full chunk) and the explicit form
    (``past_*`` in, ``present_*`` out). Subclasses say how one call runs."""

    flexible_tokens = False

    def _predict_stateful(self, prefill: bool, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError

    def _predict(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int32), "position": np.array([position], dtype=np.int32)}
        if self.stateful:
            return np.asarray(self._predict_stateful(ids.shape[1] > 1, feed)["logits"])
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = self._predict(feed)
        self.state = [np.asarray(out[s["output"]], dtype=np.float32) for s in self.state_spec]
        return np.asarray(out["logits"])


class CoreMLReferenceLM(_CoreMLStepper):
    """Decode stream over a CoreML LM package on the MIL executor: ``main`` for one token,
    the ``prefill`` function (multifunction packages) for a full chunk of ``prefill_chunk``."""

    def __init__(self, path: str | Path, threads: int | None = 1, metadata=None) -> None:
        super().__init__(path, metadata)
        self.stateful = bool(self.metadata.extra.get("coreml", {}).get("stateful"))
        cls = StatefulMILExecutor if self.stateful else MILExecutor
        self.executor = cls(self.path, threads=threads)
        prefill = _prefill_function(self.metadata) if self.prefill_chunk > 1 else None
        if self.prefill_chunk > 1 and prefill is None:
            raise ConfigError(f"{self.path.name}: prefill_chunk is {self.prefill_chunk} but the metadata names no "
                              "prefill function; re-export the package")
        #: The executor of the ``prefill`` function (same weights and state layout), or None.
        self.prefill_executor = self.executor.for_function(prefill) if prefill else None
        if self.prefill_executor is not None and self.stateful and \
                self.prefill_executor.state_shapes != self.executor.state_shapes:
            raise ConfigError(f"{self.path.name}: functions main and {prefill} declare different states; re-export it")
        self.states: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        """New stream: zero state."""
        super().reset()
        if self.stateful:
            self.states = self.executor.new_states()
            self.state = []

    def _predict_stateful(self, prefill: bool, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        executor = self.prefill_executor if prefill else self.executor
        return executor.predict(feed, self.states)

    def _predict(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.executor.predict(feed)


# ------------------------------------------------------------------ text generation


class CoreMLAppleLM(_CoreMLStepper):  # pragma: no cover - macOS only
    """Decode stream over a CoreML LM package on Apple's runtime: the stateful form keeps its
    state in an ``MLState`` (``model.make_state()``, one per stream); the explicit form passes
    ``past_*`` arrays in and gets ``present_*`` back. A multifunction package's ``prefill``
    function (``prefill_model``, loaded with ``function_name``) runs full chunks on the same
    ``MLState``."""

    def __init__(self, path, model, metadata=None, prefill_model=None):  # noqa: D107 - loaded MLModels
        super().__init__(path, metadata)
        self.model = model
        self.prefill_model = prefill_model
        self.stateful = bool(self.metadata.extra.get("coreml", {}).get("stateful"))
        self.ml_state = None

    def reset(self) -> None:
        super().reset()
        if self.stateful:
            self.ml_state = self.model.make_state()
            self.state = []

    def _predict_stateful(self, prefill: bool, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        model = self.prefill_model if prefill else self.model
        return model.predict(feed, state=self.ml_state)

    def _predict(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.model.predict(feed)

    def release(self) -> None:
        self.ml_state, self.state = None, []


class CoreMLTextBackend(TextBackend):
    """CoreML text-generation backend: Apple's runtime with ``MLState`` on macOS; elsewhere
    (or with ``reference=True``) StarEdge's numpy MIL executor, with the usual one-time notice
    that it is for validation, not speed. The stateful (iOS 18) packages keep fp16 state, so
    their greedy text may part from fp32 runtimes after some tokens; the explicit form
    (``stateful=False`` at export) keeps fp32 state."""

    name = "coreml"
    OPTIONS = ("compute_units", "reference")

    def load_text(self) -> None:
        from staredge.runtimes.coreml import COMPUTE_UNITS, _notify_reference_once

        self._metadata = self.read_artifact_metadata(self.path)
        units = self.options.get("compute_units", "all")
        if units not in COMPUTE_UNITS:
            raise ConfigError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {units!r}")
        use_reference = bool(self.options.get("reference", False)) or sys.platform != "darwin"
        if self.requested_device in ("cuda", "gpu") and use_reference:
            raise DeviceError("CoreML runs on Apple hardware only; off macOS use device='cpu' (reference executor)")
        self.stateful = bool(self._metadata.extra.get("coreml", {}).get("stateful"))
        if use_reference:
            self._proto = CoreMLReferenceLM(self.path, threads=_threads(self.threads), metadata=self._metadata)
            self.engine_name, self.device = "mil-reference", "cpu"
            _notify_reference_once()
        else:  # pragma: no cover - macOS only
            ct = require("coremltools", "coreml", "the CoreML backend")
            unit = getattr(ct.ComputeUnit, COMPUTE_UNITS[units])
            model = ct.models.MLModel(str(self.path), compute_units=unit)
            prefill = _prefill_function(self._metadata) if int(self._metadata.lm["prefill_chunk"]) > 1 else None
            prefill_model = (ct.models.MLModel(str(self.path), compute_units=unit, function_name=prefill)
                             if prefill else None)
            self._proto = CoreMLAppleLM(self.path, model, metadata=self._metadata, prefill_model=prefill_model)
            self.engine_name, self.device = "coreml", ("cpu" if units == "cpuOnly" else "apple")

    def new_stepper(self) -> LMStepper:
        stepper = copy.copy(self._proto)
        stepper.states = {}
        stepper.reset()  # the stateful reference form gets its own zero state buffers here
        return stepper

    def describe_extra(self) -> dict[str, Any]:
        return {"engine": self.engine_name, "stateful": self.stateful,
                "state_on": ("MLState per stream" if self.engine_name == "coreml" else "numpy buffers per stream")
                + (f" ({self._metadata.extra['coreml'].get('state_dtype', 'float16')})" if self.stateful else "")}


__all__ = ["CoreMLReferenceLM", "StatefulMILExecutor", "CoreMLAppleLM", "CoreMLTextBackend"]
