"""CoreML LM artifacts: one stepper for both engines, and the text-generation backend.

Two forms (``metadata.extra["coreml"]["stateful"]``): the explicit one (``past_*`` inputs,
``present_*`` outputs) and the iOS 18 stateful one, whose fp16 ``state_<k>`` buffers belong
to the caller (one per stream: numpy arrays the reference executor updates in place, or an
``MLState`` on Apple platforms). A stateful package with ``prefill_chunk`` > 1 is a
multifunction package: ``main`` (T = 1) and ``prefill`` (T = ``prefill_chunk``), both run on
the same state. The engine (:class:`~staredge.runtimes.coreml.CoreMLEngine`, the only place
a package is loaded) is Apple's runtime on macOS and StarEdge's numpy MIL executor
elsewhere; :class:`CoreMLReferenceLM` drives either, so export validation (off macOS) runs
the very stepper ``Predictor.stream`` serves.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from staredge.errors import ConfigError
from staredge.runtimes.base import TensorInfo
from staredge.runtimes.coreml import CoreMLEngine
from staredge.runtimes.lm import LMStepper
from staredge.runtimes.mil_reference.stateful import StatefulMILExecutor  # noqa: F401 - re-exported
from staredge.runtimes.text import TextBackend


def _prefill_function(metadata) -> str | None:
    """The name of the package's T = ``prefill_chunk`` function, if it has one."""
    functions = metadata.extra.get("coreml", {}).get("functions", {})
    return next((fn for fn, t in functions.items() if fn != "main" and int(t) > 1), None)


class CoreMLReferenceLM(LMStepper):
    """Decode stream over a CoreML LM package on a :class:`CoreMLEngine` (named for the MIL
    reference executor it runs off Apple platforms; on macOS the same class drives Apple's
    runtime). ``main`` runs one token, the ``prefill`` function (multifunction packages) a
    full chunk of ``prefill_chunk``; int32 ids and position."""

    flexible_tokens = False

    def __init__(self, path: str | Path | None, threads: int | None = None, metadata=None, *,
                 engine: CoreMLEngine | None = None, device: str = "auto", compute_units: str = "all",
                 reference: bool = False) -> None:
        super().__init__(path, metadata)
        self.stateful = bool(self.metadata.extra.get("coreml", {}).get("stateful"))
        self.engine = engine or CoreMLEngine(self.path, device, threads, compute_units=compute_units,
                                             reference=reference, stateful=self.stateful)
        prefill = _prefill_function(self.metadata) if self.prefill_chunk > 1 else None
        if self.prefill_chunk > 1 and prefill is None:
            from staredge.errors import MetadataError

            raise MetadataError(f"{self.path}: metadata lm.prefill_chunk is {self.prefill_chunk} but "
                                "extra.coreml.functions names no prefill function; re-export the package")
        #: The engine of the ``prefill`` function (same weights and state layout), or None.
        self.prefill_engine = self.engine.for_function(prefill) if prefill else None
        if self.prefill_engine is not None and self.stateful and \
                self.prefill_engine.state_shapes != self.engine.state_shapes:
            raise ConfigError(f"{self.path}: functions main and {prefill} declare different states; re-export it")
        self.states: Any = None

    def graph_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        ins = {t.name: t for t in self.engine.inputs()}
        if not ins:
            return {}, {}
        if self.stateful:  # the program's states stand for the metadata's state inputs
            shapes = self.engine.state_shapes
            for i, s in enumerate(self.state_spec):
                for key in ("coreml_state", "coreml_state_lo"):
                    if key == "coreml_state_lo" and key not in s:
                        continue
                    found = shapes.get(str(s.get(key, "")))
                    if found is None:
                        from staredge.errors import MetadataError

                        raise MetadataError(f"{self.path}: metadata lm.state[{i}].{key} is {s.get(key)!r} but the "
                                            f"program has no such state (it has: {', '.join(sorted(shapes))[:200]})")
                    if key == "coreml_state":
                        ins[s["input"]] = TensorInfo(s["input"], found[0], np.dtype(found[1]).name)
            named = {str(s.get(k)) for s in self.state_spec for k in ("coreml_state", "coreml_state_lo") if k in s}
            for name in sorted(set(shapes) - named):  # a program state no entry names: check_graph reports it
                ins[name] = TensorInfo(name, shapes[name][0], np.dtype(shapes[name][1]).name)
        return ins, {t.name: t for t in self.engine.outputs()}

    def graph_prefill_tokens(self) -> int | None:
        if self.prefill_engine is None:
            return None
        ids = next((t for t in self.prefill_engine.inputs() if t.name == "input_ids"), None)
        return ids.shape[-1] if ids is not None and ids.shape else None

    @property
    def executor(self) -> Any:
        """The loaded ``main`` program (MIL executor or MLModel)."""
        return self.engine.model

    @property
    def prefill_executor(self) -> Any:
        """The loaded ``prefill`` program, or None."""
        return self.prefill_engine.model if self.prefill_engine is not None else None

    def reset(self) -> None:
        """New stream: position 0, zero state (the stateful form: new state buffers)."""
        super().reset()
        if self.stateful:
            self.states = self.engine.new_states()
            self.state = []

    def _run(self, ids: np.ndarray, position: int) -> np.ndarray:
        feed = {"input_ids": ids.astype(np.int32), "position": np.array([position], dtype=np.int32)}
        if self.stateful:
            engine = self.prefill_engine if ids.shape[1] > 1 else self.engine
            return np.asarray(engine.predict(feed, self.states)["logits"])
        feed.update({s["input"]: a for s, a in zip(self.state_spec, self.state)})
        out = self.engine.predict(feed)
        self.state = [np.asarray(out[s["output"]], dtype=np.float32) for s in self.state_spec]
        return np.asarray(out["logits"])

    def release(self) -> None:
        """Drop the stream's state."""
        self.states, self.state = None, []


