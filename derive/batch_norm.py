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
    mean = sp.Add(*u) / m
    var = sp.Add(*[(ui - mean) ** 2 for ui in u]) / m
    xhat = tuple((ui - mean) / sp.sqrt(var + eps) for ui in u)
    z = [gamma * xi + beta for xi in xhat]
    cost = sp.Add(*[gi * zi for gi, zi in zip(g, z, strict=True)])  # dC/dz_i = g_i
    chain = tuple(sp.diff(cost, uj) for uj in u)
    delta = [m * gi for gi in g]
    mean_delta = sp.Add(*delta) / m
    mean_dx = sp.Add(*[d * x for d, x in zip(delta, xhat, strict=True)]) / m
    scale = gamma / sp.sqrt(var + eps)
    three = tuple(
        scale * (d - mean_delta - x * mean_dx) / m for d, x in zip(delta, xhat, strict=True)
    )
    for left, right in zip(chain, three, strict=True):
        assert sp.simplify(left - right) == 0, "batch norm: chain rule != three-term form"
    dgamma = sp.diff(cost, gamma)
    dbeta = sp.diff(cost, beta)
    return BatchNormDerivation(
        m, u, g, gamma, beta, eps, mean, var, xhat, chain, three, dgamma, dbeta
    )


__all__ = ["EPS", "EPS_TEXT", "MOMENTUM_TEXT", "BatchNormDerivation", "derive_backward"]
