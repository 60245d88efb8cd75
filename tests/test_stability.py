"""Numerical stability: extreme logits and sigmoid inputs give finite, exact results.

Logits of +-40 and +-1e3 into softmax with cross-entropy and with binary cross-entropy,
and sigmoid inputs of +-800 (output with binary cross-entropy, output with the quadratic
cost, and a hidden layer): the forward pass, the loss and the gradient are computed
under ``np.errstate(all="raise")`` and compared with closed forms written here (or,
for softmax with binary cross-entropy, with 1000-digit mpmath).

A generated module does not report underflow (exp(-2000) is 0 in float64, and 0 is its
correctly rounded value, so the event means no lost accuracy): its public functions run
with ``under="ignore"``. Overflow, invalid values and division by zero still raise, as
the last test shows.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import mpmath
import numpy as np
import pytest
from chainrule.derive.spec import Spec


def _lse(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=0, keepdims=True)
    return top + np.log(np.exp(z - top).sum(axis=0, keepdims=True))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _run(module: ModuleType, params: dict, x: np.ndarray, y: np.ndarray) -> tuple:
    """forward, loss and loss_and_grad under np.errstate(all='raise'): nothing may raise."""
    with np.errstate(all="raise"):
        out = module.forward(params, x)
        loss = module.loss(params, x, y)
        loss2, grads = module.loss_and_grad(params, x, y)
    assert np.all(np.isfinite(out))
    assert np.isfinite(loss) and loss == pytest.approx(loss2, rel=1e-15)
    for value in grads.values():
        assert np.all(np.isfinite(value))
    return out, loss, grads


def _layout(spec: Spec, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns-layout arrays in the spec's layout."""
    return {k: (v.T.copy() if spec.layout == "rows" else v) for k, v in arrays.items()}


