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
from chainrule.derive.functions import FUNCTION_ROWS
from chainrule.derive.numeric import real_value
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


#: name -> (arity, builder). The builders return SymPy objects; none evaluates text. The
#: one-argument functions are the rows of FUNCTION_ROWS that have a name in expressions.
FUNCTIONS: dict[str, tuple[int, Callable[..., sp.Expr]]] = {
    **{row.parse: (1, row.cls) for row in FUNCTION_ROWS if row.parse is not None},
    "sqrt": (1, sp.sqrt),
    "abs": (1, _abs),
    "max": (2, _max2),
    "min": (2, _min2),
}

#: Named constants an expression may use (``pi``); from the constants of the rows.
NAMED_CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi}

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
                f"expression {_quote(text)} contains {describe_character(ch)}",
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


def describe_character(ch: str) -> str:
    """Name a character for an error message by its Unicode name and category.

    Examples
    --------
    >>> describe_character("\\xa0")
    'the space character U+00A0 (NO-BREAK SPACE)'
    >>> describe_character("\\x07")
    'the control character U+0007'
    """
    category = unicodedata.category(ch)
    kind = {"Cc": "control character", "Zs": "space character", "Zl": "line separator"}.get(
        category, "character"
    )
    name = unicodedata.name(ch, "")
    return f"the {kind} U+{ord(ch):04X}" + (f" ({name})" if name else "")


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
        expr = _SympyFromAst(field, text).build(tree.body)
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


class _SympyFromAst:
    """Builds the SymPy expression of a whitelisted AST, bottom-up."""

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
            if node.id in NAMED_CONSTANTS:
                return NAMED_CONSTANTS[node.id]
            raise self.fail(
                f"unknown name {_quote(node.id)}", "the only variable is x (and the constant pi)"
            )
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


def _evaluator(expr: sp.Expr) -> Callable[[float], float | None]:
    """The float value of ``expr`` at x, or None where it is not a finite real number."""
    return lambda v: real_value(expr, {X: v})


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
