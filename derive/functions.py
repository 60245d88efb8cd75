"""SymPy function classes that need a numerically stable NumPy form.

``sigmoid`` and ``softplus`` are defined by their closed forms in ``exp``; their
derivatives are obtained by ``sympy.diff`` of those closed forms (then rewritten with
the identity exp(-x) = (1 - sigmoid(x)) / sigmoid(x), so that the result contains
no bare ``exp`` that could overflow). The printer maps each class to a stable
NumPy expression (sigmoid split by sign, softplus as ``logaddexp``).
"""

from __future__ import annotations

import functools

import sympy as sp

_t = sp.Dummy("t", real=True)


def _exp_free(expr: sp.Expr, arg: sp.Expr) -> sp.Expr:
    """Rewrite ``exp(+-t)`` in ``expr`` through sigmoid(t) and substitute ``t -> arg``."""
    return _exp_free_in_t(expr).xreplace({_t: arg})


@functools.lru_cache(maxsize=64)
def _exp_free_in_t(expr: sp.Expr) -> sp.Expr:
    # Cached: simplify is slow and a scalar-level diff calls fdiff thousands of times.
    s = sigmoid(_t)
    out = expr.subs(sp.exp(-_t), (1 - s) / s).subs(sp.exp(_t), s / (1 - s))
    return sp.factor(sp.simplify(out))


class sigmoid(sp.Function):  # noqa: N801 - the math name
    """The logistic function 1 / (1 + exp(-x))."""

    nargs = 1

    @classmethod
    def closed_form(cls, t: sp.Expr) -> sp.Expr:
        """The defining expression in ``exp``."""
        return 1 / (1 + sp.exp(-t))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        return _exp_free(sp.diff(self.closed_form(_t), _t), self.args[0])

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return self.closed_form(arg)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_real else None

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\sigma\left(" + printer._print(self.args[0]) + r"\right)"


class softplus(sp.Function):  # noqa: N801 - the math name
    """The softplus function log(1 + exp(x))."""

    nargs = 1

    @classmethod
    def closed_form(cls, t: sp.Expr) -> sp.Expr:
        """The defining expression in ``exp`` and ``log``."""
        return sp.log(1 + sp.exp(t))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        return _exp_free(sp.diff(self.closed_form(_t), _t), self.args[0])

    def _eval_rewrite_as_exp(self, arg: sp.Expr, **kwargs: object) -> sp.Expr:
        return self.closed_form(arg)

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        # mpmath has no softplus: evaluate the closed form (lets N() reach a number).
        return self.closed_form(self.args[0])._eval_evalf(prec)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\operatorname{softplus}\left(" + printer._print(self.args[0]) + r"\right)"


#: Stable rewrites of a log of a bounded output, applied when the cost is composed
#: with the output activation: each row is an identity verified by the tests.
def stable_log_rules(z: sp.Expr) -> dict[sp.Expr, sp.Expr]:
    """Identities log(sigmoid(z)) = z - softplus(z), log(1 - sigmoid(z)) = -softplus(z)."""
    return {
        sp.log(sigmoid(z)): z - softplus(z),
        sp.log(1 - sigmoid(z)): -softplus(z),
    }
