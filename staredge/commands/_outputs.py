"""Checks of the files and folders a command will write, made before it does any work.

They live in :mod:`staredge.fileio` (the core layer, so the library API uses them too);
this module keeps the old import path.
"""

from __future__ import annotations

from staredge.fileio import check_output_file, check_output_folder

__all__ = ["check_output_file", "check_output_folder"]
