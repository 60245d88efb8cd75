"""The scalar-level network, the three gradient strategies, op counts and the budget."""

from __future__ import annotations

import random

import mpmath
import pytest
import sympy as sp
from chainrule.derive.errors import DerivationError
from chainrule.derive.functions import sigmoid
from chainrule.derive.opcount import own_ops, program_ops, tree_ops
from chainrule.derive.scalar import (
    DEFAULT_BUDGET,
    Evaluator,
    check_naive_budget,
    count_strategy,
    estimate_naive_ops,
    gradient_values,
    gradients,
    label_temporaries,
    layer_counts,
    random_point,
    resolve_engine,
    scalar_network,
    symengine_available,
)
from chainrule.derive.spec import Spec, preset, preset_names

S = sp.Symbol


def _spec(sizes, acts, cost, **kw):
    return Spec.from_sizes(sizes, acts, cost, **kw)


SMALL = [
    preset("3b1b-chain"),
    preset("cheatsheet-relu"),
    _spec([2, 3, 2], ["tanh", "sigmoid"], "binary-cross-entropy"),
    _spec([2, 2, 3], ["sigmoid", "softmax"], "cross-entropy"),
    _spec([2, 2, 2, 1], ["relu", "x*sigmoid(x)", "linear"], "quadratic", layout="rows"),
    _spec([2, 2, 1], ["softplus", "sigmoid"], "squared-error", bias=False),
]


# --------------------------------------------------------------------- the network


def test_scalar_network_names_and_order():
    net = scalar_network(_spec([2, 2, 1], ["sigmoid", "linear"], "quadratic"))
    assert [p.name for p in net.params] == [
        "w1_0_0", "w1_0_1", "w1_1_0", "w1_1_1", "b1_0", "b1_1", "w2_0_0", "w2_0_1", "b2_0",
    ]  # fmt: skip
    assert [s.name for s in net.inputs] == ["x_0", "x_1"]
    assert [s.name for s in net.targets] == ["y_0"]
    assert net.a[0] == net.inputs
    assert net.z[0] == ()
    w, x, b = S("w1_1_0", real=True), S("x_0", real=True), S("b1_1", real=True)
    w2 = S("w1_1_1", real=True)
    assert net.z[1][1] == w * x + w2 * S("x_1", real=True) + b
    assert net.a[1][1] == sigmoid(net.z[1][1])
    assert net.a[2][0] == net.z[2][0]  # linear output
    assert net.cost == (net.a[2][0] - net.targets[0]) ** 2 / 2


def test_scalar_network_3b1b_cost_is_the_seed_formula():
    net = scalar_network(preset("3b1b-chain"))
    sym = {n: S(n, real=True) for n in ("w1_0_0", "b1_0", "w2_0_0", "b2_0", "w3_0_0", "b3_0")}
    x, y = S("x_0", real=True), S("y_0", real=True)
    a1 = sigmoid(sym["w1_0_0"] * x + sym["b1_0"])
    a2 = sigmoid(sym["w2_0_0"] * a1 + sym["b2_0"])
    a3 = sigmoid(sym["w3_0_0"] * a2 + sym["b3_0"])
    assert net.cost == (a3 - y) ** 2


def test_scalar_network_refuses_huge_networks():
    with pytest.raises(DerivationError, match="too many for a scalar-level expansion"):
        scalar_network(preset("nielsen"))


# --------------------------------------------------------------------- exactness


@pytest.mark.parametrize("spec", SMALL, ids=lambda s: "-".join(map(str, s.sizes)) + s.cost)
@pytest.mark.slow
def test_cse_and_backprop_equal_naive_at_random_rational_points(spec):
    naive = gradients(spec, "naive", engine="sympy")
    others = [gradients(spec, "cse", engine="sympy"), gradients(spec, "backprop")]
    checked = 0
    for seed in range(40):
        point = random_point(naive.network, seed)
        expected = gradient_values(naive, point, digits=40)
        if not any(abs(v) > 1e-6 for v in expected):
            continue  # every ReLU off: all gradients zero, resample (not counted)
        checked += 1
        if checked > 2:
            break
        for g in others:
            got = gradient_values(g, point, digits=40)
            for e, v in zip(expected, got, strict=True):
                assert abs(e - v) <= mpmath.mpf("1e-30") * (1 + abs(e)), (g.strategy, e, v)
    assert checked > 2


