"""The worked section of a derivation at a point, and the labels of its values.

:func:`blocks` writes the numbers unit by unit from the program's values (see
:func:`~chainrule.derive.document.worked.run_point`): the forward values, the cost of
each output unit, the local partials, the chain-rule product of each representative
weight factor by factor and multiplied out (checked against the program's gradient
entry), the layer errors, the gradient and, with a learning rate, one descent step.
:func:`vectorized_values` gives each mini-batch statement its value on the whole batch;
:class:`Namer` labels the value of a checked step instance.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from chainrule.derive import naming, penalty
from chainrule.derive.document.text import _escape_md, _escape_prose, _escape_text, to_unicode
from chainrule.derive.document.worked import (
    DIGITS,
    FULL_WIDTH,
    SHOW_ALL,
    SHOWN_DIGITS,
    Block,
    Env,
    Line,
    WorkedValues,
    _agree,
    _param,
    _unit,
    number,
    render_lines,
)
from chainrule.derive.errors import DerivationError
from chainrule.derive.notation import Notation, notation
from chainrule.derive.spec import Spec
from chainrule.derive.values import Point

EQ: Line = (" = ", " = ")
TIMES: Line = (" \\times ", " × ")
PLUS: Line = (" + ", " + ")
MINUS: Line = (" - ", " - ")
GETS: Line = (" \\leftarrow ", " ← ")
COMMA: Line = (", \\quad ", ", ")


def _words(text: str) -> Line:
    return f"\\text{{{text}}}", text


def name(tex: str) -> Line:
    """A LaTeX name and its plain-text form."""
    return tex, to_unicode(tex)


def factor(value: sp.Expr) -> Line:
    """A number as a factor after another: in parentheses when negative."""
    tex, text = number(value)
    return (f"\\left({tex}\\right)", f"({text})") if value < 0 else (tex, text)


def signed_sum(terms: list[sp.Expr]) -> list[Line]:
    """The parts of ``t0 + t1 - |t2| ...``: a negative term after the first is subtracted."""
    parts: list[Line] = []
    for i, term in enumerate(terms):
        if i and term < 0:
            parts += [MINUS, number(-term)]
        else:
            parts += [PLUS, number(term)] if i else [number(term)]
    return parts


def join(*parts: Line) -> Line:
    """Concatenate (LaTeX, text) parts."""
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts)


def shown_units(n: int) -> list[int]:
    """Every unit of a layer of at most :data:`SHOW_ALL` units; else the first and last."""
    return list(range(n)) if n <= SHOW_ALL else [0, n - 1]


def shown_pairs(n_out: int, n_in: int) -> list[tuple[int, int]]:
    """Weights (j, k) shown for a layer: all of a small layer, else the first and last."""
    if n_out <= SHOW_ALL and n_in <= SHOW_ALL:
        return [(j, k) for j in range(n_out) for k in range(n_in)]
    return [(0, 0), (n_out - 1, n_in - 1)]


class Namer:
    """Names of units and parameters in a notation, with units numbered from 1."""

    def __init__(
        self, spec: Spec, notation_name: str, first: Env, roles: dict | None = None
    ) -> None:
        self.spec, self.first, self.roles = spec, first, roles or {}
        self.nota: Notation = notation(notation_name, spec)
        self.rows = spec.layout == "rows"

    def pair(self, j: int, k: int) -> tuple[str, str]:
        """Index strings of weight (j, k); a comma separates indices past 9."""
        jj, kk = str(j + 1), str(k + 1)
        if max(j, k) >= 9:
            if self.rows:
                kk += ","
            else:
                jj += ","
        return jj, kk

    def w(self, layer: int, j: int, k: int) -> str:
        return self.nota.w(layer, *self.pair(j, k))

    def role_name(self, role: tuple[str, int, int, int]) -> str:
        kind, layer, j, k = role
        nota, i = self.nota, str(j + 1)
        names = {
            "x": lambda: nota.x(i),
            "y": lambda: nota.y(i),
            "grad_a": lambda: nota.partial(nota.cost, nota.a(layer, i)),
            "w": lambda: self.w(layer, j, k),
            "b": lambda: nota.b(layer, i),
            "z": lambda: nota.z(layer, i),
            "a": lambda: nota.a(layer, i),
            "C": lambda: nota.cost,
            "D": lambda: nota.mask(layer, i),
        }
        return names[kind]()

    def reference(self, lhs: Any) -> sp.Expr | None:
        """The program's value (first example) of a derivative of the cost by a parameter."""
        if not isinstance(lhs, sp.Derivative) or len(lhs.variables) != 1:
            return None
        role = self.roles.get(lhs.variables[0])
        if role is None or role[0] not in ("w", "b"):
            return None
        kind, layer, j, k = role
        target = naming.grad(naming.weight(layer) if kind == "w" else naming.bias(layer))
        return _param(self.first[target], j, k, self.rows)

    def label(self, lhs: Any) -> str | None:
        """The name of the quantity an instance's first side is, when it is one."""
        if isinstance(lhs, sp.MatrixBase):
            return None
        if isinstance(lhs, sp.Derivative) and len(lhs.variables) == 1:
            role = self.roles.get(lhs.variables[0])
            if role is not None and role[0] in ("w", "b"):
                return self.nota.grad(self.nota.cost, self.role_name(role))
            if role is not None and role[0] == "z":
                return self.nota.delta(role[1], str(role[2] + 1))
        if lhs in self.roles:
            return self.role_name(self.roles[lhs])
        return None

    def line(self, sides: tuple, value: list, point: dict) -> Line:
        """One instance's value, named by its first side or by the few symbols it uses."""
        if len(value) > 1:
            shape = sides[-1].shape
            return join(EQ, matrix_line(sp.Matrix(*shape, value)))
        shown = number(value[0])
        label = self.label(sides[0])
        if label is not None:
            return join(name(label), EQ, shown)
        used = set().union(*(s.free_symbols for s in sides)) & set(self.roles)
        if 0 < len(used) <= 3:
            ordered = sorted(used, key=lambda s: self.roles[s])
            at = [join(name(self.role_name(self.roles[s])), EQ, number(point[s])) for s in ordered]
            parts = [("\\text{at } ", "at ")]
            for i, part in enumerate(at):
                parts += [COMMA] if i else []
                parts.append(part)
            return join(*parts, (": \\quad ", ": "), shown)
        return join(("= ", "= "), shown)


