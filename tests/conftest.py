"""Shared fixtures. ``pytest --update-goldens`` rewrites golden files instead of comparing."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import alexdsl
from alexdsl.fileio import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"

# Inputs and layers that every op's documented example can read (concat(b1, ...), softmax_loss(fc8, label)).
SCAFFOLD = """input data: 16x32x32
input label: class(10)
input v: 10
fc8: v -> relu
input ids: tokens(6, vocab=10)
input seq: 6x8
table: ids -> embedding(10, 8)
b1: data -> relu
b3: data -> relu
b5: data -> relu
bp: data -> relu
branch: data -> relu
shortcut: data -> relu
last: data -> relu
"""


@pytest.fixture(autouse=True)
def _registry_unchanged():
    """Plugin ops a test loads (through --plugin, say) are gone after it: the registry is process-wide."""
    from alexdsl import plugins
    from alexdsl.ops import registry

    registry.op_names()
    ops, loaded = dict(registry._REGISTRY), dict(plugins._LOADED)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(ops)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)


def random_weights(network: alexdsl.Network, seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled weights and non-trivial batchnorm statistics, so activations stay O(1); the buffers an op computes
    from its arguments (a relative position index) as it computes them."""
    from alexdsl.ops.registry import lookup

    rng = np.random.default_rng(seed)
    out = {}
    computed = {f"{layer.name}.{name}": value for layer in network.layers() if (op := lookup(layer.op)) is not None
                for name, value in op.buffer_values(layer.attrs).items()}
    for key, shape in network.state_keys().items():
        kind = key.rsplit(".", 1)[-1]
        if key in computed:
            out[key] = computed[key]
            continue
        if kind.endswith("weight") and len(shape) > 1:  # conv, fc, linear; attention's in_proj_weight
            fan_in = math.prod(shape[1:])
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        elif kind == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif kind == "weight":  # batchnorm gamma
            value = rng.uniform(0.5, 1.5, shape)
        else:  # biases, running means
            value = rng.standard_normal(shape) * 0.1
        out[key] = value.astype(np.float32)
    return out


def pytest_configure(config: pytest.Config) -> None:
    """Plugin ops named in ``$ALEXDSL_PLUGINS`` join the registry before collection, so that the op
    contract tests (tests/test_ops_contract.py) run over them too (docs/extending.md)."""
    from alexdsl.errors import AlexDSLError
    from alexdsl.plugins import load_plugins, plugin_names

    try:
        load_plugins(plugin_names(), entry_points=False)
    except AlexDSLError as error:
        raise pytest.UsageError(f"ALEXDSL_PLUGINS: {error}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", help="rewrite golden files from current output")


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/golden/<name>, or rewrite it with --update-goldens."""
    update = request.config.getoption("--update-goldens")

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if update or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
            if not update:
                pytest.fail(f"golden file {name} was missing and has been written; review and rerun")
        assert text == path.read_text(encoding="utf-8"), f"output differs from golden {name} (--update-goldens)"

    return check


def _has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip without a GPU; CuPy is imported only when a selected test needs it (after ``-m``)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _has_gpu():
        skip = pytest.mark.skip(reason="needs CUDA and CuPy: .ci/gpu runs it on a GPU machine")
        for item in gpu_items:
            item.add_marker(skip)


# A test that skips for a missing optional package says how to install it.
CHECKOUT_INSTALL = 'pip install -e ".[{extra}]"'
EXTRA_OF_MODULE = {
    "torch": "torch", "safetensors": "torch", "tqdm": "torch", "matplotlib": "torch", "PIL": "torch",
    "onnx": "onnx", "onnxruntime": "onnx", "sklearn": "digits", "cupy": "cupy", "pygls": "lsp",
    "pytest_lsp": "dev", "pygments": "dev", "hypothesis": "dev",
}
INSTALL_HINTS = {
    "torch": 'pip install torch==2.13.0 && pip install -e ".[torch]" (the CPU build of torch first)',
    "torchvision": "pip install torchvision==0.28.0 where it matches the torch build (PyPI's needs CUDA torch; "
                   "the CPU torch of the README needs torchvision's CPU build)",
}
_MISSING = re.compile(r"could not import '([\w.]+)'")


def install_hint(module: str) -> str | None:
    """The command that installs the optional package providing ``module``, from a checkout."""
    top = module.split(".", 1)[0]
    if top in INSTALL_HINTS:
        return INSTALL_HINTS[top]
    return CHECKOUT_INSTALL.format(extra=EXTRA_OF_MODULE[top]) if top in EXTRA_OF_MODULE else None


def add_install_hint(report: Any) -> None:
    """Append the install command to the reason of a skip for a missing module (``pytest.importorskip``)."""
    if not (report.skipped and isinstance(report.longrepr, tuple)):
        return
    path, line, reason = report.longrepr
    missing = _MISSING.search(reason)
    hint = install_hint(missing.group(1)) if missing else None
    if hint:
        report.longrepr = (path, line, f"{reason}; to run it: {hint}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    add_install_hint(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    add_install_hint(outcome.get_result())
