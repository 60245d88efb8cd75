"""Batch normalization's backward pass, derived by SymPy on a batch of m symbolic examples.

One unit of a batch-normalized layer sees u_1..u_m (one value per example). The forward
pass is mean = (1/m) sum_i u_i, var = (1/m) sum_i (u_i - mean)^2 (biased, as PyTorch's
BatchNorm1d in training mode), xhat_i = (u_i - mean) / sqrt(var + eps) and
z_i = gamma xhat_i + beta. :func:`derive_backward` differentiates a cost through every
z_i, and so through the mean and the variance, and checks that the result equals the
three-term form the mini-batch program uses; each unit is independent, so one unit
stands for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

#: The epsilon under the square root, as PyTorch's default (the spec has no other).
EPS = sp.Rational(1, 100_000)
#: The epsilon as the generated code writes it.
EPS_TEXT = "1e-05"
#: The running statistics' momentum (PyTorch's default): running = (1 - 0.1) running + 0.1 new.
MOMENTUM_TEXT = "0.1"


@dataclass(frozen=True)
class BatchNormDerivation:
    """The chain rule through one unit's batch statistics, on ``m`` symbolic examples.

    ``u``, ``g`` are the inputs u_i and the upstream partials dC/dz_i; ``mean``, ``var``,
    ``xhat`` the forward values as expressions in u; ``chain`` the derivatives dC/du_i
    by the chain rule through every z_k (unsimplified); ``three_term`` the same in the
    three-term form; ``dgamma`` and ``dbeta`` dC/dgamma and dC/dbeta.
    """

    m: int
    u: tuple[sp.Symbol, ...]
    g: tuple[sp.Symbol, ...]
    gamma: sp.Symbol
    beta: sp.Symbol
    eps: sp.Symbol
    mean: sp.Expr
    var: sp.Expr
    xhat: tuple[sp.Expr, ...]
    chain: tuple[sp.Expr, ...]
    three_term: tuple[sp.Expr, ...]
    dgamma: sp.Expr
    dbeta: sp.Expr


def batch_mean(u: Sequence[sp.Expr]) -> sp.Expr:
    """mean = (1/m) sum_i u_i over the m values of one unit.

    Examples
    --------
    >>> batch_mean(sp.symbols("u1:3"))
    u1/2 + u2/2
    """
    return sp.Add(*u) / len(u)


def batch_variance(u: Sequence[sp.Expr], mean: sp.Expr) -> sp.Expr:
    """The biased variance (1/m) sum_i (u_i - mean)^2 (PyTorch's, in training mode).

    Examples
    --------
    >>> batch_variance(sp.symbols("u1:3"), sp.Symbol("mu"))
    (-mu + u1)**2/2 + (-mu + u2)**2/2
    """
    return sp.Add(*[(ui - mean) ** 2 for ui in u]) / len(u)


def normalize(u: sp.Expr, mean: sp.Expr, var: sp.Expr, eps: sp.Expr = EPS) -> sp.Expr:
    """xhat = (u - mean) / sqrt(var + eps)."""
    return (u - mean) / sp.sqrt(var + eps)


def scale_shift(gamma: sp.Expr, xhat: sp.Expr, beta: sp.Expr) -> sp.Expr:
    """z = gamma xhat + beta."""
    return gamma * xhat + beta


def input_error(
    gamma: sp.Expr,
    var: sp.Expr,
    delta: sp.Expr,
    mean_delta: sp.Expr,
    xhat: sp.Expr,
    mean_delta_xhat: sp.Expr,
    eps: sp.Expr = EPS,
) -> sp.Expr:
    """The three-term form of m dC/du_i, with delta_i = m dC/dz_i (the program's error):
    gamma / sqrt(var + eps) (delta_i - mean(delta) - xhat_i mean(delta xhat)).

    :func:`derive_backward` checks it against the chain rule through every z_k.
    """
    return gamma / sp.sqrt(var + eps) * (delta - mean_delta - xhat * mean_delta_xhat)


@lru_cache(maxsize=4)
def derive_backward(m: int = 3) -> BatchNormDerivation:
    """Differentiate through the batch mean and variance and check the three-term form.

    With the per-example error delta_i = m dC/dz_i (the program's convention),
    dC/du_i = (1/m) gamma / sqrt(var + eps) (delta_i - mean(delta) - xhat_i mean(delta xhat)).

    Raises
    ------
    AssertionError
        When SymPy finds the chain rule and the three-term form different (never).

    Examples
    --------
    >>> d = derive_backward(2)
    >>> sp.simplify(d.dbeta - sum(d.g))
    0
    """
    u = sp.symbols(f"u1:{m + 1}", real=True)
    g = sp.symbols(f"g1:{m + 1}", real=True)
    gamma, beta = sp.symbols("gamma beta", real=True)
    eps = sp.Symbol("epsilon", positive=True)
    mean = batch_mean(u)
    var = batch_variance(u, mean)
    xhat = tuple(normalize(ui, mean, var, eps) for ui in u)
    z = [scale_shift(gamma, xi, beta) for xi in xhat]
    cost = sp.Add(*[gi * zi for gi, zi in zip(g, z, strict=True)])  # dC/dz_i = g_i
    chain = tuple(sp.diff(cost, uj) for uj in u)
    delta = [m * gi for gi in g]
    mean_delta = sp.Add(*delta) / m
    mean_dx = sp.Add(*[d * x for d, x in zip(delta, xhat, strict=True)]) / m
    three = tuple(
        input_error(gamma, var, d, mean_delta, x, mean_dx, eps) / m
        for d, x in zip(delta, xhat, strict=True)
    )
    for left, right in zip(chain, three, strict=True):
        assert sp.simplify(left - right) == 0, "batch norm: chain rule != three-term form"
    dgamma = sp.diff(cost, gamma)
    dbeta = sp.diff(cost, beta)
    # dC/dgamma = mean(delta xhat) and dC/dbeta = mean(delta): the two shared terms.
    assert sp.simplify(dgamma - mean_dx) == 0 and sp.simplify(dbeta - mean_delta) == 0
    return BatchNormDerivation(
        m, u, g, gamma, beta, eps, mean, var, xhat, chain, three, dgamma, dbeta
    )


__all__ = [
    "EPS",
    "EPS_TEXT",
    "MOMENTUM_TEXT",
    "BatchNormDerivation",
    "batch_mean",
    "batch_variance",
    "derive_backward",
    "input_error",
    "normalize",
    "scale_shift",
]
