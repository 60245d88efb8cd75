"""A derivation worked out in numbers at one point (``chainrule derive --at``).

Every number comes from the derived expressions, two ways:

- the mini-batch program (:func:`~chainrule.derive.batch.batch_program`, the statements
  the generated module executes) is run on the point at full width, in
  :data:`DIGITS`-digit SymPy floats through the one evaluator
  (:func:`run_point`): on the whole batch for the vectorized statements, the batch cost,
  the gradient and the descent step, and on the first example alone for the per-unit
  numbers (forward values, the cost of each output unit, the local partials, each
  chain-rule product factor by factor, the layer errors). The local partials
  (dC/da^L, sigma'(z^l)) and the per-unit costs are the derivation's own elementwise
  expressions run as ``map`` statements.
- when every layer of the network has at most :data:`FULL_WIDTH` units, the steps are
  built again on a witness as wide as the network (the document's own witness when
  every layer fits :data:`WITNESS_WIDTH` units), which then *is* the network: each
  step's checked sides are evaluated at the first example (:func:`step_values`), every
  side of an instance must give the same number, and a side that is the derivative of
  the cost by a weight or bias must give the program's gradient entry. A wider
  network's per-unit steps show no value of their own; its representative units are
  worked out in the last section, as the document shows them.

Large layers show their first and last units (the document's representative units);
layers of at most :data:`SHOW_ALL` units show every unit. Units are numbered from 1.

A network with dropout is worked out with the masks the generated module draws for the
point's seed (``point.masks``; the first example takes its own column of them). A
batch-normalized network couples its examples and needs m >= 2: it has no one-example
run and no per-example step values; its numbers are the whole batch's
(:mod:`chainrule.derive.document.worked_batch_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.batch import BatchStatement, batch_program, layer_symbols, run_statement
from chainrule.derive.document.steps import _AtPoint, _evaluate
from chainrule.derive.document.witness import WITNESS_WIDTH, witness
from chainrule.derive.errors import DerivationError
from chainrule.derive.layers import derive_network
from chainrule.derive.numeric import Evaluator
from chainrule.derive.spec import Spec
from chainrule.derive.values import Point

#: Working digits of the numbers (shown with :data:`SHOWN_DIGITS` significant digits).
DIGITS = 30
SHOWN_DIGITS = 10
#: A layer of at most this many units shows every unit; a wider one its first and last.
SHOW_ALL = 4
#: Widest layer for which every step is evaluated on a witness as wide as the network.
FULL_WIDTH = 6
#: Relative agreement required between the sides of a step and with the program.
AGREE = sp.Float("1e-20", DIGITS)

#: One displayed value: (LaTeX, plain text).
Line = tuple[str, str]
Env = dict[str, sp.Matrix]


# --------------------------------------------------------------------------- numbers


def number(value: Any) -> Line:
    """A value with :data:`SHOWN_DIGITS` significant digits, as (LaTeX, text).

    Examples
    --------
    >>> number(sp.Float("0.0000438567732", 30))
    ('4.38567732 \\\\times 10^{-5}', '4.38567732e-5')
    >>> number(sp.Float("0.3775", 30))
    ('0.3775', '0.3775')
    """
    text = f"{float(value):.{SHOWN_DIGITS}g}"
    if "e" not in text:
        return text, text
    mantissa, exponent = text.split("e")
    return f"{mantissa} \\times 10^{{{int(exponent)}}}", f"{mantissa}e{int(exponent)}"


def _entry(expr: sp.Expr, values: dict) -> sp.Expr:
    return Evaluator(values, DIGITS, mode="rounded")(expr)


def _float(value: float) -> sp.Float:
    # The decimal as written (the float's shortest repr), so 0.05 is 0.05 exactly.
    return sp.Float(repr(value), DIGITS)


def _matrix(rows: tuple[tuple[float, ...], ...]) -> sp.Matrix:
    return sp.Matrix([[_float(v) for v in row] for row in rows])


def run_point(spec: Spec, point: Point, first_only: bool = False) -> Env:
    """Run the mini-batch program on ``point`` (only its first example if ``first_only``).

    The dropout masks are the point's (``point.masks``, the module's draw on the whole
    batch; the first example's column with ``first_only``).

    Returns every statement's value by target (units x examples for columns, the
    transpose for rows; the parameters in the module's shapes), plus ``dC_da`` (the
    derivative of the cost by the output activations), ``cost_units`` (the cost of each
    output unit) and ``sp<l>`` (sigma'(z^l)) for every layer with an elementwise
    activation, each from the derivation's own elementwise expression.
    """
    d, rows = derive_network(spec), spec.layout == "rows"
    examples = point.x[:1] if first_only else point.x
    targets = point.y[:1] if first_only else point.y

    def oriented(matrix: sp.Matrix) -> sp.Matrix:
        return matrix if rows else matrix.T

    env: Env = {
        naming.INPUT: oriented(_matrix(examples)),
        naming.TARGET: oriented(_matrix(targets)),
    }
    env.update({name: _matrix(value) for name, value in point.params})
    for name, rows_of_mask in point.masks:  # drawn by the module (dropout_masks(m, seed))
        mask = _matrix(rows_of_mask)
        env[name] = (mask[:1, :] if rows else mask[:, :1]) if first_only else mask
    m = len(examples)
    program = batch_program(d)
    for s in program:
        env[s.target] = run_statement(s, env, rows, m, at=_entry)
    big_l = spec.depth
    extra = {"dC_da": d.output.dcost_da.xreplace(layer_symbols(big_l))}
    loss = next(s for s in program if s.op == "loss")
    extra["cost_units"] = loss.expr
    for layer, act in enumerate(d.activations, start=1):
        if act is not None:
            extra[naming.sigma_prime(layer)] = act.derivative.xreplace(layer_symbols(layer))
    for target, expr in extra.items():
        names = tuple(sorted(s.name for s in expr.free_symbols))
        s = BatchStatement(target, "map", names, expr, "", 0, "", "")
        env[target] = run_statement(s, env, rows, m, at=_entry)
        if not names and target.startswith("sp"):  # a constant sigma' (linear): every unit
            shape = env[naming.weighted_input(naming.layer_of(target))].shape
            env[target] = sp.ones(*shape) * env[target][0, 0]
    return env


# --------------------------------------------------------------------------- the worked values


@dataclass(frozen=True)
class Block:
    """A titled group of displayed values (one paragraph of the worked section)."""

    title: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class WorkedValues:
    """The numbers of one derivation at one point, ready to be shown after its steps.

    ``env`` holds the program's values on the whole batch, ``first`` on the first
    example alone (see :func:`run_point`); ``after`` maps (section, step) to the values
    shown after that step; ``blocks`` is the worked section.
    """

    spec: Spec
    notation: str
    point: Point
    env: Env = field(repr=False)
    first: Env = field(repr=False)
    after: dict[tuple[int, int], tuple[Line, ...]] = field(repr=False)
    blocks: tuple[Block, ...] = field(repr=False)
    checked: bool = False

    def lines_after(self, section: int, index: int) -> tuple[Line, ...]:
        """The values shown after step ``index`` of section ``section`` (0-based)."""
        return self.after.get((section, index), ())

    def render_after(self, section: int, index: int, fmt: str) -> list[str]:
        """The values after one step in ``fmt`` (``text``, ``md`` or ``tex``)."""
        return render_lines(self.lines_after(section, index), fmt)

    def render_section(self, number: int, fmt: str) -> list[str]:
        """The worked section, numbered ``number``, in ``fmt``."""
        from chainrule.derive.document.worked_blocks import section_lines

        return section_lines(self, number, fmt)


def render_lines(lines: tuple[Line, ...], fmt: str) -> list[str]:
    """Displayed values: indented text, one ``$$`` block, or one ``align*``."""
    if not lines:
        return []
    if fmt == "text":
        return [f"    → {text.strip()}" for _, text in lines]
    if fmt == "md":
        body = " \\\\\n".join(tex for tex, _ in lines)
        return ["", "$$", "\\begin{aligned}", body, "\\end{aligned}", "$$"]
    body = " \\\\\n".join(f"&{tex}" for tex, _ in lines)
    return ["\\begin{align*}", body, "\\end{align*}"]


def worked(spec: Spec, notation_name: str, point: Point, sections: Any) -> WorkedValues:
    """The numbers of ``spec``'s derivation at ``point`` (``sections``: the derivation's).

    Raises
    ------
    DerivationError
        When two sides of a step, or a step and the program, disagree at the point.
    """
    from chainrule.derive.document.worked_blocks import blocks, vectorized_values

    env = run_point(spec, point)
    # Batch norm couples the examples and needs m >= 2: no one-example run, no per-example
    # step values (its document has no per-example sections).
    coupled = bool(spec.batch_norm_layers)
    first = env if point.m == 1 or coupled else run_point(spec, point, first_only=True)
    after = dict(vectorized_values(spec, notation_name, env, sections))
    full = None if coupled else full_width_sections(spec, notation_name, sections)
    if full is not None:
        after.update(step_values(spec, notation_name, point, first, full))
    made = blocks(spec, notation_name, point, env, first)
    return WorkedValues(spec, notation_name, point, env, first, after, made)


# --------------------------------------------------------------------------- step values


def full_width_sections(spec: Spec, notation_name: str, sections: Any) -> Any:
    """The derivation's sections with checks on a witness as wide as the network, or None.

    The document's own sections when every layer fits :data:`WITNESS_WIDTH` units; the
    sections written again at the network's width when it is at most
    :data:`FULL_WIDTH` (their steps must match the document's, title for title).
    """
    width = max(spec.sizes)
    if width <= WITNESS_WIDTH:
        return sections
    if width > FULL_WIDTH:
        return None
    from chainrule.derive.document import _sections

    wide = _sections(spec, notation_name, width)
    titles = [[st.title for st in sec.steps] for sec in sections]
    if titles != [[st.title for st in sec.steps] for sec in wide]:
        return None
    return wide


def _unit(matrix: sp.Matrix, j: int, rows: bool) -> sp.Expr:
    """Unit ``j`` of the first example of a units x examples (or transposed) value."""
    return matrix[0, j] if rows else matrix[j, 0]


def _param(matrix: sp.Matrix, j: int, k: int, rows: bool) -> sp.Expr:
    """Entry (j, k) of a weight (unit j of layer l, unit k of layer l-1) in the module's shape."""
    return matrix[k, j] if rows else matrix[j, k]


def witness_point(spec: Spec, first: Env) -> tuple[dict, dict]:
    """The first example as values of the witness's symbols, and each symbol's role.

    Only for a network whose layers all fit the witness: its symbols are then the
    network's own weights, biases, inputs, targets, weighted inputs and activations.
    A role is (kind, layer, j, k) with kind one of x, y, grad_a, w, b, z, a, D (a dropout
    mask entry).
    """
    net, rows = witness(spec, 1, max(WITNESS_WIDTH, *spec.sizes)), spec.layout == "rows"
    values: dict[sp.Symbol, sp.Expr] = {}
    roles: dict[sp.Symbol, tuple[str, int, int, int]] = {}

    def put(symbol: Any, value: sp.Expr, role: tuple[str, int, int, int]) -> None:
        if isinstance(symbol, sp.Symbol):
            values[symbol], roles[symbol] = value, role

    big_l = spec.depth
    for k in range(spec.input_size):
        put(net.x[k, 0], _unit(first[naming.INPUT], k, rows), ("x", 0, k, 0))
    for j in range(spec.sizes[-1]):
        put(net.y[j, 0], _unit(first[naming.TARGET], j, rows), ("y", big_l, j, 0))
        put(net.grad_a[j, 0], _unit(first["dC_da"], j, rows), ("grad_a", big_l, j, 0))
    for layer in range(1, big_l + 1):
        w = first[naming.weight(layer)]
        for j in range(spec.sizes[layer]):
            for k in range(spec.sizes[layer - 1]):
                put(net.W[layer][j, k], _param(w, j, k, rows), ("w", layer, j, k))
            if spec.layers[layer - 1].bias:
                bias = _param(first[naming.bias(layer)], j, 0, rows)
                put(net.b[layer][j, 0], bias, ("b", layer, j, 0))
            z = _unit(first[naming.weighted_input(layer)], j, rows)
            put(net.zfree[layer][j, 0], z, ("z", layer, j, 0))
            a = _unit(first[naming.activation(layer)], j, rows)
            put(net.afree[layer][j, 0], a, ("a", layer, j, 0))
            if layer in net.mask:  # the first example's mask entry, as the module drew it
                mask = _unit(first[naming.dropout_mask(layer)], j, rows)
                put(net.mask[layer][j, 0], mask, ("D", layer, j, 0))
        # A side that is one of the witness's own forward expressions (in the inputs
        # and parameters, or in the free values of the layer below) is named by it.
        free_z = net.affine(layer, net.afree[layer - 1])
        free_a = net.output_of(layer, net.zfree[layer])
        for j in range(spec.sizes[layer]):
            for role, exprs in (("z", (net.z[layer], free_z)), ("a", (net.a[layer], free_a))):
                for expr in exprs:
                    roles.setdefault(expr[j, 0], (role, layer, j, 0))
    roles[net.cost] = ("C", big_l, 0, 0)
    roles[net.example_costs(net.afree[big_l])[0]] = ("C", big_l, 0, 0)
    return values, roles


def step_values(
    spec: Spec, notation_name: str, point: Point, first: Env, sections: Any
) -> dict[tuple[int, int], tuple[Line, ...]]:
    """The value of every checked instance of the per-example steps (all sections but the
    last, the mini-batch one, whose values come from the program).

    Each instance's sides are evaluated at the first example; they must agree, and a
    derivative of the cost by a parameter must equal the program's gradient entry on
    that example.
    """
    from chainrule.derive.document.worked_blocks import Namer

    values, roles = witness_point(spec, first)
    at_point = _AtPoint(values)
    namer = Namer(spec, notation_name, first, roles)
    out: dict[tuple[int, int], tuple[Line, ...]] = {}
    for number, section in enumerate(sections[:-1]):
        for index, step in enumerate(section.steps):
            lines = []
            for sides in step.checks:
                if not _at_the_point(sides, values):
                    continue  # a general-form equation (in eta, m, n, l): no single value
                evaluated = [_evaluate(side, at_point) for side in sides]
                _agree(evaluated, step.title)
                reference = namer.reference(sides[0])
                if reference is not None:
                    _agree([evaluated[0], [reference]], step.title + " (against the program)")
                lines.append(namer.line(sides, evaluated[-1], values))
            out[(number, index)] = tuple(lines)
    return out


def _at_the_point(sides: Any, values: dict) -> bool:
    """Whether every free symbol of the sides has a value at the point."""
    return all(
        symbol in values
        for side in sides
        for symbol in getattr(side, "free_symbols", ())
        if isinstance(symbol, sp.Symbol)
    )


def _agree(values: list[list[sp.Expr]], where: str) -> None:
    reference = values[0]
    for other in values[1:]:
        for left, right in zip(reference, other, strict=True):
            if abs(left - right) > AGREE * (1 + abs(right)):
                raise DerivationError(
                    "derivation",
                    f"{where}: sides disagree at the point ({float(left)!r} != {float(right)!r})",
                    "report this",
                )
