"""StarEdge: take efficient networks from PyTorch to the edge and run them there.

What users call lives here: :class:`Predictor` (run an artifact), :func:`profile`,
:func:`load_lm` / :class:`LanguageModel` (STAR language models), the ``staredge`` CLI and
the latency harness. The model zoo is :mod:`staredge.models`, export is
:mod:`staredge.exporters`, the runtimes are :mod:`staredge.runtimes`.

``import staredge`` imports neither torch nor any runtime: the names below are loaded on
first use, so running an ONNX, OpenVINO or TFLite artifact needs no torch install.
"""

from __future__ import annotations

import importlib
from typing import Any

from staredge._version import __version__
from staredge.errors import StarEdgeError

#: Public name → module it lives in, imported on first access.
_LAZY = {
    "Predictor": "staredge.predictor",
    "LanguageModel": "staredge.models.star.lm",
    "load_lm": "staredge.models.star.lm",
    "ProfileResult": "staredge.profiler",
    "profile": "staredge.profiler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'staredge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["LanguageModel", "Predictor", "ProfileResult", "StarEdgeError", "__version__", "load_lm", "profile"]
