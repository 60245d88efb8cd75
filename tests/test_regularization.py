"""L2/L1 regularization (spec fields ``l2`` and ``l1``): the generated modules' loss and
gradient against PyTorch autograd, central finite differences, the spec's and the command
line's refusals, and byte-identical output without a penalty."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sympy as sp
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec, load_spec, preset, spec_from_dict

from chainrule.cli import main


def _torch():
    """PyTorch, imported when a comparison runs (not when the file is collected): its
    import takes a second and a half, and only the comparisons need it."""
    return pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")


#: (sizes, activations, cost, layout, bias): the networks every penalty is checked on.
NETWORKS = {
    "sigmoid-quadratic-columns": ([3, 4, 2], ["sigmoid", "sigmoid"], "quadratic", "columns", True),
    "relu-softmax-ce-rows": ([4, 5, 3], ["relu", "softmax"], "cross-entropy", "rows", True),
    "nobias-tanh-bce": ([3, 4, 1], ["tanh", "sigmoid"], "binary-cross-entropy", "columns", False),
    "custom-sin": ([2, 3, 2], ["sin(x) + x/3", "sigmoid"], "quadratic", "rows", True),
}
PENALTIES = {"l2": (0.03, 0.0), "l1": (0.0, 0.02), "both": (0.05, 0.01)}

_TORCH_ACT: dict[str, Callable] = {
    "sigmoid": lambda z: z.sigmoid(),
    "relu": lambda z: z.relu(),
    "tanh": lambda z: z.tanh(),
    "sin(x) + x/3": lambda z: z.sin() + z / 3,
}


def _spec(name: str, l2: float, l1: float) -> Spec:
    sizes, acts, cost, layout, bias = NETWORKS[name]
    return Spec.from_sizes(sizes, acts, cost, layout=layout, bias=bias, l2=l2, l1=l1)


def _problem(spec: Spec, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Random parameters (one weight exactly 0), a batch of 5 examples and its targets."""
    rng = np.random.default_rng(seed)
    rows = spec.layout == "rows"
    params = {}
    for index, layer in enumerate(spec.layers, start=1):
        n_in, n_out = spec.sizes[index - 1], layer.size
        w = rng.normal(0, 0.8, (n_in, n_out) if rows else (n_out, n_in))
        w[0, 0] = 0.0  # l1's subgradient at 0 is 0, as in PyTorch
        params[f"W{index}"] = w
        if layer.bias:
            params[f"b{index}"] = rng.normal(0, 0.3, (1, n_out) if rows else (n_out, 1))
    m = 5
    x = rng.normal(0, 1, (m, spec.input_size))
    n_out = spec.sizes[-1]
    if spec.cost == "cross-entropy":
        y = np.eye(n_out)[rng.integers(0, n_out, m)]
    else:
        y = rng.uniform(0.1, 0.9, (m, n_out))
    return params, (x if rows else x.T.copy()), (y if rows else y.T.copy())


def _torch_loss_and_grad(spec: Spec, params: dict, x: np.ndarray, y: np.ndarray):
    """PyTorch autograd of mean cost + (l2/2) sum ||W||^2 + l1 sum |W|, examples as rows."""
    torch = _torch()
    rows = spec.layout == "rows"
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a = torch.tensor(x if rows else x.T, dtype=torch.float64)
    ty = torch.tensor(y if rows else y.T, dtype=torch.float64)
    z = a
    for index, layer in enumerate(spec.layers, start=1):
        w = tp[f"W{index}"] if rows else tp[f"W{index}"].T
        z = a @ w
        if layer.bias:
            z = z + (tp[f"b{index}"] if rows else tp[f"b{index}"].T)
        if layer.activation == "softmax":
            a = torch.softmax(z, dim=1)
        else:
            a = _TORCH_ACT[layer.activation](z)
    m = a.shape[0]
    if spec.cost == "quadratic":
        cost = 0.5 * torch.sum((a - ty) ** 2) / m
    elif spec.cost == "cross-entropy":
        cost = -torch.sum(ty * torch.log_softmax(z, dim=1)) / m
    else:
        cost = torch.nn.functional.binary_cross_entropy_with_logits(z, ty, reduction="sum") / m
    for index in range(1, spec.depth + 1):
        w = tp[f"W{index}"]
        cost = cost + spec.l2 / 2 * torch.sum(w * w) + spec.l1 * torch.sum(torch.abs(w))
    cost.backward()
    return float(cost.detach()), {k: v.grad.numpy() for k, v in tp.items()}