LOGITS = {
    "40": np.array([[40.0, -40.0], [-40.0, 40.0], [0.0, 39.0]]),
    "1e3": np.array([[1e3, -1e3], [-1e3, 1e3], [0.0, 999.0]]),
    "mixed": np.array([[1e3, -40.0], [-1e3, 40.0], [40.0, -1e3]]),
}


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("logits", sorted(LOGITS))
def test_softmax_cross_entropy_at_extreme_logits(
    build: Callable[[Spec], ModuleType], logits: str, layout: str
) -> None:
    spec = Spec.from_sizes([1, 3], ["softmax"], "cross-entropy", layout=layout)
    module = build(spec)
    z = LOGITS[logits]  # (3 units, 2 examples)
    # z = W x + b with x = (1, 0): b is the second example's logits, W + b the first's.
    x = np.array([[1.0, 0.0]])
    b = z[:, 1:2]
    w = z[:, :1] - b
    y = np.array([[0.2, 0.0], [0.5, 1.0], [0.3, 0.0]])
    params = _layout(spec, {"W1": w, "b1": b})
    xs, ys = _layout(spec, {"x": x, "y": y}).values()
    out, loss, grads = _run(module, params, xs, ys)
    m = 2
    logp = z - _lse(z)
    a = np.exp(logp)
    expected_loss = float(-(y * logp).sum() / m)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    np.testing.assert_allclose(out, _layout(spec, {"a": a})["a"], rtol=1e-13, atol=1e-300)
    delta = (a - y) / m
    expected = _layout(spec, {"W1": delta @ x.T, "b1": delta.sum(axis=1, keepdims=True)})
    for key in ("W1", "b1"):
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("z0", [800.0, -800.0, 40.0, -40.0])
def test_sigmoid_binary_cross_entropy_at_extreme_inputs(
    build: Callable[[Spec], ModuleType], z0: float, layout: str
) -> None:
    spec = Spec.from_sizes([1, 2], ["sigmoid"], "binary-cross-entropy", layout=layout)
    module = build(spec)
    x = np.array([[1.0, -1.0, 0.5]])
    w = np.array([[z0], [-z0]])
    b = np.array([[0.0], [1.0]])
    y = np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.75]])
    z = w @ x + b
    params = _layout(spec, {"W1": w, "b1": b})
    xs, ys = _layout(spec, {"x": x, "y": y}).values()
    out, loss, grads = _run(module, params, xs, ys)
    m = 3
    expected_loss = float((_softplus(z) - y * z).sum() / m)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    np.testing.assert_allclose(out, _layout(spec, {"a": _sigmoid(z)})["a"], rtol=1e-13)
    delta = (_sigmoid(z) - y) / m
    expected = _layout(spec, {"W1": delta @ x.T, "b1": delta.sum(axis=1, keepdims=True)})
    for key in ("W1", "b1"):
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("z0", [800.0, -800.0])
def test_saturated_sigmoid_layers_give_exact_gradients(
    build: Callable[[Spec], ModuleType], z0: float
) -> None:
    """A hidden sigmoid layer and a sigmoid output, both saturated at +-800."""
    spec = Spec.from_sizes([1, 2, 1], ["sigmoid", "linear"], "quadratic")
    module = build(spec)
    x = np.array([[1.0, 2.0]])
    params: dict[str, Any] = {
        "W1": np.array([[z0], [-z0]]),
        "b1": np.zeros((2, 1)),
        "W2": np.array([[0.5, -1.5]]),
        "b2": np.array([[0.25]]),
    }
    y = np.array([[0.1, -0.3]])
    out, loss, grads = _run(module, params, x, y)
    a1 = _sigmoid(params["W1"] @ x)  # exactly 0 or 1
    assert set(np.unique(a1)) <= {0.0, 1.0}
    z2 = params["W2"] @ a1 + params["b2"]
    np.testing.assert_allclose(out, z2, rtol=1e-15)
    assert loss == pytest.approx(float(0.5 * ((z2 - y) ** 2).sum() / 2), rel=1e-14)
    delta2 = (z2 - y) / 2
    np.testing.assert_allclose(grads["W2"], delta2 @ a1.T, rtol=1e-14)
    np.testing.assert_allclose(grads["b2"], delta2.sum(axis=1, keepdims=True), rtol=1e-14)
    # sigma'(+-800) = e^-800 / (1 + e^-800)^2, which is 0 in float64.
    assert np.all(grads["W1"] == 0) and np.all(grads["b1"] == 0)

    out_spec = Spec.from_sizes([1, 2], ["sigmoid"], "quadratic")
    out_module = build(out_spec)
    p = {"W1": np.array([[z0], [-z0]]), "b1": np.zeros((2, 1))}
    y2 = np.array([[0.5, 0.5], [0.5, 0.5]])
    a, loss, grads = _run(out_module, p, x, y2)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert loss == pytest.approx(0.25, rel=1e-15)  # each of 4 entries: 1/2 * 0.5^2, / m = 2
    assert np.all(grads["W1"] == 0) and np.all(grads["b1"] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "softplus", "x*sigmoid(x)", "relu", "leaky-relu"])
def test_other_activations_at_800(build: Callable[[Spec], ModuleType], activation: str) -> None:
    spec = Spec.from_sizes([1, 2], [activation], "quadratic")
    module = build(spec)
    params = {"W1": np.array([[800.0], [-800.0]]), "b1": np.zeros((2, 1))}
    x = np.array([[1.0]])
    y = np.zeros((2, 1))
    out, loss, grads = _run(module, params, x, y)
    high, low = out[0, 0], out[1, 0]
    expected = {
        "tanh": (1.0, -1.0),
        "softplus": (800.0, 0.0),
        "x*sigmoid(x)": (800.0, 0.0),
        "relu": (800.0, 0.0),
        "leaky-relu": (800.0, -8.0),
    }[activation]
    assert (high, low) == pytest.approx(expected, abs=1e-300)
    assert loss == pytest.approx(0.5 * (high**2 + low**2), rel=1e-15)


