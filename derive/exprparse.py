"""Parse a custom activation written as text (e.g. ``"x*sigmoid(x)"``) into SymPy.

The text goes through Python's :mod:`ast` parser and a whitelist walk that builds
SymPy objects node by node; nothing is ever evaluated, and ``sympify``,
``parse_expr``, ``eval``, ``exec`` and ``lambdify`` are never called on it.
Caps keep the work bounded: length, node count, literal size, exponent size.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import unicodedata
import warnings
from collections.abc import Callable

import sympy as sp
from chainrule.derive.errors import SpecError
from chainrule.derive.functions import sigmoid, softplus
from sympy.polys.polyerrors import BasePolynomialError

MAX_LENGTH = 500
MAX_NODES = 200
MAX_LITERAL = 1e6
MAX_EXPONENT = 16
#: Calls nested inside calls, e.g. sigmoid(sigmoid(x)) is 2 deep; SymPy's simplification
#: of the derivative grows quickly with depth.
MAX_CALL_DEPTH = 8
#: max, min and abs calls in one expression (each becomes a Piecewise).
MAX_PIECEWISE = 6
#: Polynomial degree above which a denominator's real roots are searched by sign changes
#: on the grid instead of exactly.
MAX_EXACT_DEGREE = 64

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


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*")


def looks_like_expression(text: str) -> bool:
    """True when ``text`` is meant as an expression rather than an activation name.

    A bare word such as ``"sigmoidd"`` or ``"leaky-rlu"`` is a (mistyped) name; anything
    else, or any word that mentions the variable ``x``, is parsed as an expression so
    that the error says what is wrong with it.

    Examples
    --------
    >>> looks_like_expression("leaky-rlu"), looks_like_expression("x-1")
    (False, True)
    """
    stripped = text.strip()
    if not _NAME_LIKE.fullmatch(stripped):
        return True
    return "x" in stripped.split("-")


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
            f"expected an expression string, got {_quote(text)}",
            "write it in x, e.g. 'x*sigmoid(x)'",
        )
    if len(text) > MAX_LENGTH:
        raise SpecError(
            field,
            f"expression is {len(text)} characters long",
            f"keep it to at most {MAX_LENGTH} characters",
        )
    for ch in text:
        if not (ch.isascii() and ch.isprintable()):
            raise SpecError(
                field,
                f"expression {_quote(text)} contains {_describe(ch)}",
                "write it with plain ASCII letters, digits and operators (x, not a look-alike)",
            )
    if "#" in text:
        raise SpecError(
            field,
            f"expression {_quote(text)} contains a comment sign #",
            "write only the expression, e.g. 'x*sigmoid(x)'",
        )
    return _parse(text, field)


def _quote(text: object, limit: int = 60) -> str:
    """``repr(text)`` cut to ``limit`` characters, so that an error stays one short line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _call_depth(node: ast.AST) -> int:
    """How deeply calls nest in ``node`` (iterative: the tree may be deep)."""
    deepest = 0
    stack = [(node, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, ast.Call):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(current))
    return deepest


def _describe(ch: str) -> str:
    """Name a character for an error message, e.g. ``U+FF58 FULLWIDTH LATIN SMALL LETTER X``."""
    name = unicodedata.name(ch, "a control character")
    return f"the character U+{ord(ch):04X} ({name})"


