"""Batch normalization (``batch_norm = true`` on a hidden layer), end to end.

The gradient is PyTorch autograd's through ``torch.nn.functional.batch_norm`` in training
mode (float64, 1e-9 relative), and central finite differences; the running statistics
and inference are torch's ``BatchNorm1d``; the backward pass is SymPy's chain rule on a
batch of symbolic examples. Bad input is refused with one line naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import sympy as sp
from chainrule.codegen.emit import lint_module
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.derive import naming
from chainrule.derive.batch import batch_program, run_statement
from chainrule.derive.batch_norm import derive_backward
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Layer, Spec, spec_from_dict
from chainrule.derive.tables import ACTIVATIONS

CUSTOM = "sin(x) + x/3"
HIDDEN = sorted(name for name, row in ACTIVATIONS.items() if row.expr is not None) + [CUSTOM]
#: A few activations run with the quick tests; every one with the slow tests.
QUICK = ("relu", "tanh", CUSTOM)
#: Output activation and cost pairs, used in turn.
OUTPUTS = (
    ("softmax", "cross-entropy"),
    ("linear", "quadratic"),
    ("sigmoid", "binary-cross-entropy"),
    ("linear", "huber"),
)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, or a skip when it is absent (it is optional: pip install torch==2.13.0)."""
    return pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")


@pytest.fixture(scope="module")
def make(load_source: Callable[[str], ModuleType]) -> Callable[..., ModuleType]:
    """The module of ``spec`` (vectorized, or ``plain``), linted as the CLI does, imported once."""
    cache: dict[tuple[str, str], ModuleType] = {}

    def build(spec: Spec, form: str = "vectorized") -> ModuleType:
        key = (repr(spec.to_dict()), form)
        if key not in cache:
            source = generate_plain(spec) if form == "plain" else generate_module(spec)
            lint_module(source)
            cache[key] = load_source(source)
        return cache[key]

    return build


def _spec(act: str, index: int, layout: str = "columns") -> Spec:
    out, cost = OUTPUTS[index % len(OUTPUTS)]
    layers = (
        Layer(5, act, batch_norm=True),
        Layer(4, "tanh"),
        Layer(4, act, batch_norm=True),
        Layer(3, out),
    )
    return Spec(3, layers, cost, layout=layout)


