"""The command that installs an optional part of alexdsl (an extra of pyproject.toml): the one place
that words it, for every "needs X" error.

alexdsl is not on the package index, so ``pip install 'alexdsl[torch]'`` cannot work. From a
checkout (an editable install), the command installs the extra from that checkout's folder, so
it works from any directory; torch comes first as the CPU build, as README does, since a plain
``torch`` requirement would pull the CUDA build and its ``nvidia-*`` packages. From a wheel, it
installs the extra's requirements as that wheel's metadata lists them.

>>> install_command("onnx").startswith("pip install ")
True
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

EXTRAS = ("torch", "onnx", "digits", "lsp", "cupy", "numba")
# The CPU build of PyTorch, installed before the torch extra (README's first step).
TORCH_CPU_STEP = "pip install torch==2.13.0"


def checkout_folder() -> Path | None:
    """The source checkout this alexdsl runs from (the folder holding its pyproject.toml), or None."""
    folder = Path(__file__).resolve().parent.parent
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"alexdsl"', pyproject.read_text(encoding="utf-8")):
        return folder
    return None


def _extra_requirements(extra: str) -> list[str]:
    """The requirements the installed distribution's metadata lists for ``extra``."""
    try:
        requires = metadata.requires("alexdsl") or []
    except metadata.PackageNotFoundError:
        return []
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    return [line.partition(";")[0].strip() for line in requires if marker.search(line.partition(";")[2])]


def install_command(extra: str) -> str:
    """A shell command that installs the extra ``extra`` (one of :data:`EXTRAS`) where alexdsl runs from."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {', '.join(EXTRAS)}")
    checkout = checkout_folder()
    if checkout is not None:
        command = f"pip install -e {shlex.quote(f'{checkout}[{extra}]')}"
    elif requirements := _extra_requirements(extra):
        command = "pip install " + " ".join(shlex.quote(r) for r in requirements)
    else:  # neither a checkout nor an installed distribution: alexdsl's folder was put on the path by hand
        command = f"pip install -e '.[{extra}]' (in an alexdsl checkout)"
    return f"{TORCH_CPU_STEP} && {command}" if extra == "torch" else command
