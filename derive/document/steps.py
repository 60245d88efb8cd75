"""Steps and sections of a derivation, and the check that every step's sides agree.

:func:`check_step` evaluates the sides of a step at random rational points
(:func:`~chainrule.derive.numeric.sample_point`) with the one evaluator, 40 digits:
derivatives of the witness's full scalar cost are taken by ``sympy.diff`` after every
part free of the variable has been evaluated (:class:`_AtPoint`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from chainrule.derive.document.witness import Side, _At
from chainrule.derive.functions import sigmoid, softplus
from chainrule.derive.numeric import Evaluator, sample_point


@dataclass(frozen=True)
class Step:
    """One displayed equation and the SymPy sides that make it checkable.

    ``checks`` (built on first use from ``source``, a tuple or a function returning
    one) holds one tuple of sides per instance checked (e.g. one per layer for a step
    written for a generic layer l); all sides of a tuple are equal.
    ``label`` is BP1..BP4, ``forward`` or ``cost`` where the step has one, and
    ``target`` the identifier a vectorized step assigns in the generated module.
    """

    title: str
    latex: str
    source: Any = field(repr=False, compare=False)
    label: str = ""
    target: str = ""
    #: The tag displayed, when it is not ``label`` ("" for none): a statement the module
    #: labels with the equation it serves (sigma' for BP2) is not tagged as that equation.
    tag: str | None = None
    _resolved: list = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def checks(self) -> tuple[tuple[Side, ...], ...]:
        """One tuple of equal sides per checked instance (built on first use)."""
        if not self._resolved:
            source = self.source
            self._resolved.append(tuple(source() if callable(source) else source))
        return self._resolved[0]

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides of the first (representative) instance."""
        return self.checks[0]

    @property
    def lhs(self) -> Side:
        """Left-hand side of the representative instance."""
        return self.sides[0]

    @property
    def rhs(self) -> Side:
        """Right-hand side of the representative instance."""
        return self.sides[-1]

    @property
    def equality(self) -> tuple[Side, Side]:
        """The SymPy equality the step states, as (lhs, rhs)."""
        return self.lhs, self.rhs


@dataclass(frozen=True)
class Section:
    """A numbered part of the document: a heading, a sentence or two, its steps."""

    title: str
    intro: str
    steps: tuple[Step, ...]
    table: tuple[tuple[str, ...], ...] = field(default=())
    items: tuple[tuple[str, str], ...] = field(default=())
    #: A sentence on the colours, added to the intro only in the formats that show them.
    colour_note: str = ""


#: Working digits of a check; sides must agree to 1e-20 (relative).
DIGITS = 40


def _collapse(expr: sp.Basic, var: sp.Symbol, fixed: Evaluator, memo: dict) -> sp.Basic:
    """``expr`` with every subexpression free of ``var`` replaced by its value.

    ``fixed`` evaluates at the point without ``var`` (mode ``"rounded"``); ``memo`` maps
    each visited subexpression to (depends on var, collapsed form), so a subexpression
    shared many times in the cost is visited once.
    """
    if expr in memo:
        return memo[expr][1]
    args = [_collapse(arg, var, fixed, memo) for arg in expr.args]
    depends = expr == var or any(memo[arg][0] for arg in expr.args)
    if depends or not isinstance(expr, sp.Expr):
        out = expr.func(*args) if args else expr
    else:
        out = fixed(expr)
    memo[expr] = (depends, out)
    return out


def closed(expr: sp.Expr) -> sp.Expr:
    """``expr`` with sigmoid and softplus written out in exp and log: a reference
    derivative is then SymPy's diff of the definition, not the class's own ``fdiff``
    (which a wrong identity would make agree with itself)."""
    return expr.replace(
        lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.closed_form(e.args[0])
    )


