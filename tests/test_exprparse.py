"""The custom-activation parser: a whitelist straight into SymPy, with caps; and network
names that reach generated code only as string literals."""

from __future__ import annotations

import ast
import io
import math
import tokenize

import pytest
import sympy as sp
from chainrule.codegen.emit import lint_module, write_module
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import SpecError
from chainrule.derive.exprparse import (
    FUNCTIONS,
    MAX_CALL_DEPTH,
    MAX_EXPONENT,
    MAX_LENGTH,
    MAX_LITERAL,
    MAX_NODES,
    MAX_PIECEWISE,
    X,
    looks_like_expression,
    parse_activation,
)
from chainrule.derive.functions import sigmoid, softplus
from chainrule.derive.spec import Spec
from conftest import import_path


def value(text: str, at: float) -> float:
    """Numeric value of a parsed expression at ``x = at``, by SymPy's evalf."""
    return float(parse_activation(text).subs(X, sp.Rational(repr(at))).evalf(30))


def rejected(text: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_activation(text, "layers[1].activation")
    assert info.value.field == "layers[1].activation"
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the whitelist


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x*sigmoid(x)", X * sigmoid(X)),
        ("softplus(x) - log(2)", softplus(X) - sp.log(2)),
        ("tanh(x) + 0.5*x", sp.tanh(X) + X / 2),
        ("-x**3 + 2*x", -(X**3) + 2 * X),
        ("exp(-x**2/2)", sp.exp(-(X**2) / 2)),
        ("sqrt(1 + x**2)", sp.sqrt(1 + X**2)),
        ("sin(x) + cos(x)", sp.sin(X) + sp.cos(X)),
        ("x/(1 + exp(-x))", X / (1 + sp.exp(-X))),
        ("+x", X),
        ("sqrt(x**2)", sp.Abs(X)),
    ],
)
def test_whitelisted_text_becomes_the_sympy_expression(text: str, expected: sp.Expr) -> None:
    assert sp.simplify(parse_activation(text) - expected) == 0


@pytest.mark.parametrize(
    ("text", "at", "expected"),
    [
        ("max(x, 0.1*x)", 2.0, 2.0),
        ("max(x, 0.1*x)", -2.0, -0.2),
        ("min(x, 1)", 3.0, 1.0),
        ("min(x, 1)", -3.0, -3.0),
        ("abs(x)", -1.5, 1.5),
        ("abs(x)", 1.5, 1.5),
        ("x*sigmoid(x)", 1.0, 1 / (1 + math.exp(-1))),
        ("softplus(x) - log(2)", 0.0, 0.0),
    ],
)
def test_piecewise_and_named_functions_have_the_right_values(
    text: str, at: float, expected: float
) -> None:
    assert value(text, at) == pytest.approx(expected, rel=1e-14, abs=1e-15)


def test_every_whitelisted_function_is_usable() -> None:
    for name, (arity, _) in FUNCTIONS.items():
        args = ", ".join(["x"] + ["1"] * (arity - 1))
        text = f"{name}({args}) + x" if name not in ("log", "sqrt") else f"{name}(2 + x**2)"
        expr = parse_activation(text)
        assert X in expr.free_symbols, name


def test_the_derivative_comes_from_sympy() -> None:
    expr = parse_activation("softplus(x) - log(2)")
    deriv = sp.diff(expr, X)
    assert float((deriv - sigmoid(X)).subs(X, sp.Rational(7, 10)).evalf(30)) == pytest.approx(0)


def test_a_name_or_an_expression() -> None:
    assert not looks_like_expression("sigmoidd")
    assert not looks_like_expression("leaky-rlu")
    assert looks_like_expression("x")
    assert looks_like_expression("x-1")
    assert looks_like_expression("x*sigmoid(x)")
    assert looks_like_expression("\uff58")


# ------------------------------------------------------------------------ caps


def test_length_cap() -> None:
    at_cap = "x + 0." + "0" * (MAX_LENGTH - 7) + "1"
    assert len(at_cap) == MAX_LENGTH
    parse_activation(at_cap)
    assert "characters long" in rejected(at_cap + "0")


def test_node_cap() -> None:
    # "x+x+...": each extra term adds a BinOp, a Name and an operator node.
    text = "+".join(["x"] * 70)
    nodes = sum(1 for _ in ast.walk(ast.parse(text, mode="eval")))
    assert nodes > MAX_NODES
    assert len(text) <= MAX_LENGTH
    assert "syntax nodes" in rejected(text)


def test_literal_cap() -> None:
    assert value(f"x + {MAX_LITERAL:.0f}", 0.0) == MAX_LITERAL
    assert "out of range" in rejected(f"x + {MAX_LITERAL * 10:.0f}")
    assert "out of range" in rejected("x*1e400")
    assert "out of range" in rejected("x + 1" + "0" * 400)


