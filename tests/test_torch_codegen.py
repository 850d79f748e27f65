"""The PyTorch code generator: each op against torch.nn.functional, whole networks against
hand-written references, fillers, multipliers, generated-source hygiene."""

from __future__ import annotations

import ast
import itertools
import math
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import EXAMPLES, ROOT  # noqa: E402
from reference_models import HandAlexNet  # noqa: E402
from torch import nn  # noqa: E402

import alexdsl  # noqa: E402
import alexdsl.torch  # noqa: E402
from alexdsl.backends.torch.codegen import caffe_fans, load_weights  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402


def net(body: str, inputs: str = "input x: 4x9x11", outputs: str = "y") -> alexdsl.Network:
    return alexdsl.parse(f"network T\n{inputs}\n{body}\noutput {outputs}\n")


def run(network: alexdsl.Network, *xs: torch.Tensor, train: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    module = alexdsl.torch.build(network)
    module.train(train)
    with torch.no_grad():
        return module, module(*xs)


X = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(1))


# ops ---------------------------------------------------------------------------------------------
CONV_CASES = [(4 + 2 * (groups == 2), kernel, stride, pad, dilation, groups, "false" if stride == "1" else "true")
              for kernel, stride, pad, dilation, groups in itertools.product(
                  ["1", "3", "(3, 5)"], ["1", "(2, 1)"], ["0", "(1, 2)"], ["1", "2"], [1, 2])]


@pytest.mark.parametrize(("out", "kernel", "stride", "pad", "dilation", "groups", "bias"), CONV_CASES)
def test_conv_matches_functional(out, kernel, stride, pad, dilation, groups, bias):
    network = net(f"y: conv({out}, {kernel}, stride={stride}, pad={pad}, dilation={dilation}, groups={groups}, "
                  f"bias={bias})")
    module, y = run(network, X)
    ref = F.conv2d(X, module.y.weight, module.y.bias, stride=eval(stride), padding=eval(pad),
                   dilation=eval(dilation), groups=groups)
    assert y.shape[1:] == network.layer("y").shape
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    assert (module.y.bias is None) == (bias == "false")


POOL_CASES = list(itertools.product(["maxpool", "avgpool"], ["3", "(3, 2)"], ["1", "2", "(2, 3)"], ["0", "1"],
                                    ["floor", "ceil"]))


@pytest.mark.parametrize(("op", "kernel", "stride", "pad", "rounding"), POOL_CASES)
def test_pools_match_functional(op, kernel, stride, pad, rounding):
    k, s, p = eval(kernel), eval(stride), int(pad)
    if p * 2 > min((k, k) if isinstance(k, int) else k):
        pytest.skip("pad larger than half the kernel is rejected")
    network = net(f"y: {op}({kernel}, stride={stride}, pad={pad}, round={rounding})")
    _, y = run(network, X)
    fn = F.max_pool2d if op == "maxpool" else F.avg_pool2d
    ref = fn(X, k, s, p, ceil_mode=rounding == "ceil")
    assert y.shape[1:] == network.layer("y").shape
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


@pytest.mark.parametrize("count_pad", ["true", "false"])
def test_avgpool_count_pad(count_pad):
    _, y = run(net(f"y: avgpool(3, stride=2, pad=1, round=ceil, count_pad={count_pad})"), X)
    ref = F.avg_pool2d(X, 3, 2, 1, ceil_mode=True, count_include_pad=count_pad == "true")
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def caffe_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Caffe's LRN ACROSS_CHANNELS, written out: x / (k + alpha/size * sum over the window of x^2)^beta."""
    c = x.shape[1]
    out = torch.empty_like(x)
    half = size // 2
    for i in range(c):
        window = x[:, max(0, i - half):min(c, i + half + 1)]
        out[:, i] = x[:, i] / (k + alpha / size * (window**2).sum(1)) ** beta
    return out


@pytest.mark.parametrize(("size", "alpha", "beta", "k"), [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.5, 2.0), (1, 1.0, 1.0, 1.0),
                                                          (7, 2.0, 0.75, 1.0)])
