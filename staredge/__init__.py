"""StarEdge: take efficient networks from PyTorch to the edge and run them there.

What users call lives here: :func:`profile`, the ``staredge`` CLI and (in later modules)
the Predictor and the latency harness. The model zoo is :mod:`staredge.models`.
"""

from staredge._version import __version__
from staredge.errors import StarEdgeError
from staredge.generation import LanguageModel, load_lm
from staredge.predictor import Predictor
from staredge.profiler import ProfileResult, profile

__all__ = ["LanguageModel", "Predictor", "ProfileResult", "StarEdgeError", "__version__", "load_lm", "profile"]