#: Before issue 19 Apple's runtime had its own stepper class; one class drives both engines now.
CoreMLAppleLM = CoreMLReferenceLM


class CoreMLTextBackend(TextBackend):
    """CoreML text-generation backend: Apple's runtime with an ``MLState`` per stream on
    macOS; elsewhere (or with ``reference=True``) StarEdge's numpy MIL executor, with the
    usual one-time notice that it is for validation, not speed. The stateful (iOS 18)
    packages keep fp16 state, so their greedy text may part from fp32 runtimes after some
    tokens; the explicit form (``stateful=False`` at export) keeps fp32 state."""

    name = "coreml"
    OPTIONS = ("compute_units", "reference")

    def load_text(self) -> None:
        self._metadata = self.read_artifact_metadata(self.path)
        self.stateful = bool(self._metadata.extra.get("coreml", {}).get("stateful"))
        self.check_lm_metadata()
        engine = CoreMLEngine(self.path, self.requested_device, self.threads,
                              compute_units=self.options.get("compute_units", "all"),
                              reference=bool(self.options.get("reference", False)), stateful=self.stateful)
        self.engine = engine
        self.engine_name, self.device = engine.engine_name, engine.device
        self._proto = CoreMLReferenceLM(self.path, metadata=self._metadata, engine=engine)
        self.check_lm_graph(self._proto)

    def new_stepper(self) -> LMStepper:
        stepper = copy.copy(self._proto)
        stepper.states = None
        stepper.reset()  # the stateful form gets its own zero state here
        return stepper

    def describe_extra(self) -> dict[str, Any]:
        return {"engine": self.engine_name, "stateful": self.stateful,
                "state_on": ("MLState per stream" if self.engine_name == "coreml" else "numpy buffers per stream")
                + (f" ({self._metadata.extra['coreml'].get('state_dtype', 'float16')})" if self.stateful else "")}


__all__ = ["CoreMLReferenceLM", "StatefulMILExecutor", "CoreMLAppleLM", "CoreMLTextBackend"]