def matrix_line(value: sp.Matrix) -> Line:
    """A matrix in full when small, else its first and last entries and its shape."""
    r, c = value.shape
    if r * c == 1:
        return number(value[0, 0])
    if r <= SHOW_ALL and c <= SHOW_ALL:
        cells = [[number(value[i, j]) for j in range(c)] for i in range(r)]
        tex = " \\\\ ".join(" & ".join(t for t, _ in row) for row in cells)
        text = "; ".join(", ".join(t for _, t in row) for row in cells)
        return f"\\begin{{bmatrix}} {tex} \\end{{bmatrix}}", f"[{text}]"
    first, last = number(value[0, 0]), number(value[r - 1, c - 1])
    return (
        f"\\text{{({r} by {c}) entry (1,1): }} {first[0]}, \\text{{ entry ({r},{c}): }} {last[0]}",
        f"({r} by {c}) entry (1,1): {first[1]}, entry ({r},{c}): {last[1]}",
    )


def vectorized_values(
    spec: Spec, notation_name: str, env: Env, sections: Any
) -> dict[tuple[int, int], tuple[Line, ...]]:
    """The value of each mini-batch statement (the last section) on the whole batch."""
    last = len(sections) - 1
    out = {}
    for index, step in enumerate(sections[-1].steps):
        if step.target in env:
            out[(last, index)] = (join(EQ, matrix_line(env[step.target])),)
    return out


