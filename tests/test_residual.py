"""Residual connections (a layer's ``skip_from`` = k: a^l = f(z^l) + a^k), end to end.

The generated modules (vectorized and plain) against PyTorch autograd in float64,
central differences on every entry and a reverse-mode backprop written here in NumPy;
the scalar level's memoized count worked out by hand; the spec's refusals; the commands
that do not support a skip yet refuse it in one line.
"""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import numpy as np
import pytest
from chainrule.codegen.emit import lint_module
from chainrule.derive import batch
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec, load_spec, spec_from_dict
from chainrule.derive.tables import ACTIVATIONS

from chainrule.api import generate
from chainrule.cli import main

CUSTOM = "sin(x) + x/3"
ELEMENTWISE = sorted(name for name, row in ACTIVATIONS.items() if row.expr is not None)


def _module(spec: Spec, form: str = "vectorized") -> types.ModuleType:
    source = generate(spec, form)
    lint_module(source)
    module = types.ModuleType(f"residual_{form}")
    exec(compile(source, "<residual module>", "exec"), module.__dict__)  # noqa: S102
    return module


def _net(sizes, acts, skips, cost="quadratic", bias=True, layout="columns") -> Spec:
    layers = tuple(
        Layer(n, a, bias, skips.get(i))
        for i, (n, a) in enumerate(zip(sizes[1:], acts, strict=True), start=1)
    )
    return Spec(sizes[0], layers, cost, layout)


def _data(spec: Spec, m: int = 7, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.input_size, m))
    n_out = spec.sizes[-1]
    if spec.cost == "cross-entropy":
        y = np.eye(n_out)[:, rng.integers(0, n_out, m)]
    elif spec.cost == "binary-cross-entropy":
        y = rng.uniform(0, 1, (n_out, m))
    else:
        y = rng.standard_normal((n_out, m))
    if spec.layout == "rows":
        return x.T.copy(), y.T.copy()
    return x, y


# ------------------------------------------------------------------- PyTorch reference


def _torch_act(torch, name: str):
    f = torch.nn.functional
    table = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky-relu": lambda z: f.leaky_relu(z, 0.01),
        "softplus": f.softplus,
        "linear": lambda z: z,
        "elu": f.elu,
        "selu": f.selu,
        "gelu": lambda z: f.gelu(z, approximate="tanh"),
        "mish": f.mish,
        CUSTOM: lambda z: torch.sin(z) + z / 3,
    }
    return table[name]


def _torch_loss_and_grad(torch, spec: Spec, params: dict, x, y):
    """C and dC/dparams by autograd, in the module's layout (columns: z = W a + b)."""
    rows = spec.layout == "rows"
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    a = [torch.tensor(x, dtype=torch.float64)]
    for l, layer in enumerate(spec.layers, start=1):  # noqa: E741
        z = a[-1] @ t[f"W{l}"] if rows else t[f"W{l}"] @ a[-1]
        if layer.bias:
            z = z + t[f"b{l}"]
        if layer.activation == "softmax":
            out_logits = z
            a.append(torch.softmax(z, dim=1 if rows else 0))
            continue
        h = _torch_act(torch, layer.activation)(z)
        a.append(h if layer.skip_from is None else h + a[layer.skip_from])
    yt = torch.tensor(y, dtype=torch.float64)
    m = x.shape[0] if rows else x.shape[1]
    if spec.cost == "quadratic":
        cost = 0.5 * ((a[-1] - yt) ** 2).sum() / m
    elif spec.cost == "binary-cross-entropy":
        cost = -(yt * torch.log(a[-1]) + (1 - yt) * torch.log(1 - a[-1])).sum() / m
    else:
        cost = -(yt * torch.log_softmax(out_logits, dim=1 if rows else 0)).sum() / m
    cost.backward()
    return cost.item(), {k: v.grad.numpy() for k, v in t.items()}


def _max_rel(got: dict, want: dict) -> float:
    worst = 0.0
    for key, ref in want.items():
        scale = max(np.max(np.abs(ref)), 1e-300)
        worst = max(worst, float(np.max(np.abs(got[key] - ref)) / scale))
    return worst