def test_exponent_cap() -> None:
    assert parse_activation(f"sigmoid(x)**{MAX_EXPONENT}") == sigmoid(X) ** MAX_EXPONENT
    assert parse_activation(f"(1 + exp(x))**-{MAX_EXPONENT}") == (1 + sp.exp(X)) ** -16
    assert f"exponent {MAX_EXPONENT + 1}" in rejected(f"sigmoid(x)**{MAX_EXPONENT + 1}")
    assert "exponent 1000000" in rejected("x**1000000")
    assert "exponent -100" in rejected("(1 + x**2)**-100") or "tower" in rejected(
        "(1 + x**2)**-100"
    )


@pytest.mark.parametrize("text", ["(x**2)**3", "(sigmoid(x)**2)**2", "(-x**2)**3"])
def test_exponent_towers_are_rejected(text: str) -> None:
    assert "tower" in rejected(text)


def test_powers_of_sums_are_not_towers() -> None:
    expr = parse_activation("(x**4 + 3*x**3 - 2*x + 1)/(x**2 + 1)**3")
    assert float(expr.subs(X, 1).evalf()) == pytest.approx(3 / 8)
    assert parse_activation("exp(x**2/100)**2") == sp.exp(X**2 / 100) ** 2


def test_call_depth_cap() -> None:
    at_cap = "sigmoid(" * MAX_CALL_DEPTH + "x" + ")" * MAX_CALL_DEPTH
    assert X in parse_activation(at_cap).free_symbols
    deeper = "tanh(" + at_cap + ")"
    assert f"{MAX_CALL_DEPTH + 1} deep" in rejected(deeper)


def test_piecewise_cap() -> None:
    at_cap = "x" + " + abs(x)" * MAX_PIECEWISE
    assert X in parse_activation(at_cap).free_symbols
    assert f"{MAX_PIECEWISE + 1} max/min/abs calls" in rejected(at_cap + " + max(x, 0)")


@pytest.mark.parametrize("text", ["x**2**3", "x**x", "2**x", "x**(1/2)", "x**sigmoid(x)"])
def test_exponents_must_be_literals(text: str) -> None:
    assert "not a number literal" in rejected(text)


# ------------------------------------------------------------- what is refused


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("__import__('os')", "'__import__' is not allowed"),
        ("__import__('os').system('true')", "not allowed"),
        ("x.real", "Attribute"),
        ("(1).__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("().__class__", "Attribute"),
        ("lambda: x", "Lambda"),
        ("(lambda t: t)(x)", "not allowed"),
        ("[x for x in (1, 2)]", "ListComp"),
        ("sum(t for t in (x,))", "not allowed"),
        ("{x: 1 for _ in ()}", "DictComp"),
        ("f'{x}'", "JoinedStr"),
        ("x if x > 0 else 0", "IfExp"),
        ("x > 0", "Compare"),
        ("x and 1", "BoolOp"),
        ("x[0]", "Subscript"),
        ("(x, x)", "Tuple"),
        ("x @ x", "MatMult"),
        ("x % 2", "Mod"),
        ("x // 2", "FloorDiv"),
        ("~x", "is not allowed"),
        ("not x", "is not allowed"),
        ("y", "unknown name 'y'"),
        ("X", "unknown name 'X'"),
        ("inf*x", "unknown name 'inf'"),
        ("x + nan", "unknown name 'nan'"),
        ("float('inf')*x", "'float' is not allowed"),
        ("eval('x')", "'eval' is not allowed"),
        ("exec('x')", "'exec' is not allowed"),
        ("sympify('x')", "'sympify' is not allowed"),
        ("x + 'a'", "not a number"),
        ("x + True", "not a number"),
        ("x + None", "not a number"),
        ("x + 1j", "not a number"),
        ("x + b'1'", "not a number"),
        ("max(x, y=1)", "keyword"),
        ("max(x)", "takes 2"),
        ("exp(x, x)", "takes 1"),
        ("x/0", "division by zero"),
        ("x/(1 - 1)", "division by zero"),
        ("x/(x - x)", "division by zero"),
        ("0**-1 + x", "division by zero"),
        ("1/x", "at x = 0"),
        ("1/(x - 0.37)**2", "x = 0.37"),
        ("1/sin(x)", "x = 0"),
        ("log(x**2)", "x = 0"),
        ("log(x)", "no finite real value"),
        ("sqrt(x)", "no finite real value"),
        ("x**0.5", "no finite real value"),
        ("exp(exp(exp(x)))", "no finite real value"),
        ("exp(x**3)", "no finite real value"),
        ("sqrt(abs(x))", "no finite real derivative at x = 0"),
        ("x - x", "does not depend on x"),
        ("3", "does not depend on x"),
        ("", "not valid syntax"),
        ("x +", "not valid syntax"),
        ("x; import os", "not valid syntax"),
        ("import os", "not valid syntax"),
        ("x # comment", "comment sign"),
        ("x\nimport os", "U+000A"),
        ("x\x00", "U+0000"),
        ("\uff58", "U+FF58"),
        ("\u0445*sigmoid(\u0445)", "U+0445"),
        ("x\u200b", "U+200B"),
        ("\u2212x", "U+2212"),
        ("x*\uff53igmoid(x)", "U+FF53"),
        (3, "expected an expression string"),
        (None, "expected an expression string"),
    ],
)
def test_refused_with_the_reason(text: object, says: str) -> None:
    message = rejected(text)
    assert says in message, message