# Against PyTorch in the full suite only (slow): the quick subset checks both forms by
# central differences (test_central_differences_on_every_entry) and the split-line test.
@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_loss_and_gradient_equal_pytorch(net, penalty, form, load_source) -> None:
    spec = _spec(net, *PENALTIES[penalty])
    source = generate_module(spec) if form == "vectorized" else generate_plain(spec)
    module = load_source(source)
    params, x, y = _problem(spec)
    cost, grads = module.loss_and_grad(params, x, y)
    want_cost, want = _torch_loss_and_grad(spec, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-9)
    assert module.loss(params, x, y) == pytest.approx(want_cost, rel=1e-9)
    for key, value in want.items():
        scale = np.max(np.abs(value))
        np.testing.assert_allclose(grads[key], value, rtol=1e-9, atol=1e-9 * scale)
    # The penalty is really there: without it the gradient of W1 differs.
    plain_spec = spec.replace(l2=0.0, l1=0.0)
    _, bare = load_source(generate_module(plain_spec)).loss_and_grad(params, x, y)
    assert np.max(np.abs(bare["W1"] - grads["W1"])) > 1e-3


def _central_differences(module: ModuleType, params: dict, x, y, h: float = 1e-6) -> dict:
    out = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + h
            up = module.loss(params, x, y)
            value[index] = saved - h
            down = module.loss(params, x, y)
            value[index] = saved
            grad[index] = (up - down) / (2 * h)
        out[key] = grad
    return out


@pytest.mark.parametrize("form", ["vectorized", "plain"])
@pytest.mark.parametrize(
    "net",
    # The custom activation's module takes 0.7 s to derive: full suite only.
    [n if n != "custom-sin" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(NETWORKS)],
)
def test_central_differences_on_every_entry(net, form, load_source) -> None:
    spec = _spec(net, *PENALTIES["both"])
    source = generate_module(spec) if form == "vectorized" else generate_plain(spec)
    module = load_source(source)
    params, x, y = _problem(spec, seed=1)
    for key in params:  # l1 away from its kink at 0
        if key.startswith("W"):
            params[key][0, 0] = 0.5
    _, grads = module.loss_and_grad(params, x, y)
    numeric = _central_differences(module, params, x, y)
    for key, value in numeric.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-6, atol=1e-8)
    assert module.check_gradient(params, x, y) < 1e-6


def test_module_header_and_spec_state_the_coefficients(load_source) -> None:
    spec = _spec("sigmoid-quadratic-columns", 0.03, 0.02)
    module = load_source(generate_module(spec))
    assert "Regularization: l2 = 0.03, l1 = 0.02" in module.__doc__
    assert module.SPEC["l2"] == 0.03 and module.SPEC["l1"] == 0.02
    assert spec_from_dict(module.SPEC) == spec


@pytest.mark.slow
def test_no_penalty_leaves_modules_unchanged() -> None:
    spec = _spec("relu-softmax-ce-rows", 0.0, 0.0)
    explicit = Spec.from_sizes(
        [4, 5, 3], ["relu", "softmax"], "cross-entropy", layout="rows", l2=0, l1=-0.0
    )
    assert generate_module(explicit) == generate_module(spec)
    assert "l2" not in spec.to_dict() and "egulariz" not in generate_module(spec)


