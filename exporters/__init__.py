"""staredge.exporters: PyTorch model → rewrite passes → artifact (+ metadata) → validation.

``export(model_or_name, formats, out_dir, ...)`` is the one entry point, for every task: an
image classifier or a STAR language model (``lm_export.export_lm`` is its alias for language
models); the rewrite passes (:func:`fuse_batchnorm`, :func:`pointwise_conv_to_linear`) are
pure functions that can be used on their own. One module per format and task, named by the
format table (:mod:`staredge.formats`): ``<format>.py`` and ``<format>_lm.py``.
"""

from staredge.errors import require

require("torch", "torch", "export (PyTorch models)")  # a clear MissingDependencyError without torch

from staredge.exporters.api import (
    FORMATS,
    ArtifactExistsError,
    ArtifactResult,
    ExportError,
    ExportReport,
    export,
)
from staredge.exporters.passes import fuse_batchnorm, pointwise_conv_to_linear

__all__ = [
    "FORMATS",
    "ArtifactExistsError",
    "ArtifactResult",
    "ExportError",
    "ExportReport",
    "export",
    "fuse_batchnorm",
    "pointwise_conv_to_linear",
]