NETWORKS = {
    # a skip from the input x (k = 0) into a hidden layer
    "from-input": ([3, 3, 2], ["tanh", "linear"], {1: 0}, "quadratic"),
    # from hidden layer 1 over two layers into layer 3, sigmoid output under BCE
    "over-two": (
        [3, 4, 4, 4, 2],
        ["relu", "sigmoid", "tanh", "sigmoid"],
        {3: 1},
        "binary-cross-entropy",
    ),
    # two skips out of layer 1 (into 2 and 3), and layer 3 both receives and feeds one
    "two-and-two": (
        [3, 4, 4, 4, 4, 3],
        ["elu", "softplus", "selu", "gelu", "softmax"],
        {2: 1, 3: 1, 4: 3},
        "cross-entropy",
    ),
    # a skip into the output: linear output under the quadratic cost
    "into-output": ([3, 3, 3, 3], ["mish", "leaky-relu", "linear"], {2: 0, 3: 1}, "quadratic"),
    # a skip into a sigmoid output under the quadratic cost (sigma' from h^L, not a^L)
    "sigmoid-output": ([2, 2, 2], ["tanh", "sigmoid"], {2: 1}, "quadratic"),
}


@pytest.fixture
def torch():
    """PyTorch, or a skip when it is absent (it is optional: pip install torch==2.13.0)."""
    return pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")


#: (layout, bias, form): two combinations in the quick subset, every one in the full suite.
_QUICK = {("columns", True, "vectorized"), ("rows", False, "plain")}
_VARIANTS = [
    pytest.param(*combo, marks=() if combo in _QUICK else pytest.mark.slow)
    for combo in (
        (layout, bias, form)
        for layout in ("columns", "rows")
        for bias in (True, False)
        for form in ("vectorized", "plain")
    )
]


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "bias", "form"), _VARIANTS)
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_loss_and_grad_equal_torch_autograd(torch, name, layout, bias, form) -> None:
    sizes, acts, skips, cost = NETWORKS[name]
    spec = _net(sizes, acts, skips, cost, bias, layout)
    module = _module(spec, form)
    params = module.init_params(np.random.default_rng(5))
    x, y = _data(spec)
    got_cost, got = module.loss_and_grad(params, x, y)
    want_cost, want = _torch_loss_and_grad(torch, spec, params, x, y)
    assert got_cost == pytest.approx(want_cost, rel=1e-12)
    assert set(got) == set(want)
    assert _max_rel(got, want) < 1e-9
    assert module.loss(params, x, y) == pytest.approx(want_cost, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", pytest.param("rows", marks=pytest.mark.slow)])
@pytest.mark.parametrize("act", [*ELEMENTWISE, CUSTOM])
def test_every_activation_with_skips_equals_torch(torch, act, layout) -> None:
    """Each activation receives a skip (layer 1 from x, layer 2 from layer 1) and feeds one."""
    spec = _net([3, 3, 3, 2], [act, act, "linear"], {1: 0, 2: 1}, "quadratic", True, layout)
    module = _module(spec)
    params = module.init_params(np.random.default_rng(2))
    x, y = _data(spec, seed=3)
    got_cost, got = module.loss_and_grad(params, x, y)
    want_cost, want = _torch_loss_and_grad(torch, spec, params, x, y)
    assert got_cost == pytest.approx(want_cost, rel=1e-12)
    assert _max_rel(got, want) < 1e-9


# ------------------------------------------------------- finite differences and NumPy


def _central_differences(module, params: dict, x, y, h: float = 1e-6) -> dict:
    out = {}
    for key, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[key][index] += h
            minus[key][index] -= h
            grad[index] = (module.loss(plus, x, y) - module.loss(minus, x, y)) / (2 * h)
        out[key] = grad
    return out


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_entry_matches_central_differences(name, form) -> None:
    sizes, acts, skips, cost = NETWORKS[name]
    spec = _net(sizes, acts, skips, cost)
    module = _module(spec, form)
    params = module.init_params(np.random.default_rng(8))
    x, y = _data(spec, m=5, seed=9)
    _, got = module.loss_and_grad(params, x, y)
    numeric = _central_differences(module, params, x, y)
    for key in params:
        np.testing.assert_allclose(got[key], numeric[key], rtol=1e-5, atol=1e-8)
    assert module.check_gradient(params, x, y) < 1e-6


def _numpy_backprop(spec: Spec, params: dict, x, y):
    """Reverse-mode accumulation over the graph (columns layout, tanh/sigmoid/linear,
    quadratic cost): dC/da^k gathers from every layer that reads a^k."""
    f = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "linear": lambda z: z}
    df = {
        "tanh": lambda z: 1 - np.tanh(z) ** 2,
        "sigmoid": lambda z: f["sigmoid"](z) * (1 - f["sigmoid"](z)),
        "linear": np.ones_like,
    }
    m = x.shape[1]
    a, z = [x], [None]
    for l, layer in enumerate(spec.layers, start=1):  # noqa: E741
        z.append(params[f"W{l}"] @ a[-1] + params[f"b{l}"])
        a.append(f[layer.activation](z[l]) + (0 if layer.skip_from is None else a[layer.skip_from]))
    g = [np.zeros_like(v) for v in a]
    g[-1] = (a[-1] - y) / m
    grads = {}
    for l in range(spec.depth, 0, -1):  # noqa: E741
        d = g[l] * df[spec.layers[l - 1].activation](z[l])
        grads[f"W{l}"] = d @ a[l - 1].T
        grads[f"b{l}"] = d.sum(axis=1, keepdims=True)
        g[l - 1] = g[l - 1] + params[f"W{l}"].T @ d
        if spec.layers[l - 1].skip_from is not None:
            g[spec.layers[l - 1].skip_from] = g[spec.layers[l - 1].skip_from] + g[l]
    return 0.5 * np.sum((a[-1] - y) ** 2) / m, grads


