"""Parse a custom activation written as text (e.g. ``"x*sigmoid(x)"``) into SymPy.

The text goes through Python's :mod:`ast` parser and a whitelist walk that builds
SymPy objects node by node; nothing is ever evaluated, and ``sympify``,
``parse_expr``, ``eval``, ``exec`` and ``lambdify`` are never called on it.
Caps keep the work bounded: length, node count, literal size, exponent size.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import sympy as sp

from derive.errors import SpecError
from derive.functions import sigmoid, softplus

MAX_LENGTH = 500
MAX_NODES = 200
MAX_LITERAL = 1e6
MAX_EXPONENT = 16

#: The variable of every activation expression.
X = sp.Symbol("x", real=True)


def _max2(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return sp.Piecewise((a, sp.Ge(a - b, 0)), (b, True))


def _min2(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    return sp.Piecewise((a, sp.Le(a - b, 0)), (b, True))


def _abs(a: sp.Expr) -> sp.Expr:
    return sp.Piecewise((a, sp.Gt(a, 0)), (-a, True))


#: name -> (arity, builder). The builders return SymPy objects; none evaluates text.
FUNCTIONS: dict[str, tuple[int, Callable[..., sp.Expr]]] = {
    "exp": (1, sp.exp),
    "log": (1, sp.log),
    "sqrt": (1, sp.sqrt),
    "tanh": (1, sp.tanh),
    "sigmoid": (1, sigmoid),
    "softplus": (1, softplus),
    "sin": (1, sp.sin),
    "cos": (1, sp.cos),
    "abs": (1, _abs),
    "max": (2, _max2),
    "min": (2, _min2),
}

_BINOPS: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}


def looks_like_expression(text: str) -> bool:
    """True when ``text`` is meant as an expression rather than an activation name."""
    return any(ch in text for ch in "()+-*/ ") or text.strip() == "x"


def parse_activation(text: str, field: str = "activation") -> sp.Expr:
    """Parse ``text`` into a SymPy expression in the real symbol ``x``.

    Parameters
    ----------
    text : str
        An expression in ``x`` using numbers, ``+ - * / **``, unary minus and the
        functions in :data:`FUNCTIONS`.
    field : str
        The spec field named in error messages.

    Returns
    -------
    sympy.Expr
        The expression, built directly from whitelisted AST nodes.

    Raises
    ------
    SpecError
        On anything outside the whitelist or the caps, with the reason and a fix.

    Examples
    --------
    >>> parse_activation("x*sigmoid(x)")
    x*sigmoid(x)
    """
    if not isinstance(text, str):
        raise SpecError(
            field,
            f"expected an expression string, got {text!r}",
            "write it in x, e.g. 'x*sigmoid(x)'",
        )
    if len(text) > MAX_LENGTH:
        raise SpecError(
            field,
            f"expression is {len(text)} characters long",
            f"keep it under {MAX_LENGTH} characters",
        )
    if not text.isascii() or not text.isprintable():
        raise SpecError(
            field,
            f"expression {text!r} has non-ASCII or control characters",
            "write it with plain ASCII letters, digits and operators",
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise SpecError(
            field, f"expression {text!r} is not valid syntax", "write it in x, e.g. 'x*sigmoid(x)'"
        ) from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise SpecError(field, f"expression has {nodes} syntax nodes", f"keep it under {MAX_NODES}")
    expr = _Builder(field, text).build(tree.body)
    _check_result(expr, field, text)
    return expr


class _Builder:
    """Walks a whitelisted AST and builds the SymPy expression bottom-up."""

    def __init__(self, field: str, text: str) -> None:
        self.field = field
        self.text = text

    def fail(self, what: str, fix: str = "") -> SpecError:
        names = ", ".join(sorted(FUNCTIONS))
        return SpecError(
            self.field,
            f"{what} in expression {self.text!r}",
            fix or f"use x, numbers, + - * / ** and the functions {names}",
        )

    def build(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return X
            raise self.fail(f"unknown name {node.id!r}", "the only variable is x")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{type(node).__name__} is not allowed")

    def constant(self, value: object) -> sp.Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"literal {value!r} is not a number")
        if not math.isfinite(value) or abs(value) > MAX_LITERAL:
            raise self.fail(
                f"literal {value!r} is out of range",
                f"use finite numbers of magnitude at most {MAX_LITERAL:g}",
            )
        if isinstance(value, int):
            return sp.Integer(value)
        return sp.Rational(repr(value))

    def binop(self, node: ast.BinOp) -> sp.Expr:
        if isinstance(node.op, ast.Pow):
            return self.power(node)
        left, right = self.build(node.left), self.build(node.right)
        if isinstance(node.op, ast.Div):
            if right.is_zero:
                raise self.fail("division by zero", "divide by a non-zero number")
            return left / right
        rule = _BINOPS.get(type(node.op))
        if rule is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
        return rule(left, right)

    def power(self, node: ast.BinOp) -> sp.Expr:
        exponent_node = node.right
        sign = 1
        if isinstance(exponent_node, ast.UnaryOp) and isinstance(exponent_node.op, ast.USub):
            sign, exponent_node = -1, exponent_node.operand
        if not (
            isinstance(exponent_node, ast.Constant)
            and isinstance(exponent_node.value, (int, float))
            and not isinstance(exponent_node.value, bool)
        ):
            raise self.fail(
                "an exponent that is not a number literal", "use a literal exponent, e.g. x**2"
            )
        exponent = self.constant(exponent_node.value) * sign
        if abs(exponent) > MAX_EXPONENT:
            raise self.fail(
                f"exponent {exponent} is too large",
                f"use exponents of magnitude at most {MAX_EXPONENT}",
            )
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(node.left)):
            raise self.fail("a tower of exponents", "write a single power, e.g. x**6")
        base = self.build(node.left)
        if base.is_zero and exponent < 0:
            raise self.fail("division by zero", "divide by a non-zero number")
        return base**exponent

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise self.fail(f"function {what!r} is not allowed")
        if node.keywords:
            raise self.fail("keyword arguments", "pass arguments by position")
        arity, builder = FUNCTIONS[node.func.id]
        if len(node.args) != arity:
            raise self.fail(f"{node.func.id} takes {arity} argument(s), got {len(node.args)}")
        return builder(*(self.build(arg) for arg in node.args))


_SAMPLES = (-2.5, -0.7, 0.3, 1.9)


def _check_result(expr: sp.Expr, field: str, text: str) -> None:
    """Require an expression in x that is finite, with a finite derivative, at sample points."""
    if X not in expr.free_symbols:
        raise SpecError(
            field,
            f"expression {text!r} does not depend on x",
            "an activation must be a function of x",
        )
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise SpecError(field, f"expression {text!r} is not finite", "avoid dividing by zero")
    deriv = sp.diff(expr, X)
    for value in _SAMPLES:
        for what, e in (("value", expr), ("derivative", deriv)):
            number = e.subs(X, sp.Rational(repr(value))).evalf(20)
            if not (number.is_real and number.is_finite):
                raise SpecError(
                    field,
                    f"expression {text!r} has a non-finite or complex {what} at x = {value}",
                    "use a function that is finite for every real x",
                )