def _softmax_bce_exact(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and delta = dC/dz (mean over the m columns) of softmax + binary cross-entropy,
    from the definitions in 1000-digit arithmetic: dC/da_j = -y_j/a_j + (1-y_j)/(1-a_j),
    then the softmax Jacobian a_j (delta_ij - a_i)."""
    n, m = z.shape
    with mpmath.workdps(1000):
        loss = mpmath.mpf(0)
        delta = np.zeros((n, m))
        for col in range(m):
            e = [mpmath.exp(mpmath.mpf(float(v))) for v in z[:, col]]
            a = [v / sum(e) for v in e]
            t = [mpmath.mpf(float(v)) for v in y[:, col]]
            loss += -sum(
                t[j] * mpmath.log(a[j]) + (1 - t[j]) * mpmath.log(1 - a[j]) for j in range(n)
            )
            g = [-t[j] / a[j] + (1 - t[j]) / (1 - a[j]) for j in range(n)]
            for i in range(n):
                d = sum(g[j] * a[j] * ((1 if i == j else 0) - a[i]) for j in range(n))
                delta[i, col] = float(d / m)
        return float(loss / m), delta


@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("logits", sorted(LOGITS))
@pytest.mark.slow
def test_softmax_binary_cross_entropy_at_extreme_logits(
    build: Callable[[Spec], ModuleType], logits: str, layout: str
) -> None:
    """log(1 - a) and the gradient stay exact where the softmax saturates to 1.0."""
    spec = Spec.from_sizes([1, 3], ["softmax"], "binary-cross-entropy", layout=layout)
    module = build(spec)
    z = LOGITS[logits]  # (3 units, 2 examples)
    x = np.array([[1.0, 0.0]])
    b = z[:, 1:2]
    w = z[:, :1] - b
    y = np.array([[0.2, 0.0], [0.5, 1.0], [0.3, 0.25]])
    params = _layout(spec, {"W1": w, "b1": b})
    xs, ys = _layout(spec, {"x": x, "y": y}).values()
    out, loss, grads = _run(module, params, xs, ys)
    a = np.exp(z - _lse(z))
    np.testing.assert_allclose(out, _layout(spec, {"a": a})["a"], rtol=1e-13, atol=1e-300)
    expected_loss, delta = _softmax_bce_exact(z, y)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    expected = _layout(spec, {"W1": delta @ x.T, "b1": delta.sum(axis=1, keepdims=True)})
    for key in ("W1", "b1"):
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-12, atol=1e-15)


def test_softmax_binary_cross_entropy_with_tied_largest_logits(
    build: Callable[[Spec], ModuleType],
) -> None:
    spec = Spec.from_sizes([1, 4], ["softmax"], "binary-cross-entropy")
    module = build(spec)
    z = np.array([[1e3], [1e3], [-1e3], [40.0]])
    params = {"W1": np.zeros((4, 1)), "b1": z}
    x = np.zeros((1, 1))
    y = np.array([[0.5], [0.0], [1.0], [0.25]])
    _, loss, grads = _run(module, params, x, y)
    expected_loss, delta = _softmax_bce_exact(z, y)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    np.testing.assert_allclose(grads["b1"], delta, rtol=1e-12, atol=1e-15)


def test_sgd_step_and_train_do_not_report_underflow(build: Callable[[Spec], ModuleType]) -> None:
    """A subnormal gradient entry (about 2e-323 here) scaled by lr underflows again."""
    spec = Spec.from_sizes([1, 2], ["softmax"], "binary-cross-entropy")
    module = build(spec)
    params = {"W1": np.zeros((2, 1)), "b1": np.array([[0.0], [-744.0]])}
    x, y = np.ones((1, 1)), np.array([[1.0], [0.0]])
    with np.errstate(all="raise"):
        _, grads = module.loss_and_grad(params, x, y)
        assert 0 < abs(grads["b1"][1, 0]) < 1e-300
        module.sgd_step(params, x, y, 0.1)
        module.train(params, x, y, epochs=2, batch_size=1, lr=0.1)
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_overflow_is_still_reported(build: Callable[[Spec], ModuleType]) -> None:
    """Only underflow is quiet: exp(800) overflowing in a custom activation raises."""
    module = build(Spec.from_sizes([1, 1], ["exp(x)"], "quadratic"))
    params = {"W1": np.array([[800.0]]), "b1": np.zeros((1, 1))}
    with np.errstate(all="raise"), pytest.raises(FloatingPointError, match="overflow"):
        module.forward(params, np.ones((1, 1)))