@pytest.mark.parametrize("text", ["1if x", "2or x", "0x1for x", "x*1in x"])
def test_text_python_only_warns_about_is_refused_without_a_warning(text: str) -> None:
    # Python parses these with a SyntaxWarning on stderr; here they are invalid syntax,
    # and the error is the only thing a user sees.
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        message = rejected(text)
    assert "not valid syntax" in message, message
    assert seen == [], [str(w.message) for w in seen]


def test_errors_repeat_and_do_not_poison_the_cache() -> None:
    for _ in range(2):
        assert "unknown name 'q'" in rejected("x*q")
    assert parse_activation("x*sigmoid(x)") == X * sigmoid(X)


def test_long_text_is_cut_in_messages() -> None:
    message = rejected("y" + "+x" * 240)
    assert len(message) < 400


# ------------------------------------------------ network names in generated code

SAFE_NAMES = [
    'evil"""; import os; """',
    "net # not a comment",
    "'''",
    "class",
    "__init__",
    "__import__('os').system('true')",
    "back\\nslash",
    "{{ marker }}",
    "na\u00efve \uff58 \u2028",
]


def _comments_and_docstrings(source: str) -> list[str]:
    texts = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                texts.append(doc)
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SAFE_NAMES if n.isprintable()])
def test_names_are_only_string_literals(name: str, tmp_path) -> None:  # noqa: ANN001
    spec = Spec.from_sizes([3, 2], ["x*sigmoid(x)"], "quadratic", name=name)
    source = generate_module(spec)
    lint_module(source)
    # The name is bound only as NAME and SPEC["name"], both literals that round-trip.
    tree = ast.parse(source)
    literals = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target in ("NAME", "SPEC"):
                literals[target] = ast.literal_eval(node.value)
    assert literals["NAME"] == name
    assert literals["SPEC"]["name"] == name
    holders = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and name in node.value
    ]
    assert len(holders) == 2  # NAME and SPEC["name"], nowhere else
    for text in _comments_and_docstrings(source):
        assert name not in text
    path = write_module(source, tmp_path / "named.py")
    module = import_path(path)
    assert module.NAME == name and module.SPEC["name"] == name


def test_a_line_separator_in_a_name_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([3, 2], ["tanh"], "quadratic", name=SAFE_NAMES[-1])
    assert info.value.field == "name" and "U+2028" in str(info.value)


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "tab\there", "nul\x00", "esc\x1b[31m", ""])
def test_names_with_control_characters_are_refused(name: str) -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([3, 2], ["tanh"], "quadratic", name=name)
    assert info.value.field == "name"


def test_custom_activation_text_is_never_raw_in_comments() -> None:
    text = "x*sigmoid(x) + 0.25*x"
    source = generate_module(Spec.from_sizes([2, 2], [text], "quadratic"))
    for chunk in _comments_and_docstrings(source):
        assert text not in chunk
    assert ast.literal_eval(
        next(
            node.value
            for node in ast.parse(source).body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ACTIVATIONS"
        )
    ) == (text,)


def test_pi_is_a_constant_and_a_gelu_written_with_it_evaluates():
    import mpmath
    from chainrule.derive.numeric import Evaluator, real_value

    gelu = parse_activation("0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x**3)))")
    assert gelu.has(sp.pi)
    expected = 0.5 * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (1 + 0.044715)))
    assert abs(Evaluator({X: 1})(gelu) - expected) < 1e-15
    assert real_value(gelu, {X: 1.0}) == pytest.approx(float(expected), rel=1e-14)


def test_a_no_break_space_is_named_as_a_space_not_a_control_character():
    with pytest.raises(SpecError) as info:
        parse_activation("x\xa0+ 1")
    assert "space character U+00A0 (NO-BREAK SPACE)" in str(info.value)
    assert "control" not in str(info.value)
    with pytest.raises(SpecError, match="the control character U[+]0007"):
        parse_activation("x\x07")
