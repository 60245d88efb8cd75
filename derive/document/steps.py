"""Steps and sections of a derivation, and the check that every step's sides agree.

:func:`check_step` evaluates the sides of a step at random rational points, 30 digits:
derivatives of the witness's full scalar cost are taken by ``sympy.diff`` after every
part free of the variable has been evaluated (:func:`_numeric`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from chainrule.derive.document.witness import Side, _At
from chainrule.derive.functions import sigmoid, softplus


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


def _sample(symbols: list[sp.Symbol], rng: random.Random) -> dict[sp.Symbol, sp.Rational]:
    return {s: sp.Rational(rng.randint(-150, 150), 100) for s in symbols}


def _collapse(expr: sp.Basic, var: sp.Symbol, point: dict, memo: dict) -> sp.Basic:
    """``expr`` with every subexpression free of ``var`` replaced by its value at ``point``.

    ``memo`` maps each visited subexpression to (depends on var, collapsed form), so a
    subexpression shared many times in the cost is visited once.
    """
    if expr in memo:
        return memo[expr][1]
    if not expr.args:
        depends = expr == var
        out = expr if depends or not isinstance(expr, sp.Expr) else expr.xreplace(point)
    else:
        args = [_collapse(arg, var, point, memo) for arg in expr.args]
        depends = any(memo[arg][0] for arg in expr.args)
        out = expr.func(*args)
        if not depends and isinstance(out, sp.Expr) and not out.is_Number:
            out = sp.N(out, 40)
    memo[expr] = (depends, out)
    return out


def closed(expr: sp.Expr) -> sp.Expr:
    """``expr`` with sigmoid and softplus written out in exp and log: a reference
    derivative is then SymPy's diff of the definition, not the class's own ``fdiff``
    (which a wrong identity would make agree with itself)."""
    return expr.replace(
        lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.closed_form(e.args[0])
    )


def _numeric(expr: sp.Expr, point: dict[sp.Symbol, sp.Expr], memo: dict | None = None) -> sp.Expr:
    """``expr`` at ``point``, taking each derivative after fixing the other variables.

    Every part of the differentiated expression that does not depend on the variable
    is evaluated first, so ``diff`` works on a small expression; the derivative is
    still exact in the variable. ``memo`` shares repeated derivatives (one point).
    """
    memo = {} if memo is None else memo
    if not expr.has(sp.Derivative, sp.Subs, _At):
        return expr.xreplace(point)
    if expr in memo:
        return memo[expr]
    if isinstance(expr, sp.Derivative):
        (var, order), *rest = expr.variable_count
        if rest or order != 1:
            out = sp.Derivative(closed(expr.expr), *expr.variable_count).doit().xreplace(point)
        else:
            others = {s: v for s, v in point.items() if s != var}
            inner = _numeric(expr.expr, others, {})
            inner = _collapse(inner, var, others, {})
            out = sp.diff(closed(inner), var).xreplace({var: point[var]})
    elif isinstance(expr, (sp.Subs, _At)):
        inner, variables, values = expr.args
        moved = dict(point)
        for var, value in zip(variables, values, strict=True):
            moved[var] = sp.N(_numeric(value, point, memo), 40)
        out = _numeric(inner, moved, {})
    else:
        out = expr.func(*[_numeric(arg, point, memo) for arg in expr.args])
    memo[expr] = out
    return out


def _evaluate(side: Side, point: dict[sp.Symbol, sp.Rational], memo: dict) -> list[sp.Float]:
    matrix = side if isinstance(side, sp.MatrixBase) else sp.Matrix([side])
    return [sp.N(_numeric(entry, point, memo), 30) for entry in matrix]


def sides_agree(sides: tuple[Side, ...], points: int = 2, seed: int = 0) -> bool:
    """True when all ``sides`` agree exactly at random rational points (30 digits).

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
        point = _sample(ordered, rng)
        memo: dict = {}
        reference = _evaluate(sides[0], point, memo)
        for side in sides[1:]:
            values = _evaluate(side, point, memo)
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
