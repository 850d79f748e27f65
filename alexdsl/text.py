"""Text to token ids and back: a character vocabulary built from a text, or a ``tokenizer.json``.

``alexdsl train --data text:FILE`` encodes its file with a :class:`CharTokenizer` (the default:
one id per distinct character of the file, in code point order) or with ``--tokenizer
tokenizer.json`` (Hugging Face's ``tokenizers`` package, the ``text`` extra), and writes the
tokenizer it used beside the weights as ``tokenizer.json``. :func:`open_tokenizer` reads either
kind back, so a command that takes text (``alexdsl generate --prompt``) encodes and decodes
exactly as training did:

>>> tokenizer = CharTokenizer.from_text("hello world")
>>> tokenizer.encode("hold"), tokenizer.decode([3, 2, 4, 4, 5])
([3, 5, 4, 1], 'hello')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command
from alexdsl.fileio import write_text_atomic

TOKENIZER_FILE = "tokenizer.json"  # the tokenizer alexdsl train writes beside weights.safetensors
CHAR_FORMAT = "alexdsl-char-vocabulary"  # the "format" of a character vocabulary's JSON


class Tokenizer(Protocol):
    """What training and generation need of a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save(self, path: str | Path) -> None: ...


class CharTokenizer:
    """One id per character of a fixed alphabet."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of the distinct characters of ``text``, in code point order."""
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise AlexDSLError(f"the text has characters outside the vocabulary: "
                               f"{', '.join(repr(c) for c in unknown[:10])}"
                               + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] if 0 <= i < len(self.chars) else "\N{REPLACEMENT CHARACTER}" for i in ids)

    def save(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps({"format": CHAR_FORMAT, "chars": self.chars}, ensure_ascii=False))


class HuggingFaceTokenizer:
    """A ``tokenizers.Tokenizer`` (BPE, WordPiece, ...) read from its ``tokenizer.json``."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def save(self, path: str | Path) -> None:
        write_text_atomic(Path(path), self.tokenizer.to_str())


def open_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in ``path``: a character vocabulary written by ``alexdsl train``, or a Hugging Face
    ``tokenizer.json`` (which needs the ``tokenizers`` package)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text)
    except FileNotFoundError:
        raise AlexDSLError(f"{path}: no such tokenizer file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AlexDSLError(f"{path}: error: not a tokenizer.json ({error})") from None
    if isinstance(content, dict) and content.get("format") == CHAR_FORMAT:
        chars = content.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars) \
                or len(set(chars)) != len(chars):
            raise AlexDSLError(f"{path}: error: a character vocabulary needs 'chars', a list of distinct characters")
        return CharTokenizer(chars)
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise AlexDSLError(f"{path}: reading a tokenizer.json needs the tokenizers package: "
                           f"{install_command('text')}") from None
    try:
        return HuggingFaceTokenizer(HFTokenizer.from_str(text))
    except Exception as error:  # tokenizers raises its own Exception subclass for every malformed file
        raise AlexDSLError(f"{path}: error: not a tokenizer.json ({error})") from None


def find_tokenizer(tokenizer: str | Path | None, weights: str | Path | None) -> Tokenizer | None:
    """The tokenizer a command that takes or prints text should use: ``tokenizer`` if given, else the
    ``tokenizer.json`` that ``alexdsl train`` wrote beside ``weights``, else None (token ids only)."""
    if tokenizer is not None:
        return open_tokenizer(tokenizer)
    beside = Path(weights).parent / TOKENIZER_FILE if weights is not None else None
    return open_tokenizer(beside) if beside is not None and beside.is_file() else None


def prompt_ids(tokenizer: Tokenizer | None, prompt: str | None, ids: list[int] | None) -> list[int]:
    """The prompt's token ids: ``prompt`` encoded with ``tokenizer``, or ``ids`` (``--ids``); exactly one of them."""
    if (prompt is None) == (ids is None):
        raise AlexDSLError("give the prompt as --prompt TEXT or as --ids 1,2,3 (one of them)")
    if ids is not None:
        return ids
    if tokenizer is None:
        raise AlexDSLError("--prompt needs a tokenizer: --tokenizer tokenizer.json, or the tokenizer.json "
                           "that alexdsl train wrote beside the weights")
    encoded = tokenizer.encode(str(prompt))
    if not encoded:
        raise AlexDSLError("--prompt encodes to no tokens")
    return encoded
