"""Consistent names: one ExportError every format's export error derives from, ``force=``
for every writer (CoreML included), abstract bases that cannot be instantiated."""

from __future__ import annotations

import inspect

import pytest

from staredge.errors import DeviceError, ExportError, StarEdgeError


def test_export_error_is_one_class_reexported_by_the_exporters():
    import staredge.exporters as exporters
    from staredge.exporters import api

    assert exporters.ExportError is ExportError and api.ExportError is ExportError
    assert issubclass(ExportError, StarEdgeError)


def test_coreml_errors_are_export_errors():
    from staredge.exporters.coreml import CoreMLExportError, CoreMLPlatformError

    assert issubclass(CoreMLExportError, ExportError)
    assert issubclass(CoreMLPlatformError, ExportError) and issubclass(CoreMLPlatformError, DeviceError)
    with pytest.raises(ExportError, match="boom"):
        raise CoreMLExportError("boom")


def test_coreml_exporter_takes_force_like_every_writer():
    from staredge.exporters.coreml import export_coreml

    params = inspect.signature(export_coreml).parameters
    assert "force" in params and params["force"].default is False
    assert "overwrite" not in params


def test_abstract_bases_cannot_be_instantiated():
    from staredge.models.star.liv import LIV
    from staredge.runtimes.base import Backend
    from staredge.runtimes.lm import LMStepper

    for base in (LIV, LMStepper, Backend):
        assert inspect.isabstract(base), base
    with pytest.raises(TypeError, match="abstract"):
        LIV()
