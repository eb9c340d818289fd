"""The ``staredge`` command line.

Each subcommand lives in its own module under ``staredge.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed args and returning an exit code. Errors derived from :class:`StarEdgeError` are
printed as one clear line (exit code 2), never as a traceback.

Every subcommand takes ``-v/--verbose`` before or after its name. Without it, what
converters and runtimes write to stderr (Python warnings, logging, C++ logs) goes to a log
file in the cache folder (:mod:`staredge.quiet`), and only StarEdge's own progress, tables
and notices reach the terminal; with it, everything is shown and errors keep their
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from staredge._version import __version__
from staredge.errors import StarEdgeError

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("staredge.commands.models", "staredge.commands.export", "staredge.commands.generate", "staredge.commands.genome", "staredge.commands.bench",
                   "staredge.commands.classify", "staredge.commands.info", "staredge.commands.demo", "staredge.commands.ios_bundle", "staredge.commands.tune", "staredge.commands.chat")

_VERBOSE_HELP = "show converter and runtime messages (normally logged to a file) and tracebacks for errors"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="staredge",
        description="StarEdge: export efficient networks from PyTorch and run them on the edge.",
    )
    parser.add_argument("--version", action="version", version=f"staredge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    # -v after the subcommand too; SUPPRESS keeps a -v given before it
    for p in dict.fromkeys(sub.choices.values()):
        if "--verbose" not in p._option_string_actions:
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    parser.set_defaults(_subparsers=sub.choices)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown argument after a subcommand is reported
    by that subcommand's parser (its usage line, ``staredge CMD: error: ...``), not the top one."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = (getattr(args, "_subparsers", None) or {}).get(getattr(args, "command", None))
        (sub or parser).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


#: Subcommands whose converter/runtime output is captured: they load converters or runtimes
#: and write their own progress and notices to ``args.capture.stderr``.
QUIET_COMMANDS = ("export", "classify", "demo", "generate", "models", "bench", "tune", "ios-bundle", "info")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``staredge`` console script; returns the exit code."""
    from staredge.quiet import captured

    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    command = args.command if args.command in QUIET_COMMANDS else None
    with captured(command or "staredge", verbose=args.verbose or command is None) as capture:
        args.capture = capture
        try:
            rc = int(args.func(args) or 0)
        except StarEdgeError as exc:
            if args.verbose:
                raise
            print(f"staredge {args.command}: error: {cli_wording(str(exc))}", file=capture.stderr)
            rc = 2
        except KeyboardInterrupt:
            print("interrupted", file=capture.stderr)
            rc = 130
        except BaseException:
            _point_at_log(capture)
            raise
        if rc not in (0,):
            _point_at_log(capture)
    return rc


#: Python spellings in library error messages → the flags a CLI user types.
_CLI_WORDS = (
    ("truncate='left'", "--truncate left"), ('truncate="left"', "--truncate left"),
    ("max_new_tokens=", "--max-new-tokens "), ("calibration=", "--calibration "),
    ("force=True (--force)", "--force"), ("force=True", "--force"), ("repetition_penalty=", "--repetition-penalty "),
    ("top_k=", "--top-k "), ("top_p=", "--top-p "),
)


def cli_wording(message: str) -> str:
    """``message`` with the Python argument spellings it uses replaced by the CLI flags."""
    for python, flag in _CLI_WORDS:
        message = message.replace(python, flag)
    return message


def _point_at_log(capture) -> None:
    """After a failure, say where the captured converter messages are."""
    n = len(capture.lines()) - 1  # the header line
    if n > 0 and capture.log_path is not None:
        print(f"staredge: {n} converter/runtime message line(s) in {capture.log_path} (-v shows them)",
              file=capture.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
