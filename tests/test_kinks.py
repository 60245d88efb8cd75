"""At a kink the generated module uses the one-sided derivative of the design.

relu'(0) = 0 and leaky-relu'(0) = 0.01 (the slope of the left piece). The tests put a
hidden unit's weighted input exactly at 0 while the error arriving from the layer above
is not zero, so that the value chosen for sigma'(0) shows in dC/dW: a test where the
upstream delta is itself 0 passes whatever sigma'(0) is.

The expected numbers are worked out by hand in each test, and checked once more against
the hand-written oracle (whose derivatives at 0 are typed in: ``z > 0``).
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from chainrule.derive.spec import Layer, Spec

#: sigma'(0) of each kinked activation, from the design (relu'(0) = 0).
SLOPE_AT_ZERO = {"relu": 0.0, "leaky-relu": 0.01}


def _chain(activation: str, layout: str) -> Spec:
    """x -> z1 = W1 x -> a1 = sigma(z1) -> z2 = W2 a1 -> a2 = z2, quadratic, no biases."""
    layers = (Layer(1, activation, False), Layer(1, "linear", False))
    return Spec(1, layers, "quadratic", layout, "float64", "kink")


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("activation", sorted(SLOPE_AT_ZERO))
def test_hidden_unit_exactly_at_the_kink_with_an_upstream_error(build, activation, layout):
    # W1 = 0, x = 1: z1 = 0 exactly, a1 = sigma(0) = 0. W2 = 2: z2 = a2 = 0, y = 1.
    # delta2 = a2 - y = -1 (linear output, not at a kink), so
    # delta1 = W2 delta2 sigma'(0) = -2 sigma'(0) and dC/dW1 = delta1 x = -2 sigma'(0):
    # 0 for relu, -0.02 for leaky-relu; relu'(0) = 1 would give -2.
    module = build(_chain(activation, layout))
    params = {"W1": np.array([[0.0]]), "W2": np.array([[2.0]])}
    x, y = np.array([[1.0]]), np.array([[1.0]])
    cost, grads = module.loss_and_grad(params, x, y)
    slope = SLOPE_AT_ZERO[activation]
    assert cost == 0.5
    assert grads["W1"][0, 0] == pytest.approx(-2.0 * slope, abs=1e-15)
    assert grads["W2"][0, 0] == 0.0  # dC/dW2 = delta2 a1 = -1 * 0
    oracle.assert_agrees((cost, grads), oracle.loss_and_grad(module.SPEC, params, x, y))


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("activation", sorted(SLOPE_AT_ZERO))
def test_some_units_at_the_kink_through_the_bias(build, activation, layout):
    """Three hidden units with z = (0, 2, -1) reached through W x + b, two examples."""
    spec = Spec(
        2,
        (Layer(3, activation), Layer(2, "linear")),
        "quadratic",
        layout,
        "float64",
        "kink",
    )
    module = build(spec)
    w1 = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]])
    b1 = np.array([[0.0], [-2.0], [-2.0]])
    x = np.array([[3.0, 2.0], [3.0, 1.0]])  # z1 = (0, 4, 1) and (1, 2, -1)
    w2 = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]])
    b2 = np.array([[0.25], [-0.5]])
    y = np.array([[1.0, -1.0], [2.0, 0.5]])
    params = {"W1": w1, "b1": b1, "W2": w2, "b2": b2}
    z1 = w1 @ x + b1
    assert z1[0, 0] == 0.0 and z1[2, 1] < 0.0 < z1[1, 0]
    slope = SLOPE_AT_ZERO[activation]
    # By hand, columns: sigma'(z1) with the chosen value at 0, delta2 = a2 - y (linear),
    # delta1 = (W2^T delta2) * sigma'(z1), dW1 = delta1 x^T / m, db1 = mean of delta1.
    left = 0.0 if activation == "relu" else 0.01
    a1 = np.where(z1 > 0, z1, left * z1)
    sp1 = np.where(z1 > 0, 1.0, np.where(z1 == 0, slope, left))
    delta2 = w2 @ a1 + b2 - y
    delta1 = (w2.T @ delta2) * sp1
    assert (delta1[0, 0] == 0.0) == (activation == "relu")
    assert (w2.T @ delta2)[0, 0] != 0.0  # the upstream error at the kinked unit
    want = {"W1": delta1 @ x.T / 2, "b1": delta1.mean(axis=1, keepdims=True)}
    if layout == "rows":
        params = {k: v.T.copy() for k, v in params.items()}
        x, y, want = x.T.copy(), y.T.copy(), {k: v.T for k, v in want.items()}
    _, grads = module.loss_and_grad(params, x, y)
    for key, value in want.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-14, atol=1e-15, err_msg=key)


def test_the_cheatsheet_relu_chain_at_its_kinks(build):
    """The preset 1-1-1 ReLU chain (rows, no biases) with z1 = 0 and z2 > 0."""
    from chainrule.derive.spec import preset

    module = build(preset("cheatsheet-relu"))
    # W1 = 0.5, x = 1: z1 = a1 = 0.5. W2 = 0: z2 = 0 exactly at the output's kink, a2 = 0,
    # y = 1, dC/da2 = -1, so delta2 = -relu'(0) = 0 and both gradients are 0;
    # relu'(0) = 1 would give dC/dW2 = delta2 a1 = -0.5.
    params = {"W1": np.array([[0.5]]), "W2": np.array([[0.0]])}
    cost, grads = module.loss_and_grad(params, np.array([[1.0]]), np.array([[1.0]]))
    assert cost == 0.5
    assert grads["W2"][0, 0] == 0.0
    assert grads["W1"][0, 0] == 0.0
