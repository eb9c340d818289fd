"""The MIL reference executor for iOS 18 stateful programs (state inputs updated in place)."""

from __future__ import annotations

from typing import Any

import numpy as np

from staredge.runtimes.mil_reference.dtypes import tensor_shape
from staredge.runtimes.mil_reference.errors import MILInputError
from staredge.runtimes.mil_reference.executor import MILExecutor


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


__all__ = ["StatefulMILExecutor"]