def test_polynomial_network_strategies_agree_exactly():
    # A rational activation keeps every value rational: the agreement is exact.
    spec = _spec([2, 2, 1], ["x*x/2 + x", "x*x*x"], "quadratic")
    naive = gradients(spec, "naive", engine="sympy")
    rng = random.Random(5)
    point = {
        s: sp.Rational(rng.randint(-9, 9), 7)
        for s in (*naive.network.params, *naive.network.inputs, *naive.network.targets)
    }
    expected = [e.xreplace(point) for e in naive.expressions()]
    assert all(isinstance(v, sp.Rational) for v in expected)
    for strategy in ("cse", "backprop"):
        got = [e.xreplace(point) for e in gradients(spec, strategy).expressions()]
        assert got == expected


def test_backprop_gradient_matches_finite_differences_of_the_cost():
    spec = _spec([2, 3, 1], ["tanh", "sigmoid"], "binary-cross-entropy")
    g = gradients(spec, "backprop")
    net = g.network
    point = random_point(net, 3)
    got = gradient_values(g, point, digits=30)
    h = mpmath.mpf("1e-12")
    with mpmath.workdps(40):
        for p, value in zip(net.params, got, strict=True):
            up = Evaluator({**point, p: point[p] + sp.Rational(1, 10**12)}, 40)(net.cost)
            down = Evaluator({**point, p: point[p] - sp.Rational(1, 10**12)}, 40)(net.cost)
            numeric = (up - down) / (2 * h)
            assert abs(numeric - value) < mpmath.mpf("1e-15")


@pytest.mark.slow
@pytest.mark.skipif(not symengine_available(), reason="symengine is not installed")
@pytest.mark.parametrize("spec", SMALL[:4], ids=lambda s: "-".join(map(str, s.sizes)))
def test_symengine_engine_gives_the_same_gradients(spec):
    for strategy in ("naive", "cse"):
        a = gradients(spec, strategy, engine="sympy")
        b = gradients(spec, strategy, engine="symengine")
        assert b.engine == "symengine" and a.engine == "sympy"
        point = random_point(a.network, 7)
        for u, v in zip(gradient_values(a, point), gradient_values(b, point), strict=True):
            assert abs(u - v) <= mpmath.mpf("1e-30") * (1 + abs(u))
    # Without softmax the naive trees are the same expressions: same counts, operation
    # for operation. (SymEngine writes the quotient rule of softmax in another order.)
    na = count_strategy(gradients(spec, "naive", engine="sympy"))
    nb = count_strategy(gradients(spec, "naive", engine="symengine"))
    if "softmax" not in spec.activations:
        assert na == nb
    else:
        assert abs(na.total - nb.total) <= 0.1 * na.total


def test_unknown_strategy_and_engine_are_refused():
    with pytest.raises(DerivationError, match="unknown strategy 'fast'"):
        gradients(preset("3b1b-chain"), "fast")
    with pytest.raises(DerivationError, match="unknown engine"):
        resolve_engine("maple")


def test_auto_engine_keeps_sympy_for_relu():
    assert resolve_engine("auto", preset("cheatsheet-relu")) == "sympy"


# --------------------------------------------------------------------- op counts


def test_opcount_definition():
    x, y, z = sp.symbols("x y z")
    assert own_ops(x + y + z) == 2
    assert tree_ops(x - y) == 1  # one subtraction, not an addition and a negation
    assert tree_ops(x / y) == 1  # one division
    assert tree_ops(-x) == 1
    assert tree_ops(x**2 + 1) == 2
    e = sp.exp(x + 1)
    assert tree_ops(e * (e + 2)) == 6  # exp(x + 1) twice as a tree
    t = sp.Symbol("t")
    assert program_ops([(e, 1), (t * (t + 2), 1)]) == 4  # once in a program
    assert program_ops([(x * y, 7)]) == 7


def test_3b1b_chain_counts():
    # Regression pins: 288 and 27 are the code's own output when they were written, with no
    # independent source; 25, 11 and (5, 5, 15) are derived by hand in
    # test_opcount_by_hand.py.
    spec = preset("3b1b-chain")
    counts = {s: count_strategy(gradients(spec, s, engine="sympy")) for s in ("naive", "cse")}
    bp = count_strategy(gradients(spec, "backprop"))
    assert counts["naive"].total == 288
    assert counts["cse"].total == 27
    assert bp.total == 25
    assert bp.per_layer == (5, 5, 15)
    lc = layer_counts(spec)
    assert (lc.forward_ops, lc.backprop_ops) == (11, 25)


