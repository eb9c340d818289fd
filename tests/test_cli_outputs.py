"""Issue 23, "files the CLI writes": an unwritable target is a typed error naming the path and
flag, before any work; an existing file is never replaced without --force."""

from __future__ import annotations

import pytest

from staredge.cli import main


@pytest.mark.parametrize("argv,flag", [
    (["bench", "starnet_s1", "--out", "/proc/x"], "--out /proc/x"),
    (["bench", "starnet_s1", "--markdown", "/proc/x/t.md"], "--markdown"),
    (["tune", "starnet_digits", "--out", "/proc/x"], "--out /proc/x"),
    (["demo", "--out", "/proc/x"], "--out /proc/x"),
    (["genome", "transformer_pp", "--dim", "8", "--seq-len", "8", "--json", "/proc/x/g.json"], "/proc/x"),
    (["models", "--json", "/proc/x/m.json"], "/proc/x"),
])
def test_unwritable_targets_are_typed_errors_naming_the_path(argv, flag, capsys):
    pytest.importorskip("torch")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"staredge {argv[0]}: error:") and flag in err and "cannot write" in err


@pytest.mark.parametrize("argv", [
    ["genome", "transformer_pp", "--dim", "8", "--seq-len", "8", "--json"],
    ["models", "--json"],
])
def test_json_file_is_refused_when_it_exists_and_replaced_with_force(argv, tmp_path, capsys):
    pytest.importorskip("torch")
    target = tmp_path / "out.json"
    target.write_text("keep me")
    assert main([*argv, str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main([*argv, str(target), "--force"]) == 0
    assert target.read_text().startswith("{")


def test_atomic_writer_raises_a_typed_error_for_an_unwritable_place(tmp_path):
    from staredge.errors import ConfigError, OutputPathError
    from staredge.fileio import atomic_write_text

    with pytest.raises(OutputPathError, match="/proc/x/y.json") as err:
        atomic_write_text("/proc/x/y.json", "{}")
    assert isinstance(err.value, ConfigError) and isinstance(err.value, OSError)
    with pytest.raises(OutputPathError, match="is a folder"):
        atomic_write_text(tmp_path, "{}")