def _problem(module: ModuleType, m: int = 6, seed: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters (gamma and beta moved off 1 and 0), inputs and targets in the layout."""
    rng = np.random.default_rng(seed)
    params = module.init_params(seed)
    for key in params:
        if key.startswith(("gamma", "beta")):
            params[key] = params[key] + 0.5 * rng.standard_normal(params[key].shape)
    sizes = module.LAYER_SIZES
    x = rng.standard_normal((m, sizes[0])) * 2 + 1
    if module.COST == "cross-entropy":
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], m)]
    elif module.COST == "binary-cross-entropy":
        y = rng.uniform(size=(m, sizes[-1]))
    else:
        y = rng.standard_normal((m, sizes[-1])) * 2
    if module.LAYOUT == "columns":
        x, y = x.T.copy(), y.T.copy()
    return params, x, y


def _torch_activation(torch, name: str, z):
    F = torch.nn.functional
    table = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky-relu": lambda t: F.leaky_relu(t, 0.01),
        "softplus": F.softplus,
        "linear": lambda t: t,
        "elu": F.elu,
        "selu": F.selu,
        "gelu": lambda t: F.gelu(t, approximate="tanh"),
        "mish": F.mish,
        CUSTOM: lambda t: torch.sin(t) + t / 3,
    }
    return table[name](z)


def _torch_loss(torch, module: ModuleType, tensors: dict, x: np.ndarray, y: np.ndarray):
    """The module's cost computed by PyTorch (rows: examples), batch norm in training mode."""
    rows = module.LAYOUT == "rows"
    a = torch.tensor(x if rows else x.T)
    target = torch.tensor(y if rows else y.T)
    outputs = [a]
    for layer, spec_layer in enumerate(module.SPEC["layers"], start=1):
        w = tensors[f"W{layer}"]
        z = a @ (w if rows else w.T)
        if spec_layer.get("batch_norm"):
            gamma = tensors[f"gamma{layer}"].reshape(-1)
            beta = tensors[f"beta{layer}"].reshape(-1)
            z = torch.nn.functional.batch_norm(z, None, None, gamma, beta, True, 0.1, 1e-5)
        if spec_layer["bias"]:
            z = z + tensors[f"b{layer}"].reshape(-1)
        act = spec_layer["activation"]
        a = torch.log_softmax(z, 1) if act == "softmax" else _torch_activation(torch, act, z)
        if spec_layer.get("skip_from") is not None:
            a = a + outputs[spec_layer["skip_from"]]
        outputs.append(a)
    m = a.shape[0]
    if module.COST == "cross-entropy":
        return -(target * a).sum() / m
    if module.COST == "binary-cross-entropy":
        return torch.nn.functional.binary_cross_entropy(a, target, reduction="sum") / m
    if module.COST == "huber":
        return torch.nn.functional.huber_loss(a, target, reduction="sum", delta=1.0) / m
    return ((a - target) ** 2).sum() / 2 / m


def _torch_gradient(torch, module, params, x, y) -> tuple[float, dict]:
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    cost = _torch_loss(torch, module, tensors, x, y)
    cost.backward()
    return cost.item(), {k: t.grad.numpy() for k, t in tensors.items()}


def _relative(ours: dict, theirs: dict) -> float:
    return max(
        float(np.max(np.abs(ours[k] - theirs[k])) / max(np.max(np.abs(theirs[k])), 1e-300))
        for k in theirs
    )


_CASES = [
    pytest.param(act, i, layout, form, marks=() if act in QUICK else pytest.mark.slow)
    for i, act in enumerate(HIDDEN)
    for layout, form in (("columns", "vectorized"), ("rows", "vectorized"), ("columns", "plain"))
]


@pytest.mark.slow
@pytest.mark.parametrize(("act", "index", "layout", "form"), _CASES)
def test_loss_and_grad_equals_torch_autograd(torch, make, act, index, layout, form):
    module = make(_spec(act, index, layout), form)
    params, x, y = _problem(module)
    cost, grads = module.loss_and_grad(params, x, y)
    their_cost, theirs = _torch_gradient(torch, module, params, x, y)
    assert sorted(grads) == sorted(theirs)
    assert abs(cost - their_cost) <= 1e-12 * max(1.0, abs(their_cost))
    assert _relative(grads, theirs) < 1e-9
    assert module.loss(params, x, y) == cost


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "form"), [("columns", "vectorized"), ("rows", "vectorized"), ("rows", "plain")]
)
def test_finite_differences_on_every_entry(make, layout, form):
    module = make(_spec("tanh", 0, layout), form)
    params, x, y = _problem(module, m=5)
    assert module.check_gradient(params, x, y) < 1e-6


@pytest.mark.slow
def test_gamma_one_beta_zero_and_no_bias(make):
    module = make(_spec("relu", 1))
    params = module.init_params(3)
    assert "b1" not in params and "b3" not in params and "b2" in params
    assert np.all(params["gamma1"] == 1) and np.all(params["beta3"] == 0)
    assert params["gamma1"].shape == params["b2"].shape[:0] + (5, 1)
    rows = make(_spec("relu", 1, "rows")).init_params(3)
    assert rows["gamma1"].shape == (1, 5) and rows["beta3"].shape == (1, 4)