def test_weights_only_biases_are_not_penalized(load_source) -> None:
    spec = _spec("sigmoid-quadratic-columns", 0.5, 0.5)
    module = load_source(generate_module(spec))
    bare = load_source(generate_module(spec.replace(l2=0.0, l1=0.0)))
    params, x, y = _problem(spec)
    _, g = module.loss_and_grad(params, x, y)
    _, g0 = bare.loss_and_grad(params, x, y)
    np.testing.assert_array_equal(g["b1"], g0["b1"])
    assert g["W1"][0, 0] == g0["W1"][0, 0] + 0.0  # W1[0, 0] = 0: l2 w = 0, sign(0) = 0


@pytest.mark.parametrize(
    "value",
    ["0.1", float("nan"), float("inf"), -1.0, True, 1e308, 10**400, None, [0.1]],
)
def test_spec_refuses_bad_coefficients(value) -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([2, 1], ["sigmoid"], "quadratic", l2=value)
    assert str(info.value).startswith("l2: ") and "\n" not in str(info.value)
    with pytest.raises(SpecError, match=r"^l1: "):
        spec_from_dict(
            {
                "input": 2,
                "cost": "quadratic",
                "layers": [{"size": 1, "activation": "sigmoid"}],
                "l1": value,
            }
        )


def test_negative_zero_and_ints_become_plain_floats() -> None:
    spec = Spec.from_sizes([2, 1], ["sigmoid"], "quadratic", l2=-0.0, l1=2)
    assert repr(spec.l2) == "0.0" and repr(spec.l1) == "2.0" and not spec.l2
    assert spec.regularized


ONE_LINER = ("--sizes", "2,3,1", "--activations", "sigmoid,sigmoid", "--cost", "quadratic")


@pytest.mark.parametrize(
    "flags, field",
    [
        (("--l2", "\u0660.\u0661"), "--l2"),  # Arabic-Indic digits
        (("--l2", "nan"), "--l2"),
        (("--l1", "-0.5"), "--l1"),
        (("--l2", "1e999"), "--l2"),
        (("--l2", "0.1", "--l2", "0.2"), "--l2"),
        (("--l1", "2e6"), "--l1"),
    ],
)
def test_cli_refuses_bad_flags(flags, field, tmp_path, capsys) -> None:
    out = tmp_path / "m.py"
    assert main(["generate", *ONE_LINER, *flags, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {field}: " in err, err
    assert not out.exists()


def test_cli_flags_reach_the_module(tmp_path, load_source) -> None:
    out = tmp_path / "m.py"
    assert main(["generate", *ONE_LINER, "--l2", "1e-2", "--l1", "0.005", "-o", str(out)]) == 0
    module = load_source(out.read_text(encoding="utf-8"))
    assert (module.SPEC["l2"], module.SPEC["l1"]) == (0.01, 0.005)


def test_graph_draws_the_penalty() -> None:
    """Each layer's penalty is drawn and counted (more in tests/test_graph_penalty.py)."""
    from chainrule.graph import build_graph

    plain = build_graph(_spec("sigmoid-quadratic-columns", 0.0, 0.0))
    graph = build_graph(_spec("sigmoid-quadratic-columns", 0.1, 0.0))
    assert "∂P¹/∂W¹ =\\nl2 W¹" in graph.dot and "∂P²/∂W² =\\nl2 W²" in graph.dot
    assert graph.naive_walks == plain.naive_walks + 3 * 4 + 4 * 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "net, strategy",
    [
        ("sigmoid-quadratic-columns", "naive"),
        ("sigmoid-quadratic-columns", "cse"),
        ("sigmoid-quadratic-columns", "backprop"),
        pytest.param("relu-softmax-ce-rows", "backprop", marks=pytest.mark.slow),
        pytest.param("nobias-tanh-bce", "backprop", marks=pytest.mark.slow),
        pytest.param("custom-sin", "backprop", marks=pytest.mark.slow),
    ],
)
def test_unrolled_module_equals_pytorch(net, strategy, load_source) -> None:
    from chainrule.codegen.emit import lint_module
    from chainrule.codegen.unrolled import generate_unrolled

    spec = _spec(net, 0.3, 0.2)
    source = generate_unrolled(spec, strategy)
    lint_module(source)
    module = load_source(source)
    params, x, y = _problem(spec)
    cost, grads = module.loss_and_grad(params, x, y)
    want_cost, want = _torch_loss_and_grad(spec, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-9)
    assert module.loss(params, x, y) == pytest.approx(want_cost, rel=1e-9)
    for key, value in want.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-9, atol=1e-9 * np.max(np.abs(value)))


