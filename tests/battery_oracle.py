"""An independent NumPy backpropagation for the random-architecture battery.

Nothing here is generated or derived by chainrule. Named activations carry their
derivatives written by hand from the math. Custom expressions are written again by hand
as NumPy functions (their text is only a dictionary key, never evaluated):

* analytic ones get their derivative by the complex step, f'(z) = Im f(z + ih) / h with
  h = 1e-30, which has no subtraction and so no cancellation error;
* non-analytic ones (kinks: max, min, abs) get a hand-written derivative instead.

Two output/cost pairs use the textbook identities that keep them exact when the output
saturates: sigmoid with binary cross-entropy (loss softplus(z) - y z, delta s(z) - y) and
softmax with cross-entropy (log-softmax, delta -y + a sum_k y_k).

A residual connection (``skip_from`` = k) adds a^k to a^l = f(z^l) in the forward pass;
the backward pass carries dC/da^l and adds it to dC/da^k (the skip's path) before
delta^k = dC/da^k f'(z^k). The weight penalty (l2/2) sum W^2 + l1 sum |W| and its
derivative l2 W + l1 sign(W) are written from the formula, on weights only.

A batch-normalized layer's z^l = gamma (u - mean) / sqrt(var + 1e-5) + beta, u = W^l
a^(l-1), takes the mean and the biased variance over the batch itself; dC/du comes by
brute force, the complex step through that function on one example at a time (not the
three-term form), and dC/dgamma, dC/dbeta from the definitions.

Every activation also lists its kinks, the points where the derivative jumps, so the
battery can resample data whose weighted inputs come near one (and, with l1, parameters
with a weight near |w|'s kink at 0).

Shapes: ``columns`` layout W^l (n_l, n_{l-1}), b^l (n_l, 1), x (n_0, m); ``rows`` is
the transpose of everything. The oracle works in columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray
STEP = 1e-30  # complex step


def _sigmoid(z: Array) -> Array:
    if np.iscomplexobj(z):
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: Array) -> Array:
    if np.iscomplexobj(z):
        return np.log(1.0 + np.exp(z))
    return np.logaddexp(0.0, z)


#: (scale, alpha) of PyTorch's SELU; (sqrt(2/pi), 0.044715) of the tanh GELU.
_SELU = (1.0507009873554804934193349852946, 1.6732632423543772848170429916717)
_GELU = (float(np.sqrt(2.0 / np.pi)), 0.044715)


@dataclass(frozen=True)
class Elementwise:
    """sigma and sigma' as NumPy functions, and the points where sigma' jumps."""

    f: Callable[[Array], Array]
    df: Callable[[Array], Array]
    kinks: tuple[float, ...] = ()
    analytic: bool = True


def _complex_step(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    return lambda z: np.imag(f(z + 1j * STEP)) / STEP


NAMED: dict[str, Elementwise] = {
    "sigmoid": Elementwise(_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))),
    "tanh": Elementwise(np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": Elementwise(
        lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float), (0.0,), False
    ),
    "leaky-relu": Elementwise(
        lambda z: np.where(z > 0, z, 0.01 * z),
        lambda z: np.where(z > 0, 1.0, 0.01),
        (0.0,),
        False,
    ),
    "softplus": Elementwise(_softplus, _sigmoid),
    "linear": Elementwise(lambda z: z, np.ones_like),
    # elu (alpha 1): z | e^z - 1, derivative 1 | e^z, equal at 0 (no kink)
    "elu": Elementwise(
        lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
        lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))),
        (),
        False,
    ),
    # selu: scale z | scale alpha (e^z - 1); derivative scale | scale alpha e^z: a kink at 0
    "selu": Elementwise(
        lambda z: _SELU[0] * np.where(z > 0, z, _SELU[1] * np.expm1(np.minimum(z, 0.0))),
        lambda z: _SELU[0] * np.where(z > 0, 1.0, _SELU[1] * np.exp(np.minimum(z, 0.0))),
        (0.0,),
        False,
    ),
    # gelu (tanh form): z/2 (1 + tanh u), u = c (z + k z^3)
    "gelu": Elementwise(
        lambda z: 0.5 * z * (1.0 + np.tanh(_GELU[0] * (z + _GELU[1] * z**3))),
        lambda z: (
            0.5 * (1.0 + np.tanh(_GELU[0] * (z + _GELU[1] * z**3)))
            + 0.5
            * z
            * (1.0 - np.tanh(_GELU[0] * (z + _GELU[1] * z**3)) ** 2)
            * _GELU[0]
            * (1.0 + 3.0 * _GELU[1] * z**2)
        ),
    ),
    # mish: z tanh(softplus z), derivative tanh(sp) + z (1 - tanh(sp)^2) s(z)
    "mish": Elementwise(
        lambda z: z * np.tanh(_softplus(z)),
        lambda z: np.tanh(_softplus(z)) + z * (1.0 - np.tanh(_softplus(z)) ** 2) * _sigmoid(z),
    ),
}


def _analytic(f: Callable[[Array], Array]) -> Elementwise:
    return Elementwise(f, _complex_step(f))


#: Custom activation text -> the same function written by hand in NumPy.
CUSTOM: dict[str, Elementwise] = {
    "x*sigmoid(x)": _analytic(lambda z: z * _sigmoid(z)),
    "softplus(x) - log(2)": _analytic(lambda z: _softplus(z) - np.log(2.0)),
    "x*tanh(softplus(x))": _analytic(lambda z: z * np.tanh(_softplus(z))),
    "sin(x) + 0.5*x": _analytic(lambda z: np.sin(z) + 0.5 * z),
    "exp(-x**2/2) + x": _analytic(lambda z: np.exp(-(z**2) / 2) + z),
    "tanh(x)**2 + x/4": _analytic(lambda z: np.tanh(z) ** 2 + z / 4),
    "max(x, 0.1*x)": Elementwise(
        lambda z: np.maximum(z, 0.1 * z), lambda z: np.where(z >= 0, 1.0, 0.1), (0.0,), False
    ),
    "abs(x)": Elementwise(np.abs, np.sign, (0.0,), False),
    "x/(1 + abs(x))": Elementwise(
        lambda z: z / (1 + np.abs(z)), lambda z: 1.0 / (1 + np.abs(z)) ** 2, (0.0,), False
    ),
    "min(x, 1) + 0.1*x": Elementwise(
        lambda z: np.minimum(z, 1.0) + 0.1 * z,
        lambda z: np.where(z <= 1, 1.1, 0.1),
        (1.0,),
        False,
    ),
}

ELEMENTWISE: dict[str, Elementwise] = {**NAMED, **CUSTOM}


def _softmax(z: Array) -> Array:
    shifted = z - z.max(axis=0, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=0, keepdims=True)


#: cost -> (c(a, y) per element, dc/da per element), written by hand.
COSTS: dict[str, tuple[Callable[[Array, Array], Array], Callable[[Array, Array], Array]]] = {
    "quadratic": (lambda a, y: 0.5 * (a - y) ** 2, lambda a, y: a - y),
    "squared-error": (lambda a, y: (a - y) ** 2, lambda a, y: 2.0 * (a - y)),
    "binary-cross-entropy": (
        lambda a, y: -(y * np.log(a) + (1 - y) * np.log(1 - a)),
        lambda a, y: (a - y) / (a * (1 - a)),
    ),
    "cross-entropy": (lambda a, y: -y * np.log(a), lambda a, y: -y / a),
    # huber (delta 1): d^2/2 for |d| <= 1, |d| - 1/2 otherwise; dc/da = clip(d, -1, 1)
    "huber": (
        lambda a, y: np.where(np.abs(a - y) <= 1.0, 0.5 * (a - y) ** 2, np.abs(a - y) - 0.5),
        lambda a, y: np.clip(a - y, -1.0, 1.0),
    ),
}


def _lse(z: Array) -> Array:
    """log sum_k exp(z_k) over axis 0 (one row per example column), shifted by the max."""
    top = z.max(axis=0, keepdims=True)
    return top + np.log(np.exp(z - top).sum(axis=0, keepdims=True))


def _to_columns(spec: Mapping[str, Any], params: Mapping[str, Array], x: Array, y: Array):
    rows = spec["layout"] == "rows"
    cols = {
        k: (np.asarray(v, float).T if rows else np.asarray(v, float)) for k, v in params.items()
    }
    if rows:
        return cols, np.asarray(x, float).T, np.asarray(y, float).T
    return cols, np.asarray(x, float), np.asarray(y, float)


#: Batch norm's epsilon (PyTorch's BatchNorm1d default).
BN_EPS = 1e-5
#: A batch-normalized unit whose batch standard deviation is below this is too curved for
#: central differences: z = gamma (u - mean) / sqrt(var + eps) moves by gamma du / sigma,
#: so a step h on a weight bends z on the scale of sigma. With two examples and sigma =
#: 0.017 the truncation error of a step of 6e-6 reached 0.5% of a gradient entry.
BATCH_NORM_SPREAD = 0.1


def _normalize(u: Array, gamma: Array, beta: Array) -> Array:
    """gamma (u - mean) / sqrt(var + eps) + beta, the mean and the biased variance per
    unit (row) over the batch (columns). Written without abs or conjugates, so that it
    takes a complex step."""
    mean = u.sum(axis=1, keepdims=True) / u.shape[1]
    var = ((u - mean) ** 2).sum(axis=1, keepdims=True) / u.shape[1]
    return gamma * (u - mean) / np.sqrt(var + BN_EPS) + beta


def _normalize_backward(u: Array, gamma: Array, beta: Array, delta: Array) -> Array:
    """dC/du from dC/dz = ``delta`` by brute force: column j of the Jacobian dz/du_j of
    every unit comes from one complex step on example j (units are independent)."""
    out = np.zeros_like(u)
    for j in range(u.shape[1]):
        bumped = u.astype(complex)
        bumped[:, j] += 1j * STEP
        dz_duj = np.imag(_normalize(bumped, gamma, beta)) / STEP  # (n, m): dz_i / du_j
        out[:, j] = np.sum(delta * dz_duj, axis=1)
    return out


def _forward(
    spec: Mapping[str, Any], p: Mapping[str, Array], x: Array
) -> tuple[list[Array], list[Array], dict[int, Array]]:
    """a^0..a^L, z^1..z^L and u^l = W^l a^(l-1) of the batch-normalized layers (columns
    layout): z^l = W^l a^(l-1) (+ b^l), or the batch normalization of u^l; a^l = f(z^l),
    plus a^k when the layer has ``skip_from`` = k (a residual connection); with dropout,
    a^l = D^l f(z^l) (+ a^k), ``p`` holding the masks ``D{l}``."""
    acts = [x]
    zs = []
    us: dict[int, Array] = {}
    for index, layer in enumerate(spec["layers"], start=1):
        z = p[f"W{index}"] @ acts[-1]
        if layer.get("batch_norm", False):
            us[index] = z
            z = _normalize(z, p[f"gamma{index}"], p[f"beta{index}"])
        elif layer.get("bias", True):
            z = z + p[f"b{index}"]
        zs.append(z)
        act = layer["activation"]
        a = _softmax(z) if act == "softmax" else ELEMENTWISE[act].f(z)
        if f"D{index}" in p:
            a = p[f"D{index}"] * a
        if layer.get("skip_from") is not None:
            a = a + acts[layer["skip_from"]]
        acts.append(a)
    return acts, zs, us


def weighted_inputs(
    spec: Mapping[str, Any],
    params: Mapping[str, Array],
    x: Array,
    masks: Mapping[str, Array] | None = None,
) -> list[Array]:
    """z^1..z^L (columns layout), for kink resampling."""
    p, a, _ = _to_columns(spec, {**params, **(masks or {})}, x, np.zeros((1, 1)))
    return _forward(spec, p, a)[1]


def _penalty(spec: Mapping[str, Any], p: Mapping[str, Array]) -> tuple[float, dict[str, Array]]:
    """(l2/2) sum ||W^l||^2 + l1 sum |W^l| over every layer's weights (never biases), and
    its derivative l2 W + l1 sign(W) (sign(0) = 0), each written from the formula."""
    l2, l1 = float(spec.get("l2", 0.0)), float(spec.get("l1", 0.0))
    total = 0.0
    grads = {}
    for index in range(1, len(spec["layers"]) + 1):
        w = p[f"W{index}"]
        total += 0.5 * l2 * float(np.sum(w * w)) + l1 * float(np.sum(np.abs(w)))
        grads[f"W{index}"] = l2 * w + l1 * np.sign(w)
    return total, grads


def loss_and_grad(
    spec: Mapping[str, Any],
    params: Mapping[str, Array],
    x: Array,
    y: Array,
    masks: Mapping[str, Array] | None = None,
) -> tuple[float, dict[str, Array]]:
    """Cost (mean over examples of the summed per-unit cost) and its gradient.

    ``spec`` is plain data in the spec file format (``Spec.to_dict()``); ``masks`` the
    dropout masks ``D{l}`` (shaped like a^l in the layout), multiplied into a^l.
    """
    p, x, y = _to_columns(spec, {**params, **(masks or {})}, x, y)
    m = x.shape[1]
    layers = spec["layers"]
    acts, zs, us = _forward(spec, p, x)
    g = None  # dC/da^L, when the output's delta is computed through it
    cost, dcost = COSTS[spec["cost"]]
    a_out, z_out, out_act = acts[-1], zs[-1], layers[-1]["activation"]
    pair = (out_act, spec["cost"])
    if pair == ("sigmoid", "binary-cross-entropy"):
        # -(y log s(z) + (1 - y) log(1 - s(z))) = softplus(z) - y z; its z-derivative is
        # s(z) - y. Written so, a saturated sigmoid loses no digits to 1 - a.
        loss = float(np.sum(_softplus(z_out) - y * z_out) / m)
        delta = (a_out - y) / m
    elif pair == ("softmax", "cross-entropy"):
        # log a = z - logsumexp(z); J^T (-y / a) = -y + a * sum_k y_k.
        top = z_out.max(axis=0, keepdims=True)
        lse = top + np.log(np.exp(z_out - top).sum(axis=0, keepdims=True))
        loss = float(-np.sum(y * (z_out - lse)) / m)
        delta = (-y + a_out * y.sum(axis=0, keepdims=True)) / m
    elif pair == ("softmax", "binary-cross-entropy"):
        # log a_j = z_j - lse(z), log(1 - a_j) = lse(z without unit j) - lse(z), each
        # log-sum-exp taken by brute force; the chain rule then runs through the logits:
        # d log a_j / d z_i = [i = j] - a_i and d log(1 - a_j) / d z_i = [i != j]
        # exp(z_i - lse(z without j)) - a_i, with dc/dlog a = -y, dc/dlog(1 - a) = y - 1.
        n = z_out.shape[0]
        lse = _lse(z_out)
        lse_without = np.concatenate([_lse(np.delete(z_out, j, axis=0)) for j in range(n)])
        logp, log1m = z_out - lse, lse_without - lse
        loss = float(-np.sum(y * logp + (1 - y) * log1m) / m)
        delta = np.zeros_like(z_out)
        for i in range(n):
            for j in range(n):
                d_logp = (1.0 if i == j else 0.0) - a_out[i]
                share = 0.0 if i == j else np.exp(z_out[i] - lse_without[j])
                d_log1m = share - a_out[i]
                delta[i] += -y[j] * d_logp + (y[j] - 1) * d_log1m
        delta /= m
    else:
        loss = float(np.sum(cost(a_out, y)) / m)
        g = dcost(a_out, y) / m  # dC/da^L
        if out_act == "softmax":
            delta = a_out * (g - np.sum(a_out * g, axis=0, keepdims=True))  # J^T g
        else:
            delta = g * ELEMENTWISE[out_act].df(z_out)
    # Backward by dC/da^l: a skip from k into l adds dC/da^l to dC/da^k (the second
    # path), before delta^k = dC/da^k * f'(z^k) is taken.
    skipped: dict[int, Array] = {}
    grad_a = g
    grads: dict[str, Array] = {}
    for index in range(len(layers), 0, -1):
        source = layers[index - 1].get("skip_from")
        if source is not None:
            assert grad_a is not None, "a skip into an output whose delta is fused"
            skipped[source] = skipped.get(source, 0.0) + grad_a
        if index in us:  # batch norm: delta is dC/dz; the weights see dC/du
            gamma, beta = p[f"gamma{index}"], p[f"beta{index}"]
            xhat = _normalize(us[index], 1.0, 0.0)
            grads[f"gamma{index}"] = np.sum(delta * xhat, axis=1, keepdims=True)
            grads[f"beta{index}"] = delta.sum(axis=1, keepdims=True)
            delta = _normalize_backward(us[index], gamma, beta, delta)
        grads[f"W{index}"] = delta @ acts[index - 1].T
        if layers[index - 1].get("bias", True) and index not in us:
            grads[f"b{index}"] = delta.sum(axis=1, keepdims=True)
        if index > 1:
            below = layers[index - 2]["activation"]
            grad_a = p[f"W{index}"].T @ delta + skipped.pop(index - 1, 0.0)
            delta = grad_a * p.get(f"D{index - 1}", 1.0) * ELEMENTWISE[below].df(zs[index - 2])
    extra, penalty_grads = _penalty(spec, p)
    loss += extra
    for key, value in penalty_grads.items():
        grads[key] = grads[key] + value
    if spec["layout"] == "rows":
        grads = {k: v.T for k, v in grads.items()}
    return loss, grads


def near_kink(
    spec: Mapping[str, Any],
    params: Mapping[str, Array],
    x: Array,
    margin: float,
    masks: Mapping[str, Array] | None = None,
) -> bool:
    """True when some weighted input lies within ``margin`` of its activation's kink;
    with an L1 penalty, when some weight lies within ``margin`` of |w|'s kink at 0; with
    batch normalization, when some unit's batch standard deviation sqrt(var + eps) is
    below :data:`BATCH_NORM_SPREAD`."""
    if spec.get("l1", 0.0):
        weights = [np.asarray(v) for k, v in params.items() if k.startswith("W")]
        if any(np.min(np.abs(w)) < margin for w in weights):
            return True
    p, a, _ = _to_columns(spec, {**params, **(masks or {})}, x, np.zeros((1, 1)))
    _, zs, us = _forward(spec, p, a)
    for u in us.values():
        if np.min(np.sqrt(u.var(axis=1) + BN_EPS)) < BATCH_NORM_SPREAD:
            return True
    for layer, z in zip(spec["layers"], zs, strict=True):
        act = layer["activation"]
        kinks = () if act == "softmax" else ELEMENTWISE[act].kinks
        if any(np.min(np.abs(z - k)) < margin for k in kinks):
            return True
    return False


def central_differences(
    loss: Callable[[dict[str, Array]], float], params: dict[str, Array]
) -> dict[str, Array]:
    """Central differences with h_i = cbrt(eps) * max(1, |theta_i|), every entry."""
    step = np.cbrt(np.finfo(np.float64).eps)
    out = {}
    for key, value in params.items():
        flat = value.reshape(-1)
        numeric = np.empty(flat.size)
        for i in range(flat.size):
            old = flat[i]
            h = step * max(1.0, abs(old))
            flat[i] = old + h
            up = loss(params)
            flat[i] = old - h
            down = loss(params)
            flat[i] = old
            numeric[i] = (up - down) / (2 * h)
        out[key] = numeric.reshape(value.shape)
    return out
