"""An independent backpropagation written by hand in NumPy, and the finite-difference check.

Nothing here comes from chainrule: every activation, derivative and cost below is
typed in from the math (Nielsen, chapter 2), so that agreement with a generated
module is evidence, not a tautology. The oracle reads a network in the spec file
format (``Spec.to_dict()`` or a generated module's ``SPEC``): plain data only.

Shapes follow the layout. ``columns``: W^l (n_l, n_{l-1}), b^l (n_l, 1), x (n_0, m),
y (n_L, m). ``rows``: W^l (n_{l-1}, n_l), b^l (1, n_l), x (m, n_0), y (m, n_L).
Internally the oracle works in columns; a rows network is the exact transpose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Array = np.ndarray
Params = dict[str, Array]

#: The central-difference tolerance of the design: |g - n| <= ABS * max(1, |C|) + REL * |n|.
ABS_TOL = 1e-8
REL_TOL = 1e-6
#: Data whose weighted inputs come this close to a kink are resampled.
KINK_MARGIN = 1e-3
KINKED = frozenset({"relu", "leaky-relu", "selu"})


def _sigmoid(z: Array) -> Array:
    # 1/(1+e^-z) for z >= 0 and e^z/(1+e^z) for z < 0: no overflow either way.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _mish_inner(z: Array) -> Array:
    return np.tanh(np.logaddexp(0.0, z))


#: PyTorch's SELU constants and the tanh-GELU constants, typed in from their definitions.
SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
GELU_C = np.sqrt(2.0 / np.pi)
GELU_K = 0.044715


def _gelu_tanh(z: Array) -> Array:
    return np.tanh(GELU_C * (z + GELU_K * z**3))


def _gelu_prime(z: Array) -> Array:
    # d/dz z/2 (1 + tanh u), u = c (z + k z^3): (1 + tanh u)/2 + z/2 (1 - tanh^2 u) c (1 + 3k z^2)
    t = _gelu_tanh(z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t**2) * GELU_C * (1.0 + 3.0 * GELU_K * z**2)


#: name -> (sigma(z), sigma'(z)), both written by hand; custom expressions by their text.
#: At a kink the derivative is the one of the branch the module selects at z = 0 (z > 0
#: is the right branch): relu 0, leaky-relu 0.01, selu scale*alpha. elu (alpha 1) has
#: no kink: both one-sided derivatives at 0 are 1.
ELEMENTWISE: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "leaky-relu": (
        lambda z: np.where(z > 0, z, 0.01 * z),
        lambda z: np.where(z > 0, 1.0, 0.01).astype(z.dtype),
    ),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid),
    "linear": (lambda z: z, np.ones_like),
    # elu: z for z > 0, e^z - 1 otherwise; derivative 1, e^z
    "elu": (
        lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
        lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))),
    ),
    # selu: scale * (z for z > 0, alpha (e^z - 1) otherwise); derivative scale, scale alpha e^z
    "selu": (
        lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
        lambda z: SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0))),
    ),
    "gelu": (lambda z: 0.5 * z * (1.0 + _gelu_tanh(z)), _gelu_prime),
    "mish": (
        lambda z: z * _mish_inner(z),
        lambda z: _mish_inner(z) + z * (1.0 - _mish_inner(z) ** 2) * _sigmoid(z),
    ),
    # swish: d/dz z s(z) = s + z s (1 - s)
    "x*sigmoid(x)": (
        lambda z: z * _sigmoid(z),
        lambda z: _sigmoid(z) + z * _sigmoid(z) * (1.0 - _sigmoid(z)),
    ),
    # mish: d/dz z tanh(softplus z) = tanh(sp) + z (1 - tanh(sp)^2) s(z)
    "x*tanh(softplus(x))": (
        lambda z: z * _mish_inner(z),
        lambda z: _mish_inner(z) + z * (1.0 - _mish_inner(z) ** 2) * _sigmoid(z),
    ),
}


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=0, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))


def _to_columns(net: Mapping[str, Any], params: Params, x: Array, y: Array | None):
    if net["layout"] == "columns":
        return params, x, y
    cols = {k: np.asarray(v).T for k, v in params.items()}
    return cols, np.asarray(x).T, None if y is None else np.asarray(y).T


def _forward_columns(net: Mapping[str, Any], params: Params, x: Array) -> list[tuple]:
    """[(z^l, a^l, log a^l or None) for l = 1..L], all (n_l, m), in float64."""
    a = np.asarray(x, dtype=np.float64)
    out = []
    for index, layer in enumerate(net["layers"], start=1):
        z = np.asarray(params[f"W{index}"], dtype=np.float64) @ a
        if layer.get("bias", True):
            z = z + np.asarray(params[f"b{index}"], dtype=np.float64)
        if layer["activation"] == "softmax":
            logp = _log_softmax(z)
            a = np.exp(logp)
        else:
            logp = None
            a = ELEMENTWISE[layer["activation"]][0](z)
        out.append((z, a, logp))
    return out


def _cost_terms(net: Mapping[str, Any], z: Array, a: Array, logp: Array | None, y: Array):
    """Per-element cost c(a, y) and dc/da, (n_L, m) each, in the stablest hand form."""
    cost, out_act = net["cost"], net["layers"][-1]["activation"]
    if cost == "quadratic":
        return 0.5 * (a - y) ** 2, a - y
    if cost == "squared-error":
        return (a - y) ** 2, 2.0 * (a - y)
    if cost == "cross-entropy":
        return -y * logp, -y / a
    if cost == "huber":
        # 1/2 d^2 for |d| <= 1, |d| - 1/2 otherwise (d = a - y); dc/da = d clipped to [-1, 1]
        # (both pieces meet with slope +-1 at |d| = 1: no kink in dc/da).
        d = a - y
        return np.where(np.abs(d) <= 1.0, 0.5 * d**2, np.abs(d) - 0.5), np.clip(d, -1.0, 1.0)
    if cost == "binary-cross-entropy":
        if out_act == "sigmoid":
            # log s(z) = -log(1 + e^-z), log(1 - s(z)) = -log(1 + e^z)
            log_a, log_1ma = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
        else:
            log_a, log_1ma = (np.log(a) if logp is None else logp), np.log1p(-a)
        return -(y * log_a + (1.0 - y) * log_1ma), -(y / a - (1.0 - y) / (1.0 - a))
    raise ValueError(f"oracle has no cost {cost!r}")


def loss(net: Mapping[str, Any], params: Params, x: Array, y: Array) -> float:
    """Batch cost: mean over the m examples of the summed per-unit cost."""
    params, x, y = _to_columns(net, params, x, y)
    z, a, logp = _forward_columns(net, params, x)[-1]
    c, _ = _cost_terms(net, z, a, logp, np.asarray(y, dtype=np.float64))
    return float(c.sum() / x.shape[1])


def forward(net: Mapping[str, Any], params: Params, x: Array) -> Array:
    """a^L in the network's layout."""
    cols, xc, _ = _to_columns(net, params, x, None)
    a = _forward_columns(net, cols, xc)[-1][1]
    return a if net["layout"] == "columns" else a.T


