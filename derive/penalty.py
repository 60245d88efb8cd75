"""The weight penalty of L2/L1 regularization, and its derivative, from SymPy.

With coefficients l2 and l1 (the spec's ``l2`` and ``l1``, finite and >= 0) the cost of a
batch is

    C = (1/m) sum over examples of the per-example cost
        + sum over layers l of sum over the entries w of W^l of p(w),
    p(w) = (l2/2) w^2 + l1 |w|.

Biases are never penalized. BP4 gains dp/dw = l2 w + l1 sign(w) on every weight: SymPy's
derivative of |w| for a real w is sign(w), which is 0 at w = 0 (the subgradient PyTorch's
autograd of abs takes there). A coefficient that is 0 leaves its term out, so a spec
without regularization has no penalty at all.
"""

from __future__ import annotations

import sympy as sp
from chainrule.derive import naming

#: The L2 and L1 coefficients as symbols (the spec's field names).
L2 = sp.Symbol("l2", nonnegative=True)
L1 = sp.Symbol("l1", nonnegative=True)
#: One generic weight w.
WEIGHT = naming.symbol("w")


def penalty_element(l2: float, l1: float) -> sp.Expr:
    """p(w) = (l2/2) w^2 + l1 |w| in the symbols :data:`L2`, :data:`L1`, :data:`WEIGHT`,
    without the terms whose coefficient is 0 (0 when both are).

    Examples
    --------
    >>> penalty_element(0.1, 0.0)
    l2*w**2/2
    >>> penalty_element(0.0, 0.0)
    0
    """
    terms = []
    if l2:
        terms.append(L2 / 2 * WEIGHT**2)
    if l1:
        terms.append(L1 * sp.Abs(WEIGHT))
    return sp.Add(*terms)


def penalty_derivative(element: sp.Expr) -> sp.Expr:
    """dp/dw by SymPy (``sign(w)`` for the derivative of ``|w|``).

    Examples
    --------
    >>> penalty_derivative(penalty_element(0.1, 0.2))
    l1*sign(w) + l2*w
    """
    return sp.diff(element, WEIGHT)


def coefficients(l2: float, l1: float) -> tuple[tuple[str, sp.Expr], ...]:
    """The coefficients' values as exact rationals of their decimal form, by symbol name
    (only those that are not 0)."""
    return tuple(
        (sym.name, sp.Rational(repr(float(value)))) for sym, value in ((L2, l2), (L1, l1)) if value
    )


def with_values(expr: sp.Expr, l2: float, l1: float) -> sp.Expr:
    """``expr`` with the coefficients' values (exact rationals) in place of l2 and l1."""
    values = dict(coefficients(l2, l1))
    return expr.xreplace({L2: values.get("l2", 0), L1: values.get("l1", 0)})


def title(l2: float, l1: float) -> str:
    """`` + penalty l2 = 0.01, l1 = 0.001`` after a cost's name, the coefficients as
    written (their shortest repr), those that are not 0; empty without a penalty."""
    terms = [f"{key} = {value!r}" for key, value in (("l2", l2), ("l1", l1)) if value]
    return f" + penalty {', '.join(terms)}" if terms else ""


def latex_names(notation_name: str) -> dict[sp.Symbol, str]:
    """The coefficients' LaTeX: Nielsen's lambda for l2 (his chapter 3), else lambda_2."""
    l2 = "\\lambda" if notation_name == "nielsen" else "\\lambda_{2}"
    return {L2: l2, L1: "\\lambda_{1}"}


def for_weight(expr: sp.Expr, layer: int) -> sp.Expr:
    """``expr`` (in :data:`WEIGHT`) written for the weights of ``layer``: w -> W^l."""
    return expr.xreplace({WEIGHT: naming.symbol(naming.weight(layer))})


__all__ = [
    "L1",
    "L2",
    "WEIGHT",
    "coefficients",
    "for_weight",
    "penalty_derivative",
    "latex_names",
    "penalty_element",
    "with_values",
]
