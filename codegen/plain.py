"""The plain module: the mini-batch program printed as one NumPy statement per equation.

The vectorized module (:mod:`chainrule.codegen.program`) computes each statement of
:func:`chainrule.derive.batch.batch_program` into a reused work buffer with ``out=``
and in-place updates, and shares repeated subexpressions through temporaries. The plain
module prints the same statements the way the book writes them, for reading next to
it: ``z1 = W1 @ a0 + b1``, ``delta2 = a2 * (1 - a2) * (a2 - y)``,
``dC_dW2 = delta2 @ a1.T / m``. Every elementwise expression is SymPy's (printed by
:func:`chainrule.codegen.printer.print_expr`, with the same stable helpers as the fast
form: ``_sigmoid``, ``_log_softmax``, softplus as ``np.logaddexp`` ...); delta^L is the
per-example error of the equations, and the 1/m of the cost's mean shows in BP3 and
BP4. A statement too long for one line (past :data:`LINE_LENGTH`, e.g. mish's
derivative) first gets the subexpressions it repeats as temporaries ``_t0, ...``, found
by :func:`sympy.cse` as in the vectorized form. The public functions, their arguments
and checks are those of the vectorized module (:file:`templates/base.py.j2` holds them
for both).
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp
from chainrule.codegen.printer import indicator_condition, print_expr
from chainrule.codegen.program import (
    Program,
    Statement,
    _ModuleProgramBuilder,
    build_program,
    penalty_code,
    temporary_equation,
)
from chainrule.codegen.pyformat import assignment_layout, format_expr
from chainrule.codegen.render import _ENV, _comment, _context, py_literal
from chainrule.derive import naming
from chainrule.derive.batch import BatchStatement, plain
from chainrule.derive.layers import NetworkDerivation, derive_network
from chainrule.derive.spec import Spec

#: The value of ``--form`` and of the module's ``FORM`` constant.
PLAIN = "plain"
#: Longest statement line (ruff's default line length): a longer one gets temporaries.
LINE_LENGTH = 88


class _PlainCodeBuilder:
    """Gives each statement of the mini-batch program one readable NumPy expression."""

    def __init__(self, derivation: NetworkDerivation) -> None:
        self.spec = derivation.spec
        self.rows = self.spec.layout == "rows"
        self.units_axis = 1 if self.rows else 0
        self.helpers: set[str] = set()
        self.buffers: list[tuple[str, str, str, str]] = []  # none: the plain form has none
        self.temporaries = 0

    def matmul(self, left: str, right: str) -> str:
        """The product ``left right`` of the columns layout, transposed in the rows layout."""
        return f"{right} @ {left}" if self.rows else f"{left} @ {right}"

    def expr(self, s: BatchStatement) -> str:
        """The statement's elementwise SymPy expression as NumPy code, in ruff's layout."""
        return format_expr(print_expr(s.expr, self.helpers))

    def elementwise(self, s: BatchStatement, wrap: str = "{}") -> list[Statement]:
        """``target = wrap(expr)``; a line too long to read (and for ruff) gets the
        subexpressions it repeats as temporaries first, each under its own comment."""
        code = wrap.format(self.expr(s))
        if len(f"    {s.target} = {code}") <= LINE_LENGTH:
            return [self.statement(s, code)]
        replacements, (reduced,) = sp.cse(s.expr, symbols=self.temporary_names(), order="canonical")
        out = []
        for name, sub in replacements:
            operands = tuple(sorted(v.name for v in sub.free_symbols))
            equation = temporary_equation(name.name, sub, s.target)
            code = format_expr(print_expr(sub, self.helpers))
            out.append(Statement(name.name, "map", operands, sub, code, equation, s.label))
        code = wrap.format(format_expr(print_expr(reduced, self.helpers)))
        return [*out, self.statement(s, code)]

    #: Fresh temporaries ``_t0, _t1, ...``, numbered across the module as the fast form does.
    temporary_names = _ModuleProgramBuilder.temporary_names

    def statement(self, s: BatchStatement, code: str, equation: str | None = None) -> Statement:
        return Statement(
            s.target, s.op, s.operands, s.expr, code, equation or s.equation, s.label, source=s
        )

    def product(self, s: BatchStatement) -> str:
        """affine, backprop, outer, example_sum: the matrix products, as the book writes them."""
        ops = s.operands
        if s.op == "affine":
            return self.matmul(ops[0], ops[1]) + "".join(f" + {b}" for b in ops[2:])
        if s.op == "backprop":
            back = self.matmul(f"{ops[0]}.T", ops[1])
            return f"({back})" + "".join(f" * {name}" for name in ops[2:]) if ops[2:] else back
        if s.op == "outer":
            return f"{self.matmul(ops[0], f'{ops[1]}.T')} / {naming.BATCH}"
        examples_axis = 1 - self.units_axis
        return f"np.sum({ops[0]}, axis={examples_axis}, keepdims=True) / {naming.BATCH}"

    def normalization(self, s: BatchStatement) -> list[Statement]:
        """A batch-norm statement: a mean over the examples, or its SymPy expression."""
        if s.op in ("bn_normalize", "bn_scale", "bn_backward"):
            return self.elementwise(s)
        examples_axis = 1 - self.units_axis
        ops = s.operands
        if s.op in ("bn_mean", "bn_beta_grad"):
            summand = ops[0]
        elif s.op == "bn_var":
            summand = f"({ops[0]} - {ops[1]}) ** 2"
        else:
            summand = f"{ops[0]} * {ops[1]}"
        code = f"np.sum({summand}, axis={examples_axis}, keepdims=True) / {naming.BATCH}"
        return [self.statement(s, code)]

    def code(self, s: BatchStatement) -> list[Statement]:
        """The generated statement computing ``s`` (after its temporaries, if any)."""
        if s.op.startswith("bn_"):
            return self.normalization(s)
        if s.op == "alias":
            return [self.statement(s, s.operands[0])]
        if s.op == "dropout":
            self.helpers.add("_dropout_mask")
            p = float(self.spec.layers[s.layer - 1].dropout)
            return [self.statement(s, f"_dropout_mask(rng, {p!r}, np.empty_like({s.operands[0]}))")]
        if s.op in ("log_softmax", "log1m_softmax"):
            helper = f"_{s.op}"
            self.helpers.add(helper)
            return [self.statement(s, f"{helper}({s.operands[0]}, axis={self.units_axis})")]
        if s.op == "other_units":
            self.helpers.add("_softmax_other_units")
            args = ", ".join((*s.operands, self.expr(s)))
            return [self.statement(s, f"_softmax_other_units({args}, axis={self.units_axis})")]
        if s.op == "loss":  # one statement: loss and loss_and_grad both print it
            code = f"np.sum({self.expr(s)}) / {naming.BATCH}"
            updates = tuple(
                f"C += np.sum({t})" for t in penalty_code(s, self.helpers, in_params=True)
            )
            return [replace(self.statement(s, code), updates=updates)]
        if s.op == "unit_sum":
            return self.elementwise(s, f"np.sum({{}}, axis={self.units_axis}, keepdims=True)")
        if s.op == "backsum":
            back = self.matmul(f"{s.operands[0]}.T", s.operands[1])
            return [self.statement(s, back + "".join(f" + {g}" for g in s.operands[2:]))]
        if s.op == "map":
            condition = indicator_condition(s.expr) if s.quantity == "sigma_prime" else None
            if condition is not None:
                # An indicator derivative (ReLU's) is its boolean mask: True counts as 1.
                code = format_expr(print_expr(condition, self.helpers))
                equation = f"{s.equation}: the boolean mask {plain(condition)}"
                return [self.statement(s, code, equation)]
            return self.elementwise(s)
        if s.op == "outer" and s.penalty:
            return [self.penalized(s)]
        return [self.statement(s, self.product(s))]

    def penalized(self, s: BatchStatement) -> Statement:
        """BP4 with the L2/L1 term: one statement, or (past :data:`LINE_LENGTH`) the
        product and one in-place addition per penalty term."""
        terms = penalty_code(s, self.helpers, in_params=False)
        code = " + ".join((self.product(s), *terms))
        if len(f"    {s.target} = {code}") <= LINE_LENGTH:
            return self.statement(s, code)
        updates = tuple(f"{s.target} += {t}" for t in terms)
        return replace(self.statement(s, self.product(s)), updates=updates)


def build_plain_program(derivation: NetworkDerivation) -> Program:
    """The mini-batch program of ``derivation`` with its plain code (no work buffers)."""
    return build_program(derivation, _PlainCodeBuilder(derivation))


def _commented(statements: tuple[Statement, ...]) -> list[Statement]:
    # The code is laid out already: formatting it again would drop the parentheses that
    # group (W^T delta) as the book does.
    # A line still too long is wrapped as ruff wraps it.
    return [
        replace(s, code=assignment_layout(s.target, s.code), equation=_comment(s))
        for s in statements
    ]


def render_plain(program: Program) -> str:
    """Render a program built by :func:`build_plain_program` into module source."""
    context = _context(program, PLAIN)
    context.update(
        {
            "form_literal": py_literal(PLAIN),
            "forward": _commented(program.forward),
            "cost": _commented((program.cost,))[0],
            "backward": _commented(program.backward),
        }
    )
    return _ENV.get_template("plain.py.j2").render(**context)


def generate_plain(spec: Spec) -> str:
    """Derive ``spec`` with SymPy and return the source of its plain module.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> "    z1 = W1 @ a0 + b1\\n" in generate_plain(preset("nielsen"))
    True
    """
    return render_plain(build_plain_program(derive_network(spec)))


__all__ = ["PLAIN", "build_plain_program", "generate_plain", "render_plain"]
