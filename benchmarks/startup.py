"""Benchmark: start-up of the ``alexdsl`` command, per command (CPU time, best of N) and its heavy imports.

    python benchmarks/startup.py                     # every command below, best of 5
    python benchmarks/startup.py --repeat 9

Each command runs as ``python -m alexdsl.cli ...`` in a fresh process; its CPU time (user +
system, from ``os.wait4``) is used rather than wall time because the machine may be shared.
The heavy packages it imported are read from ``python -X importtime``'s report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "networkx", "lark", "torch", "onnx", "onnxruntime", "cupy", "pygls", "PIL", "safetensors")


def commands(folder: Path) -> dict[str, list[str]]:
    lenet, onnx_file = str(ROOT / "examples" / "lenet.adsl"), str(folder / "lenet.onnx")
    return {
        "--help": ["--help"],
        "run --help": ["run", "--help"],
        "check lenet": ["check", lenet],
        "shapes lenet": ["shapes", lenet],
        "compile --backend cupy lenet": ["compile", lenet, "--backend", "cupy", "-o", str(folder / "lenet.py")],
        "export onnx lenet": ["export", lenet, "--format", "onnx", "-o", onnx_file],
        "import onnx lenet.onnx": ["import", "onnx", onnx_file, "-o", str(folder / "lenet.adsl")],
    }


def cpu_seconds(argv: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one run of ``argv`` (it must succeed)."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return usage.ru_utime + usage.ru_stime


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """The packages of :data:`HEAVY` that ``argv`` imports (from ``-X importtime``)."""
    result = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True,
                            check=True)
    names = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    return [name for name in HEAVY if name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ)
    print(f"load {os.getloadavg()[0]:.1f}; best of {args.repeat}, CPU seconds")
    with tempfile.TemporaryDirectory() as folder:
        for name, cli_args in commands(Path(folder)).items():
            argv = [sys.executable, "-m", "alexdsl.cli", *cli_args]
            best = min(cpu_seconds(argv, env) for _ in range(args.repeat))
            print(f"  {name:32s} {best:6.2f} s   imports: {', '.join(heavy_imports(argv, env)) or '-'}", flush=True)


if __name__ == "__main__":
    main()
