"""The emitted code itself, run, against an exact reference; and its equation labels.

``test_symbolic_equivalence`` interprets each statement's SymPy expression, never the
NumPy code printed from it, so a slip between the two (a dropped 1/m, a missing
transpose in the rows layout) can pass it. Here the generated module is imported and run,
and its loss and gradient are compared with the exact derivative of the whole mini-batch
cost, which this file writes down from the definitions in closed form (exp and log, never
the project's function classes) and differentiates by the complex step in 50-digit
arithmetic (exact to about 30 digits).

The second part reads freshly generated modules (rows layout, softmax, no bias, a custom
activation), not only the checked-in presets: every backward statement is preceded by the
comment of the equation it implements, with its BP label.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Layer, Spec

RTOL = 1e-10
#: Working precision (digits) and complex step: the step's error is O(STEP^2).
DPS = 50
STEP = mp.mpf("1e-40")


def _sigmoid(z):
    return 1 / (1 + mp.exp(-z))


def _kinked(slope: object):
    # max(slope z, z) continued analytically from the side of the real part: exact away
    # from the kink, which random data do not hit.
    return lambda z: z if mp.re(z) > 0 else slope * z


#: Activations in closed form, typed in from their definitions (mpmath, complex-safe).
CLOSED_FORM = {
    "sigmoid": _sigmoid,
    "tanh": lambda z: (mp.exp(z) - mp.exp(-z)) / (mp.exp(z) + mp.exp(-z)),
    "relu": _kinked(0),
    "leaky-relu": _kinked(mp.mpf(1) / 100),
    "softplus": lambda z: mp.log(1 + mp.exp(z)),
    "linear": lambda z: z,
    "x*sigmoid(x)": lambda z: z * _sigmoid(z),
}


def _spec(sizes, acts, cost, layout="columns", bias=True) -> Spec:
    biases = bias if isinstance(bias, tuple) else (bias,) * len(acts)
    layers = tuple(Layer(s, a, b) for s, a, b in zip(sizes[1:], acts, biases, strict=True))
    return Spec(sizes[0], layers, cost, layout, "float64", "emitted")


CASES = {
    "sigmoid-quadratic": _spec([2, 3, 2], ["sigmoid", "sigmoid"], "quadratic"),
    "sigmoid-quadratic-rows": _spec([2, 3, 2], ["sigmoid", "sigmoid"], "quadratic", "rows"),
    "tanh-sigmoid-bce-rows": _spec([3, 2, 2], ["tanh", "sigmoid"], "binary-cross-entropy", "rows"),
    "relu-softmax-ce": _spec([2, 3, 3], ["relu", "softmax"], "cross-entropy"),
    "leaky-softmax-ce-rows": _spec([2, 3, 3], ["leaky-relu", "softmax"], "cross-entropy", "rows"),
    "softplus-softmax-bce": _spec([2, 2, 3], ["softplus", "softmax"], "binary-cross-entropy"),
    "swish-linear-se-rows-nobias": _spec(
        [2, 3, 2], ["x*sigmoid(x)", "linear"], "squared-error", "rows", False
    ),
    "tanh-sigmoid-quadratic-mixed": _spec(
        [2, 2, 1], ["tanh", "sigmoid"], "quadratic", bias=(False, True)
    ),
    "sigmoid-tanh-sigmoid-quadratic-deep": _spec(
        [2, 3, 2, 2], ["sigmoid", "tanh", "sigmoid"], "quadratic"
    ),
}


def _cost(name: str, a: list, y: list):
    """Cost of one example from the output activations, from the definitions."""
    pairs = list(zip(a, y, strict=True))
    if name == "quadratic":
        return sum((aj - yj) ** 2 for aj, yj in pairs) / 2
    if name == "squared-error":
        return sum((aj - yj) ** 2 for aj, yj in pairs)
    if name == "cross-entropy":
        return -sum(yj * mp.log(aj) for aj, yj in pairs)
    if name == "binary-cross-entropy":
        return -sum(yj * mp.log(aj) + (1 - yj) * mp.log(1 - aj) for aj, yj in pairs)
    raise AssertionError(name)


def _mean_cost(spec: Spec, params: dict, x: np.ndarray, y: np.ndarray):
    """C = (1/m) sum over examples of the cost, in mpmath; ``params`` hold mpmath numbers
    in the columns layout (W^l as a list of rows), ``x`` (n_0, m), ``y`` (n_L, m)."""
    m = x.shape[1]
    total = 0
    for example in range(m):
        a = [mp.mpf(float(v)) for v in x[:, example]]
        for index, layer in enumerate(spec.layers, start=1):
            w = params[f"W{index}"]
            z = [sum(wj[k] * a[k] for k in range(len(a))) for wj in w]
            if layer.bias:
                z = [zj + bj[0] for zj, bj in zip(z, params[f"b{index}"], strict=True)]
            if layer.activation == "softmax":
                e = [mp.exp(zj) for zj in z]
                a = [ej / sum(e) for ej in e]
            else:
                a = [CLOSED_FORM[layer.activation](zj) for zj in z]
        total += _cost(spec.cost, a, [mp.mpf(float(v)) for v in y[:, example]])
    return total / m


def exact_loss_and_grad(spec: Spec, params: dict, x: np.ndarray, y: np.ndarray):
    """(C, {name: dC/dname}) in the columns layout, to about 30 significant digits.

    Each partial derivative is the complex step Im C(theta + i h e) / h with h = 1e-40 in
    50-digit arithmetic: no subtraction, so no cancellation, and a truncation error of
    order h^2 relative. Nothing here is generated or derived by chainrule.
    """
    with mp.workdps(DPS):
        point = {k: [[mp.mpf(float(v)) for v in row] for row in p] for k, p in params.items()}
        cost = _mean_cost(spec, point, x, y)
        grads = {}
        for key, rows in point.items():
            grad = np.zeros((len(rows), len(rows[0])))
            for j, row in enumerate(rows):
                for k, value in enumerate(row):
                    row[k] = mp.mpc(value, STEP)
                    grad[j, k] = float(mp.im(_mean_cost(spec, point, x, y)) / STEP)
                    row[k] = value
            grads[key] = grad
        return float(cost), grads


def _problem(spec: Spec, seed: int):
    """Columns-layout parameters and a batch of two, targets valid for the cost."""
    rng = np.random.default_rng(seed)
    sizes = spec.sizes
    params = {}
    for index, layer in enumerate(spec.layers, start=1):
        params[f"W{index}"] = rng.standard_normal((sizes[index], sizes[index - 1]))
        if layer.bias:
            params[f"b{index}"] = rng.standard_normal((sizes[index], 1)) * 0.5
    x = rng.standard_normal((sizes[0], 2))
    y = rng.uniform(0.1, 0.9, (sizes[-1], 2))
    if spec.cost == "cross-entropy":
        y /= y.sum(axis=0, keepdims=True)
    return params, x, y


@pytest.mark.parametrize("key", sorted(CASES))
@pytest.mark.slow
def test_emitted_code_equals_the_exact_derivative_of_the_cost(key, build):
    spec = CASES[key]
    module = build(spec)
    params, x, y = _problem(spec, 5)
    want_cost, want = exact_loss_and_grad(spec, params, x, y)
    if spec.layout == "rows":
        params = {k: np.ascontiguousarray(v.T) for k, v in params.items()}
        x, y = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
        want = {k: v.T for k, v in want.items()}
    cost, grads = module.loss_and_grad(params, x, y)
    assert np.isfinite(cost) and cost == pytest.approx(want_cost, rel=RTOL)
    assert module.loss(params, x, y) == pytest.approx(want_cost, rel=RTOL)
    assert sorted(grads) == sorted(want)
    for name, value in want.items():
        got = np.asarray(grads[name])
        assert got.shape == value.shape, (name, got.shape, value.shape)
        assert np.all(np.isfinite(got)), name
        scale = float(np.max(np.abs(value)))
        np.testing.assert_allclose(got, value, rtol=RTOL, atol=RTOL * scale, err_msg=name)


def test_the_reference_sees_a_wrong_gradient(build):
    """The comparison itself fails on a 1/m slip: twice the gradient is not accepted."""
    spec = CASES["sigmoid-quadratic"]
    params, x, y = _problem(spec, 5)
    _, want = exact_loss_and_grad(spec, params, x, y)
    _, grads = build(spec).loss_and_grad(params, x, y)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(2 * grads["W1"], want["W1"], rtol=RTOL)


# ------------------------------------------------------------ labels in fresh modules


def _comment_block_before(lines: list[str], index: int) -> str:
    """The first line of the run of comment lines just above ``lines[index]``."""
    start = index
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    assert start < index, f"no comment above {lines[index]!r}"
    return lines[start].strip()


LABELLED = {
    "delta": ("# BP1:", "# BP2:"),
    "sp": ("# BP2:",),
    "dC_dW": ("# BP4:",),
    "dC_db": ("# BP3:",),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(CASES))
def test_every_backward_statement_of_a_fresh_module_is_labelled(key):
    spec = CASES[key]
    lines = generate_module(spec).splitlines()
    body = lines[next(i for i, ln in enumerate(lines) if ln.startswith("def loss_and_grad")) :]
    seen = set()
    for i, line in enumerate(body):
        head = line.strip().split(" = ")[0]
        for prefix, labels in LABELLED.items():
            if head.startswith(prefix) and head[len(prefix) :].isdigit():
                first = _comment_block_before(body, i)
                assert first.startswith(labels), (line, first)
                seen.add(first[:6])
    want = {"# BP1:", "# BP2:", "# BP3:", "# BP4:"}
    if not any(layer.bias for layer in spec.layers):
        want.discard("# BP3:")
    if spec.depth == 1:
        want.discard("# BP2:")
    assert seen == want