@pytest.mark.parametrize(
    "spec",
    [preset("3b1b-chain"), preset("two-layer-nobias"), *SMALL[2:]],
    ids=lambda s: "-".join(map(str, s.sizes)),
)
@pytest.mark.slow
def test_layer_counts_equal_the_full_scalar_program(spec):
    bp = count_strategy(gradients(spec, "backprop"))
    lc = layer_counts(spec)
    assert lc.backprop_ops == bp.total
    assert lc.backprop_per_layer == bp.per_layer


@pytest.mark.parametrize("name", preset_names())
def test_cheap_gradient_principle_on_every_preset(name):
    lc = layer_counts(preset(name))
    assert 1 < lc.backprop_ops / lc.forward_ops <= 4


@pytest.mark.parametrize(
    "spec",
    [
        preset("3b1b-chain"),
        preset("two-layer-nobias"),
        _spec([2, 3, 3, 2], ["sigmoid"] * 3, "quadratic"),
        _spec([2, 3, 2], ["tanh", "sigmoid"], "binary-cross-entropy"),
    ],
    ids=lambda s: "-".join(map(str, s.sizes)),
)
@pytest.mark.slow
def test_naive_above_cse_above_backprop(spec):
    naive = count_strategy(gradients(spec, "naive", engine="sympy")).total
    cse = count_strategy(gradients(spec, "cse", engine="sympy")).total
    bp = layer_counts(spec).backprop_ops
    assert naive > cse >= bp


def _chain(width, depth):
    return _spec([width] * (depth + 1), ["sigmoid"] * depth, "quadratic")


@pytest.mark.slow
def test_one_wide_chain_naive_quadratic_per_parameter_backprop_linear():
    first = []  # naive ops of dC/dw^1, the longest path
    backprop = []
    for depth in range(1, 8):
        g = gradients(_chain(1, depth), "naive", engine="sympy")
        first.append(count_strategy(g).per_parameter[0])
        backprop.append(layer_counts(_chain(1, depth)).backprop_ops)
    steps = [b - a for a, b in zip(backprop, backprop[1:], strict=False)]
    assert steps[1:] == [steps[1]] * (len(steps) - 1)  # linear: constant step
    first_diff = [b - a for a, b in zip(first, first[1:], strict=False)]
    second_diff = [b - a for a, b in zip(first_diff, first_diff[1:], strict=False)]
    # Quadratic: the second differences stay positive and bounded (8, 4, 8, 4, ...:
    # SymPy orders the factors of alternate layers differently).
    assert all(2 <= d <= 10 for d in second_diff), second_diff
    assert first[-1] > 3 * backprop[-1]


@pytest.mark.parametrize("width", [2, 3])
def test_wide_chain_naive_exponential_in_depth(width):
    naive = [
        count_strategy(gradients(_chain(width, d), "naive", engine="auto")).total
        for d in range(1, 5)
    ]
    ratios = [b / a for a, b in zip(naive, naive[1:], strict=False)]
    assert all(r > width for r in ratios), ratios
    bp = [layer_counts(_chain(width, d)).backprop_ops for d in range(1, 5)]
    assert len({b - a for a, b in zip(bp, bp[1:], strict=False)}) == 1


# --------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    "spec",
    [
        _chain(1, 5),
        _chain(3, 3),
        _spec([2, 3, 3, 2], ["tanh"] * 3, "quadratic"),
        preset("two-layer-nobias"),
    ],
    ids=lambda s: "-".join(map(str, s.sizes)),
)
def test_estimate_is_close_for_smooth_activations(spec):
    actual = count_strategy(gradients(spec, "naive", engine="auto")).total
    estimate = estimate_naive_ops(spec)
    assert actual / 1.5 <= estimate <= actual * 1.5


def test_oversized_naive_is_refused_with_one_clear_line():
    spec = _chain(20, 7)
    with pytest.raises(DerivationError) as info:
        gradients(spec, "naive")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("strategy: the naive (fully expanded) gradient of the 20-20-")
    assert "backprop" in text and "smaller network" in text and "--budget" in text
    with pytest.raises(DerivationError):
        gradients(spec, "cse")
    assert check_naive_budget(_chain(1, 3)) == estimate_naive_ops(_chain(1, 3))
    assert estimate_naive_ops(spec) > DEFAULT_BUDGET


