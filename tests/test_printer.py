"""Exact strings for every ``_print_X`` override of the NumPy printer and for the
ruff-style layout of printed expressions (checked against ruff itself)."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from chainrule.codegen.printer import DTYPE_NAME, ChainrulePrinter, print_expr, print_in_place
from chainrule.codegen.pyformat import format_expr
from chainrule.derive.functions import sigmoid, softplus

z = sp.Symbol("z2", real=True)
a = sp.Symbol("a2", real=True)
y = sp.Symbol("y", real=True)


def test_module_format_uses_the_np_alias():
    printer = ChainrulePrinter()
    assert printer._module_format("numpy.exp") == "np.exp"
    assert printer._module_format("numpy.linalg.norm") == "np.linalg.norm"
    assert printer._module_format("math.pi") == "math.pi"
    assert print_expr(sp.exp(z)) == "np.exp(z2)"
    assert print_expr(sp.tanh(z)) == "np.tanh(z2)"


def test_print_sigmoid_calls_the_stable_helper_and_records_it():
    helpers: set[str] = set()
    assert print_expr(sigmoid(z), helpers) == "_sigmoid(z2)"
    assert helpers == {"_sigmoid"}
    assert print_expr(sigmoid(-z)) == "_sigmoid(-z2)"
    assert ChainrulePrinter().doprint(sigmoid(z) * (1 - sigmoid(z))) == (
        "(1 - _sigmoid(z2))*_sigmoid(z2)"
    )


def test_print_softplus_is_logaddexp():
    helpers: set[str] = set()
    assert print_expr(softplus(z), helpers) == "np.logaddexp(0, z2)"
    assert helpers == set()
    assert print_expr(-y * z + softplus(z)) == "-y*z2 + np.logaddexp(0, z2)"


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (sp.log(1 + z), "np.log1p(z2)"),
        (sp.log(1 - a), "np.log1p(-a2)"),
        (sp.log(1 - sp.exp(z)), "np.log1p(-np.exp(z2))"),
        (sp.log(a), "np.log(a2)"),
        (sp.log(z + 2), "np.log(z2 + 2)"),
    ],
)
def test_print_log_uses_log1p_only_for_one_plus(expr, text):
    assert print_expr(expr) == text


def test_print_piecewise_is_nested_where_with_dtype_constants():
    helpers: set[str] = set()
    # a constant 0 default would turn a NaN into 0: max(z, 0) keeps it, as does the test
    relu = sp.Piecewise((z, z > 0), (0, True))
    assert print_expr(relu, helpers) == "np.maximum(z2, 0)"
    flag = sp.Symbol("mask2_0")
    assert print_expr(sp.Piecewise((z, flag), (0, True)), helpers) == (
        "np.where(mask2_0 | np.isnan(z2), z2, _DT(0))"
    )
    # a comparison is bracketed: | binds tighter than > in Python
    shifted = print_expr(sp.Piecewise((z, z > 1), (0, True)), helpers)
    assert shifted == "np.where((z2 > 1) | np.isnan(z2), z2, _DT(0))"
    z2 = np.array([0.5, 2.0, np.nan])
    got = eval(shifted, {"np": np, "z2": z2, "_DT": np.float64})  # noqa: S307 - our own text
    np.testing.assert_array_equal(got, [0.0, 2.0, np.nan])
    assert helpers == {DTYPE_NAME}
    step = sp.Piecewise((1, z > 0), (sp.Rational(1, 100), True))
    assert print_expr(step) == "np.where(z2 > 0, _DT(1), _DT(1/100))"
    leaky = sp.Piecewise((z, z > 0), (z / 100, True))
    helpers = set()
    assert print_expr(leaky, helpers) == "np.where(z2 > 0, z2, (1/100)*z2)"
    assert helpers == set()  # no constant branch, no cast
    three = sp.Piecewise((1, z > 1), (z, z >= 0), (0, True))
    assert print_expr(three) == "np.where(z2 > 1, _DT(1), np.where(z2 >= 0, z2, _DT(0)))"


def test_print_piecewise_refuses_a_missing_default_branch():
    with pytest.raises(ValueError, match="default branch"):
        print_expr(sp.Piecewise((z, z > 0)))


def test_relu_into_a_buffer_compares_with_a_zeros_array_when_one_is_given():
    z = sp.Symbol("z1", real=True)
    relu = sp.Piecewise((z, z > 0), (0, True))
    asked = []

    def zeros() -> str:
        asked.append(True)
        return 'ws["zeros3"]'

    assert print_in_place(relu, 'ws["a1"]', "a1", zeros=zeros) == (
        'np.maximum(z1, ws["zeros3"], out=ws["a1"])',
        (),
    )
    assert asked == [True]
    # Without a zeros array (or for anything but ReLU) the scalar form, and no request.
    assert print_in_place(relu, "buf", "a1") == ("np.maximum(z1, 0, out=buf)", ())
    asked.clear()
    assert print_in_place(sp.tanh(z), "buf", "a1", zeros=zeros) == ("np.tanh(z1, out=buf)", ())
    assert asked == []


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (z > 0, "z2 > 0"),
        (z >= 0, "z2 >= 0"),
        (z < a, "z2 < a2"),
        (sp.Le(z, 1), "z2 <= 1"),
        (sp.Eq(z, 0), "z2 == 0"),
        (sp.Ne(z, 0), "z2 != 0"),
    ],
)
def test_print_relational_is_a_plain_comparison(expr, text):
    assert print_expr(expr) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(sp.Float("0.25"), "0.25"), (sp.Float("1e-20"), "1e-20"), (sp.Float("0.1"), "0.1")],
)
def test_print_float_is_the_shortest_repr(value, text):
    assert print_expr(value) == text
    assert print_expr(value * z) == f"{text}*z2"


def test_printed_derivative_forms():
    assert print_expr(a * (1 - a)) == "a2*(1 - a2)"
    assert print_expr(1 - a**2) == "1 - a2**2"
    assert print_expr((a - y) ** 2 / 2) == "(1/2)*(a2 - y)**2"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("a2*(1 - a2)*(a2 - y)**2", "a2 * (1 - a2) * (a2 - y) ** 2"),
        ("(1/2)*a2**2", "1 / 2 * a2**2"),
        ("1 - a2**2", "1 - a2**2"),
        ("a2.T**2", "a2.T**2"),
        ("2.5**a", "2.5**a"),
        ("np.exp(-z2)**2", "np.exp(-z2) ** 2"),
        ("x[0]**2", "x[0] ** 2"),
        ("-a2**2", "-(a2**2)"),
        ("np.exp(-z1**2)", "np.exp(-(z1**2))"),
        ("z2**(-1.0)", "z2 ** (-1.0)"),
        ("(-a2)**2", "(-a2) ** 2"),
        ("x**(y**z)", "x ** (y**z)"),
        ("(x**y)**z", "(x**y) ** z"),
        ("(a2 - y)/(1 - a2)", "(a2 - y) / (1 - a2)"),
        ("-(a2 - y)", "-(a2 - y)"),
        ("(delta2 @ W2.T) * sp1", "delta2 @ W2.T * sp1"),
        ("np.where(z1 > 0, z1, _DT(1/100))", "np.where(z1 > 0, z1, _DT(1 / 100))"),
        (
            "np.sum(-logp2*y - (1 - y)*np.log1p(-a2)) / m",
            "np.sum(-logp2 * y - (1 - y) * np.log1p(-a2)) / m",
        ),
    ],
)
def test_format_expr_exact(code, text):
    assert format_expr(code) == text
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(code))  # same expression


def test_format_expr_rejects_invalid_python():
    with pytest.raises(SyntaxError):
        format_expr("a2 +* y")


#: Expressions of the shapes SymPy prints; ruff must leave their layout unchanged.
RUFF_CASES = [
    "a2*(1 - a2)*(a2 - y)**2",
    "(1/2)*a2**2",
    "-a2**2",
    "a2**(-1)",
    "(-a2)**2",
    "np.exp(-z2)**2",
    "a2.T**2",
    "-x**2 + 1",
    "2*x**-1",
    "x**-1.5",
    "+x**2",
    "~x**2",
    "-(x + 1)**2",
    "2*-x**2",
    "-2**x",
    "-f(x)**2",
    "x**-y**2",
    "(-x)**-y",
    "x**(y**z)",
    "(x**y)**z",
    "x**f(y)**z",
    "a.b**c**d.e",
    "x**(y + 1)**z",
    "z1*(1 - np.tanh(np.logaddexp(0, z1))**2)*_sigmoid(z1) + np.tanh(np.logaddexp(0, z1))",
    "-2*z1*np.exp(-z1**2)",
    "np.where(z2 > 1, _DT(1), np.where(z2 >= 0, z2, _DT(0)))",
]


def test_format_expr_is_a_fixed_point_of_ruff_format():
    source = "".join(f"v = {format_expr(code)}\n" for code in RUFF_CASES)
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--line-length", "250", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == source.splitlines()


def test_every_function_row_prints_through_its_row():
    from chainrule.derive.functions import FUNCTION_ROWS

    z = sp.Symbol("z1", real=True)
    for row in FUNCTION_ROWS:
        printer = ChainrulePrinter()
        text = printer.doprint(row.cls(z, evaluate=False))
        if row.cls is sp.log:
            assert text == "np.log(z1)"  # the printer's own log1p rule keeps precedence
        else:
            assert text == row.numpy.format("z1")
        assert (row.helper in printer.helpers) if row.helper else True


def test_a_piecewise_exp_branch_is_clamped_to_where_it_is_selected():
    z = sp.Symbol("z1", real=True)
    elu_like = sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True))
    assert print_expr(elu_like) == "np.where(z1 > 0, z1, np.exp(np.minimum(z1, 0)) - 1)"
    mirrored = sp.Piecewise((sp.exp(-z), z >= 0), (1, True))
    assert print_expr(mirrored) == "np.where(z1 >= 0, np.exp(-np.maximum(z1, 0)), _DT(1))"
    # Without an exp nothing can overflow: the branch prints as written.
    assert print_expr(sp.Piecewise((z, z > 0), (z / 100, True))) == (
        "np.where(z1 > 0, z1, (1/100)*z1)"
    )


def test_the_clamped_elu_form_runs_under_errstate_raise():
    import numpy as np

    z = sp.Symbol("z1", real=True)
    text = print_expr(sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)))
    z1 = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    with np.errstate(all="raise", under="ignore"):
        value = eval(text, {"np": np, "z1": z1})  # noqa: S307 - the printer's own output
    np.testing.assert_allclose(value, np.where(z1 > 0, z1, np.expm1(np.minimum(z1, 0))))