# -- the scalar level: compare's counts ----------------------------------------------------


def test_3b1b_chain_counts_with_l2_by_hand() -> None:
    """The 3b1b chain (1-1-1-1 sigmoid, C = (a^3 - y)^2) with l2 = 1/2, from the definition
    of tests/test_opcount_by_hand.py: 11 forward and 25 backprop operations without it."""
    from chainrule.derive.scalar import count_strategy, gradients, layer_counts

    spec = preset("3b1b-chain").replace(l2=0.5)
    # The cost adds (1/4) w^2 per weight (a power and a product: 2) and 3 additions.
    penalty_cost = 3 * 2 + 3
    # BP4 becomes delta a + w/2: one product and one addition more per weight.
    penalty_bp4 = 3 * 2
    counts = layer_counts(spec)
    assert counts.forward_ops == 11 + penalty_cost == 20
    assert counts.backprop_ops == 25 + penalty_bp4 == 31
    assert count_strategy(gradients(spec, "backprop")).total == 31


def test_3b1b_chain_counts_with_l1_by_hand() -> None:
    from chainrule.derive.scalar import layer_counts

    spec = preset("3b1b-chain").replace(l1=0.25)
    counts = layer_counts(spec)
    # cost: (1/4) |w| per weight (abs and a product: 2) and 3 additions; BP4: delta a +
    # sign(w)/4, a sign, a product and an addition more per weight.
    assert counts.forward_ops == 11 + 3 * 2 + 3
    assert counts.backprop_ops == 25 + 3 * 3


@pytest.mark.parametrize(
    "net",
    ["sigmoid-quadratic-columns", pytest.param("relu-softmax-ce-rows", marks=pytest.mark.slow)],
)
def test_naive_cse_and_backprop_agree_with_a_penalty(net) -> None:
    """Naive diff of the penalized scalar cost, its CSE and the memoized program: the same
    gradient at random points (so the count compares the same function)."""
    from chainrule.derive.scalar import gradient_values, gradients, random_point

    spec = _spec(net, 0.3, 0.2)
    found = {s: gradients(spec, s) for s in ("naive", "cse", "backprop")}
    for seed in range(3):
        point = random_point(found["naive"].network, seed)
        naive = gradient_values(found["naive"], point)
        for strategy in ("cse", "backprop"):
            other = gradient_values(found[strategy], point)
            assert all(abs(a - b) < 1e-30 for a, b in zip(naive, other, strict=True))
    bare = gradients(spec.replace(l2=0.0, l1=0.0), "naive")
    point = random_point(bare.network, 0)
    assert gradient_values(bare, point) != gradient_values(found["naive"], point)


# -- Keras import: kernel_regularizer ------------------------------------------------------


def _keras_model(*regularizers, bias_regularizer=None) -> dict:
    """A Keras 3 style Sequential 3-4-2 (relu, softmax), one kernel_regularizer per Dense."""
    dense = []
    for index, (units, act, reg) in enumerate(
        zip((4, 2), ("relu", "softmax"), regularizers, strict=True)
    ):
        config = {"name": f"dense_{index}", "units": units, "activation": act, "use_bias": True}
        config["kernel_regularizer"] = reg
        config["bias_regularizer"] = bias_regularizer
        config["activity_regularizer"] = None
        dense.append({"module": "keras.layers", "class_name": "Dense", "config": config})
    layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}}, *dense]
    return {"class_name": "Sequential", "config": {"name": "reg", "layers": layers}}