def test_budget_is_configurable():
    spec = _chain(2, 2)
    with pytest.raises(DerivationError, match="over the budget of 10"):
        gradients(spec, "naive", budget=10)
    assert len(gradients(spec, "naive", budget=None).grads) == spec.parameter_count


# --------------------------------------------------------------------- cse -> delta


def test_cse_temporaries_map_back_to_deltas():
    g = gradients(preset("3b1b-chain"), "cse", engine="sympy")
    labels = label_temporaries(g)
    assert len(labels) == len(g.program)
    found = {v.lstrip("-") for v in labels.values()}
    assert {"delta^1_0", "delta^2_0", "delta^3_0"} <= found
    assert {"a^1_0", "a^2_0", "a^3_0"} <= found
    # Labels are facts: the labelled temporary equals (up to sign) that delta.
    bp = gradients(preset("3b1b-chain"), "backprop")
    point = random_point(g.network, 11)
    values = Evaluator(point, 30)
    for s in bp.program:
        values.assign(s.target, s.expr)
    temps = Evaluator(point, 30)
    for s in g.program:
        v = temps.assign(s.target, s.expr)
        label = labels[s.target]
        if label.lstrip("-").startswith("delta"):
            layer, unit = label.lstrip("-")[len("delta^") :].split("_")
            ref = values(S(f"delta{layer}_{unit}", real=True))
            sign = -1 if label.startswith("-") else 1
            with mpmath.workdps(30):
                assert abs(v - sign * ref) < mpmath.mpf("1e-25")


def test_the_softmax_family_agrees_with_its_definitions():
    from chainrule.derive.batch_network import log1m_softmax, log_softmax, softmax
    from chainrule.derive.numeric import Evaluator, sample_point

    z = sp.symbols("z0:4", real=True)
    ev = Evaluator(sample_point(z, 5))
    p, logp, log1m = softmax(z), log_softmax(z), log1m_softmax(z)
    assert abs(ev(sp.Add(*p)) - 1) < 1e-35
    for j in range(4):
        assert abs(ev(sp.exp(logp[j])) - ev(p[j])) < 1e-35
        assert abs(ev(sp.exp(log1m[j]) - (1 - p[j]))) < 1e-35


def test_the_batch_network_averages_the_one_example_network_over_examples():
    from chainrule.derive import naming
    from chainrule.derive.batch_network import scalar_batch

    spec = Spec.from_sizes([2, 3, 2], ["elu", "softmax"], "cross-entropy")
    batch = scalar_batch(spec, 3)
    assert batch.x.shape == (2, 3) and batch.z[2].shape == (2, 3) and batch.a[0] == batch.x
    single = scalar_network(spec).cost
    per_example = []
    for i in range(3):
        rename = {
            naming.symbol(s.name): naming.symbol(f"{s.name}_{i}") for s in single.free_symbols
        }
        rename = {s: v for s, v in rename.items() if s.name[0] in "xy"}
        per_example.append(single.xreplace(rename))
    assert sp.simplify(batch.cost - sp.Add(*per_example) / 3) == 0
    summed = scalar_batch(spec, 2, targets_sum_to_one=True).y
    assert summed[1, 0] == 1 - summed[0, 0]


def test_the_evaluator_modes_agree_and_exact_stays_exact():
    from chainrule.derive.numeric import Evaluator, NotReal

    x = sp.Symbol("x", real=True)
    expr = (
        sp.sqrt(2 / sp.pi) * x + sigmoid(x) ** 2 + sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True))
    )
    point = {x: sp.Rational(-3, 4)}
    exact = Evaluator(point, mode="exact")(expr)
    assert exact.has(sp.pi) and sp.N(exact, 30).is_Float
    mp = Evaluator(point, 30)(expr)
    real = Evaluator({x: -0.75}, mode="float")(expr)
    assert abs(float(sp.N(exact, 30)) - float(mp)) < 1e-25
    assert abs(real - float(mp)) < 1e-14
    assert Evaluator({x: sp.Rational(1, 3)}, mode="exact")(x**2 + x) == sp.Rational(4, 9)
    with pytest.raises(NotReal):
        Evaluator({x: -1.0}, mode="float")(sp.log(x))