# --------------------------------------------------------------------------- the worked section


def blocks(spec: Spec, notation_name: str, point: Point, env: Env, first: Env) -> tuple[Block, ...]:
    """The worked section's paragraphs (see the module docstring)."""
    namer = Namer(spec, notation_name, first)
    which = "the example" if point.m == 1 else f"the first of {point.m} examples"
    out = []
    if point.masks:
        title = (
            f"Dropout masks, drawn with seed {point.seed} as the module's "
            f"dropout_masks({point.m}, {point.seed}) draws them (one column per example)"
        )
        if namer.rows:
            title = title.replace("column", "row")
        out.append(Block(title, tuple(mask_lines(namer, env))))
    if spec.batch_norm_layers:  # the examples are coupled: numbers over the whole batch
        from chainrule.derive.document.worked_batch_norm import batch_norm_blocks

        return (*out, *batch_norm_blocks(namer, point, env))
    out += [
        Block(f"Forward values ({which})", tuple(forward_lines(namer))),
        Block(f"Cost ({which})", tuple(cost_lines(namer, env, point.m))),
        Block(f"Local partial derivatives ({which})", tuple(partial_lines(namer))),
    ]
    for layer in range(spec.depth, 0, -1):
        shown = namer.nota.number(layer)  # in the notation's own numbering of layers
        title = f"Chain rule for weights of layer {shown}, factor by factor ({which})"
        out.append(Block(title, tuple(chain_lines(namer, layer))))
    out.append(Block(f"Layer errors ({which})", tuple(delta_lines(namer))))
    mean = "the example" if point.m == 1 else f"mean over the {point.m} examples"
    out.append(Block(f"Gradient ({mean})", tuple(gradient_lines(namer, env))))
    if point.lr is not None:
        title = f"One gradient-descent step with learning rate {number(point.lr)[1]}"
        out.append(Block(title, tuple(step_lines(namer, env, point.lr))))
    return tuple(out)


def forward_lines(namer: Namer) -> list[Line]:
    nota, first, rows = namer.nota, namer.first, namer.rows
    lines = []
    for layer in range(1, namer.spec.depth + 1):
        z, a = first[naming.weighted_input(layer)], first[naming.activation(layer)]
        for j in shown_units(namer.spec.sizes[layer]):
            i = str(j + 1)
            lines.append(
                join(
                    name(nota.z(layer, i)),
                    EQ,
                    number(_unit(z, j, rows)),
                    COMMA,
                    name(nota.a(layer, i)),
                    EQ,
                    number(_unit(a, j, rows)),
                )
            )
    return lines


def cost_lines(namer: Namer, env: Env, m: int) -> list[Line]:
    nota, first, rows = namer.nota, namer.first, namer.rows
    n = namer.spec.sizes[-1]
    units = first["cost_units"]
    lines = [
        join(_words(f"output unit {j + 1}: "), number(_unit(units, j, rows)))
        for j in shown_units(n)
    ]
    total = first[naming.COST][0, 0]
    spec = namer.spec
    element = penalty.with_values(penalty.penalty_element(spec.l2, spec.l1), spec.l2, spec.l1)
    decay = sp.Add(
        *(
            element.xreplace({penalty.WEIGHT: w})
            for layer in range(1, spec.depth + 1)
            for w in first[naming.weight(layer)]
        )
    )
    if element != 0:
        lines.append(join(_words("penalty of the weights: "), number(decay)))
    if n <= SHOW_ALL and (n > 1 or element != 0):
        terms = [_unit(units, j, rows) for j in range(n)] + ([decay] if element != 0 else [])
        lines.append(join(name(nota.cost), EQ, *signed_sum(terms), EQ, number(total)))
    else:
        lines.append(join(name(nota.cost), EQ, number(total)))
    if m > 1:
        batch = (
            f"\\text{{mean over the batch: }} {nota.cost}",
            f"mean over the batch: {to_unicode(nota.cost)}",
        )
        lines.append(join(batch, EQ, number(env[naming.COST][0, 0])))
    return lines


