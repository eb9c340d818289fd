"""One vocabulary (issue 22): every subcommand's parser is walked, and a shared concept with a
second spelling, another meaning or a different check fails here.

The concepts and their one definition live in ``staredge/commands/_args.py``; a new
subcommand (or a new flag on an old one) that spells them by hand fails this test.
"""

from __future__ import annotations

import argparse

import pytest

from staredge.cli import build_parser
from staredge.commands import _args


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _visible(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS]


SUBS = _subparsers()

#: Spellings that must not be shown by any subcommand (old names live on hidden, or as a
#: second option string of the one action).
RETIRED = {"--rounds": "--repeats", "--precisions": "--precision", "--report": "--json FILE",
           "--runtime": "--backends", "--runtimes": "--backends"}


def test_every_subcommand_is_walked():
    assert {"export", "bench", "tune", "classify", "generate", "genome", "models", "demo", "info",
            "ios-bundle"} <= set(SUBS)


@pytest.mark.parametrize("name", sorted(SUBS))
def test_no_retired_spelling_is_shown(name):
    shown = {s for a in _visible(SUBS[name]) for s in a.option_strings}
    assert not shown & set(RETIRED), {s: RETIRED[s] for s in shown & set(RETIRED)}


def _actions(flag: str):
    for name, p in sorted(SUBS.items()):
        for a in p._actions:
            if flag in a.option_strings and a.help != argparse.SUPPRESS:
                yield name, a


def test_json_has_one_meaning_everywhere():
    found = list(_actions("--json"))
    assert len(found) >= 8
    for name, a in found:
        assert (a.nargs, a.const, a.default, a.metavar) == ("?", _args.STDOUT, None, "FILE"), name
        assert "--force" in SUBS[name]._option_string_actions, f"{name}: --json FILE needs --force to overwrite"


def test_device_has_one_choice_list():
    found = list(_actions("--device"))
    assert {n for n, _ in found} >= {"bench", "classify", "generate"}
    for name, a in found:
        assert tuple(a.choices) == _args.DEVICES, name
        assert a.type("gpu") == "cuda", name


def test_backends_is_one_spelling_with_the_old_alias():
    found = list(_actions("--backends"))
    assert {n for n, _ in found} >= {"bench", "classify", "generate"}
    for name, a in found:
        assert a.option_strings == ["--backends", "--backend"] and a.dest == "backends", name


@pytest.mark.parametrize("flag,bad", [("--threads", "0"), ("--threads", "1000000000"), ("--warmup", "-1"),
                                      ("--iters", "0"), ("--repeats", "0"), ("--precision", "fp8")])
def test_numbers_have_one_check_and_one_wording(flag, bad, capsys):
    """The same bad value gives the same message under every subcommand that takes the flag."""
    messages = {}
    for name, a in _actions(flag):
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            a.type(bad)
        messages[name] = str(exc.value).replace("here, ", "")
    assert len(messages) >= 2, f"{flag} is used by fewer than two subcommands: {sorted(messages)}"
    texts = {m.split(" (4x")[0] if flag != "--precision" else m.split(";")[0] for m in messages.values()}
    assert len(texts) == 1, messages


def test_threads_defaults_follow_one_rule():
    """None (the runtime's or the benchmark's default) everywhere, except the commands that run a
    tiny model batch 1 on a shared machine (1 thread, said in their help)."""
    for name, a in _actions("--threads"):
        assert a.default in (None, 1), name
        if a.default == 1:
            assert "default 1" in a.help, name


def test_formats_has_its_alias_wherever_it_exists():
    for name, a in _actions("--formats"):
        assert "--format" in a.option_strings, name


def test_precision_is_one_flag_taking_a_list_where_a_list_makes_sense():
    found = dict(_actions("--precision"))
    assert {"bench", "tune"} <= set(found)
    assert found["bench"].type("fp32,int8") == ["fp32", "int8"]
    assert found["tune"].type("int8") == ["int8"]


def test_subcommand_errors_show_the_subcommands_usage(capsys):
    from staredge.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "starnet_s1", "--no-such-flag"])
    err = capsys.readouterr().err
    assert err.startswith("usage: staredge tune") and "unrecognized arguments: --no-such-flag" in err


@pytest.mark.parametrize("name", sorted(SUBS))
def test_every_subcommand_help_renders(name):
    text = SUBS[name].format_help()
    assert text.startswith("usage: staredge " + name) and "--verbose" in text


