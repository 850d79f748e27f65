"""The wheel ships the grammar: build it, install it in a fresh venv, run `alexdsl shapes` elsewhere."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("alexdsl-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "net.adsl").write_text((ROOT / "examples" / "alexnet.adsl").read_text())
    result = subprocess.run([str(env_dir / "bin" / "alexdsl"), "shapes", "net.adsl", "--format", "json"], cwd=work,
                            capture_output=True, text=True, check=True)
    assert '"params": 60965224' in result.stdout
    located = subprocess.run([str(python), "-c", "import alexdsl.syntax.parser as p; print(p.__file__)"], cwd=work,
                             capture_output=True, text=True, check=True)
    assert str(ROOT) not in located.stdout  # the installed copy, not the checkout