def test_lrn_is_caffes(size, alpha, beta, k):
    network = net(f"y: lrn({size}, alpha={alpha}, beta={beta}, k={k})", "input x: 9x5x5")
    x = torch.randn(2, 9, 5, 5, dtype=torch.float32) * 3
    _, y = run(network, x)
    torch.testing.assert_close(y, caffe_lrn(x, size, alpha, beta, k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("body", "reference"), [
    ("y: relu", F.relu),
    ("y: leaky_relu(0.2)", lambda x: F.leaky_relu(x, 0.2)),
    ("y: sigmoid", torch.sigmoid),
    ("y: tanh", torch.tanh),
    ("y: softmax", lambda x: F.softmax(x, 1)),
    ("y: flatten", lambda x: torch.flatten(x, 1)),
    ("y: adaptive_avgpool(3)", lambda x: F.adaptive_avg_pool2d(x, 3)),
    ("y: adaptive_avgpool((2, 4))", lambda x: F.adaptive_avg_pool2d(x, (2, 4))),
    ("y: global_avgpool", lambda x: x.mean((2, 3), keepdim=True)),
    ("a: relu\nb: x -> tanh\ny: concat(a, b, x)", lambda x: torch.cat([F.relu(x), torch.tanh(x), x], 1)),
    ("a: relu\nb: x -> sigmoid\ny: add(a, b, x)", lambda x: F.relu(x) + torch.sigmoid(x) + x),
    ("y: dropout(0.5)", lambda x: x),
])
def test_parameterless_ops(body, reference):
    _, y = run(net(body), X)
    torch.testing.assert_close(y, reference(X), rtol=1e-6, atol=1e-6)


def test_dropout_follows_train_and_eval():
    module = alexdsl.torch.build(net("y: dropout(0.5)"))
    x = torch.ones(4, 4, 9, 11)
    module.train()
    y = module(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    module.eval()
    assert torch.equal(module(x), x)


def test_fc_flattens_and_matches_linear():
    module, y = run(net("y: fc(7)"), X)
    torch.testing.assert_close(y, F.linear(X.flatten(1), module.y.weight, module.y.bias), rtol=0, atol=0)
    module, y = run(net("y: fc(3, bias=false)", "input x: 5"), torch.randn(2, 5))
    assert module.y.bias is None


@pytest.mark.parametrize("shape", ["4x9x11", "6"])
def test_batchnorm_train_and_eval(shape):
    network = net("y: batchnorm(eps=1e-3, momentum=0.2)", f"input x: {shape}")
    module = alexdsl.torch.build(network)
    x = torch.randn(8, *network.layer("x").shape)
    ref = (nn.BatchNorm2d if "x" in shape else nn.BatchNorm1d)(network.layer("x").shape[0], eps=1e-3, momentum=0.2)
    module.train()
    ref.train()
    torch.testing.assert_close(module(x), ref(x))
    torch.testing.assert_close(module.y.running_mean, ref.running_mean)
    module.eval()
    ref.eval()
    torch.testing.assert_close(module(x), ref(x))


def test_phase_layers_follow_training_mode():
    network = alexdsl.parse("network T\ninput x: 4x9x11\na: relu\ny: dropout(0.9) @train\nz: y -> tanh @test\n"
                            "output z\n")
    module = alexdsl.torch.build(network).eval()
    torch.testing.assert_close(module(X), torch.tanh(F.relu(X)))
    module.train()
    torch.manual_seed(0)
    y = module(torch.ones(1, 4, 9, 11))
    assert set(y.unique().tolist()) <= {0.0, 10.0}  # dropout ran, tanh did not


def test_loss_and_metrics():
    network = alexdsl.parse("network T\ninput x: 6\ninput label: class(6)\nf: fc(6)\n"
                            "loss: softmax_loss(f, label)\ntop1: accuracy(f, label) @test\n"
                            "top3: accuracy(f, label, top=3) @test\n")
    module = alexdsl.torch.build(network)
    logits = torch.randn(50, 6)
    label = torch.randint(0, 6, (50,))
    torch.testing.assert_close(module.loss(logits, label), F.cross_entropy(logits, label))
    metrics = module.metrics(logits, label)
    assert list(metrics) == ["top1", "top3"]
    assert metrics["top1"].item() == pytest.approx((logits.argmax(1) == label).float().mean().item())
    top3 = (logits.topk(3, 1).indices == label[:, None]).any(1).float().mean().item()
    assert metrics["top3"].item() == pytest.approx(top3)


def test_several_outputs_and_labels():
    network = alexdsl.parse("network T\ninput x: 6\ninput a: class(3)\ninput b: class(4)\nfa: fc(3)\nfb: x -> fc(4)\n"
                            "la: softmax_loss(fa, a)\nlb: softmax_loss(fb, b)\n")
    module = alexdsl.torch.build(network)
    x = torch.randn(5, 6)
    outputs = module(x)
    assert isinstance(outputs, tuple) and [o.shape[1] for o in outputs] == [3, 4]
    a, b = torch.randint(0, 3, (5,)), torch.randint(0, 4, (5,))
    expected = F.cross_entropy(outputs[0], a) + F.cross_entropy(outputs[1], b)
    torch.testing.assert_close(module.loss(outputs, (a, b)), expected)


# whole networks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("example", sorted(p.stem for p in EXAMPLES.glob("*.adsl")))
def test_examples_state_keys_and_shapes(example):
    network = alexdsl.load(EXAMPLES / f"{example}.adsl")
    large = network.totals()["params"] > 500_000_000  # Llama-3.2-1B: built on the meta device, without memory
    with torch.device("meta" if large else "cpu"):
        module = alexdsl.torch.build(network).eval()
    keys = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert keys == network.state_keys()
    assert list(keys) == list(network.state_keys())  # same order
    if network.totals()["macs"] < 2e9 and not large:
        source = network.layer(network.data_inputs[0])
        x = (torch.randint(0, source.attrs.get("vocab") or 2, (1, *source.shape)) if source.is_tokens
             else torch.randn(1, *source.shape))
        with torch.no_grad():
            y = module(x)
        assert tuple(y.shape[1:]) == network.layer(network.outputs[0]).shape


def caffe_alexnet_functional(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """Caffe's bvlc_alexnet deploy net, written by hand."""
    x = F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"], stride=4))
    x = F.local_response_norm(F.max_pool2d(x, 3, 2), 5, alpha=1e-4, beta=0.75, k=1.0)
    x = F.relu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2))
    x = F.local_response_norm(F.max_pool2d(x, 3, 2), 5, alpha=1e-4, beta=0.75, k=1.0)
    x = F.relu(F.conv2d(x, w["conv3.weight"], w["conv3.bias"], padding=1))
    x = F.relu(F.conv2d(x, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2)), 3, 2)
    x = F.relu(F.linear(x.flatten(1), w["fc6.weight"], w["fc6.bias"]))
    x = F.relu(F.linear(x, w["fc7.weight"], w["fc7.bias"]))
    return F.linear(x, w["fc8.weight"], w["fc8.bias"])