def _torch_net(torch, module, params):
    """A torch Sequential equal to a relu network with one batch-normalized layer."""
    nn = torch.nn
    n0, n1, n2 = module.LAYER_SIZES
    rows = module.LAYOUT == "rows"
    lin1, bn, lin2 = nn.Linear(n0, n1, bias=False), nn.BatchNorm1d(n1), nn.Linear(n1, n2)
    net = nn.Sequential(lin1, bn, nn.ReLU(), lin2).double()
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor(params["W1"].T if rows else params["W1"]))
        bn.weight.copy_(torch.tensor(params["gamma1"].reshape(-1)))
        bn.bias.copy_(torch.tensor(params["beta1"].reshape(-1)))
        lin2.weight.copy_(torch.tensor(params["W2"].T if rows else params["W2"]))
        lin2.bias.copy_(torch.tensor(params["b2"].reshape(-1)))
    return net, bn


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "form"), [("columns", "vectorized"), ("rows", "vectorized"), ("rows", "plain")]
)
def test_running_statistics_and_inference_equal_torch_batchnorm1d(torch, make, layout, form):
    spec = Spec(4, (Layer(6, "relu", batch_norm=True), Layer(2, "linear")), "quadratic")
    module = make(spec.replace(layout=layout), form)
    params, x, y = _problem(module, m=9)
    net, bn = _torch_net(torch, module, params)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    rows = layout == "rows"
    state = module.init_state()
    assert sorted(state) == ["running_mean1", "running_var1"]
    for step in range(4):
        part = slice(0, 9) if step % 2 else slice(0, 5)  # batches of 5 and 9 examples
        xb, yb = (x[part], y[part]) if rows else (x[:, part], y[:, part])
        module.sgd_step(params, xb, yb, 0.1, state=state)
        net.train()
        optimizer.zero_grad()
        out = net(torch.tensor(xb if rows else xb.T))
        loss = ((out - torch.tensor(yb if rows else yb.T)) ** 2).sum() / 2 / out.shape[0]
        loss.backward()
        optimizer.step()
    mean = bn.running_mean.numpy().reshape(state["running_mean1"].shape)
    var = bn.running_var.numpy().reshape(state["running_var1"].shape)
    assert np.max(np.abs(state["running_mean1"] - mean)) < 1e-12
    assert np.max(np.abs(state["running_var1"] - var)) < 1e-12
    net.eval()
    with torch.no_grad():
        theirs = net(torch.tensor(x if rows else x.T)).numpy()
    ours = module.forward(params, x, state)
    assert np.max(np.abs(ours - (theirs if rows else theirs.T))) < 1e-12
    # a single example is fine in inference
    one = x[:1] if rows else x[:, :1]
    assert module.forward(params, one, state).shape == ((1, 2) if rows else (2, 1))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_train_updates_the_state_like_sgd_steps(make, form):
    spec = Spec(4, (Layer(6, "tanh", batch_norm=True), Layer(2, "linear")), "quadratic")
    module = make(spec, form)
    params, x, y = _problem(module, m=8)
    twin = {k: v.copy() for k, v in params.items()}
    state, steps = module.init_state(), module.init_state()
    module.train(params, x, y, epochs=2, batch_size=4, lr=0.05, seed=3, state=state)
    rng = np.random.default_rng(3)
    for _ in range(2):
        order = rng.permutation(8)
        for start in (0, 4):
            idx = order[start : start + 4]
            module.sgd_step(twin, x[:, idx], y[:, idx], 0.05, state=steps)
    for key in state:
        np.testing.assert_array_equal(state[key], steps[key])
    for key in params:
        np.testing.assert_array_equal(params[key], twin[key])
    adam = module.init_state()
    module.train(params, x, y, epochs=1, batch_size=8, lr=0.01, optimizer="adam", state=adam)
    assert not np.array_equal(adam["running_mean1"], module.init_state()["running_mean1"])


@pytest.mark.slow
def test_forward_without_state_uses_the_batch_statistics(make):
    module = make(_spec("tanh", 1))
    params, x, y = _problem(module)
    state = module.init_state()
    batch = module.forward(params, x)
    assert not np.allclose(batch, module.forward(params, x, state))
    # loss is computed from the same batch-statistics forward pass
    assert np.isclose(module.loss(params, x, y), np.sum((batch - y) ** 2) / 2 / x.shape[1])


@pytest.mark.slow
def test_a_planted_bug_in_the_three_terms_is_caught(torch, make, load_source):
    spec = _spec("tanh", 0)
    source = generate_module(spec)
    # drop the middle term, mean(delta), of the first layer's three-term error
    planted, count = re.subn(r"\n +xhat1 \+= dC_dbeta1 [^\n]*\n", "\n", source)
    assert count == 1
    module, broken = make(spec), load_source(planted)
    params, x, y = _problem(module)
    _, theirs = _torch_gradient(torch, module, params, x, y)
    assert _relative(module.loss_and_grad(params, x, y)[1], theirs) < 1e-9
    assert _relative(broken.loss_and_grad(params, x, y)[1], theirs) > 1e-3
    assert broken.check_gradient(params, x, y) > 1e-3


