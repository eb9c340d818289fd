"""The one place each shared command-line concept is spelled, documented and checked.

Every subcommand adds its flags through these functions, so a concept has one spelling,
one meaning, one default rule and one error wording everywhere (``tests/test_cli_vocabulary.py``
walks every parser and fails on a second spelling):

==================  ===========================================================================
``--json [FILE]``   no value: print the JSON document on stdout (instead of tables); a value:
                    also write that file atomically, refused when it exists unless ``--force``
``--force``         replace files and artifacts that already exist
``--out``           where the command writes (a folder, or for single-file outputs a file)
``--precision``     fp32 / fp16 / int8; a comma list where a command can do several
``--backends``      runtime name(s) or benchmark specs (``--backend`` is the old spelling)
``--device``        auto, cpu or cuda (``gpu`` is read as cuda); a device that is not there is
                    a :class:`~staredge.errors.DeviceError`, never a silent CPU run
``--threads``       intra-op threads: a positive integer up to 4x the logical cores
                    (:func:`staredge.limits.check_threads`); a comma list where a command times several
``--warmup``        untimed calls before timing (>= 0)
``--iters``         timed calls per run (>= 1)
``--repeats``       runs per backend, or round-robin rounds (>= 1); ``--rounds`` is the old spelling in tune
==================  ===========================================================================

Number checks live in :mod:`staredge.limits` (shared with the Python API); here they become
argparse types, so a bad value is reported as ``staredge CMD: error: argument --flag: ...``
under that subcommand's usage line, before any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from staredge.errors import ConfigError, StarEdgeError

#: Devices every command accepts (``gpu`` is an accepted alias of ``cuda``).
DEVICES = ("auto", "cpu", "cuda")
#: Artifact precisions.
PRECISIONS = ("fp32", "fp16", "int8")
#: ``--json`` with no FILE: print to stdout.
STDOUT = "-"
#: The one default size of the ``transformer_pp`` / ``striped_mamba`` baselines on the command
#: line (``--dim`` / ``--depth`` of ``staredge export`` and ``staredge genome``): the size of the
#: shipped ``star_lm_pydoc`` (d = 128, 10 LIVs), so a baseline exported or analysed with no size
#: flags compares like with like with the shipped model. The paper-scale analysis (d = 768,
#: 24 LIVs) is ``--dim 768 --depth 24``. Equal to the Python default
#: ``staredge.exporters.lm_source.BASELINE_DEFAULTS`` (tests/test_cli_flags.py keeps them equal).
BASELINE_SIZE = {"dim": 128, "depth": 10}
#: Baseline genome names that ``--dim`` / ``--depth`` size (a genome string has its own depth).
BASELINE_NAMES = ("transformer_pp", "striped_mamba")


# --------------------------------------------------------------------------- argparse types


def _argtype(check: Callable[[Any, str], Any], flag: str) -> Callable[[str], Any]:
    """An argparse ``type=`` from a :mod:`staredge.limits` check: its ConfigError becomes an
    argparse error (the subcommand's usage and ``argument FLAG: ...``)."""

    def parse(text: str):
        try:
            return check(text, flag)
        except ConfigError as exc:
            msg = str(exc)
            raise argparse.ArgumentTypeError(msg[len(flag) + 1:] if msg.startswith(flag + " ") else msg) from None

    parse.__name__ = flag.lstrip("-").replace("-", "_")
    return parse


def _listtype(check: Callable[[Any, str], Any], flag: str) -> Callable[[str], list]:
    """A comma list of values, each passed through ``check``."""
    one = _argtype(check, flag)

    def parse(text: str) -> list:
        items = [t.strip() for t in str(text).split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a value or a comma list, got {text!r}")
        return list(dict.fromkeys(one(t) for t in items))

    parse.__name__ = one.__name__ + "_list"
    return parse


def threads_type(flag: str = "--threads") -> Callable[[str], int]:
    """argparse type of one thread count."""
    from staredge.limits import check_threads

    return _argtype(check_threads, flag)


def count_type(flag: str, minimum: int = 1) -> Callable[[str], int]:
    """argparse type of an integer >= ``minimum`` named ``flag`` in its errors."""
    from staredge.limits import check_count

    return _argtype(lambda v, name: check_count(v, name, minimum, 10**9), flag)


def _precision(text: str, flag: str, known: tuple[str, ...] = PRECISIONS) -> str:
    p = str(text).strip().lower()
    if p not in known:
        raise ConfigError(f"{flag}: unknown precision {str(text).strip()!r}; it takes {', '.join(known)}")
    return p


def _device(text: str) -> str:
    d = str(text).strip().lower()
    return "cuda" if d == "gpu" else d


# --------------------------------------------------------------------------- flags


def add_json(p: argparse.ArgumentParser, what: str = "the results", *, force: bool = False) -> None:
    """``--json [FILE]``: no FILE prints the JSON document on stdout instead of the tables;
    FILE also writes it (atomically; an existing file needs ``--force``). ``force=True`` also
    adds that ``--force`` (for commands whose only file is the ``--json`` one)."""
    p.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="FILE",
                   help=f"{what} as JSON: with no FILE printed on stdout instead of the tables; "
                        f"with FILE written there too (an existing file needs --force)")
    if force:
        add_force(p, "a --json FILE that already exists")


def add_force(p: argparse.ArgumentParser, what: str = "files and artifacts that already exist") -> None:
    """``--force``: replace what exists (never done without it)."""
    p.add_argument("--force", action="store_true", help=f"replace {what}")


def add_out(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """``--out PATH``: where the command writes."""
    shown = f" (default: {default})" if default else ""
    p.add_argument("--out", default=default, metavar="PATH", help=f"{what}{shown}")


def add_precision(p: argparse.ArgumentParser, *, multiple: bool, default: Any = None, help: str = "",
                  choices: tuple[str, ...] = PRECISIONS) -> None:
    """``--precision``: one of fp32/fp16/int8, or a comma list of them where ``multiple``."""
    def check(text, flag):
        value = _precision(text, flag, tuple(dict.fromkeys(PRECISIONS + tuple(choices))))
        if value not in choices:
            raise ConfigError(f"{flag} takes {', '.join(choices)} here, got {text!r}")
        return value

    kind = _listtype(check, "--precision") if multiple else _argtype(check, "--precision")
    metavar = "LIST" if multiple else "{" + ",".join(choices) + "}"
    p.add_argument("--precision", type=kind, default=default, metavar=metavar,
                   help=(help or ("comma list of " if multiple else "one of ") + ", ".join(choices))
                   + (f" (default: {default if isinstance(default, str) else ','.join(default)})" if default else ""))


def add_backends(p: argparse.ArgumentParser, *, multiple: bool, help: str = "") -> None:
    """``--backends`` (old spelling ``--backend``): the runtime(s) to use; ``args.backends``."""
    default_help = ("force a runtime (onnxruntime/ort, openvino/ov, litert/tflite, coreml, pytorch); it must run "
                    "the artifact's format (default: the artifact's own runtime)")
    p.add_argument("--backends", "--backend", dest="backends", metavar="LIST" if multiple else "RUNTIME",
                   help=help or default_help)


def add_device(p: argparse.ArgumentParser, default: str | None = "auto", help: str = "") -> None:
    """``--device {auto,cpu,cuda}`` (``gpu`` read as cuda)."""
    p.add_argument("--device", type=_device, choices=DEVICES, default=default,
                   help=(help or "where it runs: auto (a GPU when the runtime has one), cpu, or cuda (an error "
                         "when no CUDA device is there)") + (f" (default: {default})" if default else ""))


def add_threads(p: argparse.ArgumentParser, *, multiple: bool = False, default: int | None = None,
                help: str = "") -> None:
    """``--threads N`` (or ``N,M,...`` where ``multiple``): intra-op threads, checked by
    :func:`staredge.limits.check_threads`."""
    from staredge.limits import check_threads

    kind = _listtype(check_threads, "--threads") if multiple else _argtype(check_threads, "--threads")
    text = help or "intra-op threads of the runtime"
    if "default" not in text:
        text += f" (default: {'the runtime' + chr(39) + 's' if default is None else default})"
    p.add_argument("--threads", type=kind, default=default, metavar="LIST" if multiple else "N", help=text)


def add_timing(p: argparse.ArgumentParser, *, warmup: int | None, iters: int | None, repeats: int | None,
               repeats_help: str = "runs per backend", old_repeats: str | None = None) -> None:
    """``--warmup`` (>= 0), ``--iters`` (>= 1) and ``--repeats`` (>= 1) with one meaning each:
    untimed calls, timed calls per run, runs (round-robin rounds) per backend.
    ``old_repeats`` adds a hidden old spelling of ``--repeats`` (tune's ``--rounds``)."""
    from staredge.limits import check_iters, check_repeats, check_warmup

    p.add_argument("--warmup", type=_argtype(check_warmup, "--warmup"), default=warmup, metavar="N",
                   help="untimed calls before timing" + (f" (default {warmup})" if warmup is not None else
                                                          " (default: the preset's)"))
    p.add_argument("--iters", type=_argtype(check_iters, "--iters"), default=iters, metavar="N",
                   help="timed calls per run" + (f" (default {iters})" if iters is not None else
                                                 " (default: the preset's)"))
    p.add_argument("--repeats", type=_argtype(check_repeats, "--repeats"), default=repeats, metavar="N",
                   help=repeats_help + (f" (default {repeats})" if repeats is not None else " (default: the preset's)"))
    if old_repeats:
        p.add_argument(old_repeats, dest="repeats", type=_argtype(check_repeats, old_repeats), help=argparse.SUPPRESS)


def add_baseline_size(p: argparse.ArgumentParser, *, depth_help: str) -> None:
    """``--dim D`` and ``--depth N``: the width and LIV count of a STAR language model built
    from a genome or a baseline name, with one default (:data:`BASELINE_SIZE`) and one wording.
    Both are parsed with default None (not given), so a command can refuse them for a model
    they do not size; :func:`baseline_size` fills in the default."""
    d, n = BASELINE_SIZE["dim"], BASELINE_SIZE["depth"]
    p.add_argument("--dim", type=count_type("--dim"), default=None, metavar="D",
                   help=f"model width (default {d}, the shipped star_lm_pydoc's)")
    p.add_argument("--depth", type=count_type("--depth"), default=None, metavar="N",
                   help=f"{depth_help} (default for {' / '.join(BASELINE_NAMES)}: {n} LIVs, the shipped "
                        f"star_lm_pydoc's; the paper-scale baselines are --dim 768 --depth 24)")


def baseline_size(args: argparse.Namespace) -> tuple[int, int | None]:
    """``(dim, depth)`` of ``args`` with :data:`BASELINE_SIZE` for what is not given; depth
    stays None for a genome string that was not given ``--depth`` (its own LIV count)."""
    baseline = str(getattr(args, "genome", "") or getattr(args, "model", "")).strip().lower() in BASELINE_NAMES
    dim = args.dim if args.dim is not None else BASELINE_SIZE["dim"]
    depth = args.depth if args.depth is not None else (BASELINE_SIZE["depth"] if baseline else None)
    return dim, depth


#: Sampling defaults of ``staredge generate``, ``staredge chat`` and Python's ``generate()`` /
#: ``stream()`` / ``chat_stream()`` (tests/test_cli_vocabulary.py keeps them equal).
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_k": None, "top_p": 0.95, "repetition_penalty": 1.0, "seed": None}


def add_sampling(p: argparse.ArgumentParser) -> None:
    """``--temperature``, ``--top-k``, ``--top-p``, ``--repetition-penalty`` and ``--seed``: one
    definition and one set of defaults (:data:`SAMPLING_DEFAULTS`) for every text command."""
    d = SAMPLING_DEFAULTS
    p.add_argument("--temperature", type=float, default=d["temperature"], metavar="T",
                   help=f"0 = greedy (default {d['temperature']})")
    p.add_argument("--top-k", type=count_type("--top-k"), default=d["top_k"], metavar="K",
                   help="keep the k most likely tokens (default off)")
    p.add_argument("--top-p", type=float, default=d["top_p"], metavar="P",
                   help=f"nucleus sampling mass (default {d['top_p']}; 1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=d["repetition_penalty"], metavar="R",
                   help=f"> 1 discourages repeats (default {d['repetition_penalty']})")
    p.add_argument("--seed", type=int, default=d["seed"], metavar="N", help="seed for reproducible sampling")


def add_calibration(p: argparse.ArgumentParser) -> None:
    """``--calibration DIR`` and ``--calibration-samples N`` for int8."""
    p.add_argument("--calibration", metavar="DIR",
                   help="int8 calibration images (default: the model's own data where it has some, e.g. digits, "
                        "else scikit-image photos outside the validation set)")
    p.add_argument("--calibration-samples", type=count_type("--calibration-samples"), metavar="N",
                   help="calibration images to use (default 128)")


def add_formats(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--formats`` (alias ``--format``): a comma list of formats, aliases or ``all``."""
    p.add_argument("--formats", "--format", dest="formats", default=default, metavar="FORMATS", help=help)


#: The rewrite passes ``--rewrite`` names (``staredge.exporters.passes.PASS_NAMES``, which
#: imports torch; tests/test_cli_vocabulary.py keeps them equal).
REWRITE_PASSES = ("fuse_batchnorm", "pointwise_conv_to_linear")


def add_rewrite(p: argparse.ArgumentParser, default: str | None = "auto", what: str = "") -> None:
    """``--rewrite``: the graph rewrites of exported image models, one wording everywhere."""
    shown = "default: the protocol preset's" if default is None else f"default: {default}"
    p.add_argument("--rewrite", default=default, metavar="PASSES",
                   help=f"graph rewrites{what}: 'auto' (fuse BatchNorm always; pointwise conv -> Linear where "
                        f"measured to help), 'none', or a comma list of {','.join(REWRITE_PASSES)} ({shown})")


def add_weights(p: argparse.ArgumentParser, checkpoint_help: str = "weights to load into the registry model") -> None:
    """``--checkpoint FILE`` and ``--pretrained``: the weights of a model named by its registry name."""
    p.add_argument("--checkpoint", metavar="FILE", help=checkpoint_help)
    p.add_argument("--pretrained", action="store_true",
                   help="download the released weights into the cache (see `staredge models`) and load them")


def add_model_arguments(p: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """Which model and weights: ``--checkpoint``, ``--pretrained``, ``--model``,
    ``--num-classes``, ``--labels`` (every command that builds a model from a name)."""
    add_weights(p)
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="architecture (registry name) of a checkpoint given in place of a model name")
    p.add_argument("--num-classes", type=count_type("--num-classes"), metavar="N",
                   help="classifier head size (e.g. of a fine-tuned checkpoint)")
    if labels:
        p.add_argument("--labels", metavar="FILE", help="class names, one per line in index order")


def model_from_args(args: argparse.Namespace, positional: str = "MODEL") -> Any:
    """The model ``args`` describe (``args.model``: a registry name or a checkpoint file, with
    ``--checkpoint``, ``--model``, ``--pretrained``, ``--num-classes``, ``--labels`` and, for
    export, ``--img-size``), built by
    the one implementation, :func:`staredge.exporters.api.resolve_model`."""
    from staredge.exporters.api import resolve_model

    return resolve_model(str(args.model), getattr(args, "checkpoint", None), getattr(args, "model_name", None),
                         pretrained=bool(getattr(args, "pretrained", False)),
                         num_classes=getattr(args, "num_classes", None), labels=getattr(args, "labels", None),
                         positional=positional, img_size=getattr(args, "img_size", None))


# --------------------------------------------------------------------------- outputs


def check_json_target(args: argparse.Namespace) -> str | None:
    """Before any work: the file ``--json FILE`` names (None for stdout or no --json), checked
    writable and not existing unless ``--force`` (typed errors naming the path)."""
    from staredge.fileio import check_output_file

    value = getattr(args, "json", None)
    if not isinstance(value, str) or value == STDOUT:
        return None
    check_output_file(value, force=bool(getattr(args, "force", False)), flag="--json")
    return value


def emit_json(args: argparse.Namespace, doc: Any) -> bool:
    """Write ``doc`` where ``--json`` says: a file (atomically, refusing to overwrite without
    ``--force``) and/or stdout. True when the JSON went to stdout (then print no tables)."""
    value = getattr(args, "json", None)
    if not value:
        return False
    text = json.dumps(doc, indent=2, default=str) + "\n"
    if value == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    write_output_file(value, text, force=bool(getattr(args, "force", False)), flag="--json")
    return False


def write_output_file(path: str | os.PathLike, data: str | bytes, force: bool, flag: str) -> None:
    """Write one file a command produces through :mod:`staredge.fileio` (atomic, never over an
    existing file without ``force``); an unwritable place is a ConfigError naming the flag and path."""
    from staredge.fileio import atomic_write_bytes

    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        atomic_write_bytes(path, payload, force=force)
    except StarEdgeError:
        raise
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there ({exc.strerror or exc}); choose a place you can "
                          f"write to") from exc
