"""``staredge generate``: the usage line it follows, a forgotten prompt, prompts from stdin or a
file, a device that is not there, Python's defaults, and errors in CLI words (issue 22)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("torch")

from staredge.cli import build_parser, main  # noqa: E402


def test_two_prompts_are_refused_with_the_corrected_usage(capsys):
    assert main(["generate", "The ", "A class "]) == 2
    err = capsys.readouterr().err
    assert "'The ' is not a language model" in err and "quote them as one argument" in err
    usage = build_parser()._subparsers._group_actions[0].choices["generate"].format_usage()
    assert "[MODEL] PROMPT" in usage and "[[MODEL] PROMPT" not in usage


def test_a_forgotten_prompt_is_an_error_not_a_prompt(capsys):
    assert main(["generate", "star_lm_pydoc"]) == 2
    err = capsys.readouterr().err
    assert "no prompt" in err and "star_lm_pydoc is a model, not a prompt" in err


def test_prompt_from_stdin_and_from_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"def ")))
    assert main(["generate", "star_lm_pydoc", "-", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    from_stdin = capsys.readouterr().out
    assert from_stdin.startswith("def ")
    f = tmp_path / "p.txt"
    f.write_bytes(b"def ")
    assert main(["generate", "--prompt-file", str(f), "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == from_stdin  # the same prompt, greedy: the same text
    assert main(["generate", "star_lm_pydoc", "x", "--prompt-file", str(f)]) == 2
    assert "not both" in capsys.readouterr().err


def test_device_cuda_is_an_error_not_a_silent_cpu_run(capsys):
    assert main(["generate", "hello", "--device", "cuda", "--max-new-tokens", "2"]) == 2
    assert "--device cuda" in capsys.readouterr().err


def test_cli_and_python_share_max_new_tokens_and_errors_name_flags(capsys):
    import inspect

    from staredge.generation import generate

    args = build_parser().parse_args(["generate", "x"])
    assert args.max_new_tokens == inspect.signature(generate).parameters["max_new_tokens"].default
    assert main(["generate", "x" * 2000, "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "--truncate left" in err and "truncate='left'" not in err


@pytest.mark.parametrize("argv,flag", [(["--threads", "0"], "--threads"), (["--max-new-tokens", "-1"], "--max-new-tokens"),
                                       (["--device", "tpu"], "--device")])
def test_numbers_and_choices_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "x", *argv])
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "staredge generate" in err


def test_generate_returns_the_continuation_and_the_cli_echoes_the_prompt(capsys):
    """Issue 22: the README said generate() returns "the whole text"; it returns the
    continuation (without the prompt), which is what the CLI prints after the echoed prompt
    (and alone with --no-echo)."""
    from staredge.generation import load_lm

    text = load_lm("star_lm_pydoc").generate("The ", max_new_tokens=8, temperature=0)
    argv = ["generate", "star_lm_pydoc", "The ", "--max-new-tokens", "8", "--temperature", "0"]
    assert main(argv) == 0
    assert capsys.readouterr().out == "The " + text + "\n"
    assert main([*argv, "--no-echo"]) == 0
    assert capsys.readouterr().out == text + "\n"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    assert "# greedy; the continuation, without the prompt" in readme and "whole text" not in readme
