"""Numbers from SymPy expressions: the one evaluator and the one random-point sampler.

:class:`Evaluator` walks an expression's DAG once (each distinct subexpression is
evaluated once, so an exponentially large naive gradient costs as much as its DAG)
and dispatches every elementary function through the rows of
:data:`chainrule.derive.functions.FUNCTION_ROWS`. It has two modes: ``"mp"``
(mpmath at ``digits`` digits, for comparing exact derivations) and ``"float"``
(Python floats, refusing any value that is not a finite real number, for
checking a parsed activation on a grid). No text is parsed or evaluated.

:func:`sample_point` draws random rationals for a set of symbols from given
ranges; every check that needs a random point draws it here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import mpmath
import sympy as sp
from chainrule.derive.errors import DerivationError
from chainrule.derive.functions import CONSTANTS, FUNCTIONS_BY_CLASS

if TYPE_CHECKING:
    from chainrule.derive.tables import Range

MODES = ("mp", "float", "exact", "rounded")


class NotReal(ArithmeticError):
    """A value of a ``"float"`` evaluation is not a finite real number."""


_RELATIONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _mp_number(value: Any) -> Any:
    if isinstance(value, sp.Rational):
        return mpmath.mpf(int(value.p)) / int(value.q)
    if isinstance(value, sp.Float):
        return mpmath.mpf(str(value))
    if isinstance(value, sp.Basic):
        raise DerivationError("point", f"not a number: {value!r}", "give rationals or floats")
    return mpmath.mpf(value)


def _exact_number(value: Any) -> sp.Expr:
    if isinstance(value, sp.Basic):
        number = value
    elif isinstance(value, int):
        number = sp.Integer(value)
    else:
        number = sp.Rational(repr(float(value)))  # the float's shortest decimal, exactly
    if not number.is_number:
        raise DerivationError("point", f"not a number: {value!r}", "give rationals or floats")
    return number


def _float_number(value: Any) -> float:
    if isinstance(value, sp.Basic) and not value.is_Number:
        raise DerivationError("point", f"not a number: {value!r}", "give rationals or floats")
    return float(value)


class Evaluator:
    """Evaluate SymPy expressions at a point; distinct subexpressions once.

    Parameters
    ----------
    point : dict
        Symbol -> number (int, float, SymPy Rational or Float, mpmath number).
    digits : int
        Working precision of the ``"mp"`` mode.
    mode : str
        ``"mp"`` (mpmath numbers), ``"float"`` (floats; a value that is not a finite
        real number raises :class:`NotReal`), ``"exact"`` (SymPy numbers: rationals
        stay exact, exp(1/2) stays exp(1/2); apply ``sympy.N`` to the result) or
        ``"rounded"`` (SymPy numbers as in ``"exact"``, every value that is not a
        number itself rounded to ``digits`` digits, so values stay small; any SymPy
        function that evaluates itself at a number is evaluated).

    ``memo`` grows as program statements are evaluated (:meth:`assign`), so a
    straight-line program costs one pass.

    Examples
    --------
    >>> from chainrule.derive.functions import sigmoid
    >>> x = sp.Symbol("x")
    >>> float(Evaluator({x: 0})(2 * sigmoid(x)))
    1.0
    >>> Evaluator({x: 1.0}, mode="float")(sp.sqrt(2 / sp.pi) * x) > 0.79
    True
    >>> Evaluator({x: sp.Rational(1, 3)}, mode="exact")(x**2 + sp.Piecewise((x, x > 0), (0, True)))
    4/9
    >>> Evaluator({x: sp.Rational(1, 2)}, digits=20, mode="rounded")(sp.exp(x) + x)
    2.1487212707001281468
    """

    def __init__(self, point: dict[sp.Symbol, Any], digits: int = 40, mode: str = "mp") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.digits = digits
        self.mode = mode
        convert = {"mp": _mp_number, "float": _float_number}.get(mode, _exact_number)
        with mpmath.workdps(digits):
            self.memo: dict[sp.Basic, Any] = {s: convert(v) for s, v in point.items()}

    def assign(self, target: sp.Symbol, expr: sp.Expr) -> Any:
        """Evaluate ``expr`` and bind it to ``target``; returns the value."""
        value = self(expr)
        self.memo[target] = value
        return value

    def __call__(self, root: sp.Basic) -> Any:
        memo = self.memo
        with mpmath.workdps(self.digits):
            stack = [(root, False)]
            while stack:
                node, ready = stack.pop()
                if node in memo:
                    continue
                if isinstance(node, sp.Piecewise):
                    memo[node] = self._piecewise(node)
                    continue
                kids = node.args if not isinstance(node, sp.Number) else ()
                if not ready and kids:
                    stack.append((node, True))
                    stack.extend((k, False) for k in kids if k not in memo)
                    continue
                if isinstance(node, sp.Symbol):
                    raise DerivationError(
                        "point", f"no value for {node.name}", "give every free symbol a value"
                    )
                if self.mode == "float":
                    value = self._real_node(node, [memo[k] for k in kids])
                else:
                    value = self._node(node, [memo[k] for k in kids])
                memo[node] = value
            return memo[root]

    def _real_node(self, node: sp.Basic, args: list) -> Any:
        """A float node: any domain error or non-finite value is :class:`NotReal`."""
        try:
            value = self._node(node, args)
        except (ValueError, ZeroDivisionError, OverflowError, TypeError) as exc:
            raise NotReal(f"{type(node).__name__}: {exc}") from None
        return value if isinstance(value, bool) else _finite(value)

    def _piecewise(self, node: sp.Piecewise) -> Any:
        for value, cond in node.args:
            if cond is sp.true or self(cond):
                return self(value)
        if self.mode == "float":
            raise NotReal("no branch of a Piecewise holds")
        raise DerivationError("expression", "Piecewise without a matching branch", "report this")

    def _node(self, node: sp.Basic, args: list) -> Any:
        if self.mode in ("exact", "rounded"):
            value = node if not args else node.func(*args)
            if self.mode == "rounded" and isinstance(value, sp.Expr) and not value.is_Number:
                value = sp.N(value, self.digits)
            return value
        mp = self.mode == "mp"
        if isinstance(node, sp.Number):
            return _mp_number(node) if mp else float(node)
        if node in CONSTANTS:
            _, mp_value, float_value = CONSTANTS[node]
            return +mp_value if mp else float_value
        if node is sp.true or node is sp.false:
            return bool(node)
        row = FUNCTIONS_BY_CLASS.get(type(node))
        if row is not None:
            return (row.mp if mp else row.real)(args[0])
        if isinstance(node, sp.Add):
            return mpmath.fsum(args) if mp else math.fsum(args)
        if isinstance(node, sp.Mul):
            out = mpmath.mpf(1) if mp else 1.0
            for a in args:
                out *= a
            return out
        if isinstance(node, sp.Pow):
            return args[0] ** args[1] if mp else math.pow(args[0], args[1])
        if isinstance(node, sp.core.relational.Relational):
            return _RELATIONS[node.rel_op](args[0], args[1])
        if isinstance(node, sp.ITE):
            return args[1] if args[0] else args[2]
        if isinstance(node, (sp.And, sp.Or, sp.Not)):
            combine = {sp.And: all, sp.Or: any, sp.Not: lambda v: not v[0]}[type(node)]
            return combine(args)
        raise DerivationError(
            "expression", f"cannot evaluate {type(node).__name__} numerically", "report this"
        )


def _finite(value: Any) -> float:
    if isinstance(value, complex) or not math.isfinite(value):
        raise NotReal(f"{value!r} is not a finite real number")
    return float(value)


def evaluate(exprs: Sequence[sp.Expr], point: dict[sp.Symbol, Any], digits: int = 40) -> list[Any]:
    """Values of ``exprs`` at ``point`` (mpmath numbers at ``digits`` digits).

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> [float(v) for v in evaluate([x + 1, sp.pi * x], {x: 1})][0]
    2.0
    """
    ev = Evaluator(point, digits)
    return [ev(e) for e in exprs]


def real_value(expr: sp.Expr, point: dict[sp.Symbol, Any]) -> float | None:
    """The float value of ``expr`` at ``point``, or None where it is not a finite real.

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> real_value(sp.log(x), {x: 1.0}), real_value(sp.log(x), {x: -1.0})
    (0.0, None)
    """
    try:
        return Evaluator(point, mode="float")(expr)
    except (NotReal, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


#: A sampling range in hundredths: (low, high) gives Rational(randint(low, high), 100).
Hundredths = tuple[int, int]

#: The default range of a sampled symbol: [-1.5, 1.5].
DEFAULT_RANGE: Hundredths = (-150, 150)


def sample_point(
    symbols: Iterable[sp.Symbol],
    rng: random.Random | int,
    ranges: dict[sp.Symbol, Hundredths] | None = None,
    default: Hundredths = DEFAULT_RANGE,
) -> dict[sp.Symbol, sp.Rational]:
    """Random rationals (hundredths) for ``symbols``, drawn in the order given.

    ``ranges`` gives a symbol's own range, ``default`` the others'; ``rng`` is a
    ``random.Random`` or a seed.

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> abs(sample_point([x], 0)[x]) <= 1.5
    True
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    ranges = ranges or {}
    return {s: sp.Rational(rng.randint(*ranges.get(s, default)), 100) for s in symbols}