def _keras_reg(kind: str, **config: float) -> dict:
    return {"module": "keras.regularizers", "class_name": kind, "config": config}


@pytest.mark.parametrize(
    "reg, l2, l1",
    [
        (_keras_reg("L2", l2=0.01), 0.02, 0.0),  # Keras adds 0.01 sum w^2: l2/2 = 0.01
        (_keras_reg("L1", l1=0.003), 0.0, 0.003),
        (_keras_reg("L1L2", l1=0.001, l2=0.25), 0.5, 0.001),
        (None, 0.0, 0.0),
    ],
)
def test_keras_kernel_regularizer_maps_to_l2_and_l1(reg, l2, l1) -> None:
    from chainrule.importers import spec_from_keras

    spec = spec_from_keras(_keras_model(reg, reg), "cross-entropy")
    assert (spec.l2, spec.l1) == (l2, l1)


@pytest.mark.slow
def test_keras_regularized_loss_is_keras_loss(load_source) -> None:
    """The module's loss is Keras' own: mean cross-entropy + c2 sum w^2 + c1 sum |w|."""
    from chainrule.importers import params_from_keras, spec_from_keras

    c2, c1 = 0.01, 0.002
    reg = _keras_reg("L1L2", l1=c1, l2=c2)
    spec = spec_from_keras(_keras_model(reg, reg), "cross-entropy")
    rng = np.random.default_rng(4)
    weights = [rng.standard_normal(s) for s in [(3, 4), (4,), (4, 2), (2,)]]
    params = params_from_keras(weights, spec)
    x = rng.standard_normal((6, 3))
    y = np.eye(2)[rng.integers(0, 2, 6)]
    h = np.maximum(x @ weights[0] + weights[1], 0)
    z = h @ weights[2] + weights[3]
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    kernels = (weights[0], weights[2])
    keras_loss = -(y * logp).sum() / 6 + sum(c2 * (k**2).sum() + c1 * abs(k).sum() for k in kernels)
    module = load_source(generate_module(spec))
    assert module.loss(params, x, y) == pytest.approx(keras_loss, rel=1e-12)


@pytest.mark.parametrize(
    "model, field",
    [
        (_keras_model(_keras_reg("L2", l2=0.01), None), "layers[2] ('dense_1').kernel_regularizer"),
        (
            _keras_model(_keras_reg("L2", l2=0.01), _keras_reg("L2", l2=0.02)),
            "layers[2] ('dense_1').kernel_regularizer",
        ),
        (
            _keras_model(_keras_reg("OrthogonalRegularizer", factor=0.01), None),
            "layers[1] ('dense_0').kernel_regularizer",
        ),
        (
            _keras_model(None, None, bias_regularizer=_keras_reg("L2", l2=0.1)),
            "layers[1] ('dense_0').bias_regularizer",
        ),
        (_keras_model(_keras_reg("L2", l2="0.1"), None), "kernel_regularizer.l2"),
    ],
)
def test_keras_regularizers_chainrule_cannot_express_are_refused(model, field) -> None:
    from chainrule.importers import spec_from_keras

    with pytest.raises(SpecError) as info:
        spec_from_keras(model, "cross-entropy")
    assert field in str(info.value) and "\n" not in str(info.value)