@pytest.mark.slow
def test_sympy_derives_the_three_term_form_on_symbolic_examples():
    d = derive_backward(3)
    assert len(d.chain) == 3
    for chain, three in zip(d.chain, d.three_term, strict=True):
        assert sp.simplify(chain - three) == 0
    # without the variance's term the chain rule disagrees: the check has teeth
    wrong = d.three_term[0] + d.gamma / sp.sqrt(d.var + d.eps) * d.xhat[0] * sp.Add(
        *[g * x for g, x in zip(d.g, d.xhat, strict=True)]
    )
    assert sp.simplify(d.chain[0] - wrong) != 0
    assert sp.simplify(d.dgamma - sp.Add(*[g * x for g, x in zip(d.g, d.xhat, strict=True)])) == 0


@pytest.mark.slow
def test_the_mini_batch_statements_evaluate_to_the_module_values(make):
    """run_statement (the evaluator of the derivation's vectorized section) on numbers."""
    spec = Spec(2, (Layer(3, "tanh", batch_norm=True), Layer(2, "linear")), "quadratic")
    module = make(spec)
    params, x, y = _problem(module, m=4)
    env = {k: sp.Matrix(v) for k, v in params.items()}
    env |= {"x": sp.Matrix(x), "y": sp.Matrix(y)}

    def at(expr: sp.Expr, values: dict) -> sp.Expr:
        return expr.xreplace(values).evalf()

    for s in batch_program(derive_network(spec)):
        env[s.target] = run_statement(s, env, rows=False, m=4, at=at)
    _, grads = module.loss_and_grad(params, x, y)
    for key, grad in grads.items():
        value = np.array(env[naming.grad(key)].tolist(), dtype=float)
        assert np.max(np.abs(value - grad)) < 1e-12


@pytest.mark.slow
def test_the_equation_comments_name_the_forward_and_the_three_terms():
    source = generate_module(_spec("relu", 1))
    assert "# forward: xhat1 = (u1 - mean1) / sqrt(var1 + 1e-05)" in source
    assert "(biased variance)" in source
    assert "deltau1 = gamma1 / sqrt(var1 + 1e-05) * (delta1 - mean(delta1) - xhat1 *" in source
    assert "three terms" in source and "dC/dgamma1 = (1/m) sum over examples" in source


# ------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("value", [1, "yes", None, 1.0])
def test_batch_norm_must_be_a_bool(value):
    raw = {"input": 2, "cost": "quadratic", "layers": [{"size": 2, "activation": "tanh"}]}
    raw["layers"].insert(0, {"size": 3, "activation": "relu", "batch_norm": value})
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert info.value.field == "layers[0].batch_norm" and "true or false" in str(info.value)


def test_batch_norm_on_the_output_layer_or_with_a_bias_is_refused():
    with pytest.raises(SpecError) as info:
        Spec(2, (Layer(3, "relu"), Layer(2, "linear", batch_norm=True)), "quadratic")
    assert info.value.field == "layers[1].batch_norm" and "output layer" in str(info.value)
    with pytest.raises(SpecError) as info:
        Spec(2, (Layer(3, "relu", True, batch_norm=True), Layer(2, "linear")), "quadratic")
    assert info.value.field == "layers[0].bias" and "batch_norm implies no bias" in str(info.value)
    raw = {"input": 2, "cost": "quadratic", "layers": [{"size": 2, "activation": "tanh"}]}
    raw["layers"].insert(0, {"size": 3, "activation": "relu", "batch_norm": True, "bias": True})
    with pytest.raises(SpecError):
        spec_from_dict(raw)
    raw["layers"][0]["bias"] = None  # JSON null is not "the default"
    with pytest.raises(SpecError, match="null"):
        spec_from_dict(raw)
    raw["layers"][0]["bias"] = False
    spec = spec_from_dict(raw)
    assert spec.layers[0] == Layer(3, "relu", batch_norm=True)
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.parameter_count == 2 * 3 + 2 * 3 + 3 * 2 + 2


@pytest.mark.parametrize("form", ["vectorized", "plain"])
@pytest.mark.slow
def test_one_example_is_refused_in_training_mode(make, form):
    module = make(_spec("tanh", 1), form)
    params, x, y = _problem(module)
    for call in (
        lambda: module.loss(params, x[:, :1], y[:, :1]),
        lambda: module.loss_and_grad(params, x[:, :1], y[:, :1]),
        lambda: module.forward(params, x[:, :1]),
        lambda: module.sgd_step(params, x[:, :1], y[:, :1], 0.1),
    ):
        with pytest.raises(ValueError, match="m >= 2"):
            call()
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ValueError, match="batch_size"):
        module.train(params, x[:, :5], y[:, :5], epochs=1, batch_size=2, lr=0.1)
    assert all(np.array_equal(before[k], params[k]) for k in params)