def test_module_agrees_with_an_independent_numpy_backprop() -> None:
    spec = _net(
        [3, 3, 3, 3, 3, 3],
        ["tanh", "sigmoid", "tanh", "sigmoid", "linear"],
        {2: 1, 3: 1, 4: 0, 5: 3},
    )
    module = _module(spec)
    params = module.init_params(np.random.default_rng(4))
    x, y = _data(spec, m=6, seed=4)
    cost, got = module.loss_and_grad(params, x, y)
    want_cost, want = _numpy_backprop(spec, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-13)
    assert _max_rel(got, want) < 1e-12


@pytest.mark.slow
def test_a_planted_bug_dropping_the_skip_term_is_caught(torch, monkeypatch) -> None:
    """Drop the skip paths from dC/da^k's sum in the program: the torch check fails."""
    spec = _net([3, 4, 4, 4, 2], ["relu", "sigmoid", "tanh", "sigmoid"], {3: 1}, "quadratic")
    params = _module(spec).init_params(np.random.default_rng(5))
    x, y = _data(spec)
    _, want = _torch_loss_and_grad(torch, spec, params, x, y)
    original = batch._BatchProgramBuilder.add

    def without_skip_paths(self, target, op, operands, *rest, **kw):
        if op == "backsum":
            operands = operands[:2]
        return original(self, target, op, operands, *rest, **kw)

    monkeypatch.setattr(batch._BatchProgramBuilder, "add", without_skip_paths)
    _, got = _module(spec).loss_and_grad(params, x, y)
    assert _max_rel(got, want) > 1e-3
    np.testing.assert_allclose(got["W3"], want["W3"], rtol=1e-9)  # above the source: intact


@pytest.mark.slow
def test_default_none_changes_nothing() -> None:
    plain = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic")
    explicit = _net([3, 4, 2], ["tanh", "sigmoid"], {}, "quadratic")
    assert "skip_from" not in json.dumps(plain.to_dict())
    assert generate(explicit) == generate(plain)
    assert generate(explicit, "plain") == generate(plain, "plain")


def test_generated_comments_name_the_residual_equations() -> None:
    source = generate(_net([3, 3, 3, 2], ["tanh", "tanh", "linear"], {2: 1}))
    assert "# forward: a2 = tanh(z2) + a1 = h2 + a1 (residual connection from layer 1)" in source
    assert "# BP2: dC_da1 = W2^T delta2 + dC_da2 (paths through layer 2 and the skip" in source
    assert "# BP2: delta1 = dC_da1 * sp1" in source


# ---------------------------------------------------------------------- scalar level