# -- the README's claims ---------------------------------------------------------------------

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_spec_block_reads_l2_and_l1(tmp_path) -> None:
    """The README's spec format block is a valid spec; set, its l2 and l1 reach the spec."""
    section = README.split("## The spec format", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert "l2 = 0.0" in block and "l1 = 0.0" in block
    path = tmp_path / "net.toml"
    path.write_text(block, encoding="utf-8")
    assert not load_spec(path).regularized
    path.write_text(block.replace("l2 = 0.0", "l2 = 0.25").replace("l1 = 0.0", "l1 = 1"))
    spec = load_spec(path)
    assert (spec.l2, spec.l1) == (0.25, 1.0)
    json_path = tmp_path / "net.json"
    json_path.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    assert load_spec(json_path) == spec


def test_flags_apply_to_a_preset_a_file_and_an_import(tmp_path) -> None:
    from chainrule.cliargs import Parser, add_spec_arguments, spec_from_args

    parser = Parser(prog="chainrule test")
    add_spec_arguments(parser)
    preset = spec_from_args(parser.parse_args(["--preset", "cheatsheet-relu", "--l2", "0.5"]))
    assert (preset.l2, preset.l1) == (0.5, 0.0)
    path = tmp_path / "net.json"
    path.write_text(json.dumps(_spec("nobias-tanh-bce", 0.1, 0.0).to_dict()), encoding="utf-8")
    from_file = spec_from_args(parser.parse_args([str(path), "--l1", "3e-3"]))
    assert (from_file.l2, from_file.l1) == (0.1, 0.003)
    keras = tmp_path / "model.json"
    keras.write_text(json.dumps(_keras_model(None, None)), encoding="utf-8")
    args = ["--from-keras", str(keras), "--cost", "cross-entropy", "--l2", "0.02"]
    assert spec_from_args(parser.parse_args(args)).l2 == 0.02


def test_sgd_step_and_train_include_the_penalty(load_source) -> None:
    spec = _spec("sigmoid-quadratic-columns", 0.3, 0.1)
    module = load_source(generate_module(spec))
    params, x, y = _problem(spec)
    _, grads = module.loss_and_grad(params, x, y)
    expected = {k: params[k] - 0.5 * grads[k] for k in params}
    stepped = {k: v.copy() for k, v in params.items()}
    module.sgd_step(stepped, x, y, 0.5)
    trained = {k: v.copy() for k, v in params.items()}
    module.train(trained, x, y, epochs=1, batch_size=x.shape[1], lr=0.5)
    for key, value in expected.items():
        np.testing.assert_allclose(stepped[key], value, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(trained[key], value, rtol=1e-12, atol=1e-14)


def test_nielsen_lambda_over_n_is_l2(load_source) -> None:
    """Nielsen's C = C0 + lambda/(2n) sum w^2 over n examples is chainrule's l2 = lambda/n."""
    lam, n = 5.0, 5
    spec = _spec("sigmoid-quadratic-columns", lam / n, 0.0)
    params, x, y = _problem(spec)
    assert x.shape[1] == n
    c0 = load_source(generate_module(spec.replace(l2=0.0))).loss(params, x, y)
    squares = sum(np.sum(params[k] ** 2) for k in ("W1", "W2"))
    nielsen = c0 + lam / (2 * n) * squares
    assert load_source(generate_module(spec)).loss(params, x, y) == pytest.approx(nielsen, 1e-13)


def test_graph_command_takes_the_penalty(tmp_path, capsys) -> None:
    out = tmp_path / "g.dot"
    assert main(["graph", *ONE_LINER, "--l1", "0.1", "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert "penalty l1 = 0.1" in out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_torch_import_takes_no_weight_decay() -> None:
    from chainrule.importers import from_torch

    torch = _torch()
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid())
    assert not from_torch(model, "quadratic").regularized


def test_a_planted_wrong_penalty_derivative_is_caught(monkeypatch, load_source) -> None:
    """BP4's penalty term comes from SymPy's diff: planting l2/2 w (the classic slip) in
    its place makes the module's gradient disagree with finite differences of its loss."""
    from chainrule.derive import penalty

    spec = _spec("sigmoid-quadratic-columns", 0.4, 0.0)
    params, x, y = _problem(spec)
    right = load_source(generate_module(spec))
    assert right.check_gradient(params, x, y) < 1e-6
    monkeypatch.setattr(
        penalty, "penalty_derivative", lambda element: penalty.L2 / 2 * penalty.WEIGHT
    )
    wrong = load_source(generate_module(spec))
    assert "+= 0.2 * W1" in wrong.__loader__.get_data(wrong.__file__).decode()
    assert wrong.check_gradient(params, x, y) > 1e-2


def test_a_long_plain_bp4_line_is_split_and_still_right(load_source) -> None:
    """With coefficients of 16 digits the plain form's BP4 no longer fits one line: the
    product comes first, then one in-place addition per penalty term."""
    spec = _spec("sigmoid-quadratic-columns", 1 / 3, 1 / 7)
    source = generate_plain(spec)
    assert "    dC_dW1 = delta1 @ a0.T / m\n" in source
    assert "    dC_dW1 += 0.3333333333333333 * W1\n" in source
    assert "    dC_dW1 += 0.14285714285714285 * np.sign(W1)\n" in source
    params, x, y = _problem(spec)
    cost, grads = load_source(source).loss_and_grad(params, x, y)
    # The vectorized form of the same network, which test_loss_and_gradient_equal_pytorch
    # holds against PyTorch (PyTorch is not imported in the quick subset).
    want_cost, want = load_source(generate_module(spec)).loss_and_grad(params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-12)
    for key, value in want.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_regenerate_keeps_a_regularized_module(tmp_path, capsys) -> None:
    out = tmp_path / "m.py"
    assert main(["generate", *ONE_LINER, "--l2", "0.125", "-o", str(out)]) == 0
    before = out.read_text(encoding="utf-8")
    assert main(["regenerate", "--check", str(out)]) == 0
    out.write_text(before.replace("l2 = 0.125, l1", "l2 = 0.5, l1"), encoding="utf-8")
    assert main(["regenerate", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == before


@pytest.mark.slow
def test_run_statement_computes_the_penalized_cost_and_bp4(load_source) -> None:
    """The statements' own evaluator (the one the derivation runs) gives the module's values."""
    import sympy as sp
    from chainrule.derive.batch import batch_program, run_statement
    from chainrule.derive.layers import derive_network

    for net in ("sigmoid-quadratic-columns", "relu-softmax-ce-rows"):
        spec = _spec(net, 0.25, 0.125)
        params, x, y = _problem(spec)
        env = {k: sp.Matrix(v.tolist()) for k, v in params.items()}
        env.update(x=sp.Matrix(x.tolist()), y=sp.Matrix(y.tolist()))
        rows = spec.layout == "rows"
        for s in batch_program(derive_network(spec)):
            env[s.target] = run_statement(s, env, rows, 5, at=lambda e, v: e.xreplace(v).evalf())
        cost, grads = load_source(generate_module(spec)).loss_and_grad(params, x, y)
        assert float(env["C"][0, 0]) == pytest.approx(cost, rel=1e-12)
        for index in (1, 2):
            got = np.array(env[f"dC_dW{index}"].tolist(), dtype=float)
            np.testing.assert_allclose(got, grads[f"W{index}"], rtol=1e-10, atol=1e-13)


# -- the derivation document ---------------------------------------------------------------

#: BP4 as each notation writes it, with the penalty term SymPy's diff gives.
BP4_PENALTY = {
    "nielsen": "\\lambda w^{2}_{jk}",
    "3b1b": "\\lambda_{2} w^{(L)}_{jk}",
    "cheatsheet": "\\lambda_{2} W_{o,jk}",
    "course": "\\lambda_{2} w^{2}_{jk}",
}


def _document_spec(l2: float = 0.25) -> Spec:
    return Spec.from_sizes([2, 2, 2], ["tanh", "sigmoid"], "quadratic", l2=l2, l1=0.125)


@pytest.mark.slow
@pytest.mark.parametrize(
    "notation",
    [
        "nielsen",
        *(pytest.param(n, marks=pytest.mark.slow) for n in ("3b1b", "cheatsheet", "course")),
    ],
)
def test_document_bp4_shows_the_penalty_and_holds(notation) -> None:
    from chainrule.derive.document import check_step, derivation

    doc = derivation(_document_spec(), notation)
    bp4 = [step for step in doc if step.label == "BP4"]
    assert bp4 and all("\\lambda_{1} \\operatorname{sign}" in step.latex for step in bp4)
    assert any(BP4_PENALTY[notation] in step.latex for step in bp4), [s.latex for s in bp4]
    assert all(check_step(step, points=1, seed=2) for step in bp4)
    cost = next(step for step in doc if step.title == "Cost of the batch")
    assert "\\left|" in cost.latex and check_step(cost, points=1)


@pytest.mark.slow
@pytest.mark.parametrize("notation", sorted(BP4_PENALTY))
def test_every_step_of_a_regularized_document_holds(notation) -> None:
    from chainrule.derive.document import check_step, derivation

    for layout in ("columns", "rows"):
        doc = derivation(_document_spec().replace(layout=layout), notation)
        failed = [step.title for step in doc if not check_step(step, points=1, seed=4)]
        assert failed == []


def test_nielsen_document_names_lambda_over_n() -> None:
    from chainrule.derive.document import derivation

    text = derivation(_document_spec(), "nielsen").to_text()
    assert "his lambda/n is the lambda here, l2" in text and "l2 = 0.25 and l1 = 0.125" in text


@pytest.mark.slow
def test_a_planted_wrong_penalty_derivative_fails_the_document_check(monkeypatch) -> None:
    """The document shows the penalty's derivative from penalty_derivative and checks it
    against diff of the witness's full cost: l2/2 in place of l2 is caught."""
    from chainrule.derive import penalty
    from chainrule.derive.document import check_step, derivation

    wrong = lambda element: penalty.L2 / 2 * penalty.WEIGHT + penalty.L1 * sp.sign(penalty.WEIGHT)  # noqa: E731
    monkeypatch.setattr(penalty, "penalty_derivative", wrong)
    doc = derivation(_document_spec(l2=0.375), "nielsen")  # a spec no cache has seen
    bp4 = [step for step in doc if step.label == "BP4"]
    assert bp4 and not any(check_step(step, points=1) for step in bp4)


@pytest.mark.slow
def test_worked_numbers_with_a_penalty_agree_with_the_module() -> None:
    """derive --at: every worked number, the penalty's included, matches loss_and_grad."""
    import chainrule

    spec = _document_spec().replace(layout="rows")
    at = {
        "x": [0.5, -0.25],
        "y": [0.25, 0.75],
        "params": {
            "W1": [[0.1, 0.0], [-0.3, 0.2]],
            "b1": [0.1, -0.1],
            "W2": [[0.4, -0.5], [0.3, 0.0]],
            "b2": [0.05, 0.0],
        },
    }
    text = chainrule.derivation(spec, "course", at=at).to_text()
    # l1 sum |w| + (l2/2) sum w^2 = 0.125 * 1.8 + 0.125 * 0.64 = 0.305, by hand
    assert "penalty of the weights: 0.305" in text
    assert "λ₁ sign(w²₁₁) + λ₂ w²₁₁" in text


def test_an_overflowing_penalty_gives_inf_and_check_gradient_says_so(load_source) -> None:
    """l2 at its largest (1e6) on weights of 1e160: (l2/2) w^2 overflows. The loss is inf,
    NumPy warns as np.errstate says (the module header's promise), check_gradient refuses."""
    spec = _spec("sigmoid-quadratic-columns", 1e6, 0.0)
    module = load_source(generate_module(spec))
    params, x, y = _problem(spec)
    params["W1"][1, 1] = 1e160
    with pytest.warns(RuntimeWarning, match="overflow"):
        cost, _ = module.loss_and_grad(params, x, y)
    assert cost == float("inf")
    with pytest.raises(ValueError, match="the loss is inf"), pytest.warns(RuntimeWarning):
        module.check_gradient(params, x, y)
