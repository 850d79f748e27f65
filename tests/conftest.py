"""Shared fixtures. ``pytest --update-goldens`` rewrites golden files instead of comparing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import alexdsl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"

# Inputs and layers that every op's documented example can read (concat(b1, ...), softmax_loss(fc8, label)).
SCAFFOLD = """input data: 16x32x32
input label: class(10)
input v: 10
fc8: v -> relu
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
    """He-scaled weights and non-trivial batchnorm statistics, so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in network.state_keys().items():
        kind = key.rsplit(".", 1)[1]
        if kind == "weight" and len(shape) > 1:
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
            path.write_text(text, encoding="utf-8")
            if not update:
                pytest.fail(f"golden file {name} was missing and has been written; review and rerun")
        assert text == path.read_text(encoding="utf-8"), f"output differs from golden {name} (--update-goldens)"

    return check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import cupy  # noqa: F401

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs CUDA and CuPy")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
