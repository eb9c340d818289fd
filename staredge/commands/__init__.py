"""Subcommands of the ``staredge`` CLI, one module each (see :mod:`staredge.cli`)."""