@pytest.mark.slow
def test_memoized_count_by_hand_and_values_equal_naive() -> None:
    """2-2-2-2: sigmoid, tanh (skip from 1), linear (skip from x); quadratic cost.

    Forward per example: layer 1, 2 units x (2 products + 2 sums + sigmoid) = 10;
    layer 2 the same 10 plus h + a^1 (2) = 12; layer 3: z (8), a = z (0), h + x (2) = 10;
    the cost: 2 x (subtract, square, halve) + 1 sum = 7. Total 39.
    Backprop: the forward statements (32); BP1 dC/da^3 = a - y (2), delta^3 = dC/da^3
    (linear, 0); dC/da^2_j = sum of 2 products (3 each: 6), sigma' = 1 - h^2 (2 each: 4),
    delta^2 = dC/da^2 sigma' (2); dC/da^1_j = 2 products, 1 sum, + dC/da^2_j (4 each: 8),
    sigma' = a(1 - a) (4), delta^1 (2); BP4 4 products per layer (12). Total 72.
    """
    from chainrule.derive.scalar import (
        count_strategy,
        gradient_values,
        gradients,
        layer_counts,
        random_point,
    )

    spec = _net([2, 2, 2, 2], ["sigmoid", "tanh", "linear"], {2: 1, 3: 0})
    counts = layer_counts(spec)
    assert counts.forward_ops == 10 + 12 + 10 + 7
    assert counts.backprop_ops == 32 + 2 + 0 + (6 + 4 + 2) + (8 + 4 + 2) + 12
    memo = gradients(spec, "backprop")
    assert count_strategy(memo).total == counts.backprop_ops
    naive = gradients(spec, "naive")
    point = random_point(memo.network, seed=3)
    for got, want in zip(gradient_values(memo, point), gradient_values(naive, point), strict=True):
        assert abs(got - want) <= 1e-25 * max(1, abs(want))
    # the naive expansion walks the skip paths too: more than the same net without skips
    plain = gradients(_net([2, 2, 2, 2], ["sigmoid", "tanh", "linear"], {}), "naive")
    assert count_strategy(naive).total > count_strategy(plain).total


# ------------------------------------------------------------------------- refusals


