"""Every example in README.md and docs/ is executed.

- ```adsl blocks must check (a block without an ``input`` line gets a small scaffold);
- ```python blocks are run from the repository root;
- ``$ alexdsl ...`` lines of ```console blocks are run through the CLI and must exit 0;
- the README's shapes table must be what ``alexdsl shapes examples/alexnet.adsl`` prints.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, SCAFFOLD

import alexdsl
from alexdsl.cli import main

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == kind:
                found.append((doc.name, text[: match.start()].count("\n") + 1, match.group(2)))
    return found


def ids(items: list[tuple[str, int, str]]) -> list[str]:
    return [f"{name}:{line}" for name, line, _ in items]


ADSL = blocks("adsl")
PYTHON = blocks("python")
CONSOLE = blocks("console")


@pytest.mark.parametrize(("doc", "line", "code"), ADSL, ids=ids(ADSL))
def test_adsl_blocks_check(doc: str, line: int, code: str) -> None:
    text = code if re.search(r"^input ", code, re.M) else SCAFFOLD + code
    alexdsl.parse(text, f"{doc}:{line}")


@pytest.mark.parametrize(("doc", "line", "code"), PYTHON, ids=ids(PYTHON))
def test_python_blocks_run(doc: str, line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__doc_example__"})


def _commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for doc, line, code in CONSOLE:
        for text in code.splitlines():
            if not text.startswith("$ "):
                continue
            for part in text[2:].split("&&"):
                words = shlex.split(part)
                if words and words[0] == "alexdsl":
                    found.append((doc, line, words[1:]))
    return found


COMMANDS = _commands()


@pytest.fixture(scope="module")
def console_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One working folder for all console lines, run in document order (train, then run its weights)."""
    folder = tmp_path_factory.mktemp("console")
    (folder / "examples").symlink_to(ROOT / "examples")  # commands name examples/...; outputs stay here
    return folder


@pytest.mark.parametrize(("doc", "line", "args"), COMMANDS, ids=[f"{d}:{n}:{a[0]}" for d, n, a in COMMANDS])
def test_console_commands_run(doc: str, line: int, args: list[str], console_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(console_dir)
    monkeypatch.setenv("ALEXDSL_DOC_TMP", str(tmp_path))
    args = [os.path.expandvars(a) for a in args]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_readme_shapes_table_is_current() -> None:
    table = CliRunner().invoke(main, ["shapes", "examples/alexnet.adsl"]).stdout
    assert table in (ROOT / "README.md").read_text(encoding="utf-8")


def test_language_reference_covers_every_op() -> None:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    for op in alexdsl.ops.registry.all_ops():
        assert f"#### `{op.name}`" in text and op.example in text, op.name
