"""Activations and costs: one row each, a SymPy expression and its LaTeX.

A row never holds a derivative. Every derivative chainrule uses is computed from
these expressions by ``sympy.diff``; adding an activation means adding one row
here (or passing an expression string, see :mod:`chainrule.derive.exprparse`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from chainrule.derive.exprparse import X
from chainrule.derive.functions import sigmoid, softplus

#: Per-element output and target symbols of a cost row.
A = sp.Symbol("a", real=True)
Y = sp.Symbol("y", real=True)


@dataclass(frozen=True)
class ActivationRow:
    """One activation: its name, its expression in ``x`` (None for softmax), its LaTeX."""

    name: str
    expr: sp.Expr | None
    latex: str
    output_range: str  # "real", "positive" or "unit" (the open interval (0, 1))


@dataclass(frozen=True)
class CostRow:
    """One cost: the per-element cost c(a, y), summed over outputs, averaged over examples."""

    name: str
    expr: sp.Expr
    latex: str
    needs_unit_output: bool


ACTIVATIONS: dict[str, ActivationRow] = {
    row.name: row
    for row in (
        ActivationRow("sigmoid", sigmoid(X), r"\sigma(x) = \frac{1}{1 + e^{-x}}", "unit"),
        ActivationRow("tanh", sp.tanh(X), r"\tanh(x)", "real"),
        ActivationRow("relu", sp.Piecewise((X, X > 0), (0, True)), r"\max(0, x)", "positive"),
        ActivationRow(
            "leaky-relu",
            sp.Piecewise((X, X > 0), (X / 100, True)),
            r"\max(0.01\,x, x)",
            "real",
        ),
        ActivationRow("softplus", softplus(X), r"\log(1 + e^{x})", "positive"),
        ActivationRow("linear", X, "x", "real"),
        ActivationRow("softmax", None, r"\frac{e^{z_j}}{\sum_k e^{z_k}}", "unit"),
    )
}

COSTS: dict[str, CostRow] = {
    row.name: row
    for row in (
        CostRow("quadratic", (A - Y) ** 2 / 2, r"\tfrac{1}{2}(a - y)^2", False),
        CostRow("squared-error", (A - Y) ** 2, r"(a - y)^2", False),
        CostRow(
            "binary-cross-entropy",
            -(Y * sp.log(A) + (1 - Y) * sp.log(1 - A)),
            r"-\left(y \log a + (1 - y) \log(1 - a)\right)",
            True,
        ),
        CostRow("cross-entropy", -Y * sp.log(A), r"-y \log a", True),
    )
}