def partial_lines(namer: Namer) -> list[Line]:
    nota, first, rows, spec = namer.nota, namer.first, namer.rows, namer.spec
    big_l = spec.depth
    lines = []
    for j in shown_units(spec.sizes[-1]):
        label = nota.partial(nota.cost, nota.a(big_l, str(j + 1)))
        lines.append(join(name(label), EQ, number(_unit(first["dC_da"], j, rows))))
    for layer in range(big_l, 0, -1):
        target = naming.sigma_prime(layer)
        if target not in first:
            continue
        for j in shown_units(spec.sizes[layer]):
            value = number(_unit(first[target], j, rows))
            lines.append(join(name(nota.sprime(layer, str(j + 1))), EQ, value))
    return lines


def _upstream(namer: Namer, layer: int, j: int, lines: list[Line]) -> sp.Expr:
    """dC/da^l_j = sum_q w^(l+1)_qj delta^(l+1)_q on the first example (its terms shown)."""
    nota, first, rows, spec = namer.nota, namer.first, namer.rows, namer.spec
    weights, delta = first[naming.weight(layer + 1)], first[naming.delta(layer + 1)]
    n = spec.sizes[layer + 1]
    terms = [_param(weights, q, j, rows) * _unit(delta, q, rows) for q in range(n)]
    # A residual connection from this layer into layer d adds the path through a^d.
    fed = [d for d, k in sorted(spec.skips.items()) if k == layer]
    terms += [_unit(first[naming.activation_gradient(d)], j, rows) for d in fed]
    total = sp.Add(*terms)
    label = name(nota.partial(nota.cost, nota.a(layer, str(j + 1))))
    if n <= SHOW_ALL and (n > 1 or fed):
        parts: list[Line] = [label, EQ]
        for q in range(n):
            parts += [PLUS] if q else []
            delta_q, w_qj = nota.delta(layer + 1, str(q + 1)), namer.w(layer + 1, q, j)
            parts.append(join(name(delta_q), (" \\, ", " "), name(w_qj)))
        for d in fed:
            parts += [PLUS, name(nota.partial(nota.cost, nota.a(d, str(j + 1))))]
        lines.append(join(*parts, EQ, *signed_sum(terms), EQ, number(total)))
    return total


def _penalty_term(namer: Namer, weight: sp.Expr, weight_tex: str) -> tuple[sp.Expr, str]:
    """The L2/L1 penalty's term of dC/dw at a weight's value, and its LaTeX (0 and '' without
    regularization)."""
    spec = namer.spec
    slope = penalty.penalty_derivative(penalty.penalty_element(spec.l2, spec.l1))
    if slope == 0:
        return sp.Integer(0), ""
    value = penalty.with_values(slope, spec.l2, spec.l1).xreplace({penalty.WEIGHT: weight})
    names = {penalty.WEIGHT: weight_tex, **penalty.latex_names(namer.nota.name)}
    return value, sp.latex(slope, symbol_names=names)