@functools.lru_cache(maxsize=512)
def _parse(text: str, field: str) -> sp.Expr:
    """Parse checked ASCII text; cached, since specs are validated on every copy."""
    try:
        # Python warns (on stderr) about text such as "1if x" and parses it anyway: that
        # is invalid syntax here, reported by the one error line and nothing else.
        with warnings.catch_warnings():
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, SyntaxWarning, ValueError, RecursionError, MemoryError):
        raise SpecError(
            field,
            f"expression {_quote(text)} is not valid syntax",
            "write it in x, e.g. 'x*sigmoid(x)'",
        ) from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise SpecError(
            field, f"expression has {nodes} syntax nodes", f"keep it to at most {MAX_NODES}"
        )
    depth = _call_depth(tree.body)
    if depth > MAX_CALL_DEPTH:
        raise SpecError(
            field,
            f"expression {_quote(text)} nests function calls {depth} deep",
            f"nest at most {MAX_CALL_DEPTH} calls",
        )
    pieces = sum(
        1
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("max", "min", "abs")
    )
    if pieces > MAX_PIECEWISE:
        raise SpecError(
            field,
            f"expression {_quote(text)} has {pieces} max/min/abs calls",
            f"use at most {MAX_PIECEWISE}",
        )
    try:
        expr = _Builder(field, text).build(tree.body)
        _check_result(expr, field, text)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as exc:
        # SymPy refusing an operation on what the text built (e.g. comparing a complex
        # number) is still a fault of the text: report it as one.
        raise SpecError(
            field,
            f"expression {_quote(text)} cannot be used ({type(exc).__name__})",
            "use a real, finite function of x",
        ) from None
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
            f"{what} in expression {_quote(self.text)}",
            fix or f"use x, numbers, + - * / ** and the functions {names}",
        )

    def build(self, node: ast.AST) -> sp.Expr:
        expr = self.node(node)
        if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise self.fail("a non-finite value (such as log(0))", "use finite sub-expressions")
        if expr.has(sp.I):
            raise self.fail("a complex value (such as sqrt(-1))", "use real sub-expressions")
        return expr

    def node(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return X
            raise self.fail(f"unknown name {_quote(node.id)}", "the only variable is x")
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
            raise self.fail(f"literal {_quote(value)} is not a number")
        if abs(value) > MAX_LITERAL or not math.isfinite(value):
            raise self.fail(
                f"literal {_quote(value)} is out of range",
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
        base_node = node.left
        while isinstance(base_node, ast.UnaryOp):
            base_node = base_node.operand
        if isinstance(base_node, ast.BinOp) and isinstance(base_node.op, ast.Pow):
            raise self.fail("a tower of exponents", "write a single power, e.g. x**6")
        base = self.build(node.left)
        if base.is_zero and exponent < 0:
            raise self.fail("division by zero", "divide by a non-zero number")
        return base**exponent

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            if isinstance(node.func, ast.Name):
                raise self.fail(f"function {_quote(node.func.id)} is not allowed")
            raise self.fail(
                f"calling a {type(node.func).__name__} (not a function name) is not allowed"
            )
        if node.keywords:
            raise self.fail("keyword arguments", "pass arguments by position")
        arity, builder = FUNCTIONS[node.func.id]
        if len(node.args) != arity:
            raise self.fail(f"{node.func.id} takes {arity} argument(s), got {len(node.args)}")
        return builder(*(self.build(arg) for arg in node.args))


#: Grid on which a parsed activation and its derivative must be finite and real:
#: [-10, 10] in steps of 0.05 (0 included exactly), plus a few irrational-looking points.
GRID: tuple[float, ...] = tuple(i / 20 for i in range(-200, 201)) + (
    -math.pi,
    -1 / 3,
    1 / 7,
    math.e,
)


class _NotReal(Exception):
    """Raised by a compiled evaluator when a value is not a finite real number."""


class _Unsupported(Exception):
    """Raised while compiling an evaluator for a node it does not know."""


def _stable_sigmoid(t: float) -> float:
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def _stable_softplus(t: float) -> float:
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


_UNARY: dict[type, Callable[[float], float]] = {
    sp.exp: math.exp,
    sp.log: math.log,
    sp.tanh: math.tanh,
    sp.sin: math.sin,
    sp.cos: math.cos,
    sigmoid: _stable_sigmoid,
    softplus: _stable_softplus,
    sp.Abs: abs,
    sp.sign: lambda t: float((t > 0) - (t < 0)),
}

_RELATIONS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _compile(expr: sp.Basic) -> Callable[[float], float]:
    """Turn a SymPy expression in :data:`X` into a float function by walking its tree.

    Only the node types listed here are understood (anything else raises
    :class:`_Unsupported`); no source text is produced or evaluated.
    """
    if expr == X:
        return lambda v: v
    if expr.is_number and not isinstance(expr, sp.logic.boolalg.Boolean):
        value = complex(expr.evalf(30))
        if value.imag != 0 or not math.isfinite(value.real):
            raise _NotReal
        return lambda v, c=value.real: c
    if isinstance(expr, sp.Add):
        parts = [_compile(a) for a in expr.args]
        return lambda v: math.fsum(p(v) for p in parts)
    if isinstance(expr, sp.Mul):
        parts = [_compile(a) for a in expr.args]

        def product(v: float) -> float:
            out = 1.0
            for p in parts:
                out *= p(v)
            return out

        return product
    if isinstance(expr, sp.Pow):
        base, power = _compile(expr.base), _compile(expr.exp)
        return lambda v: math.pow(base(v), power(v))
    if type(expr) in _UNARY:
        fn, inner = _UNARY[type(expr)], _compile(expr.args[0])
        return lambda v: fn(inner(v))
    if isinstance(expr, sp.Piecewise):
        branches = [(_compile(value), _compile(cond)) for value, cond in expr.args]

        def piecewise(v: float) -> float:
            for value, cond in branches:
                if cond(v):
                    return value(v)
            raise _NotReal

        return piecewise
    if expr is sp.true or expr is sp.false:
        return lambda v, c=bool(expr): c
    if isinstance(expr, sp.core.relational.Relational):
        rel, lhs, rhs = _RELATIONS[expr.rel_op], _compile(expr.lhs), _compile(expr.rhs)
        return lambda v: rel(lhs(v), rhs(v))
    if isinstance(expr, (sp.And, sp.Or, sp.Not)):
        parts = [_compile(a) for a in expr.args]
        combine = {sp.And: all, sp.Or: any, sp.Not: lambda it: not next(iter(it))}[type(expr)]
        return lambda v: combine(p(v) for p in parts)
    raise _Unsupported(type(expr).__name__)


def _evaluator(expr: sp.Expr) -> Callable[[float], float | None]:
    """A function returning the real value of ``expr`` at a float, or None when it is not
    a finite real number there (a pole, a log of a negative, an overflow...)."""
    try:
        fn = _compile(expr)
    except _NotReal:
        return lambda v: None
    except _Unsupported:
        # Slow but general: SymPy's own numeric evaluation of the built expression.
        def fn(v: float) -> float:
            value = complex(expr.subs(X, sp.Rational(repr(v))).evalf(30))
            if value.imag != 0:
                raise _NotReal
            return value.real

    def safe(v: float) -> float | None:
        try:
            out = fn(v)
        except (_NotReal, ValueError, ZeroDivisionError, OverflowError, TypeError):
            return None
        return float(out) if math.isfinite(out) else None

    return safe


def _denominators(expr: sp.Expr) -> list[sp.Expr]:
    """Sub-expressions that must not vanish: bases of negative powers and log arguments."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Pow) and node.exp.is_negative and node.base.has(X):
            out.append(node.base)
        elif isinstance(node, sp.log) and node.args[0].has(X):
            out.append(node.args[0])
    return out


def _check_result(expr: sp.Expr, field: str, text: str) -> None:
    """Require an activation in x that is real and finite, with a finite derivative, on
    :data:`GRID`, and whose denominators and log arguments never cross or touch zero."""
    if X not in expr.free_symbols:
        raise SpecError(
            field,
            f"expression {_quote(text)} does not depend on x",
            "an activation must be a function of x",
        )
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        raise SpecError(field, f"expression {_quote(text)} is not finite", "avoid dividing by zero")
    deriv = sp.diff(expr, X)
    for what, e in (("value", expr), ("derivative", deriv)):
        value_at = _evaluator(e)
        for v in GRID:
            if value_at(v) is None:
                raise SpecError(
                    field,
                    f"expression {_quote(text)} has no finite real {what} at x = {v:g}",
                    "use a function that is finite for every real x and does not overflow "
                    "float64 for |x| <= 10",
                )
    for den in _denominators(expr):
        where = _zero_of(den)
        if where is not None:
            raise SpecError(
                field,
                f"expression {_quote(text)} divides by zero or takes log(0) near x = {where:g}",
                "use a function that is finite for every real x",
            )


def _degree_bound(expr: sp.Expr) -> int:
    """An upper bound on the degree in x of a polynomial expression, without expanding it."""
    if isinstance(expr, sp.Add):
        return max(_degree_bound(a) for a in expr.args)
    if isinstance(expr, sp.Mul):
        return sum(_degree_bound(a) for a in expr.args)
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer:
        return int(expr.exp) * _degree_bound(expr.base)
    return 1 if expr.has(X) else 0


def _zero_of(den: sp.Expr) -> float | None:
    """A real x where ``den`` vanishes (exactly for polynomials, by sign change otherwise)."""
    if den.is_polynomial(X) and _degree_bound(den) <= MAX_EXACT_DEGREE:
        try:
            poly = sp.Poly(den, X, domain="QQ")
        except BasePolynomialError:
            poly = None  # irrational coefficients: fall back to the sign-change scan
        if poly is not None:
            if poly.degree() > 0 and poly.count_roots() > 0:
                return float(sp.real_roots(poly)[0].evalf(15))
            return None
    value_at = _evaluator(den)
    previous = None
    for v in GRID[:401]:
        current = value_at(v)
        if current is not None and previous is not None and current * previous <= 0:
            return v
        previous = current
    return None