# ----------------------------------------------------------------------------- one default per concept

#: Flags spelled by several subcommands whose defaults differ on purpose, with why, and the
#: exact defaults: a new difference (or a changed one) fails ``test_one_concept_has_one_default``.
PER_COMMAND_DEFAULTS = {
    "--out": ("each command writes something else (artifacts, a bench folder, an iOS models folder, a tune "
              "folder named after the model, a temporary demo folder)",
              {"export": "exports", "bench": None, "demo": None, "ios-bundle": "ios_bench/Models", "tune": None}),
    "--formats": ("export makes one artifact unless asked (the first format of the table); tune compares every "
                  "format; demo runs every format installed here (None)",
                  {"export": "onnx", "demo": None, "tune": "all"}),
    "--precision": ("one artifact is fp32 unless asked; bench adds precisions to the protocol's backends only when "
                    "asked (None); tune compares every precision",
                    {"export": "fp32", "bench": None, "ios-bundle": "fp32", "tune": ["fp32", "fp16", "int8"]}),
    "--device": ("bench's device comes from its protocol preset (None: the preset's); every runtime command "
                 "picks a GPU when there is one (auto)", {"generate": "auto", "bench": None, "classify": "auto"}),
    "--rewrite": ("bench's rewrites come from its protocol preset (None: the preset's); exporting commands use "
                  "auto", {"export": "auto", "bench": None, "ios-bundle": "auto", "tune": "auto"}),
    "--warmup": ("bench's counts are its protocol preset's (None); tune ranks candidates with fixed small counts",
                 {"bench": None, "tune": 10}),
    "--iters": ("bench's counts are its protocol preset's (None); tune ranks candidates; demo times a 32x32 model",
                {"bench": None, "demo": 30, "tune": 50}),
    "--repeats": ("bench's counts are its protocol preset's (None); tune's rounds", {"bench": None, "tune": 3}),
    "--threads": ("one rule, test_threads_defaults_follow_one_rule: None (the runtime's / the benchmark's), or 1 "
                  "for batch-1 decode and the tiny demo model",
                  {"generate": 1, "bench": None, "classify": None, "demo": 1, "tune": None, "chat": 1}),
    "--max-new-tokens": ("each is its Python function's default: generate() continues a text (128), chat_stream() "
                         "writes a reply (256); test_max_new_tokens_defaults_are_pythons",
                         {"generate": 128, "chat": 256}),
    "--top-k": ("two concepts under the name every library uses: classify's labels shown per image (5), sampling's "
                "k most likely tokens (off)", {"generate": None, "classify": 5, "chat": None}),
    "--markdown": ("models prints its table as Markdown (a switch); bench writes its tables to a Markdown FILE",
                   {"models": False, "bench": None}),
}


def _shared_flags() -> dict[str, dict[str, argparse.Action]]:
    found: dict[str, dict[str, argparse.Action]] = {}
    for name, p in sorted(SUBS.items()):
        for a in p._actions:
            if a.option_strings and a.help != argparse.SUPPRESS and a.option_strings[0] not in ("-h", "-v"):
                found.setdefault(a.option_strings[0], {})[name] = a
    return {flag: by for flag, by in found.items() if len(by) > 1}


def test_one_concept_has_one_default():
    """A flag spelled by several subcommands has one default, one type (the same check), one
    dest and the same choices, unless PER_COMMAND_DEFAULTS says why not (with the exact values)."""
    for flag, by in _shared_flags().items():
        defaults = {name: a.default for name, a in by.items()}
        if flag in PER_COMMAND_DEFAULTS:
            assert defaults == PER_COMMAND_DEFAULTS[flag][1], flag
        else:
            assert len({repr(d) for d in defaults.values()}) == 1, (flag, defaults)
        kinds = {getattr(a.type, "__name__", repr(a.type)).removesuffix("_list") for a in by.values()}
        assert len(kinds) == 1 or flag == "--markdown", (flag, kinds)
        assert len({a.dest for a in by.values()}) == 1, flag
        assert len({repr(a.choices) for a in by.values()}) == 1, flag
    assert set(PER_COMMAND_DEFAULTS) <= set(_shared_flags()), "an exception for a flag that is no longer shared"