def chain_lines(namer: Namer, layer: int) -> list[Line]:
    """dC/dw^l_jk = (dC/da^l_j) sigma'(z^l_j) a^(l-1)_k for the shown weights, or
    delta^L_j a^(L-1)_k for an output layer without an elementwise activation."""
    nota, first, rows, spec = namer.nota, namer.first, namer.rows, namer.spec
    big_l = spec.depth
    prev = first[naming.activation(layer - 1)]
    grad = first[naming.grad(naming.weight(layer))]
    lines: list[Line] = []
    upstreams: dict[int, sp.Expr] = {}
    for j, k in shown_pairs(spec.sizes[layer], spec.sizes[layer - 1]):
        i = str(j + 1)
        below = (nota.a(layer - 1, str(k + 1)), _unit(prev, k, rows))
        if naming.sigma_prime(layer) not in first:
            factors = [(nota.delta(layer, i), _unit(first[naming.delta(layer)], j, rows)), below]
        else:
            if layer == big_l:
                upstream = _unit(first["dC_da"], j, rows)
            else:
                if j not in upstreams:
                    upstreams[j] = _upstream(namer, layer, j, lines)
                upstream = upstreams[j]
            factors = [
                (nota.partial(nota.cost, nota.a(layer, i)), upstream),
                *_mask_factor(namer, layer, j),
                (nota.sprime(layer, i), _unit(first[naming.sigma_prime(layer)], j, rows)),
                below,
            ]
        weight = _param(first[naming.weight(layer)], j, k, rows)
        decay, decay_tex = _penalty_term(namer, weight, namer.w(layer, j, k))
        product = sp.Mul(*[v for _, v in factors]) + decay
        expected = _param(grad, j, k, rows)
        _agree([[product], [expected]], f"chain rule for {naming.weight_entry(layer, j, k)}")
        parts: list[Line] = [name(nota.grad(nota.cost, namer.w(layer, j, k))), EQ]
        for n, (tex, _) in enumerate(factors):
            parts += [(" \\, ", " ")] if n else []
            parts.append(name(tex))
        parts += [PLUS, name(decay_tex)] if decay_tex else []
        lines.append(join(*parts))
        values: list[Line] = [EQ]
        for n, (_, value) in enumerate(factors):
            values += [TIMES] if n else []
            values.append(factor(value) if n else number(value))
        values += [PLUS, factor(decay)] if decay_tex else []
        lines.append(join(*values, EQ, number(product)))
    return lines


def _mask_factor(namer: Namer, layer: int, j: int) -> list[tuple[str, sp.Expr]]:
    """The dropout mask entry D^l_j of the first example as a chain-rule factor (a^l_j =
    D^l_j f(z^l_j)); none for a layer without dropout."""
    if not namer.spec.layers[layer - 1].dropout:
        return []
    value = _unit(namer.first[naming.dropout_mask(layer)], j, namer.rows)
    return [(namer.nota.mask(layer, str(j + 1)), value)]


def mask_lines(namer: Namer, env: Env) -> list[Line]:
    """Each dropout layer's mask D^l over the whole batch, as the module draws it."""
    return [
        join(name(namer.nota.mask(layer)), EQ, matrix_line(env[naming.dropout_mask(layer)]))
        for layer in namer.spec.dropout_layers
    ]


def delta_lines(namer: Namer) -> list[Line]:
    nota, first, rows, spec = namer.nota, namer.first, namer.rows, namer.spec
    lines = []
    for layer in range(spec.depth, 0, -1):
        delta = first[naming.delta(layer)]
        for j in shown_units(spec.sizes[layer]):
            value = number(_unit(delta, j, rows))
            lines.append(join(name(nota.delta(layer, str(j + 1))), EQ, value))
    return lines


def _parameters(namer: Namer):
    """(LaTeX name, parameter identifier, j, k) of every shown weight and bias, top down."""
    spec = namer.spec
    for layer in range(spec.depth, 0, -1):
        for j, k in shown_pairs(spec.sizes[layer], spec.sizes[layer - 1]):
            yield namer.w(layer, j, k), naming.weight(layer), j, k
        if spec.layers[layer - 1].bias:
            for j in shown_units(spec.sizes[layer]):
                yield namer.nota.b(layer, str(j + 1)), naming.bias(layer), j, 0
        if spec.layers[layer - 1].batch_norm:
            for letter, param in (
                ("\\gamma", naming.scale(layer)),
                ("\\beta", naming.shift(layer)),
            ):
                for j in shown_units(spec.sizes[layer]):
                    yield namer.nota._base(letter, layer, str(j + 1)), param, j, 0


