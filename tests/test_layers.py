"""Derivation facts: what SymPy finds for each activation and each output/cost pair.

The cached forms (sigma' in terms of a), the simplified output errors, the softmax
Jacobian-vector product and the assumption it needs are pinned here, each checked
against a derivative typed in by hand.
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import DerivationError
from chainrule.derive.functions import sigmoid, softplus
from chainrule.derive.layers import (
    LOG1MP,
    LOGP,
    REST,
    UNIT_SUM,
    A,
    Y,
    Z,
    _complement_jvp,
    derive_activation,
    derive_network,
    derive_output,
    equal_at_points,
)
from chainrule.derive.spec import Spec, preset

REPO = Path(__file__).resolve().parents[1]


def _numeric_equal(lhs: sp.Expr, rhs: sp.Expr, symbols, seed: int = 0, count: int = 8) -> bool:
    """Agreement to 30 digits at random rational points (a in (0, 1), others in [-3, 3])."""
    rng = random.Random(seed)
    for _ in range(count):
        point = {
            s: sp.Rational(rng.randint(5, 95), 100)
            if s in (A, Y)
            else sp.Rational(rng.randint(-300, 300), 97)
            for s in symbols
        }
        left, right = sp.N(lhs.subs(point), 40), sp.N(rhs.subs(point), 40)
        if abs(left - right) > sp.Float("1e-30") * (1 + abs(right)):
            return False
    return True


def _s(t: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-t))


#: sigma'(z) typed in by hand, for every elementwise activation (z away from 0).
HAND_DERIVATIVES = {
    "sigmoid": _s(Z) * (1 - _s(Z)),
    "tanh": 1 / sp.cosh(Z) ** 2,
    "softplus": _s(Z),
    "linear": sp.Integer(1),
    "x*sigmoid(x)": _s(Z) + Z * _s(Z) * (1 - _s(Z)),
}


def test_sigmoid_derivative_is_cached_as_a_times_one_minus_a():
    d = derive_activation("sigmoid")
    assert d.cached == A * (1 - A)
    assert d.uses_a
    assert _numeric_equal(d.derivative.rewrite(sp.exp), HAND_DERIVATIVES["sigmoid"], [Z])


def test_tanh_derivative_is_one_minus_a_squared():
    d = derive_activation("tanh")
    assert d.uses_a and d.cached.free_symbols == {A}
    assert sp.expand(d.cached - (1 - A**2)) == 0
    assert _numeric_equal(d.derivative, HAND_DERIVATIVES["tanh"], [Z])


@pytest.mark.parametrize("name", sorted(HAND_DERIVATIVES))
def test_cached_form_equals_the_hand_derivative(name):
    d = derive_activation(name)
    forward = d.forward.rewrite(sp.exp)
    cached = d.cached.subs(A, d.forward).rewrite(sp.exp)
    assert _numeric_equal(cached, HAND_DERIVATIVES[name], [Z], seed=1)
    assert _numeric_equal(sp.diff(forward, Z), HAND_DERIVATIVES[name], [Z], seed=2)


def test_relu_derivative_is_zero_at_zero_and_one_above():
    d = derive_activation("relu")
    assert d.derivative.subs(Z, 0) == 0
    assert d.derivative.subs(Z, sp.Rational(1, 10**9)) == 1
    assert d.derivative.subs(Z, -sp.Rational(1, 10**9)) == 0
    assert d.cached.subs(Z, 0) == 0
    assert d.forward.subs(Z, -3) == 0 and d.forward.subs(Z, 3) == 3


def test_leaky_relu_slope_is_one_hundredth_below_and_at_zero():
    d = derive_activation("leaky-relu")
    assert d.derivative.subs(Z, 0) == sp.Rational(1, 100)
    assert d.derivative.subs(Z, -2) == sp.Rational(1, 100)
    assert d.derivative.subs(Z, 2) == 1
    assert d.forward.subs(Z, -3) == sp.Rational(-3, 100)


def test_linear_derivative_is_one_and_softplus_derivative_is_sigmoid():
    assert derive_activation("linear").cached == 1
    d = derive_activation("softplus")
    assert equal_at_points(d.cached.subs(A, d.forward), sigmoid(Z))


def test_custom_expression_is_parsed_and_differentiated_by_sympy():
    d = derive_activation("x*sigmoid(x)")
    assert d.forward == Z * sigmoid(Z)
    assert _numeric_equal(
        d.cached.subs(A, d.forward).rewrite(sp.exp), HAND_DERIVATIVES["x*sigmoid(x)"], [Z]
    )


def test_softmax_is_not_an_elementwise_activation():
    with pytest.raises(DerivationError) as info:
        derive_activation("softmax")
    assert info.value.field == "activation"


def _output(acts, cost, sizes=(3, 3, 2)):
    return derive_output(Spec.from_sizes(list(sizes), acts, cost))


def test_sigmoid_with_binary_cross_entropy_gives_a_minus_y():
    out = derive_network(preset("deep-relu-sigmoid")).output
    assert out.delta == A - Y
    assert out.softmax is None and out.assumptions == ()
    # The loss is in logits form: no log of a sigmoid, equal to the composed cost.
    assert out.loss_element.has(softplus) and not out.loss_element.has(sp.log)
    composed = -(Y * sp.log(_s(Z)) + (1 - Y) * sp.log(1 - _s(Z)))
    assert _numeric_equal(out.loss_element.subs(A, _s(Z)).rewrite(sp.exp), composed, [Z, Y])


@pytest.mark.parametrize(
    ("acts", "cost", "hand"),
    [
        (["sigmoid", "sigmoid"], "quadratic", (A - Y) * A * (1 - A)),
        (["sigmoid", "sigmoid"], "squared-error", 2 * (A - Y) * A * (1 - A)),
        (["relu", "tanh"], "quadratic", (A - Y) * (1 - A**2)),
        (["tanh", "linear"], "squared-error", 2 * (A - Y)),
    ],
)
def test_elementwise_output_error_is_dcda_times_sigma_prime(acts, cost, hand):
    out = _output(acts, cost)
    assert out.softmax is None
    assert sp.expand(out.delta - hand) == 0


def test_softmax_with_cross_entropy_gives_a_minus_y_under_a_stated_assumption():
    derivation = derive_network(Spec.from_sizes([3, 4, 3], ["relu", "softmax"], "cross-entropy"))
    out = derivation.output
    assert out.delta is None
    assert out.softmax.elementwise == A - Y
    # sum_k dC/da_k a_k = sum_k -y_k = -1 under the assumption, folded into a - y.
    assert (out.softmax.summand, out.softmax.summand_total, out.softmax.scale) == (-Y, -1, -A)
    assert "sum_j y_j = 1" in out.softmax.assumption
    assert derivation.assumptions == (out.softmax.assumption,)


def _softmax_delta(jvp, a_values, y_values):
    """delta_j = elementwise_j + scale_j * sum_k summand_k, evaluated exactly."""
    total = sum(jvp.summand.subs({A: ak, Y: yk}) for ak, yk in zip(a_values, y_values, strict=True))
    return [
        jvp.elementwise.subs({A: aj, Y: yj}) + jvp.scale.subs({A: aj}) * total
        for aj, yj in zip(a_values, y_values, strict=True)
    ]


@pytest.mark.parametrize("cost", ["quadratic", "squared-error", "binary-cross-entropy"])
def test_softmax_jvp_equals_the_full_jacobian_product(cost):
    # No assumption for these costs: delta_j = a_j (g_j - sum_k g_k a_k), g = dC/da.
    out = _output(["tanh", "softmax"], cost, sizes=(2, 3, 3))
    assert out.assumptions == () and out.softmax.summand_total is None
    hand_g = {
        "quadratic": lambda a, y: a - y,
        "squared-error": lambda a, y: 2 * (a - y),
        "binary-cross-entropy": lambda a, y: -(y / a - (1 - y) / (1 - a)),
    }[cost]
    a_values = [sp.Rational(1, 5), sp.Rational(3, 10), sp.Rational(1, 2)]
    y_values = [sp.Rational(7, 10), sp.Rational(1, 10), sp.Rational(2, 5)]
    g = [hand_g(a, y) for a, y in zip(a_values, y_values, strict=True)]
    dot = sum(gk * ak for gk, ak in zip(g, a_values, strict=True))
    want = [aj * (gj - dot) for aj, gj in zip(a_values, g, strict=True)]
    got = _softmax_delta(out.softmax, a_values, y_values)
    assert [sp.simplify(u - v) for u, v in zip(got, want, strict=True)] == [0, 0, 0]


def test_softmax_cross_entropy_module_docstring_states_the_assumption():
    source = generate_module(Spec.from_sizes([3, 4, 3], ["tanh", "softmax"], "cross-entropy"))
    docstring = ast.get_docstring(ast.parse(source))
    assert "Assumptions:" in docstring
    assert "sum_j y_j = 1" in docstring
    plain = ast.get_docstring(ast.parse(generate_module(preset("nielsen"))))
    assert "Assumptions" not in plain


@pytest.mark.slow
def test_derive_package_never_imports_codegen():
    for path in sorted((REPO / "derive").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.startswith("chainrule.codegen") for n in names), (path.name, names)
    code = (
        "import sys, chainrule.derive.layers, chainrule.derive.spec\n"
        "chainrule.derive.layers.derive_network(chainrule.derive.spec.preset('nielsen'))\n"
        "assert not [m for m in sys.modules if m.startswith(('chainrule.codegen', 'jinja2'))]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("units", [2, 3, 5])
def test_softmax_binary_cross_entropy_goes_through_log_a_and_log_one_minus_a(units):
    spec = Spec.from_sizes([2, units], ["softmax"], "binary-cross-entropy")
    out = derive_output(spec)
    assert out.loss_element == -(Y * LOGP + (1 - Y) * LOG1MP)
    comp = out.complement
    assert comp is not None and comp.summand_is_constant
    assert (comp.dlogp, comp.dlog1m, comp.summand) == (-Y, Y - 1, -1)
    assert sp.expand(comp.delta - (units * A - Y + REST)) == 0


def test_a_cost_with_a_varying_unit_sum_keeps_the_sum_symbol():
    comp = _complement_jvp(-(Y * LOGP + (1 - Y) * LOG1MP) + LOGP**2, 3)
    assert not comp.summand_is_constant
    assert UNIT_SUM in comp.delta.free_symbols


def test_a_wrong_complement_delta_is_caught(monkeypatch):
    import chainrule.derive.layers as layers

    monkeypatch.setattr(layers, "tidy", lambda expr: expr + layers.A / 7)
    with pytest.raises(DerivationError, match="log\\(1 - softmax\\)"):
        layers._complement_jvp(-(Y * LOGP + (1 - Y) * LOG1MP), 3)


#: The rows added as one table row each: every one in a hidden and an output layer, in
#: both layouts, and huber after every kind of output.
NEW_ROW_SPECS = {
    "elu-selu-huber": Spec.from_sizes([3, 4, 2], ["elu", "selu"], "huber"),
    "gelu-mish-quadratic": Spec.from_sizes([3, 4, 2], ["gelu", "mish"], "quadratic"),
    "mish-elu-huber-rows": Spec.from_sizes([3, 5, 2], ["mish", "elu"], "huber", layout="rows"),
    "selu-gelu-huber": Spec.from_sizes([2, 3, 3], ["selu", "gelu"], "huber"),
    "tanh-softmax-huber": Spec.from_sizes([3, 4, 3], ["tanh", "softmax"], "huber"),
    "gelu-sigmoid-bce-rows": Spec.from_sizes(
        [3, 4, 1], ["gelu", "sigmoid"], "binary-cross-entropy", layout="rows"
    ),
}


@pytest.mark.parametrize("key", sorted(NEW_ROW_SPECS))
@pytest.mark.slow
def test_new_rows_pass_finite_differences_and_the_hand_written_oracle(build, key):
    import numpy as np
    import oracle

    spec = NEW_ROW_SPECS[key]
    module = build(spec)
    net = spec.to_dict()
    for seed in (1, 2, 3):
        params, x, y = oracle.sample_problem(net, np.random.default_rng(seed), m=4)
        y = y * 4 - 2 if spec.cost == "huber" else y  # both pieces of huber are reached
        cost, grads = module.loss_and_grad(params, x, y)
        failures = oracle.fd_failures(lambda p, x=x, y=y: module.loss(p, x, y), params, grads, cost)
        assert failures == [], failures[:5]
        oracle.assert_agrees((cost, grads), oracle.loss_and_grad(net, params, x, y))


@pytest.mark.parametrize("key", sorted(NEW_ROW_SPECS))
@pytest.mark.slow
def test_new_rows_are_stable_where_numpy_raises(build, key):
    """Large weighted inputs raise no overflow or invalid value (underflow is harmless)."""
    import numpy as np

    spec = NEW_ROW_SPECS[key]
    module = build(spec)
    rng = np.random.default_rng(0)
    params = {k: v * 300.0 for k, v in module.init_params(0).items()}
    x = rng.standard_normal((spec.sizes[0], 5)) * 50.0
    y = rng.random((spec.sizes[-1], 5))
    if spec.activations[-1] == "softmax":
        y /= y.sum(axis=0)
    if spec.layout == "rows":
        x, y = x.T.copy(), y.T.copy()
    with np.errstate(all="raise", under="ignore"):
        cost, grads = module.loss_and_grad(params, x, y)
    assert np.isfinite(cost) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_new_activation_derivatives_at_their_kinks():
    """SymPy's derivative at 0 is the selected (left) branch: elu 1 from both sides,
    selu scale*alpha on the left and scale on the right."""
    from chainrule.derive.tables import SELU_ALPHA, SELU_SCALE

    elu = derive_activation("elu").derivative
    selu = derive_activation("selu").derivative
    assert elu.subs(Z, 0) == 1 and elu.subs(Z, sp.Rational(1, 10**9)) == 1
    assert abs(selu.subs(Z, 0) - SELU_SCALE * SELU_ALPHA) < 1e-30
    assert abs(selu.subs(Z, 1) - SELU_SCALE) < 1e-30