@pytest.mark.slow
def test_a_constant_input_column_stays_finite(torch, make):
    """var = 0 for a unit whose u is constant over the batch: eps keeps xhat at 0."""
    module = make(_spec("tanh", 0))
    params, x, y = _problem(module)
    x[:, :] = x[:, :1]  # every example the same: every unit of layer 1 has var 0
    cost, grads = module.loss_and_grad(params, x, y)
    assert np.isfinite(cost) and all(np.all(np.isfinite(g)) for g in grads.values())
    _, theirs = _torch_gradient(torch, module, params, x, y)
    for key in theirs:
        assert np.max(np.abs(grads[key] - theirs[key])) < 1e-9 * max(1, np.max(np.abs(theirs[key])))


@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_a_bad_state_is_refused_by_name(make, form):
    module = make(_spec("tanh", 1), form)
    other = make(Spec(3, (Layer(7, "relu", batch_norm=True), Layer(3, "linear")), "quadratic"))
    params, x, y = _problem(module)
    nan = module.init_state()
    nan["running_var1"][0, 0] = np.nan
    inf = module.init_state()
    inf["running_mean3"][0, 0] = np.inf
    negative = module.init_state()
    negative["running_var3"][1, 0] = -1.0
    wrong_shape = module.init_state()
    wrong_shape["running_mean1"] = np.zeros((4, 1))
    for state, words in (
        ({}, "keys"),
        (other.init_state(), "keys"),
        (nan, "NaN"),
        (inf, "inf"),
        (negative, "below 0"),
        (wrong_shape, "running_mean1"),
        ([1, 2], "state"),
        (module.init_state() | {"extra": np.zeros(1)}, "keys"),
    ):
        for call in (
            lambda s=state: module.forward(params, x, s),
            lambda s=state: module.sgd_step(params, x, y, 0.1, state=s),
            lambda s=state: module.train(params, x, y, epochs=1, batch_size=6, lr=0.1, state=s),
        ):
            with pytest.raises(ValueError, match=words):
                call()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_every_module_has_init_state_and_the_state_keywords(make, form):
    plain = make(Spec.from_sizes([3, 4, 2], ["tanh", "linear"], "quadratic"), form)
    params, x, y = _problem(plain)
    assert plain.init_state() == {}
    np.testing.assert_array_equal(plain.forward(params, x, {}), plain.forward(params, x))
    twin = {k: v.copy() for k, v in params.items()}
    plain.sgd_step(params, x, y, 0.1, state={})
    plain.sgd_step(twin, x, y, 0.1)
    assert all(np.array_equal(params[k], twin[k]) for k in params)
    plain.train(params, x, y, epochs=1, batch_size=3, lr=0.1, state={})
    with pytest.raises(ValueError, match="no batch-normalized layer"):
        plain.forward(params, x, {"running_mean1": np.zeros((4, 1))})
    with pytest.raises(ValueError, match="no batch-normalized layer"):
        plain.sgd_step(params, x, y, 0.1, state=[])


def test_the_scalar_level_refuses_batch_norm_in_one_line():
    from chainrule.derive.scalar_network import scalar_network

    with pytest.raises(ChainruleError) as info:
        scalar_network(_spec("tanh", 1))
    assert info.value.field == "layers[0].batch_norm" and "\n" not in str(info.value)