class _AtPoint:
    """Values of sides at one point, each derivative taken after fixing the other variables.

    Leaves (parts without derivatives or substitutions) go to one
    :class:`~chainrule.derive.numeric.Evaluator` (mode ``"rounded"``, :data:`DIGITS`
    digits) whose memo is shared by every side checked at the point; ``memo`` shares
    repeated derivatives. The evaluator does not differentiate: a derivative is taken
    by ``sympy.diff`` after every part free of its variable has been evaluated, so
    ``diff`` works on a small expression and is still exact in the variable.
    """

    def __init__(self, point: dict[sp.Symbol, sp.Expr]) -> None:
        self.point = point
        self.values = Evaluator(point, DIGITS, mode="rounded")
        self.memo: dict[sp.Expr, sp.Expr] = {}
        self._fixed: dict[sp.Symbol, Evaluator] = {}

    def fixed(self, var: sp.Symbol) -> Evaluator:
        """The evaluator at the point without ``var`` (one per variable)."""
        if var not in self._fixed:
            others = {s: v for s, v in self.point.items() if s != var}
            self._fixed[var] = Evaluator(others, DIGITS, mode="rounded")
        return self._fixed[var]

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        if not expr.has(sp.Derivative, sp.Subs, _At):
            return self.values(expr)
        if expr in self.memo:
            return self.memo[expr]
        if isinstance(expr, sp.Derivative):
            (var, order), *rest = expr.variable_count
            if rest or order != 1:
                out = self.values(sp.Derivative(closed(expr.expr), *expr.variable_count).doit())
            else:
                # A derivative inside a differentiated expression is not supported: the
                # fixed evaluator refuses it (the document never builds one).
                inner = _collapse(expr.expr, var, self.fixed(var), {})
                derivative = sp.diff(closed(inner), var)
                out = Evaluator({var: self.point[var]}, DIGITS, mode="rounded")(derivative)
        elif isinstance(expr, (sp.Subs, _At)):
            inner, variables, values = expr.args
            moved = dict(self.point)
            for var, value in zip(variables, values, strict=True):
                moved[var] = self(value)
            out = _AtPoint(moved)(inner)
        else:
            out = expr.func(*[self(arg) for arg in expr.args])
        self.memo[expr] = out
        return out


def _evaluate(side: Side, at_point: _AtPoint) -> list[sp.Expr]:
    matrix = side if isinstance(side, sp.MatrixBase) else sp.Matrix([side])
    return [at_point(entry) for entry in matrix]


def sides_agree(sides: tuple[Side, ...], points: int = 2, seed: int = 0) -> bool:
    """True when all ``sides`` agree exactly at random rational points (:data:`DIGITS` digits).

    Derivatives and substitutions in the sides are evaluated first (``doit``), so an
    unevaluated ``Derivative`` of the full scalar cost is compared with the chain-rule
    form it is claimed to equal.

    Examples
    --------
    >>> x = sp.Symbol("x", real=True)
    >>> sides_agree((sp.Derivative(x**3, x), 3 * x**2))
    True
    """
    symbols: set[sp.Symbol] = set()
    for side in sides:
        symbols |= {s for s in side.free_symbols if isinstance(s, sp.Symbol)}
    ordered = sorted(symbols, key=lambda s: s.name)
    rng = random.Random(seed)
    for _ in range(points):
        at_point = _AtPoint(sample_point(ordered, rng))
        reference = _evaluate(sides[0], at_point)
        for side in sides[1:]:
            values = _evaluate(side, at_point)
            if len(values) != len(reference):
                return False
            for left, right in zip(reference, values, strict=True):
                if not (left.is_finite and right.is_finite):
                    return False
                if abs(left - right) > sp.Float("1e-20", 30) * (1 + abs(right)):
                    return False
    return True


def check_step(step: Step, points: int = 2, seed: int = 0) -> bool:
    """True when every checked instance of ``step`` holds (see :func:`sides_agree`)."""
    return all(sides_agree(sides, points, seed) for sides in step.checks)