def test_caffe_alexnet_matches_handwritten_functional():
    network = alexdsl.load(EXAMPLES / "alexnet.adsl")
    torch.manual_seed(0)
    module = alexdsl.torch.build(network).eval()
    g = torch.Generator().manual_seed(3)
    weights = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in module.state_dict().items()}
    load_weights(module, weights)
    x = torch.randn(2, 3, 227, 227, generator=g) * 50
    with torch.no_grad():
        torch.testing.assert_close(module(x), caffe_alexnet_functional(x, weights), rtol=1e-5, atol=1e-5)


def map_in_order(reference: nn.Module, module: nn.Module) -> dict[str, torch.Tensor]:
    """The reference's state_dict renamed to the module's keys, in parameter order."""
    ours, theirs = list(module.state_dict()), list(reference.state_dict().values())
    assert len(ours) == len(theirs)
    mapped = dict(zip(ours, theirs, strict=True))
    for key, value in mapped.items():
        assert tuple(value.shape) == tuple(module.state_dict()[key].shape), key
    return mapped


def check_torchvision_variant(reference: nn.Module) -> None:
    network = alexdsl.load(EXAMPLES / "alexnet_torchvision.adsl")
    module = alexdsl.torch.build(network).eval()
    reference.eval()
    load_weights(module, map_in_order(reference, module))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in module.parameters()) == 61_100_840


