"""docs/embedding.md is executable: every ```python block runs on its own from the repo root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "embedding.md"


def blocks() -> list[tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    out = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return out


def test_doc_has_examples() -> None:
    assert len(blocks()) >= 6


def test_embedding_doc_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    for line, code in blocks():
        namespace: dict = {"__name__": "embedding_doc"}
        try:
            exec(compile(code, f"{DOC.relative_to(ROOT)}:{line}", "exec"), namespace)  # noqa: S102
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"the block at docs/embedding.md line {line} failed: {error!r}")
    assert os.getcwd() == str(ROOT)
    out = capsys.readouterr().out
    assert "<Network AlexNet" in out
