"""docs/security.md names the test that proves each promise: every test it names exists.

The page names tests as ``tests/test_x.py::test_name`` and, after such a name, as a bare
``test_other`` of the same file (within one section, paragraph or table row). Each named file
must exist and each named test must be a test function of that file (read with ``ast``: no
import, so this runs without the optional runtimes). A bare test name with no file named
before it in its section or row is an error too: the reader could not find it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
_FILE = re.compile(r"(tests/[\w/]+\.py)((?:::\w+)*)(\[[^\]]*\])?")
_BARE = re.compile(r"test_\w+")


def named_tests(text: str) -> list[tuple[int, str | None, str | None]]:
    """(line, file, test) for each test the page names; test None for a file named alone,
    file None for a bare name with no file before it in its section or table row."""
    out: list[tuple[int, str | None, str | None]] = []
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(("#", "|")):  # a new section or table row: a new context
            current = None
        for token in re.findall(r"`([^`]+)`", line):
            match = _FILE.fullmatch(token)
            if match:
                current = match.group(1)
                parts = [p for p in match.group(2).split("::") if p]
                out.append((number, current, parts[-1] if parts else None))
            elif _BARE.fullmatch(token):
                out.append((number, current, token))
    return out


def functions_of(path: Path) -> set[str]:
    """Names of the functions (module level or in classes) of a test file."""
    tree = ast.parse(path.read_text("utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test_")}


def test_every_test_docs_security_names_exists():
    named = named_tests(DOC.read_text("utf-8"))
    assert len(named) > 30, "the page names its tests as `tests/test_x.py::test_name`; the parser found few"
    problems = []
    for line, file, test in named:
        if file is None:
            problems.append(f"docs/security.md:{line}: `{test}` names no file before it")
            continue
        path = ROOT / file
        if not path.is_file():
            problems.append(f"docs/security.md:{line}: {file} does not exist")
        elif test is not None and test not in functions_of(path):
            problems.append(f"docs/security.md:{line}: {file} has no test {test}")
    assert problems == []


def test_the_promise_table_names_the_stream_id_checks():
    table = DOC.read_text("utf-8").split("## Every promise and the test that proves it", 1)[1]
    assert ("| ids fed to a stream are checked | "
            "`tests/test_lm_feed_checks.py::test_bad_ids_fed_to_a_stream_are_config_errors_and_leave_it_intact` |"
            in table)


def test_the_parser_catches_a_missing_test_and_a_missing_file(tmp_path):
    """The check itself: names that do not exist are found (not silently skipped)."""
    text = ("## A\nTested by `tests/test_security_doc.py::test_every_test_docs_security_names_exists`, "
            "`test_no_such_test`.\n| row | `test_orphan` |\n`tests/no_such_file.py`\n")
    named = named_tests(text)
    assert named == [(2, "tests/test_security_doc.py", "test_every_test_docs_security_names_exists"),
                     (2, "tests/test_security_doc.py", "test_no_such_test"), (3, None, "test_orphan"),
                     (4, "tests/no_such_file.py", None)]
    assert "test_no_such_test" not in functions_of(ROOT / "tests" / "test_security_doc.py")
