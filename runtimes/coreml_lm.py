"""CoreML LM artifacts run by StarEdge's numpy MIL executor (validation off Apple platforms).

Two forms (``lm.extra``/``metadata.extra["coreml"]["stateful"]``): the explicit one
(``past_*`` inputs, ``present_*`` outputs) runs on :class:`MILExecutor` as it is; the iOS 18
stateful one keeps fp16 ``state_<k>`` buffers that :class:`StatefulMILExecutor` binds by
reference, so ``read_state`` / ``coreml_update_state`` read and write them in place. On
macOS, Apple's runtime runs the same packages (``model.make_state()``,
``predict(..., state=state)``); it cannot run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from staredge.runtimes.lm import LMStepper
from staredge.runtimes.mil_reference import MILExecutor
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
            raise ValueError(f"{self.path.name} needs its states {sorted(self.state_shapes)}; use new_states()")
        env: dict[str, Any] = {name: self._input_array(info, inputs[name]) for name, info in self.inputs.items()}
        env.update(states)  # by reference: coreml_update_state writes these arrays
        env.update(self._consts)
        for op, bindings in self._plan:
            self._run_op(op, bindings, env)
        return {name: np.asarray(env[name]) for name in self.output_names}


class CoreMLReferenceLM(LMStepper):
    """Decode stream over a CoreML LM package, one token per call, on the MIL executor."""

    flexible_tokens = False

    def __init__(self, path: str | Path, threads: int | None = 1, metadata=None) -> None:
        super().__init__(path, metadata)
        self.stateful = bool(self.metadata.extra.get("coreml", {}).get("stateful"))
        cls = StatefulMILExecutor if self.stateful else MILExecutor
        self.executor = cls(self.path, threads=threads)
        self.states: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        """New stream: zero state."""
        super().reset()
        if self.stateful:
            self.states = self.executor.new_states()
            self.state = []

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int32), "position": np.array([position], dtype=np.int32)}
        if self.stateful:
            return self.executor.predict(feed, self.states)["logits"]
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = self.executor.predict(feed)
        self.state = [np.asarray(out[s["output"]], dtype=np.float32) for s in self.state_spec]
        return out["logits"]
