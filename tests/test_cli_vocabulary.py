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
