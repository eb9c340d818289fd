"""The ``staredge`` command line.

Each subcommand lives in its own module under ``staredge.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed args and returning an exit code. Errors derived from :class:`StarEdgeError` are
printed as one clear line (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from staredge._version import __version__
from staredge.errors import StarEdgeError

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("staredge.commands.models", "staredge.commands.export", "staredge.commands.generate", "staredge.commands.genome", "staredge.commands.bench",
                   "staredge.commands.classify", "staredge.commands.demo", "staredge.commands.ios_bundle")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="staredge",
        description="StarEdge: export efficient networks from PyTorch and run them on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"staredge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``staredge`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except StarEdgeError as exc:
        if args.verbose:
            raise
        print(f"staredge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