def test_depth_and_dim_have_one_default_in_export_and_genome():
    """Issue 22: --depth defaulted to 24 in genome and 10 in export."""
    from staredge.exporters.lm_source import BASELINE_DEFAULTS

    assert _args.BASELINE_SIZE == BASELINE_DEFAULTS  # the CLI's one default is Python's
    for flag in ("--dim", "--depth"):
        by = _shared_flags()[flag]
        assert set(by) == {"export", "genome"}
        assert len({(a.default, a.metavar, a.type.__name__) for a in by.values()}) == 1, flag
        said = f"default {_args.BASELINE_SIZE['dim']}" if flag == "--dim" else f"{_args.BASELINE_SIZE['depth']} LIVs"
        assert all(said in a.help for a in by.values()), flag


def test_genome_analyses_the_baseline_export_builds(capsys):
    """``staredge genome transformer_pp`` with no size flags is the model ``staredge export
    transformer_pp`` builds (d=128, 10 LIVs), not a 24-LIV one."""
    import json

    from staredge.cli import main

    assert main(["genome", "transformer_pp", "--seq-len", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["dim"], len(doc["rows"])) == (_args.BASELINE_SIZE["dim"], _args.BASELINE_SIZE["depth"])


def test_sampling_defaults_are_pythons():
    """generate and chat share one sampling definition, whose defaults are Python's: every
    stream()/generate() (chat's 0.7 temperature was the CLI's alone: Python's chat_stream()
    and .chat() pass no sampling argument, so a Python chat samples at stream()'s 0.8)."""
    import inspect

    from staredge import decoding
    from staredge.generation import LanguageModel
    from staredge.predictor import Predictor

    functions = (decoding.stream, decoding.generate, LanguageModel.stream, LanguageModel.generate,
                 Predictor.stream, Predictor.generate)
    for key, value in _args.SAMPLING_DEFAULTS.items():
        for fn in functions:
            assert inspect.signature(fn).parameters[key].default == value, (fn.__qualname__, key)
        for name in ("generate", "chat"):
            action = SUBS[name]._option_string_actions["--" + key.replace("_", "-")]
            assert action.default == value, (name, key)


def test_python_chat_samples_with_streams_defaults():
    """chat_stream() (behind LanguageModel.chat, Predictor.chat and ChatSession) forwards only
    the sampling arguments it is given, so its defaults are stream()'s, which the CLI's are."""
    from staredge.chat import ChatSession, chat_stream

    class Tok:
        chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        bos_token = eos_token = None
        stop_ids = ()

        def encode(self, text, add_bos=False):
            return list(text.encode())

    class LM:
        tokenizer = Tok()
        seen: dict = {}

        def stream(self, ids, **kwargs):
            LM.seen = kwargs
            return (piece for piece in ())  # a generator: closable, as a TextStream is

    chat_stream(LM(), [{"role": "user", "content": "hi"}])
    assert not set(LM.seen) & set(_args.SAMPLING_DEFAULTS), LM.seen
    list(ChatSession(LM()).send("hi"))
    assert not set(LM.seen) & set(_args.SAMPLING_DEFAULTS), LM.seen


def test_max_new_tokens_defaults_are_pythons():
    import inspect

    from staredge.chat import chat_stream
    from staredge.predictor import Predictor

    assert SUBS["generate"]._option_string_actions["--max-new-tokens"].default == \
        inspect.signature(Predictor.generate).parameters["max_new_tokens"].default
    assert SUBS["chat"]._option_string_actions["--max-new-tokens"].default == \
        inspect.signature(chat_stream).parameters["max_new_tokens"].default


def test_formats_rewrite_and_weights_have_one_definition():
    """--formats (with its --format alias), --rewrite and --checkpoint/--pretrained come from one
    helper each in _args.py: the same spelling, alias, metavar and wording in every subcommand."""
    from staredge.exporters.passes import PASS_NAMES

    assert _args.REWRITE_PASSES == PASS_NAMES
    shared = _shared_flags()
    assert {tuple(a.option_strings) for a in shared["--formats"].values()} == {("--formats", "--format")}
    assert set(shared["--formats"]) == {"export", "demo", "tune"}
    for a in shared["--rewrite"].values():
        assert a.metavar == "PASSES" and a.help.startswith("graph rewrites"), a.help
        assert all(name in a.help for name in PASS_NAMES), a.help
    assert set(shared["--rewrite"]) == {"export", "bench", "ios-bundle", "tune"}
    for flag in ("--checkpoint", "--pretrained"):
        assert set(shared[flag]) == {"export", "ios-bundle", "tune"}, flag
    assert len({a.help for a in shared["--pretrained"].values()}) == 1
