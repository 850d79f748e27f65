"""Limits that keep hostile or mistaken input from hanging the tool or exhausting memory.

Each limit has a default, an environment variable that overrides it, and an argument of
:func:`alexdsl.load` / :func:`alexdsl.parse` that overrides both.

>>> max_layers(None)
20000
>>> max_layers(50)
50
"""

from __future__ import annotations

import os

from alexdsl.errors import AlexDSLError

# Layers after expanding every repeat and block (ALEXDSL_MAX_LAYERS). Checking is linear in layers, about
# 3,000 a second for relu and 2,000 for conv on a shared 2-core machine (docs/fuzzing.md), so the worst
# case at the limit takes seconds; the largest example has 273 layers.
DEFAULT_MAX_LAYERS = 20_000
# One source file (ALEXDSL_MAX_SOURCE_BYTES). Parsing takes about 150 times a file's size in memory and
# ~10 s per MiB, so 4 MiB (some 80 times the largest example network) stays well inside 2 GB.
DEFAULT_MAX_SOURCE_BYTES = 4 * 1024 * 1024
MAX_NESTING = 64  # parentheses open at once in a source file
MAX_INT = 2**63 - 1  # the largest integer a source may write: every size is int64 in the backends
# What the IR JSON reader accepts (alexdsl/ir/serialize.py), so every source accepted round-trips:
MAX_DIM = 2**31 - 1  # any one dimension, channel count, kernel size, stride or integer setting
MAX_RANK = 8  # dimensions of an input
MAX_SHAPE_RANK = 6  # dimensions of a shape argument (param(1x197x768), reshape(49x96)): per-sample rank 1 to 6
MAX_INTS = 64  # integers in an `ints` argument, such as permute((0, 2, 1))
MAX_SIZES = 64  # keyword sizes an op collects (rearrange(pattern, p=16, q=16))
MAX_STRING_LENGTH = 4096  # characters of a string argument, such as an einops pattern
MAX_NAME_LENGTH = 256  # characters of a network or (hierarchical) layer name
LARGE_BYTES = 4 * 1024**3  # a layer or network past this gets a warning from check
# An image (ALEXDSL_MAX_IMAGE_PIXELS): checked from its header before decoding, as Pillow's decompression-bomb
# guard does (whose own default is 89,478,485). 50 megapixels is a 7000x7000 photo, 150 MB decoded as RGB.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024**2  # an image read from standard input (ALEXDSL_MAX_IMAGE_BYTES)
DEFAULT_MAX_LSP_MESSAGE_BYTES = 16 * 1024**2  # one message to the language server (ALEXDSL_MAX_LSP_MESSAGE_BYTES)


def _limit(given: int | None, variable: str, default: int) -> int:
    if given is not None:
        value = given
    else:
        text = os.environ.get(variable)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise AlexDSLError(f"error: {variable}={text!r} is not an integer") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AlexDSLError(f"error: the limit {variable} must be a positive integer, not {value!r}")
    return value


def max_layers(given: int | None = None) -> int:
    """The most layers a network may expand to: ``given``, else ``$ALEXDSL_MAX_LAYERS``, else 20,000."""
    return _limit(given, "ALEXDSL_MAX_LAYERS", DEFAULT_MAX_LAYERS)


def max_source_bytes(given: int | None = None) -> int:
    """The largest source file read: ``given``, else ``$ALEXDSL_MAX_SOURCE_BYTES``, else 4 MiB."""
    return _limit(given, "ALEXDSL_MAX_SOURCE_BYTES", DEFAULT_MAX_SOURCE_BYTES)


def max_image_pixels(given: int | None = None) -> int:
    """The most pixels an image may declare: ``given``, else ``$ALEXDSL_MAX_IMAGE_PIXELS``, else 50,000,000."""
    return _limit(given, "ALEXDSL_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def max_image_bytes(given: int | None = None) -> int:
    """The largest image read from standard input: ``given``, else ``$ALEXDSL_MAX_IMAGE_BYTES``, else 256 MiB."""
    return _limit(given, "ALEXDSL_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def max_lsp_message_bytes(given: int | None = None) -> int:
    """The largest message the language server reads: ``given``, else ``$ALEXDSL_MAX_LSP_MESSAGE_BYTES``,
    else 16 MiB (four times the largest source file, whose text a message may carry, JSON-escaped)."""
    return _limit(given, "ALEXDSL_MAX_LSP_MESSAGE_BYTES", DEFAULT_MAX_LSP_MESSAGE_BYTES)