_BN_TOML = """input = 4
cost = "cross-entropy"
[[layers]]
size = 6
activation = "relu"
batch_norm = true
[[layers]]
size = 3
activation = "softmax"
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("generate", "bn.toml", "--form", "unrolled", "--strategy", "naive", "-o", "u.py"),
    ],
)
def test_the_commands_without_batch_norm_refuse_it_in_one_line(run_cli, tmp_path, args):
    (tmp_path / "bn.toml").write_text(_BN_TOML, encoding="utf-8")
    (tmp_path / "at.toml").write_text("x = [1, 2, 3, 4]\n", encoding="utf-8")
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "layers[0].batch_norm" in done.stderr
    assert not (tmp_path / "g.svg").exists() and not (tmp_path / "u.py").exists()


@pytest.mark.slow
def test_generate_writes_a_batch_norm_module(run_cli, tmp_path):
    (tmp_path / "bn.toml").write_text(_BN_TOML, encoding="utf-8")
    done = run_cli("generate", "bn.toml", "-o", "bn.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from conftest import import_path

    module = import_path(tmp_path / "bn.py")
    assert sorted(module.init_state()) == ["running_mean1", "running_var1"]
    assert sorted(module.init_params(0)) == ["W1", "W2", "b2", "beta1", "gamma1"]


# ------------------------------------------------------------------------------ importers


def _torch_bn_model(torch, **settings):
    nn = torch.nn
    torch.manual_seed(5)
    bn = nn.BatchNorm1d(6, **settings)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), bn, nn.Tanh(), nn.Linear(6, 3), nn.Softmax(-1))
    net = net.double()
    if bn.affine and bn.track_running_stats:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_torch_import_takes_batchnorm1d_weights_and_running_statistics(torch, make, layout):
    from chainrule.importers import params_from_torch, spec_from_torch, state_from_torch

    net = _torch_bn_model(torch)
    spec = spec_from_torch(net, "cross-entropy", layout=layout)
    assert spec.layers[0] == Layer(6, "tanh", batch_norm=True)
    module = make(spec)
    params, state = params_from_torch(net, spec), state_from_torch(net, spec)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    net.eval()
    with torch.no_grad():
        theirs = net(torch.tensor(x)).numpy()
    ours = module.forward(params, x if layout == "rows" else x.T.copy(), state)
    assert np.max(np.abs(ours - (theirs if layout == "rows" else theirs.T))) < 1e-12
    net.train()
    with torch.no_grad():
        batch = net(torch.tensor(x)).numpy()
    ours = module.forward(params, x if layout == "rows" else x.T.copy())
    assert np.max(np.abs(ours - (batch if layout == "rows" else batch.T))) < 1e-12


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"eps": 1e-3}, "eps"),
        ({"momentum": 0.01}, "momentum"),
        ({"affine": False}, "affine"),
        ({"track_running_stats": False}, "track_running_stats"),
    ],
)
def test_torch_batchnorm1d_settings_are_refused_by_name(torch, settings, field):
    from chainrule.importers import spec_from_torch

    with pytest.raises(SpecError) as info:
        spec_from_torch(_torch_bn_model(torch, **settings), "cross-entropy")
    assert info.value.field.endswith(f".{field}")


@pytest.mark.slow
def test_torch_batchnorm1d_must_follow_a_linear_without_bias(torch):
    from chainrule.importers import spec_from_torch

    nn = torch.nn
    with_bias = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(SpecError, match="bias=False"):
        spec_from_torch(with_bias, "quadratic")
    after = nn.Sequential(
        nn.Linear(4, 6, bias=False), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 2)
    )
    with pytest.raises(SpecError, match="before its activation"):
        spec_from_torch(after, "quadratic")
    last = nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6))
    with pytest.raises(SpecError, match="output layer"):
        spec_from_torch(last, "quadratic")


def _keras_config(**bn: object) -> dict:
    norm = {"class_name": "BatchNormalization", "config": {"epsilon": 1e-5} | bn}
    return {
        "class_name": "Sequential",
        "config": {
            "name": "bn",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}},
                {"class_name": "Dense", "config": {"units": 4, "use_bias": False}},
                norm,
                {"class_name": "Activation", "config": {"activation": "relu"}},
                {"class_name": "Dense", "config": {"units": 2, "activation": "linear"}},
            ],
        },
    }


def test_keras_batch_normalization_imports_with_its_weights_and_moving_statistics(make):
    from chainrule.importers import params_from_keras, spec_from_keras, state_from_keras

    spec = spec_from_keras(_keras_config(momentum=0.99), "quadratic")
    assert spec.layers[0] == Layer(4, "relu", batch_norm=True) and spec.layout == "rows"
    rng = np.random.default_rng(2)
    kernel, gamma, beta = rng.standard_normal((3, 4)), rng.uniform(0.5, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.5, 2, 4)
    w2, b2 = rng.standard_normal((4, 2)), rng.normal(size=2)
    weights = [kernel, gamma, beta, mean, var, w2, b2]
    params, state = params_from_keras(weights, spec), state_from_keras(weights, spec)
    module = make(spec)
    x = rng.standard_normal((5, 3))
    expected = np.maximum(gamma * (x @ kernel - mean) / np.sqrt(var + 1e-5) + beta, 0) @ w2 + b2
    assert np.max(np.abs(module.forward(params, x, state) - expected)) < 1e-12
    with pytest.raises(SpecError, match="arrays"):
        params_from_keras(weights[:-1], spec)


@pytest.mark.parametrize(
    ("bn", "field"),
    [({"epsilon": 1e-3}, "epsilon"), ({"center": False}, "center"), ({"scale": False}, "scale")],
)
def test_keras_batch_normalization_settings_are_refused_by_name(bn, field):
    from chainrule.importers import spec_from_keras

    with pytest.raises(SpecError) as info:
        spec_from_keras(_keras_config(**bn), "quadratic")
    assert info.value.field.endswith(f".{field}")
    default = _keras_config()
    del default["config"]["layers"][2]["config"]["epsilon"]  # Keras's default is 1e-3
    with pytest.raises(SpecError, match="epsilon"):
        spec_from_keras(default, "quadratic")
    biased = _keras_config()
    biased["config"]["layers"][1]["config"]["use_bias"] = True
    with pytest.raises(SpecError, match="use_bias=False"):
        spec_from_keras(biased, "quadratic")


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "form"), [("columns", "vectorized"), ("rows", "plain")])
def test_batch_norm_with_l2_and_l1_equals_torch_autograd(torch, make, layout, form):
    """The penalty is on the weights W only, not on gamma and beta."""
    spec = _spec("elu", 0, layout).replace(l2=0.03, l1=0.02)
    module = make(spec, form)
    params, x, y = _problem(module)
    cost, grads = module.loss_and_grad(params, x, y)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    weights = [t for k, t in tensors.items() if k.startswith("W")]
    total = _torch_loss(torch, module, tensors, x, y)
    total = total + 0.03 / 2 * sum((w**2).sum() for w in weights)
    total = total + 0.02 * sum(w.abs().sum() for w in weights)
    total.backward()
    assert abs(cost - total.item()) <= 1e-12 * max(1.0, abs(total.item()))
    assert _relative(grads, {k: t.grad.numpy() for k, t in tensors.items()}) < 1e-9


# ----------------------------------------------------------------------------- derivation


@pytest.mark.slow
@pytest.mark.parametrize("notation", ["nielsen", "3b1b", "cheatsheet", "course"])
def test_the_derivation_shows_batch_norm_and_sympy_checks_every_step(notation):
    from chainrule.derive.document import check_step, derivation

    spec = Spec(
        3, (Layer(2, "tanh"), Layer(4, "relu", batch_norm=True), Layer(2, "linear")), "quadratic"
    )
    doc = derivation(spec, notation)
    section = doc.sections[1]
    assert section.title == "Batch normalization's backward pass" and len(section.steps) == 10
    assert all(check_step(step) for step in section.steps)
    text = doc.to_text()
    assert "Batch normalization's backward pass" in text and "three-term form" in text
    # the layer is numbered as the notation numbers it
    number = {"nielsen": "³", "3b1b": "⁽ᴸ⁻¹⁾", "cheatsheet": "₁", "course": "²"}[notation]
    assert f"μ{number} = 1/m" in text
    assert "\\sqrt{" in doc.to_latex()


@pytest.mark.slow
def test_a_wrong_three_term_form_fails_the_derivation_check():
    from chainrule.derive.document import derivation, sides_agree

    spec = Spec(3, (Layer(4, "relu", batch_norm=True), Layer(2, "linear")), "quadratic")
    step = next(s for s in derivation(spec) if s.title.startswith("The three-term form"))
    chain, three = step.sides
    d = derive_backward(3)
    assert sides_agree((chain, three))
    # drop the middle term, mean(delta): the check must fail
    without_mean = (
        three
        - 3
        * d.gamma
        / sp.sqrt(d.var + sp.Rational(1, 100000))
        * (-sp.Add(*[3 * g for g in d.g]) / 3)
        / 3
    )
    assert not sides_agree((chain, without_mean))


_BN_DIGITS = _BN_TOML.replace("input = 4", "input = 64").replace("size = 3", "size = 10")


@pytest.mark.slow
def test_chainrule_train_keeps_running_statistics_and_refuses_a_batch_of_one(run_cli, tmp_path):
    from chainrule.cmd_train import split

    (tmp_path / "bn.toml").write_text(_BN_DIGITS, encoding="utf-8")
    done = run_cli("train", "bn.toml", "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    n = len(split(1797, 0)[0])  # the digits' training examples at seed 0
    bad = next(size for size in range(2, n) if n % size == 1)
    done = run_cli("train", "bn.toml", "--epochs", "1", "--batch-size", str(bad), cwd=tmp_path)
    assert done.returncode == 2 and "batch-size" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.slow
def test_fit_evaluates_with_the_running_statistics(make):
    from chainrule.cmd_train import accuracy

    module = make(
        Spec(4, (Layer(6, "relu", batch_norm=True), Layer(3, "softmax")), "cross-entropy")
    )
    params, x, y = _problem(module, m=12)
    state = module.init_state()
    module.train(params, x, y, epochs=3, batch_size=4, lr=0.5, state=state)
    labels = np.argmax(y, axis=0)
    inferred = np.argmax(module.forward(params, x, state), axis=0)
    assert accuracy(module, params, x, labels, state) == np.mean(inferred == labels)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_float32_batch_norm_stays_float32(make, layout):
    spec = _spec("tanh", 1, layout).replace(dtype="float32")
    module = make(spec)
    params, x, y = _problem(module)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    state = module.init_state()
    assert all(v.dtype == np.float32 for v in state.values())
    cost, grads = module.loss_and_grad(params, x.astype(np.float32), y.astype(np.float32))
    assert all(g.dtype == np.float32 for g in grads.values())
    double = make(_spec("tanh", 1, layout))
    _, reference = double.loss_and_grad({k: v.astype(np.float64) for k, v in params.items()}, x, y)
    assert _relative(grads, reference) < 1e-4
    module.sgd_step(params, x.astype(np.float32), y.astype(np.float32), 0.1, state=state)
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.slow
def test_the_benchmark_script_runs_a_tiny_case():
    import importlib.util
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_bn", REPO / "benchmarks" / "batch_norm.py"
        )
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        case = bench.Case("6-5-4-3", (6, 5, 4, 3), ("relu", "tanh", "softmax"), "cross-entropy")
        result = bench.run(case, 4, rounds=2)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert set(result["seconds"]) == {"floor", "generated_out", "no_batch_norm"}
    assert result["ratio_to_floor"]["floor"] == 1.0


@pytest.mark.slow
def test_generate_from_torch_with_batchnorm1d(run_cli, tmp_path, torch):
    (tmp_path / "model.py").write_text(
        "import torch.nn as nn\n"
        "net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(),\n"
        "                    nn.Linear(6, 3), nn.Softmax(dim=-1))\n",
        encoding="utf-8",
    )
    done = run_cli(
        "generate",
        "--from-torch",
        "model.py:net",
        "--cost",
        "cross-entropy",
        "-o",
        "m.py",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    from conftest import import_path

    module = import_path(tmp_path / "m.py")
    assert module.SPEC["layers"][0] == {
        "size": 6,
        "activation": "relu",
        "bias": False,
        "batch_norm": True,
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "form"), [("columns", "vectorized"), ("rows", "vectorized"), ("columns", "plain")]
)
def test_batch_norm_with_residual_connections_equals_torch_autograd(torch, make, layout, form):
    """Skips out of and into batch-normalized layers, with l2: the gradient is torch's."""
    layers = (
        Layer(5, "tanh", batch_norm=True),
        Layer(5, "relu", skip_from=1),
        Layer(5, CUSTOM, skip_from=2, batch_norm=True),
        Layer(3, "softmax"),
    )
    spec = Spec(3, layers, "cross-entropy", layout=layout).replace(l2=0.01)
    module = make(spec, form)
    params, x, y = _problem(module)
    cost, grads = module.loss_and_grad(params, x, y)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    total = _torch_loss(torch, module, tensors, x, y)
    total = total + 0.01 / 2 * sum((t**2).sum() for k, t in tensors.items() if k.startswith("W"))
    total.backward()
    assert abs(cost - total.item()) <= 1e-12 * max(1.0, abs(total.item()))
    assert _relative(grads, {k: t.grad.numpy() for k, t in tensors.items()}) < 1e-9
    assert module.check_gradient(params, x, y) < 1e-6