def test_torchvision_variant_matches_handwritten_sequential():
    torch.manual_seed(0)
    check_torchvision_variant(HandAlexNet())


def test_torchvision_variant_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    check_torchvision_variant(torchvision.models.alexnet())


# fillers and multipliers ---------------------------------------------------------------------------
def test_caffe_fans():
    assert caffe_fans((96, 3, 11, 11)) == (363, 11616)
    assert caffe_fans((256, 48, 5, 5)) == (1200, 6400)  # grouped: in/groups*kh*kw, out*kh*kw
    assert caffe_fans((4096, 9216)) == (9216, 4096)


@pytest.mark.parametrize(("filler", "mean", "std"), [
    ("gaussian(0.05)", 0.0, 0.05),
    ("gaussian(0.02, mean=0.5)", 0.5, 0.02),
    ("uniform(-0.3, 0.3)", 0.0, 0.6 / math.sqrt(12)),
    ("uniform(min=1, max=2)", 1.5, 1 / math.sqrt(12)),
    ("constant(0.7)", 0.7, 0.0),
    ("xavier()", 0.0, math.sqrt(3 / (64 / 2 * 9)) / math.sqrt(3)),  # fan_in = in/groups*kh*kw
    ("xavier(fan_out)", 0.0, math.sqrt(3 / (128 * 9)) / math.sqrt(3)),
    ("xavier(average)", 0.0, math.sqrt(3 / ((288 + 1152) / 2)) / math.sqrt(3)),
    ("msra()", 0.0, math.sqrt(2 / 288)),
    ("msra(fan_out)", 0.0, math.sqrt(2 / 1152)),
])
def test_filler_statistics(filler, mean, std):
    network = net(f"y: conv(128, 3, groups=2, weight={filler})", "input x: 64x6x6")
    torch.manual_seed(0)
    weight = alexdsl.torch.build(network).y.weight.detach()
    assert weight.mean().item() == pytest.approx(mean, abs=max(3 * std / math.sqrt(weight.numel()), 1e-6))
    assert weight.std().item() == pytest.approx(std, rel=0.03, abs=1e-6)
    if filler.startswith(("xavier", "uniform")):
        bound = (math.sqrt(3) * std) if filler.startswith("xavier") else None
        if bound:
            assert weight.abs().max().item() <= bound + 1e-7


def test_bias_fillers_and_reset_parameters():
    module = alexdsl.torch.build(alexdsl.load(EXAMPLES / "alexnet.adsl"))
    assert torch.all(module.conv2.bias == 1) and torch.all(module.conv1.bias == 0)
    assert torch.all(module.fc6.bias == 1) and torch.all(module.fc8.bias == 0)
    assert module.fc6.weight.std().item() == pytest.approx(0.005, rel=0.01)
    with torch.no_grad():
        module.conv2.bias.zero_()
    module.reset_parameters()
    assert torch.all(module.conv2.bias == 1)


def test_param_groups_apply_multipliers():
    network = alexdsl.load(EXAMPLES / "alexnet.adsl")
    module = alexdsl.torch.build(network)
    groups = module.param_groups(0.01, 5e-4)
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, param in module.named_parameters():
        layer, pname = name.rsplit(".", 1)
        spec = network.layer(layer).params[pname]
        assert by_param[id(param)]["lr"] == pytest.approx(0.01 * spec.lr_mult)
        assert by_param[id(param)]["weight_decay"] == pytest.approx(5e-4 * spec.decay_mult)
    assert sorted((g["lr"], g["weight_decay"]) for g in groups) == [(0.01, 5e-4), (0.02, 0.0)]
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))


