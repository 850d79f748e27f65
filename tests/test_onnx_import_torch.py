"""`alexdsl import onnx` on torch's own exports: the small torchvision-named modules of tests/onnx_models.py.

Each module is exported by torch's TorchScript exporter with batchnorms kept (initializers named like the
state_dict) and folded (torch's eval default: ``onnx::Conv_<n>``), at opset 17, and at 11, 13 and 20
where torch writes that module differently (``OPSET_CHANGES``). The references are torch's: the module's
output and its state_dict; the import is checked through the NumPy executor, the readable source, and
the torch module alexdsl generates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
import onnx  # noqa: E402
import onnx_models  # noqa: E402 - needs torch

import alexdsl  # noqa: E402
from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.backends.torch.codegen import build  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402
from alexdsl.fmt import format_source  # noqa: E402
from alexdsl.interop.onnx_import import ImportedModel, import_onnx, import_onnx_source  # noqa: E402

RELATIVE_TOLERANCE = 1e-5  # of the largest output magnitude
BASE_OPSET = 17

# Opsets other than 17 at which torch exports the module differently (node types, inputs or attributes,
# leaving out BatchNormalization's training_mode and Reshape's allowzero); test_opset_changes_are_listed
# keeps this table true for the installed torch.
OPSET_CHANGES: dict[str, tuple[int, ...]] = {
    "squeeze_excitation_mean": (20,),  # ReduceMean axes become an input at 18
    "gemm_view": (11,),  # Unsqueeze axes an attribute before 13
    "channel_shuffle": (11,),  # Unsqueeze axes an attribute before 13
    "activations": (11, 13, 20),  # Hardswish as HardSigmoid+Mul before 14; Gelu nodes from 20
    "split_softmax": (11,),  # Split sizes an attribute, 4-d softmax as Transpose/Softmax/Transpose before 13
    "lrn_torch": (11,),  # Unsqueeze/Squeeze axes attributes before 13
    "layer_norm": (11, 13, 20),  # LayerNormalization from 17, decomposed before; Gelu nodes from 20
}
# Also at 11: BatchNormalization without training_mode (before 14), the same nodes otherwise.
EXTRA_OPSETS: dict[str, tuple[int, ...]] = {"conv_bn_relu": (11,)}

# Modules torch exports as graphs alexdsl does not import: the one error names this op type, with its count.
# nn.LocalResponseNorm is a Python function that traces to ~40 nodes around an If (Squeeze the pooled
# window only when it has one channel); alexdsl's lrn comes from real LRN nodes (Caffe2/model-zoo models).
UNIMPORTABLE: dict[str, str] = {"lrn_torch": "If x1"}

MODES = ("kept", "folded")
Case = tuple[str, int, str]  # module name, opset, mode


def _opsets(name: str) -> tuple[int, ...]:
    return tuple(sorted({BASE_OPSET, *OPSET_CHANGES.get(name, ()), *EXTRA_OPSETS.get(name, ())}))


CASES: list[Case] = [(name, opset, mode) for name in onnx_models.MODULES if name not in UNIMPORTABLE
         for opset in _opsets(name) for mode in MODES]
KEPT_CASES = [case for case in CASES if case[2] == "kept"]
UNIMPORTABLE_CASES: list[Case] = [(name, opset, mode) for name in UNIMPORTABLE
                                   for opset in _opsets(name) for mode in MODES]


def _case_id(case: Case) -> str:
    name, opset, mode = case
    return f"{name}-opset{opset}-{mode}"


@dataclass
class Export:
    """One module's ONNX export and torch's output for the test input (batch 2: the batch axis is dynamic)."""

    module: torch.nn.Module
    path: Path
    data: np.ndarray
    expected: np.ndarray


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, int, str], Export]]:
    """``exports(name, opset, mode)``: each module exported once per opset and mode for the whole file."""
    folder = tmp_path_factory.mktemp("torch_onnx")

    @cache
    def export(name: str, opset: int, mode: str) -> Export:
        module = onnx_models.build(name)
        shape = onnx_models.INPUT_SHAPES[name]
        path = onnx_models.export(module, shape, folder / f"{name}-{opset}-{mode}.onnx", opset,
                                  fold_batchnorm=mode == "folded")
        data = onnx_models.sample_input((2, *shape[1:]))
        with torch.no_grad():
            expected = module(torch.from_numpy(data)).numpy()
        return Export(module, path, data, expected)

    yield export
    export.cache_clear()


@pytest.fixture(scope="module")
def imports(exports) -> Iterator[Callable[[str, int, str], ImportedModel]]:
    """``imports(name, opset, mode)``: import_onnx_source of that export, once (an AlexDSLError is raised again)."""

    @cache
    def imported(name: str, opset: int, mode: str) -> ImportedModel | AlexDSLError:
        try:
            return import_onnx_source(exports(name, opset, mode).path)
        except AlexDSLError as error:
            return error

    def get(name: str, opset: int, mode: str) -> ImportedModel:
        result = imported(name, opset, mode)
        if isinstance(result, AlexDSLError):
            raise result
        return result

    yield get
    imported.cache_clear()


def _relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


def _state_dict_arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    # ONNX carries no num_batches_tracked (a training step counter, not used by an eval-mode batchnorm).
    return {key: value.numpy() for key, value in module.state_dict().items()
            if not key.endswith("num_batches_tracked")}


def _run_executor(network: alexdsl.Network, weights: dict[str, np.ndarray], data: np.ndarray) -> np.ndarray:
    out = compile_executor(network, weights, device="cpu")(data)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_the_executor_on_the_import_matches_torch(case: Case, exports) -> None:
    export = exports(*case)
    network, weights = import_onnx(export.path)
    assert _relative_difference(_run_executor(network, weights, export.data), export.expected) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("case", KEPT_CASES, ids=_case_id)
def test_kept_batchnorm_weights_are_the_state_dict(case: Case, exports, imports) -> None:
    expected = _state_dict_arrays(exports(*case).module)
    weights = imports(*case).weights
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_the_readable_source_is_formatted_and_builds_the_same_network(case: Case, exports, imports) -> None:
    imported = imports(*case)
    assert format_source(imported.source, "imported.adsl") == imported.source
    again = alexdsl.parse(imported.source, "imported.adsl")
    assert again.shapes == imported.network.shapes
    assert again.state_keys() == imported.network.state_keys()
    export = exports(*case)  # blocks, repeats and chain references compute what the flat import does
    assert _relative_difference(_run_executor(again, imported.weights, export.data), export.expected) \
        <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_the_generated_torch_module_takes_the_weights_and_matches_torch(case: Case, exports,
                                                                        imports) -> None:
    export, imported = exports(*case), imports(*case)
    module = build(imported.network)
    result = module.load_state_dict({k: torch.tensor(v) for k, v in imported.weights.items()}, strict=False)
    assert result.unexpected_keys == []
    assert [key for key in result.missing_keys if not key.endswith("num_batches_tracked")] == []
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(export.data))
    out = out[0] if isinstance(out, tuple | list) else out
    assert _relative_difference(out.numpy(), export.expected) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("case", UNIMPORTABLE_CASES, ids=_case_id)
def test_unimportable_torch_graphs_are_one_error_naming_the_op(case: Case, exports) -> None:
    name = case[0]
    with pytest.raises(AlexDSLError) as raised:
        import_onnx(exports(*case).path)
    error = raised.value
    assert len(error.diagnostics) == 1
    message = error.diagnostics[0].message
    assert re.match(r"the model uses \d+ ONNX op types? alexdsl has no op for: ", message), message
    assert f"{UNIMPORTABLE[name]} (first: '" in message
    assert "Traceback" not in str(error)


def _node_signature(path: Path) -> list[tuple[str, int, tuple[tuple[str, str], ...]]]:
    noise = {"training_mode", "allowzero"}
    return [(node.op_type, len(node.input),
             tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute
                          if a.name not in noise)))
            for node in onnx.load(path).graph.node]


@pytest.mark.parametrize("opset", [11, 13, 20])
def test_opset_changes_are_listed(opset: int, exports) -> None:
    """OPSET_CHANGES names every module torch exports differently at ``opset`` than at 17, and no other."""
    changed = {name for name in onnx_models.MODULES
               if _node_signature(exports(name, opset, "kept").path)
               != _node_signature(exports(name, BASE_OPSET, "kept").path)}
    assert changed == {name for name, opsets in OPSET_CHANGES.items() if opset in opsets}