def gradient_lines(namer: Namer, env: Env) -> list[Line]:
    nota, rows = namer.nota, namer.rows
    lines = []
    for tex, param, j, k in _parameters(namer):
        value = _param(env[naming.grad(param)], j, k, rows)
        lines.append(join(name(nota.grad(nota.cost, tex)), EQ, number(value)))
    return lines


def step_lines(namer: Namer, env: Env, lr: float) -> list[Line]:
    """Each shown parameter after one step: theta - lr dC/dtheta."""
    rows = namer.rows
    rate = sp.Float(repr(lr), 30)
    lines = []
    for tex, param, j, k in _parameters(namer):
        old = _param(env[param], j, k, rows)
        grad = _param(env[naming.grad(param)], j, k, rows)
        new = old - rate * grad
        change = join(number(old), MINUS, number(rate), TIMES, factor(grad))
        lines.append(join(name(tex), GETS, change, EQ, number(new)))
    return lines


def updated(spec: Spec, env: Env, lr: float) -> dict[str, sp.Matrix]:
    """Every parameter after one gradient-descent step (module shapes)."""
    rate = sp.Float(repr(lr), 30)
    out = {}
    for layer in range(1, spec.depth + 1):
        names = [naming.weight(layer)]
        if spec.layers[layer - 1].bias:
            names.append(naming.bias(layer))
        if spec.layers[layer - 1].batch_norm:
            names += [naming.scale(layer), naming.shift(layer)]
        for param in names:
            out[param] = env[param] - rate * env[naming.grad(param)]
    return out


# --------------------------------------------------------------------------- rendering


def section_lines(values: WorkedValues, number_: int, fmt: str) -> list[str]:
    """The worked section in ``fmt`` (``text``, ``md`` or ``tex``)."""
    title = f"{number_}. Worked numbers at the given point"
    which = "one example" if values.point.m == 1 else f"{values.point.m} examples"
    intro = (
        f"The derived equations evaluated at the given point ({which}), "
        f"computed with {DIGITS} digits and shown to {SHOWN_DIGITS} significant digits "
        "(trailing zeros dropped); units are numbered from 1. Large layers show their first "
        "and last units."
    )
    if max(values.spec.sizes) > FULL_WIDTH:
        intro += (
            f" The network has a layer wider than {FULL_WIDTH} units, too wide to evaluate "
            "the per-unit equations unit by unit, so those equations show no numbers of their "
            "own; the mini-batch statements do, and the representative units are worked out "
            "here."
        )
    if values.spec.batch_norm_layers:
        intro += (
            " Batch normalization couples the examples (and needs at least two), so the numbers "
            "are those of the whole batch: the mini-batch statements show theirs, and the "
            "batch-normalized layers are worked out here unit by unit and example by example."
        )
    if values.checked:
        intro += " Every number agrees with the generated module's loss_and_grad."
    out: list[str] = []
    if fmt == "text":
        out += [title, "-" * len(title), intro, ""]
    elif fmt == "md":
        out += [f"## {title}", "", _escape_md(intro), ""]
    else:
        out += [f"\\section*{{{_escape_text(title)}}}", _escape_prose(intro)]
    for block in values.blocks:
        if fmt == "text":
            out.append(block.title)
            out.extend(f"    {text.strip()}" for _, text in block.lines)
            out.append("")
        elif fmt == "md":
            out += [f"**{block.title}**", *render_lines(block.lines, fmt), ""]
        else:
            out += [f"\\paragraph{{{_escape_text(block.title)}}}", *render_lines(block.lines, fmt)]
    return out


def module_mismatch(field: str, got: float, expected: float) -> DerivationError:
    """The error raised when a worked number and the generated module disagree."""
    return DerivationError(
        field,
        f"the derivation gives {expected!r} but the generated module gives {got!r}",
        "report this: the derivation and the module disagree",
    )