def _spec_file(tmp_path: Path, skip, *, output_act="linear", cost="quadratic", sizes=(3, 3, 3)):
    data = {
        "input": 3,
        "cost": cost,
        "layers": [
            {"size": sizes[0], "activation": "tanh"},
            {"size": sizes[1], "activation": "tanh", "skip_from": skip},
            {"size": sizes[2], "activation": output_act},
        ],
    }
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("skip", "words"),
    [
        (True, "expected a layer number, got True"),
        (-1, "cannot take a skip from layer -1"),
        (1.0, "expected a layer number, got 1.0"),
        ("1", "expected a layer number, got '1'"),
        (2, "cannot take a skip from layer 2"),  # the layer itself
        (3, "cannot take a skip from layer 3"),
        (10**25, "cannot take a skip from layer number that large"),
        ([1], "expected a layer number"),
    ],
)
def test_bad_skip_from_is_refused_in_one_line(tmp_path, capsys, skip, words) -> None:
    path = _spec_file(tmp_path, skip)
    assert main(["generate", str(path), "-o", str(tmp_path / "m.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "layers[1].skip_from" in err and words in err and "give" in err
    assert not (tmp_path / "m.py").exists()


def test_different_sizes_refused(tmp_path, capsys) -> None:
    with pytest.raises(SpecError, match=r"layers\[1\]\.skip_from: layer 1 has 4 units"):
        load_spec(_spec_file(tmp_path, 1, sizes=(4, 3, 3)))
    with pytest.raises(SpecError, match="same size"):
        load_spec(_spec_file(tmp_path, 0, sizes=(4, 4, 3)))


@pytest.mark.parametrize(
    ("act", "cost", "words"),
    [
        ("softmax", "cross-entropy", "softmax output layer"),
        ("softmax", "quadratic", "softmax output layer"),
        ("sigmoid", "binary-cross-entropy", "fused on the output's logits"),
    ],
)
def test_skip_into_a_fused_output_refused(act, cost, words) -> None:
    data = {
        "input": 3,
        "cost": cost,
        "layers": [
            {"size": 3, "activation": "tanh"},
            {"size": 3, "activation": act, "skip_from": 1},
        ],
    }
    with pytest.raises(SpecError, match=r"layers\[1\]\.skip_from: .*" + words) as info:
        spec_from_dict(data)
    assert "\n" not in str(info.value)


def test_toml_spec_with_skip_generates(tmp_path) -> None:
    path = tmp_path / "res.toml"
    path.write_text(
        'input = 4\ncost = "quadratic"\n'
        '[[layers]]\nsize = 4\nactivation = "relu"\n'
        '[[layers]]\nsize = 4\nactivation = "tanh"\nskip_from = 1\n'
        '[[layers]]\nsize = 4\nactivation = "linear"\nskip_from = 0\n',
        encoding="utf-8",
    )
    assert load_spec(path).skips == {2: 1, 3: 0}
    assert main(["generate", str(path), "-o", str(tmp_path / "res.py")]) == 0
    assert "residual connection from layer 1" in (tmp_path / "res.py").read_text()


@pytest.mark.slow
def test_derive_at_a_point_passes_the_module_check(tmp_path, capsys) -> None:
    """The worked numbers of a residual network, every one checked against loss_and_grad;
    dC/da^1 is shown as its two paths: through layer 2 and through the skip."""
    from chainrule.derive.notation import notation as notation_for

    from chainrule.api import derivation

    spec = _net([2, 2, 2, 2], ["sigmoid", "tanh", "sigmoid"], {2: 1, 3: 1})
    params = {
        "W1": [[0.1, -0.2], [0.3, 0.2]],
        "b1": [0.1, -0.1],
        "W2": [[0.2, 0.1], [-0.1, 0.3]],
        "b2": [0.0, 0.2],
        "W3": [[0.3, -0.2], [0.1, 0.1]],
        "b3": [0.1, 0.0],
    }
    at = {"x": [0.5, -0.4], "y": [0.3, 0.8], "params": params}
    doc = derivation(spec, "3b1b", at=at)
    assert doc.worked.checked
    text = doc.to_markdown()
    nota = notation_for("3b1b", spec)
    paths = [nota.partial(nota.cost, nota.a(d, "1")) for d in (2, 3)]
    assert f"{paths[0]} + {paths[1]} = " in text  # dC/da^1_1's skip paths, summed
    path = tmp_path / "net.json"
    path.write_text(json.dumps({**spec.to_dict(), "name": "r"}), encoding="utf-8")
    values = tmp_path / "values.json"
    values.write_text(json.dumps(at), encoding="utf-8")
    out = tmp_path / "doc.md"
    assert main(["derive", str(path), "--at", str(values), "-o", str(out)]) == 0


@pytest.mark.slow
def test_graph_and_compare_commands_accept_a_skip(tmp_path, capsys) -> None:
    path = _spec_file(tmp_path, 1)
    assert main(["graph", str(path), "-o", str(tmp_path / "g.dot")]) == 0
    assert "-> a2_0 [" in (tmp_path / "g.dot").read_text(encoding="utf-8")
    assert main(["compare", str(path)]) == 0
    assert "backprop" in capsys.readouterr().out


# ------------------------------------------------------------------- hostile shapes


@pytest.mark.slow
def test_a_skip_into_every_layer_chained() -> None:
    depth = 6
    skips = {l: l - 1 for l in range(1, depth + 1)}  # noqa: E741
    spec = _net([3] * (depth + 1), ["tanh"] * (depth - 1) + ["linear"], skips)
    module = _module(spec)
    params = module.init_params(np.random.default_rng(0))
    x, y = _data(spec)
    cost, got = module.loss_and_grad(params, x, y)
    want_cost, want = _numpy_backprop(spec, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-13)
    assert _max_rel(got, want) < 1e-12


@pytest.mark.slow
def test_thirty_layers_with_skips_generate_quickly() -> None:
    depth = 30
    skips = {l: l - 2 for l in range(2, depth + 1, 2)}  # noqa: E741
    spec = _net([4] * (depth + 1), ["tanh"] * (depth - 1) + ["linear"], skips)
    start = time.perf_counter()
    module = _module(spec)
    elapsed = time.perf_counter() - start
    assert elapsed < 20
    params = module.init_params(np.random.default_rng(0))
    x, y = _data(spec, m=3)
    _, got = module.loss_and_grad(params, x, y)
    _, want = _numpy_backprop(spec, params, x, y)
    assert _max_rel(got, want) < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_forward_and_sgd_step_with_skips(form) -> None:
    """forward is a^L (the NumPy reference's), sgd_step moves by -lr * the gradient, twice
    (the second step reuses the work buffers), and the cost it returns is the batch's."""
    spec = _net([3, 3, 3, 3], ["tanh", "sigmoid", "linear"], {2: 1, 3: 0})
    module = _module(spec, form)
    params = module.init_params(np.random.default_rng(6))
    x, y = _data(spec, seed=6)
    for _ in range(2):
        want_cost, want = _numpy_backprop(spec, params, x, y)
        expected = {k: v - 0.1 * want[k] for k, v in params.items()}
        assert module.sgd_step(params, x, y, 0.1) == pytest.approx(want_cost, rel=1e-13)
        for key in params:
            np.testing.assert_allclose(params[key], expected[key], rtol=1e-12, atol=1e-14)
    acts = {"tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "linear": lambda v: v}
    a = [x]
    for l, layer in enumerate(spec.layers, start=1):  # noqa: E741
        h = acts[layer.activation](params[f"W{l}"] @ a[-1] + params[f"b{l}"])
        a.append(h if layer.skip_from is None else h + a[layer.skip_from])
    np.testing.assert_allclose(module.forward(params, x), a[-1], rtol=1e-13)


# ----------------------------------------------------------------------------- graph


def _forward_paths(spec: Spec) -> int:
    """Paths from C to a parameter in the forward unit graph, counted by brute force."""
    n, skips = spec.sizes, spec.skips

    def from_a(layer: int, j: int) -> int:  # paths from a^layer_j down to parameters
        if layer == 0:
            return 0
        via_z = n[layer - 1] + spec.layers[layer - 1].bias
        via_z += sum(from_a(layer - 1, k) for k in range(n[layer - 1]))
        return via_z + (from_a(skips[layer], j) if layer in skips else 0)

    return sum(from_a(spec.depth, j) for j in range(n[-1]))


def _drawn_backward(dot: str) -> dict[tuple[str, str], int]:
    """The backward edges of a scalar graph's DOT text with their naive walk counts."""
    import re

    edges = {}
    for src, dst, count in re.findall(r"^  (\w+) -> (\w+) \[.*?xlabel=\"×([\d,]+)\"", dot, re.M):
        edges[(src, dst)] = int(count.replace(",", ""))
    return edges


@pytest.mark.parametrize(
    "skips", [{2: 1, 3: 0}, {1: 0}, {2: 1, 3: 1, 4: 2}, {3: 1}, {2: 0, 3: 2, 4: 2}]
)
def test_graph_draws_the_skip_and_counts_every_path(skips) -> None:
    from chainrule.graph import build_graph

    depth = 4 if max(skips) > 3 else 3
    spec = _net([2] * (depth + 1), ["tanh"] * (depth - 1) + ["linear"], skips)
    graph = build_graph(spec, "scalar")
    for dest, k in skips.items():
        src = "x_0" if k == 0 else f"a{k}_0"
        assert f"  {src} -> a{dest}_0 [" in graph.dot and 'xlabel="skip"' in graph.dot
        if k > 0:
            assert f"  g{dest}_1 -> g{k}_1 [" in graph.dot
    edges = _drawn_backward(graph.dot)
    children: dict[str, list[str]] = {}
    for src, dst in edges:
        children.setdefault(src, []).append(dst)

    def leaves(node: str) -> int:  # parameters a drawn delta^l_j computes gradients of
        if node.startswith("delta"):
            layer = int(node[5:].split("_")[0])
            return spec.sizes[layer - 1] + spec.layers[layer - 1].bias
        return 0

    def down(node: str) -> int:
        return leaves(node) + sum(down(c) for c in children.get(node, []))

    def up(node: str) -> int:
        return 1 if node == "C" else sum(up(s) for (s, d) in edges if d == node)

    assert down("C") == _forward_paths(spec)  # the drawn graph holds every chain-rule path
    for (src, dst), count in edges.items():
        assert count == up(src) * down(dst)
    assert graph.naive_walks == sum(edges.values()) and graph.backprop_walks == len(edges)
    layer = build_graph(spec, "layer")
    assert (layer.naive_walks, layer.backprop_walks) == (graph.naive_walks, graph.backprop_walks)
    for dest, k in skips.items():
        assert f'  a{k} -> a{dest} [color="#4a78a8", style=dashed, label="skip"];' in layer.dot


# ------------------------------------------------------------------------ derivation


def _chain_spec(name: str = "network") -> Spec:
    """1-1-1-1: tanh, sigmoid (skip from layer 1), linear (skip from x); quadratic cost."""
    return _net([1, 1, 1, 1], ["tanh", "sigmoid", "linear"], {2: 1, 3: 0}).replace(name=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "notation",
    [
        pytest.param("nielsen", marks=pytest.mark.slow),
        pytest.param("3b1b", marks=pytest.mark.slow),
        "cheatsheet",
        "course",
    ],
)
def test_derivation_shows_and_checks_the_residual_steps(notation) -> None:
    from chainrule.derive.document import check_step, derivation
    from chainrule.derive.notation import notation as notation_for

    doc = derivation(_chain_spec(), notation)
    steps = [step for section in doc.sections for step in section.steps]
    assert all(check_step(step) for step in steps)
    titles = [step.title for step in steps]
    two_paths = [s for s in steps if s.title.startswith("Two paths from an activation")]
    assert len(two_paths) == 1
    (step,) = two_paths
    # the path through the layer above, plus the skip's, then the memoized sum
    assert step.latex.count(" + ") == 2 and "textcolor" in step.latex
    text = doc.to_markdown()
    assert "residual connections" in text and "two paths" in text
    assert "Activations of layer" in " ".join(titles)
    # Each notation numbers the layers its own way (the book from 1 at the input).
    number = notation_for(notation, _chain_spec()).number(1)
    assert step.title == f"Two paths from an activation of layer {number}: up and by the skip"
    if notation == "nielsen":  # layer 2 skips from layer 1: a^3 = sigma(z^3) + a^2
        assert number == 2
        assert "a^{3} = \\sigma(z^{3}) + a^{2}" in text
        assert "a^{4} = \\operatorname{linear}(z^{4}) + x" in text


@pytest.mark.slow
def test_a_planted_bug_fails_the_derivations_check(monkeypatch) -> None:
    """Drop the skip path from dC/da^1's sum: the derivation's vectorized step fails."""
    from chainrule.derive.document import check_step, derivation

    original = batch._BatchProgramBuilder.add

    def without_skip_paths(self, target, op, operands, *rest, **kw):
        return original(
            self, target, op, operands[:2] if op == "backsum" else operands, *rest, **kw
        )

    monkeypatch.setattr(batch._BatchProgramBuilder, "add", without_skip_paths)
    doc = derivation(_chain_spec("planted"), "cheatsheet")
    failed = [s.title for sec in doc.sections for s in sec.steps if not check_step(s)]
    assert failed == ["Gradient of the cost in the activations of layer 0"]  # its layer 1


def test_local_partials_of_a_skip_destination_are_not_written_in_a() -> None:
    """With a^2 = sigma(z^2) + a^1, sigma' = a^2 (1 - a^2) would be false: not shown."""
    from chainrule.derive.document import derivation

    doc = derivation(_chain_spec(), "3b1b")
    (step,) = [
        s for sec in doc.sections for s in sec.steps if s.title.endswith("activation of layer 2")
    ]
    assert "a^{(2)}" not in step.latex and "a^{(1)}" not in step.latex


# ---------------------------------------------------------------------------- README


def _readme_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Residual connections (`skip_from`)")
    return text[start : text.index("\n## ", start)]


def test_readme_example_spec_is_what_it_says(tmp_path) -> None:
    section = _readme_section()
    toml = section.split("```toml\n")[1].split("```")[0]
    path = tmp_path / "readme.toml"
    path.write_text(toml, encoding="utf-8")
    spec = load_spec(path)
    assert spec.skips == {2: 1, 3: 0}
    assert spec.activations == ("relu", "tanh", "linear")
    module = _module(spec, "plain")
    assert "h2 = np.tanh(z2)" in generate(spec, "plain")
    params = module.init_params(np.random.default_rng(1))
    x, y = _data(spec, seed=2)
    a1 = np.maximum(params["W1"] @ x + params["b1"], 0)
    a2 = np.tanh(params["W2"] @ a1 + params["b2"]) + a1  # a^2 = tanh(z^2) + a^1
    a3 = params["W3"] @ a2 + params["b3"] + x  # a^3 = z^3 + x
    np.testing.assert_allclose(module.forward(params, x), a3, rtol=1e-13)


def test_readme_says_the_one_liner_and_importers_cannot_skip() -> None:
    from chainrule.cli import build_parser

    section = " ".join(_readme_section().split())
    assert "the `--sizes`/`--activations` one-liner has no flag for it" in section
    assert "skip" not in build_parser().format_help().lower()
    generate_help = build_parser()._subparsers._group_actions[0].choices["generate"]
    assert "--skip" not in generate_help.format_help()


@pytest.mark.slow
def test_an_imported_sequential_model_has_no_skip(torch) -> None:
    from chainrule.importers import from_torch

    nn = torch.nn
    spec = from_torch(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3)), "quadratic")
    assert spec.skips == {} and all(layer.skip_from is None for layer in spec.layers)


@pytest.mark.parametrize(
    "skips", [{2: 1}, {1: 0, 2: 1, 3: 2}, {2: 0, 3: 1}, {3: 1}, {1: 0, 2: 0, 3: 0}]
)
def test_naive_estimate_bounds_the_real_expansion_with_skips(skips) -> None:
    """The budget guard predicts without building; with skips it must not under-predict."""
    from chainrule.derive.scalar import count_strategy, gradients
    from chainrule.derive.scalar_counts import estimate_naive_ops

    spec = _net([2, 2, 2, 2], ["sigmoid", "tanh", "linear"], skips)
    assert estimate_naive_ops(spec) >= count_strategy(gradients(spec, "naive")).total


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy", ["backprop", pytest.param("naive", marks=pytest.mark.slow), "cse"]
)
def test_unrolled_form_with_skips_equals_the_vectorized(strategy) -> None:
    from chainrule.codegen.unrolled import generate_unrolled

    spec = _net([2, 2, 2, 2], ["sigmoid", "tanh", "linear"], {2: 1, 3: 0})
    reference = _module(spec)
    source = generate_unrolled(spec, strategy)
    lint_module(source)
    module = types.ModuleType("unrolled")
    exec(compile(source, "<unrolled>", "exec"), module.__dict__)  # noqa: S102
    params = reference.init_params(np.random.default_rng(3))
    x, y = _data(spec, m=4, seed=5)
    cost, got = module.loss_and_grad(params, x, y)
    want_cost, want = reference.loss_and_grad(params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-13)
    assert _max_rel(got, want) < 1e-12
    assert "# forward: a2_0 = tanh(z2_0) + a1_0 = " in source


@pytest.mark.slow
@pytest.mark.parametrize("skips", [{2: 1, 3: 0}, {}])
def test_derive_at_with_a_linear_layer_of_two_units(skips) -> None:
    """A skip into a linear output (and a linear layer without skips): sigma' = 1 on every
    unit in the worked numbers, which the module check confirms."""
    from chainrule.api import derivation

    spec = _net([2, 2, 2, 2], ["sigmoid", "tanh", "linear"], skips)
    weights = [[0.1, -0.2], [0.3, 0.2]]
    params = {f"{p}{n}": weights if p == "W" else [0.1, -0.1] for p in "Wb" for n in "123"}
    doc = derivation(spec, "cheatsheet", at={"x": [0.5, -0.4], "y": [0.3, 0.8], "params": params})
    assert doc.worked.checked


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["huber", "squared-error"])
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_skip_into_the_output_under_other_real_costs(cost, form) -> None:
    """Costs defined on all reals take a skip into the output: every entry against central
    differences (targets scaled so that both pieces of huber are used)."""
    spec = _net([3, 3, 3], ["relu", "linear"], {2: 0}, cost)
    module = _module(spec, form)
    params = module.init_params(np.random.default_rng(0))
    x, y = _data(spec)
    y = 3 * y
    _, got = module.loss_and_grad(params, x, y)
    numeric = _central_differences(module, params, x, y)
    for key in params:
        np.testing.assert_allclose(got[key], numeric[key], rtol=1e-5, atol=1e-8)