def loss_and_grad(
    net: Mapping[str, Any], params: Params, x: Array, y: Array
) -> tuple[float, Params]:
    """The cost and its gradient by the four equations BP1-BP4, written out by hand.

    BP1 delta^L = J_{a^L}(z^L)^T dC/da^L (a diagonal for elementwise outputs, the full
    softmax Jacobian a_j (1[j=k] - a_k) otherwise: no sum_j y_j = 1 assumption here);
    BP2 delta^l = ((W^{l+1})^T delta^{l+1}) * sigma'(z^l); BP3 dC/db^l = mean over
    examples of delta^l; BP4 dC/dW^l = delta^l (a^{l-1})^T / m.
    """
    cols, xc, yc = _to_columns(net, params, x, y)
    xc = np.asarray(xc, dtype=np.float64)
    yc = np.asarray(yc, dtype=np.float64)
    m = xc.shape[1]
    layers = net["layers"]
    cache = _forward_columns(net, cols, xc)
    z, a, logp = cache[-1]
    c, g = _cost_terms(net, z, a, logp, yc)
    if layers[-1]["activation"] == "softmax":
        delta = a * (g - (g * a).sum(axis=0, keepdims=True))
    else:
        delta = g * ELEMENTWISE[layers[-1]["activation"]][1](z)
    grads: Params = {}
    for index in range(len(layers), 0, -1):
        prev = xc if index == 1 else cache[index - 2][1]
        grads[f"W{index}"] = delta @ prev.T / m
        if layers[index - 1].get("bias", True):
            grads[f"b{index}"] = delta.sum(axis=1, keepdims=True) / m
        if index > 1:
            w = np.asarray(cols[f"W{index}"], dtype=np.float64)
            z_below = cache[index - 2][0]
            delta = (w.T @ delta) * ELEMENTWISE[layers[index - 2]["activation"]][1](z_below)
    if net["layout"] == "rows":
        grads = {k: v.T for k, v in grads.items()}
    return float(c.sum() / m), grads


