"""Every example in README.md and docs/ is executed.

- ```adsl blocks must check (a block without an ``input`` line gets a small scaffold);
- ```python blocks and the ``$ alexdsl ...`` lines of ```console blocks run in one temporary
  folder (with ``examples/`` linked into it), so what they write never lands in the checkout;
  console lines must exit 0, and run in document order (README trains, interop.md exports the weights);
- ``train`` and ``compare`` lines, lines that read a training run's output (``runs/...``) and blocks
  after a ``<!-- slow -->`` line are marked ``slow`` (README's test command leaves them to CI);
- the README's shapes table must be what ``alexdsl shapes examples/alexnet.adsl`` prints, and its
  ``alexdsl check`` block what that command prints (``pytest --update-goldens`` rewrites the block);
- every line of a ```py excerpt of generated code (other than ``...`` lines) is in what the
  code generator now writes for the network its header names.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT, SCAFFOLD

import alexdsl
from alexdsl.cli import main
from alexdsl.fileio import write_text_atomic

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- slow -->\n)?```(\w+)\n(.*?)```", re.S)
SLOW_BLOCKS: set[tuple[str, int]] = set()  # blocks after a "<!-- slow -->" line run with the slow tests
SLOW_COMMANDS = ("train", "compare")  # and the commands that read what training wrote (runs/...)


def blocks(kind: str) -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(2) == kind:
                line = text[: match.start(2)].count("\n") + 1
                found.append((doc.name, line, match.group(3)))
                if match.group(1):
                    SLOW_BLOCKS.add((doc.name, line))
    return found


def params(items: list[tuple[str, int, Any]], slow: Callable[[tuple[str, int, Any]], bool]) -> list[Any]:
    """``items`` as parameters, the slow ones marked ``slow`` (README's command leaves them to CI)."""
    return [pytest.param(*item, marks=pytest.mark.slow, id=f"{item[0]}:{item[1]}") if slow(item)
            else pytest.param(*item, id=f"{item[0]}:{item[1]}") for item in items]


def in_slow_block(item: tuple[str, int, Any]) -> bool:
    return item[:2] in SLOW_BLOCKS


def ids(items: list[tuple[str, int, str]]) -> list[str]:
    return [f"{name}:{line}" for name, line, _ in items]


@pytest.fixture(scope="module")
def doc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reader's working folder: examples/ and docs/ are there, and everything the examples write stays here."""
    folder = tmp_path_factory.mktemp("docs")
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / "docs").symlink_to(ROOT / "docs")  # text to train a language model on
    return folder


ADSL = blocks("adsl")
PYTHON = blocks("python")
CONSOLE = blocks("console")


@pytest.mark.parametrize(("doc", "line", "code"), ADSL, ids=ids(ADSL))
def test_adsl_blocks_check(doc: str, line: int, code: str) -> None:
    text = code if re.search(r"^input ", code, re.M) else SCAFFOLD + code
    alexdsl.parse(text, f"{doc}:{line}")




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


@pytest.mark.parametrize(("doc", "line", "code"), params(PYTHON, in_slow_block))
def test_python_blocks_run(doc: str, line: int, code: str, doc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(doc_dir)
    exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__doc_example__"})




def slow_command(item: tuple[str, int, list[str]]) -> bool:
    """Training, comparing every backend, and what reads a training run's output take a while."""
    args = item[2]
    while args[:1] == ["--plugin"]:
        args = args[2:]
    return in_slow_block(item) or args[0] in SLOW_COMMANDS or any(arg.startswith("runs/") for arg in args)


@pytest.mark.parametrize(("doc", "line", "args"), [
    pytest.param(*param.values, marks=param.marks, id=f"{param.id}:{param.values[2][0]}")
    for param in params(COMMANDS, slow_command)])
def test_console_commands_run(doc: str, line: int, args: list[str], doc_dir: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(doc_dir)
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_readme_training_reaches_the_accuracy_it_states(doc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `alexdsl train` line (run by the console test, or here when this test runs alone)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"(\d+)-(\d+) ?% validation accuracy", " ".join(readme.split()))
    assert stated, "README.md no longer states the validation accuracy of its training run"
    args = next(args for doc, _, args in COMMANDS if doc == "README.md" and args[0] == "train")
    metrics = doc_dir / args[args.index("--out") + 1] / "metrics.jsonl"
    if not metrics.exists():
        monkeypatch.chdir(doc_dir)
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert final["val_accuracy"] >= int(stated.group(1)) / 100, final


def test_readme_shapes_table_is_current() -> None:
    table = CliRunner().invoke(main, ["shapes", "examples/alexnet.adsl"]).stdout
    assert table in (ROOT / "README.md").read_text(encoding="utf-8")


CHECK_BLOCK = re.compile(r"```text\n\$ alexdsl (check [^\n]+)\n(.*?)```", re.S)


def test_readme_check_output_is_current(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's `alexdsl check` block is what the command prints; ``--update-goldens`` rewrites the block."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = CHECK_BLOCK.search(text)
    assert block, "README.md no longer shows an `alexdsl check` run in a text block"
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, shlex.split(block.group(1)))
    assert result.exit_code == 1, result.output
    if request.config.getoption("--update-goldens"):
        write_text_atomic(readme, text[: block.start(2)] + result.output + text[block.end(2) :])
    else:
        assert block.group(2) == result.output, "README's `alexdsl check` block is stale (--update-goldens)"


def test_language_reference_covers_every_op() -> None:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    for op in alexdsl.ops.registry.all_ops():
        assert f"#### `{op.name}`" in text and op.example in text, op.name


GENERATED = re.compile(r"# Generated by alexdsl \((\w+) backend\) from (\S+?);")
EXCERPTS = [(doc, line, code) for doc, line, code in blocks("py") if GENERATED.match(code)]


@pytest.mark.parametrize(("doc", "line", "code"), EXCERPTS, ids=ids(EXCERPTS))
def test_generated_code_excerpts_are_current(doc: str, line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from alexdsl.backends.executor import generate_source as cupy_source
    from alexdsl.backends.torch import generate_source as torch_source

    monkeypatch.chdir(ROOT)  # the header names the source file as given
    backend, path = GENERATED.match(code).groups()
    source = {"cupy": cupy_source, "torch": torch_source}[backend](alexdsl.load(path))
    generated = {text.strip() for text in source.splitlines()}
    stale = [text for text in code.splitlines() if text.strip() and "..." not in text and text.strip() not in generated]
    assert not stale, f"{doc}:{line}: lines the generator no longer writes: {stale}"