# generated source ----------------------------------------------------------------------------------
def test_generated_source_is_deterministic_and_standalone(tmp_path):
    network = alexdsl.load(EXAMPLES / "resnet18.adsl")
    a, b = alexdsl.torch.generate_source(network), alexdsl.torch.generate_source(alexdsl.load(EXAMPLES /
                                                                                              "resnet18.adsl"))
    assert a == b
    assert a.splitlines()[:3] == [f"# Generated by alexdsl {alexdsl.__version__} (torch backend); do not edit.",
                                  f"# Source: {str(EXAMPLES / 'resnet18.adsl')!a}", "# Network: 'ResNet18'"]
    imports = [line for line in a.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import torch", "import torch.nn.functional as F", "from torch import nn"]
    path = tmp_path / "resnet18_torch.py"
    path.write_text(a)
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import resnet18_torch as m; "
            "net = m.ResNet18(); print(sorted(net.state_dict())[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bn1.bias"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_generated_source_is_ruff_clean(tmp_path):
    for example in sorted(EXAMPLES.glob("*.adsl")):
        (tmp_path / f"{example.stem}_torch.py").write_text(alexdsl.torch.generate_source(alexdsl.load(example)))
    result = subprocess.run(["ruff", "check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP",
                             "--line-length", "120", "--target-version", "py310", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def hostile_network() -> alexdsl.Network:
    """A network whose names and strings are hostile, built in Python: IR files with such names are refused
    (tests/test_ir_json.py), so this checks the code generator's own defences behind that check."""
    import dataclasses

    from alexdsl.ir.network import graph_of

    network = alexdsl.parse("network T\ndescription \"d\"\ninput x: 3x8x8\ninput label: class(4)\n"
                            "a: conv(4, 3)\nb: fc(4)\nloss: softmax_loss(b, label)\nacc: accuracy(b, label)\n")
    renames = {"a": "x__import__('os').system('echo pwned')#", "b": "class.0.lambda\"\'\'\'\nimport os"}
    graph = graph_of(dataclasses.replace(layer, name=renames.get(layer.name, layer.name),
                                         inputs=[renames.get(i, i) for i in layer.inputs])
                     for layer in network.layers())
    return alexdsl.Network("Evil\nimport os; os.system('echo pwned')", graph,
                           description="\'\'\'\"\"\"\nimport os\n", inputs=network.inputs,
                           outputs=[renames.get(o, o) for o in network.outputs], source_file="x.adsl\nimport os")


def test_hostile_names_are_refused_in_ir_files():
    with pytest.raises(AlexDSLError, match="not a valid name"):
        alexdsl.from_json(hostile_network().to_json())


def test_names_and_strings_cannot_inject_code(tmp_path):
    network = hostile_network()
    source = alexdsl.torch.generate_source(network)
    tree = compile(source, "hostile", "exec", flags=ast.PyCF_ONLY_AST)
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    assert imported == ["torch", "torch.nn.functional"]
    for line in source.splitlines():
        assert not line.strip().startswith(("import os", "os.system"))
    module = alexdsl.torch.build(network)
    keys = set(module.state_dict())
    assert "x__import__('os').system('echo pwned')#.weight" in keys
    assert any(k.startswith("class.0.lambda") for k in keys)
    y = module(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 4)
    assert module.description == network.description
    (tmp_path / "evil.py").write_text(source)
    result = subprocess.run(["ruff", "check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP",
                             "--ignore", "E501", str(tmp_path / "evil.py")], capture_output=True, text=True) \
        if shutil.which("ruff") else None
    assert result is None or result.returncode == 0, result.stdout


def test_layer_name_clashing_with_module_attribute_is_an_error():
    with pytest.raises(AlexDSLError, match="clashes"):
        alexdsl.torch.build(net("train: conv(4, 3)\ny: relu"))


def test_load_weights_names_key_and_shapes(tmp_path):
    from safetensors.torch import save_file

    network = alexdsl.load(EXAMPLES / "lenet.adsl")
    module = alexdsl.torch.build(network)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["conv1.weight"] = torch.zeros(20, 1, 3, 3)
    del state["ip2.bias"]
    state["extra"] = torch.zeros(1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(AlexDSLError) as info:
        load_weights(module, tmp_path / "w.safetensors")
    text = str(info.value)
    assert "conv1.weight" in text and "(20, 1, 5, 5)" in text and "(20, 1, 3, 3)" in text
    assert "ip2.bias" in text and "extra" in text
    with pytest.raises(AlexDSLError, match="no such weights file"):
        load_weights(module, tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", ["training", "_modules", "forward", "layer.training"])
def test_a_layer_named_like_an_instance_attribute_of_nn_module_is_an_error(name):
    with pytest.raises(AlexDSLError, match="clashes"):
        alexdsl.torch.build(net(f"{name}: conv(4, 3)\ny: relu"))