def equal_at_points(
    lhs: sp.Expr,
    rhs: sp.Expr,
    *,
    ranges: dict[sp.Symbol, Hundredths] | None = None,
    default: Hundredths = (-300, 300),
    count: int = 6,
    seed: int = 0,
    digits: int = 30,
) -> bool:
    """True when ``lhs`` and ``rhs`` agree to 1e-20 (relative) at ``count`` random points.

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> equal_at_points(sp.tanh(x) ** 2, 1 - 1 / sp.cosh(x) ** 2)
    True
    """
    symbols = sorted(lhs.free_symbols | rhs.free_symbols, key=lambda s: s.name)
    rng = random.Random(seed)
    tolerance = mpmath.mpf("1e-20")
    for _ in range(count):
        point = sample_point(symbols, rng, ranges, default)
        ev = Evaluator(point, digits)
        try:
            left, right = ev(lhs), ev(rhs)
        except (ZeroDivisionError, ValueError, OverflowError):
            return False
        with mpmath.workdps(digits):
            if not (mpmath.isfinite(left) and mpmath.isfinite(right)):
                return False
            if abs(left - right) > tolerance * (1 + abs(right)):
                return False
    return True


#: Targets are drawn in [0.05, 0.95] (hundredths), clipped to the cost's target range.
TARGET_SAMPLE: Hundredths = (5, 95)


def sample_targets(
    symbols: Sequence[sp.Symbol], rng: random.Random | int, targets: Range
) -> dict[sp.Symbol, sp.Rational]:
    """Random targets for a cost whose targets must lie in ``targets`` (a cost row's range).

    Drawn in [0.05, 0.95] clipped to the range; when the range is a simplex (each
    column sums to one) they are divided by their sum.

    Examples
    --------
    >>> from chainrule.derive.tables import PROBABILITIES
    >>> ys = sp.symbols("y0:3")
    >>> sum(sample_targets(ys, 0, PROBABILITIES).values())
    1
    """
    low, high = TARGET_SAMPLE
    if math.isfinite(targets.low):
        low = max(low, math.ceil(targets.low * 100) + 1)
    if math.isfinite(targets.high):
        high = min(high, math.floor(targets.high * 100) - 1)
    point = sample_point(symbols, rng, default=(low, high))
    if targets.simplex:
        total = sum(point.values())
        point = {s: v / total for s, v in point.items()}
    return point
