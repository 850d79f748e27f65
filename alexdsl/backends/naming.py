"""The one sanitizer between user names and generated Python code.

Layer and network names from a user's file reach generated code only through here (values go
through ``repr``), so nothing in a file can inject code.

>>> names = IdentifierMap(reserved={"self"})
>>> [names(n) for n in ("conv1", "layer2.0.conv1", "class", "2x", "self", "conv1")]
['conv1', 'layer2_0_conv1', 'class_', 'v_2x', 'self_2', 'conv1']
>>> class_name("alex-net", reserved=set())
'alex_net'
"""

from __future__ import annotations

import keyword
import re


def _sanitize(name: str, fallback: str, digit_prefix: str) -> str:
    ident = re.sub(r"\W", "_", name, flags=re.ASCII) or fallback
    if ident[0].isdigit():
        ident = digit_prefix + ident
    if keyword.iskeyword(ident) or keyword.issoftkeyword(ident):
        ident += "_"
    return ident


class IdentifierMap:
    """Maps arbitrary strings to unique, safe Python identifiers, the same one each time."""

    def __init__(self, reserved: set[str] | frozenset[str] = frozenset()):
        self.taken = set(reserved)
        self.assigned: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name in self.assigned:
            return self.assigned[name]
        base = _sanitize(name, "v", "v_")
        candidate, n = base, 2
        while candidate in self.taken:
            candidate, n = f"{base}_{n}", n + 1
        self.taken.add(candidate)
        self.assigned[name] = candidate
        return candidate


def class_name(name: str, reserved: set[str] | frozenset[str]) -> str:
    """A class name for a network: sanitized, and never one of ``reserved``."""
    ident = _sanitize(name, "Network", "N")
    return ident + "_" if ident in reserved else ident
