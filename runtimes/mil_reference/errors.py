"""Errors of the MIL reference executor."""

from __future__ import annotations

from staredge.errors import StarEdgeError


class MILProgramError(StarEdgeError):
    """An .mlpackage cannot be read or its MIL program cannot be executed by the reference executor."""


class UnsupportedOpError(MILProgramError):
    """The MIL program holds an op the reference executor does not implement."""


class MILInputError(StarEdgeError, ValueError):
    """An input given to :meth:`MILExecutor.predict` is missing or has the wrong shape or type."""
