"""The elementary functions of activations and costs, one row each, and their classes.

Each :class:`FunctionRow` says everything a consumer needs about one function of one
argument: its NumPy form (plain and writing ``out=``), its mpmath and float values,
its SymEngine form and its LaTeX and Unicode names. The printer, the evaluator, the
SymEngine bridge and the expression parser build their dispatch from
:data:`FUNCTION_ROWS`; none keeps a table of its own.

``sigmoid`` and ``softplus`` are defined by their closed forms in ``exp``; their
derivatives are obtained by ``sympy.diff`` of those closed forms (then rewritten with
the identity exp(-x) = (1 - sigmoid(x)) / sigmoid(x), so that the result contains
no bare ``exp`` that could overflow). The printer maps each class to a stable
NumPy expression (sigmoid split by sign, softplus as ``logaddexp``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mpmath
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


# --------------------------------------------------------------------------- the rows


def _mp_sigmoid(t: Any) -> Any:
    return 1 / (1 + mpmath.exp(-t))


def _mp_softplus(t: Any) -> Any:
    return mpmath.log1p(mpmath.exp(t))


def _float_sigmoid(t: float) -> float:
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def _float_softplus(t: float) -> float:
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def _float_sign(t: float) -> float:
    return float((t > 0) - (t < 0))


def _mp_sign(t: Any) -> Any:
    return mpmath.sign(t)


@dataclass(frozen=True)
class FunctionRow:
    """One elementary function of one argument and everything its consumers need.

    ``numpy`` prints it (``{0}`` is the printed argument); ``numpy_out`` prints it
    writing into a preallocated array ``{out}`` (None when there is no ``out=`` form);
    ``helper`` is the generated module's helper it calls, if any. ``mp`` and ``real``
    evaluate it with mpmath and with Python floats; ``symengine`` is the name of the
    SymEngine function, or None to pass it to SymEngine as an opaque function whose
    derivative SymPy supplies. ``latex`` and ``unicode`` are its names in a derivation.
    ``parse`` is the name an activation expression may call it by (None: not callable).
    """

    cls: type
    numpy: str
    numpy_out: str | None
    mp: Callable[[Any], Any]
    real: Callable[[float], float]
    symengine: str | None
    latex: str
    unicode: str
    helper: str | None = None
    parse: str | None = None

    @property
    def name(self) -> str:
        """The SymPy class name, which is also the printer method suffix ``_print_<name>``."""
        return self.cls.__name__


FUNCTION_ROWS: tuple[FunctionRow, ...] = (
    FunctionRow(
        sp.exp, "np.exp({0})", "np.exp({0}, out={out})", mpmath.exp, math.exp,
        "exp", r"\exp", "exp", parse="exp",
    ),
    FunctionRow(
        sp.log, "np.log({0})", "np.log({0}, out={out})", mpmath.log, math.log,
        "log", r"\log", "log", parse="log",
    ),
    FunctionRow(
        sp.tanh, "np.tanh({0})", "np.tanh({0}, out={out})", mpmath.tanh, math.tanh,
        "tanh", r"\tanh", "tanh", parse="tanh",
    ),
    FunctionRow(
        sp.sin, "np.sin({0})", "np.sin({0}, out={out})", mpmath.sin, math.sin,
        "sin", r"\sin", "sin", parse="sin",
    ),
    FunctionRow(
        sp.cos, "np.cos({0})", "np.cos({0}, out={out})", mpmath.cos, math.cos,
        "cos", r"\cos", "cos", parse="cos",
    ),
    FunctionRow(
        sp.sinh, "np.sinh({0})", "np.sinh({0}, out={out})", mpmath.sinh, math.sinh,
        "sinh", r"\sinh", "sinh",
    ),
    FunctionRow(
        sp.cosh, "np.cosh({0})", "np.cosh({0}, out={out})", mpmath.cosh, math.cosh,
        "cosh", r"\cosh", "cosh",
    ),
    FunctionRow(
        sp.atan, "np.arctan({0})", "np.arctan({0}, out={out})", mpmath.atan, math.atan,
        "atan", r"\arctan", "arctan",
    ),
    FunctionRow(
        sp.Abs, "np.abs({0})", "np.abs({0}, out={out})", abs, abs, None, r"\left|\cdot\right|",
        "|·|",
    ),
    FunctionRow(
        sp.sign, "np.sign({0})", "np.sign({0}, out={out})", _mp_sign, _float_sign, None,
        r"\operatorname{sign}", "sign",
    ),
    FunctionRow(
        sigmoid, "_sigmoid({0})", "_sigmoid({0}, out={out})", _mp_sigmoid, _float_sigmoid,
        None, r"\sigma", "σ", helper="_sigmoid", parse="sigmoid",
    ),
    FunctionRow(
        softplus, "np.logaddexp(0, {0})", "np.logaddexp(0, {0}, out={out})", _mp_softplus,
        _float_softplus, None, r"\operatorname{softplus}", "softplus", parse="softplus",
    ),
)  # fmt: skip

#: The rows by SymPy class: the one dispatch table of every consumer.
FUNCTIONS_BY_CLASS: dict[type, FunctionRow] = {row.cls: row for row in FUNCTION_ROWS}

#: Named constants an expression may use, with their mpmath and float values.
CONSTANTS: dict[sp.Basic, tuple[str, Any, float]] = {
    sp.pi: ("pi", mpmath.pi, math.pi),
    sp.E: ("E", mpmath.e, math.e),
}


def function_row(expr: sp.Basic) -> FunctionRow | None:
    """The row of ``expr``'s function class, or None when it is not an elementary function."""
    return FUNCTIONS_BY_CLASS.get(type(expr))