def random_params(net: Mapping[str, Any], rng: np.random.Generator, scale: float = 1.0) -> Params:
    """Parameters of the right shapes, entries ~ N(0, scale^2 / n_{l-1}) (biases N(0, 0.25))."""
    sizes = [net["input"], *(layer["size"] for layer in net["layers"])]
    rows = net["layout"] == "rows"
    params: Params = {}
    for index, layer in enumerate(net["layers"], start=1):
        shape = (sizes[index], sizes[index - 1])
        w = rng.standard_normal(shape) * scale / np.sqrt(sizes[index - 1])
        params[f"W{index}"] = w.T.copy() if rows else w
        if layer.get("bias", True):
            b = rng.standard_normal((sizes[index], 1)) * 0.5
            params[f"b{index}"] = b.T.copy() if rows else b
    return params


def random_batch(net: Mapping[str, Any], m: int, rng: np.random.Generator) -> tuple[Array, Array]:
    """Inputs ~ N(0, 1) and targets valid for the cost (columns of y sum to one for
    cross-entropy, entries in (0, 1) otherwise)."""
    sizes = [net["input"], *(layer["size"] for layer in net["layers"])]
    x = rng.standard_normal((sizes[0], m))
    y = rng.uniform(0.05, 0.95, (sizes[-1], m))
    if net["cost"] == "cross-entropy":
        y /= y.sum(axis=0, keepdims=True)
    if net["layout"] == "rows":
        return x.T.copy(), y.T.copy()
    return x, y


def near_kink(net: Mapping[str, Any], params: Params, x: Array, margin: float = KINK_MARGIN):
    """True when some z^l of a kinked layer (relu, leaky-relu) lies within ``margin`` of 0."""
    cols, xc, _ = _to_columns(net, params, x, None)
    cache = _forward_columns(net, cols, xc)
    return any(
        np.min(np.abs(z)) < margin
        for (z, _, _), layer in zip(cache, net["layers"], strict=True)
        if layer["activation"] in KINKED
    )


def sample_problem(
    net: Mapping[str, Any], rng: np.random.Generator, m: int = 3, tries: int = 200
) -> tuple[Params, Array, Array]:
    """Random parameters and data, resampled until no kinked z is within the margin."""
    for _ in range(tries):
        params = random_params(net, rng)
        x, y = random_batch(net, m, rng)
        if not near_kink(net, params, x):
            return params, x, y
    raise AssertionError("could not sample data away from the kinks")


def within_tolerance(analytic: float, numeric: float, tol_abs: float) -> bool:
    """|g - n| <= tol_abs + REL_TOL |n| with g, n and the tolerance all finite.

    Written as ``err <= tol`` (not ``not err > tol``) so that a NaN anywhere fails: every
    comparison with NaN is False. The explicit finiteness tests also fail an inf in the
    gradient or the estimate (inf - inf is NaN, but inf <= inf would pass).
    """
    values = (analytic, numeric, tol_abs)
    if not all(np.isfinite(v) for v in values):
        return False
    return bool(abs(analytic - numeric) <= tol_abs + REL_TOL * abs(numeric))


