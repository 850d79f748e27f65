"""The wheel ships the grammar: build it, install it in a fresh venv, run `alexdsl shapes` elsewhere.

The venv is made without system site packages, so it works the same whether the tests run
in a venv or not. Its dependencies (lark, numpy, ...) cannot be downloaded here, so a .pth
file adds the site-packages folders of the interpreter running the tests *after* the venv's
own: the installed wheel is what imports, and the dependencies are the ones already tested.
(A plain folder line in a .pth file does not run that folder's own .pth files, so an
editable install of the checkout there stays inactive.)
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure the assertion shows its output and stderr."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (f"{' '.join(map(str, command))} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def dependency_folders() -> list[str]:
    """The running interpreter's site-packages/dist-packages folders (never the checkout)."""
    return [entry for entry in dict.fromkeys(sys.path)
            if Path(entry).name in ("site-packages", "dist-packages") and Path(entry).is_dir()
            and Path(entry).resolve() != ROOT.resolve()]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)])
    wheel = next(dist.glob("alexdsl-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    own_site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(own_site, "zz_test_dependencies.pth").write_text("".join(f"{folder}\n" for folder in dependency_folders()))
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "net.adsl").write_text((ROOT / "examples" / "alexnet.adsl").read_text())
    result = run([str(env_dir / "bin" / "alexdsl"), "shapes", "net.adsl", "--format", "json"], cwd=work)
    assert '"params": 60965224' in result.stdout
    located = run([str(python), "-c", "import alexdsl.syntax.parser as p; print(p.__file__)"], cwd=work)
    assert located.stdout.startswith(str(env_dir))  # the installed copy, not the checkout
    assert str(ROOT) not in located.stdout


def test_pyproject_lists_every_package_the_wheel_must_ship() -> None:
    """setuptools ships only the packages pyproject.toml names: a new sub-package missing there imports from a
    checkout and fails from the wheel (the slow test above builds one to see it)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    folders = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "alexdsl").rglob("__init__.py")}
    assert folders and folders <= listed, sorted(folders - listed)