def fd_failures(
    loss_fn: Callable[[Params], float],
    params: Params,
    grads: Params,
    cost: float,
    entries: Mapping[str, Any] | None = None,
) -> list[tuple[str, int, float, float]]:
    """Central differences, h_i = cbrt(eps) max(1, |theta_i|), on every entry (or the
    flat indices in ``entries[key]``); returns (key, index, analytic, numeric) failures.

    A loss that is not finite is itself a failure, ``("loss", -1, cost, nan)``: the
    tolerance scales with it, and ``max(1, nan)`` is 1, so nothing else would notice.
    """
    if not np.isfinite(cost):
        return [("loss", -1, float(cost), float("nan"))]
    step = np.cbrt(np.finfo(np.float64).eps)
    tol_abs = ABS_TOL * max(1.0, abs(cost))
    work = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    failures = []
    for key, value in work.items():
        flat = value.reshape(-1)
        grad = np.asarray(grads[key], dtype=np.float64).reshape(-1)
        assert grad.shape == flat.shape, key
        picks = range(flat.size) if entries is None else entries[key]
        for i in picks:
            old = flat[i]
            h = step * max(1.0, abs(old))
            flat[i] = old + h
            up = loss_fn(work)
            flat[i] = old - h
            down = loss_fn(work)
            flat[i] = old
            numeric = (up - down) / (2 * h)
            if not within_tolerance(grad[i], numeric, tol_abs):
                failures.append((key, int(i), float(grad[i]), float(numeric)))
    return failures


def directional_failures(
    loss_fn: Callable[[Params], float],
    params: Params,
    grads: Params,
    cost: float,
    rng: np.random.Generator,
    count: int = 6,
) -> list[tuple[int, float, float]]:
    """Central differences along ``count`` random unit directions d: compare
    (C(theta + h d) - C(theta - h d)) / 2h with g . d, h = cbrt(eps).

    Returns (direction, analytic, numeric) failures; a loss that is not finite is the
    failure ``(-1, cost, nan)``.
    """
    if not np.isfinite(cost):
        return [(-1, float(cost), float("nan"))]
    h = float(np.cbrt(np.finfo(np.float64).eps))
    tol_abs = ABS_TOL * max(1.0, abs(cost))
    failures = []
    for n in range(count):
        d = {k: rng.standard_normal(np.shape(v)) for k, v in params.items()}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
        d = {k: v / norm for k, v in d.items()}
        up = loss_fn({k: params[k] + h * d[k] for k in params})
        down = loss_fn({k: params[k] - h * d[k] for k in params})
        numeric = (up - down) / (2 * h)
        analytic = sum(float(np.sum(np.asarray(grads[k]) * d[k])) for k in params)
        if not within_tolerance(analytic, numeric, tol_abs):
            failures.append((n, analytic, numeric))
    return failures


def assert_agrees(
    got: tuple[float, Params], want: tuple[float, Params], rtol: float = 1e-10
) -> None:
    """Loss and every gradient agree to ``rtol``, relative to each array's largest entry
    (so an entry that is zero up to rounding cannot fail on its own)."""
    (got_c, got_g), (want_c, want_g) = got, want
    # assert_allclose counts NaN == NaN as equal: a NaN on both sides must fail too.
    assert np.isfinite(got_c) and np.isfinite(want_c), (got_c, want_c)
    assert abs(got_c - want_c) <= rtol * max(1e-300, abs(want_c)), (got_c, want_c)
    assert sorted(got_g) == sorted(want_g)
    for key, want_v in want_g.items():
        got_v = np.asarray(got_g[key])
        assert got_v.shape == want_v.shape, (key, got_v.shape, want_v.shape)
        assert np.all(np.isfinite(got_v)), (key, "gradient not finite", got_v)
        assert np.all(np.isfinite(want_v)), (key, "reference not finite", want_v)
        scale = max(float(np.max(np.abs(want_v))), 1e-300)
        np.testing.assert_allclose(got_v, want_v, rtol=rtol, atol=rtol * scale, err_msg=key)
