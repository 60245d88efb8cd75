"""Unrolled modules: one scalar variable per weight, straight-line code per strategy.

Where the vectorized module multiplies matrices, an unrolled module writes every
scalar out (``w2_1_0 = params["W2"][1, 0]``) and computes each gradient entry with
the statements of one strategy from :mod:`chainrule.derive.scalar`:

* ``naive``: one expression per parameter, the fully expanded chain rule; the same
  forward values and backward products are visibly computed again and again;
* ``cse``: the temporaries ``_t0, _t1, ...`` that :func:`sympy.cse` found, each
  labelled with what it is (a delta^l_j, a forward value, ...), then the entries;
* ``backprop``: the forward pass, then BP1..BP4, each delta computed once.

Each scalar variable holds one value per example (a NumPy array of shape (m,)), so
the modules take the same batches as the vectorized module and have the same public
API, keys, shapes and layout. With dropout each mask entry D^l_j is an input of the
scalar code, taken from ``dropout_masks(m, seed)`` (the vectorized module's draw, so a
seed gives the same masks in both). A batch-normalized layer is written unit by unit
with each unit's batch mean and variance as one value for the batch
(:mod:`chainrule.derive.scalar_batch_norm`), in the backprop strategy only: naive and
cse expand one example's cost, which batch norm's coupling of the examples does not
have. They are meant for small networks: past
:data:`MAX_PARAMETERS` (or a naive expansion past :data:`MAX_NAIVE_OPS`) generation
is refused.
"""

from __future__ import annotations

import re
from typing import Any

import sympy as sp
from chainrule.codegen.printer import ChainrulePrinter
from chainrule.codegen.program import build_program
from chainrule.codegen.pyformat import format_expr
from chainrule.codegen.render import _ENV, MARKER, _context, py_literal
from chainrule.derive import naming, penalty
from chainrule.derive.batch import function_name, plain
from chainrule.derive.errors import CodegenError
from chainrule.derive.layers import (
    LOG1MP,
    LOGP,
    UPSTREAM,
    A,
    Y,
    Z,
    _softmax_jvp,
    derive_network,
)
from chainrule.derive.opcount import program_ops
from chainrule.derive.scalar import (
    STRATEGIES,
    Gradients,
    count_strategy,
    estimate_naive_ops,
    forward_program,
    gradients,
    label_temporaries,
    unit_name,
)
from chainrule.derive.scalar_batch_norm import ExampleMean, batch_norm_gradients
from chainrule.derive.spec import Spec

#: Largest network (in parameters) an unrolled module is generated for.
MAX_PARAMETERS = 200
#: Largest estimated naive expansion (operations) printed into a module.
MAX_NAIVE_OPS = 200_000

_STRATEGY_TEXT = {
    "naive": (
        "Strategy naive: each gradient entry is diff(C, theta) of the fully expanded cost. "
        "Nothing is shared, so the same forward values and chain-rule products are "
        "recomputed in every entry."
    ),
    "cse": (
        "Strategy cse: the naive gradients after common-subexpression elimination "
        "(sympy.cse, canonical order). Each temporary _tN is computed once; its comment "
        "says whether it is a delta^l_j of backpropagation, another backward term or a "
        "forward value."
    ),
    "backprop": (
        "Strategy backprop: the forward pass, then the delta recursion (BP1, BP2) and the "
        "gradients (BP3, BP4). Each delta^l_j is computed once and reused."
    ),
}


def check_unrolled_size(spec: Spec, strategy: str) -> None:
    """Raise :class:`CodegenError` when ``spec`` is too large for an unrolled module, or
    has batch norm under the naive or cse strategy (they expand one example's cost, and
    batch norm couples the examples of a batch)."""
    if spec.batch_norm_layers and strategy in ("naive", "cse"):
        index = spec.batch_norm_layers[0] - 1
        raise CodegenError(
            "strategy",
            f"the {strategy} strategy expands one example's cost, and batch norm "
            f"(layers[{index}].batch_norm) couples the examples of a batch",
            "use --strategy backprop",
        )
    if spec.parameter_count > MAX_PARAMETERS:
        raise CodegenError(
            "form",
            f"an unrolled module of {spec.parameter_count} parameters is too large "
            f"(limit {MAX_PARAMETERS})",
            "use --form vectorized, or a smaller network",
        )
    if strategy in ("naive", "cse"):
        estimate = estimate_naive_ops(spec)
        if estimate > MAX_NAIVE_OPS:
            raise CodegenError(
                "strategy",
                f"the {strategy} module would print a naive expansion of about "
                f"{estimate:.2g} operations (limit {MAX_NAIVE_OPS:,})",
                "use --strategy backprop, or a smaller network",
            )


class UnrolledPrinter(ChainrulePrinter):
    """The NumPy printer plus the boolean conditions that nested ReLUs produce.

    Differentiating a composition of piecewise functions gives conditions such as
    ``And(z > 0, w*Piecewise(...) > 0)`` and ``ITE(c, p, q)``; they print as the
    elementwise ufuncs ``np.logical_and``/``np.logical_or``/``np.logical_not`` and
    ``np.where``.

    Examples
    --------
    >>> a, b = sp.symbols("a b", real=True)
    >>> UnrolledPrinter().doprint(sp.And(a > 0, b > 0, a > b))
    'np.logical_and(np.logical_and(a > 0, a > b), b > 0)'
    """

    def _fold(self, ufunc: str, args: tuple) -> str:
        out = self._print(args[0])
        for arg in args[1:]:
            out = f"np.{ufunc}({out}, {self._print(arg)})"
        return out

    def _print_And(self, expr: sp.And) -> str:  # noqa: N802 - printer dispatch name
        return self._fold("logical_and", expr.args)

    def _print_Or(self, expr: sp.Or) -> str:  # noqa: N802 - printer dispatch name
        return self._fold("logical_or", expr.args)

    def _print_Not(self, expr: sp.Not) -> str:  # noqa: N802 - printer dispatch name
        return f"np.logical_not({self._print(expr.args[0])})"

    def _print_ITE(self, expr: sp.ITE) -> str:  # noqa: N802 - printer dispatch name
        cond, yes, no = (self._print(a) for a in expr.args)
        return f"np.where({cond}, {yes}, {no})"

    def _print_ExampleMean(self, expr: ExampleMean) -> str:  # noqa: N802 - printer dispatch name
        """The mean over the batch's m examples: the module's ``_mean`` helper."""
        return f"_mean({self._print(expr.args[0])}, m)"


def _code(expr: sp.Expr, helpers: set[str]) -> str:
    printer = UnrolledPrinter()
    text = printer.doprint(expr)
    helpers.update(printer.helpers)
    return format_expr(text)


def _line(target: str, expr: sp.Expr, comment: str, helpers: set[str]) -> dict[str, str]:
    return {"target": target, "code": _code(expr, helpers), "comment": comment}


def _index(spec: Spec, kind: str, j: int, k: int) -> str:
    """Index of w^l_jk (or of b^l_j, gamma^l_j, beta^l_j) in its parameter array, in the
    spec's layout."""
    if kind != "w":
        return f"[0, {j}]" if spec.layout == "rows" else f"[{j}, 0]"
    return f"[{k}, {j}]" if spec.layout == "rows" else f"[{j}, {k}]"


def _unit_index(spec: Spec, array: str, j: int) -> str:
    return f"{array}[:, {j}]" if spec.layout == "rows" else f"{array}[{j}]"


def _param_lines(g: Gradients, used: set[str]) -> list[str]:
    spec = g.network.spec
    lines = []
    for info in g.network.info:
        name = info.symbol.name
        if name not in used:
            continue
        index = _index(spec, info.kind, info.j, info.k)
        lines.append(f"{name} = params[{py_literal(info.array)}]{index}")
    return lines


def _input_lines(g: Gradients, used: set[str]) -> list[str]:
    spec = g.network.spec
    lines = []
    for k, x in enumerate(g.network.inputs):
        if x.name in used:
            lines.append(f"{x.name} = {_unit_index(spec, naming.INPUT, k)}")
    for j, y in enumerate(g.network.targets):
        if y.name in used:
            lines.append(f"{y.name} = {_unit_index(spec, naming.TARGET, j)}")
    for name in _mask_entries(spec):
        if name in used:
            lines.append(f"{name} = {_mask_index(spec, name)}")
    return lines


def _mask_entries(spec: Spec) -> list[str]:
    """The dropout mask entries D^l_j (``D2_0``), layer by layer."""
    return [
        naming.dropout_mask_entry(layer, j)
        for layer in spec.dropout_layers
        for j in range(spec.sizes[layer])
    ]


def _mask_index(spec: Spec, name: str) -> str:
    """``masks["D2"][0]``: unit j's row (column) of its layer's mask, as dropout_masks draws it."""
    array, _, j = name.rpartition("_")
    return _unit_index(spec, f"masks[{py_literal(array)}]", int(j))


def _free_names(exprs: list[sp.Expr]) -> set[str]:
    names: set[str] = set()
    for e in exprs:
        names.update(s.name for s in e.free_symbols)
    return names


def _grad_dict(g: Gradients) -> list[dict[str, str]]:
    """``{"key": '"W1"', "value": "np.array([[...]], dtype=_DT)"}`` per parameter array."""
    spec = g.network.spec
    sizes = spec.sizes
    # A per-example entry is averaged over the batch; dC/dgamma and dC/dbeta of batch norm
    # are batch means already.
    means = {a.target.name for a in g.grads if a.expr == a.target}
    out = []
    for layer in range(1, spec.depth + 1):
        n, n_prev = sizes[layer], sizes[layer - 1]

        def cell(name: str) -> str:
            return name if name in means else f"_mean({name}, m)"

        w_rows = [
            [cell(naming.grad(naming.weight_entry(layer, j, k))) for k in range(n_prev)]
            for j in range(n)
        ]
        if spec.layout == "rows":
            w_rows = [list(col) for col in zip(*w_rows, strict=True)]
        out.append({"key": py_literal(naming.weight(layer)), "rows": w_rows})
        vectors = [naming.bias(layer)] if spec.layers[layer - 1].bias else []
        if spec.layers[layer - 1].batch_norm:
            vectors += [naming.scale(layer), naming.shift(layer)]
        for array in vectors:
            cells = [cell(naming.grad(unit_name(array, j))) for j in range(n)]
            b_rows = [cells] if spec.layout == "rows" else [[c] for c in cells]
            out.append({"key": py_literal(array), "rows": b_rows})
    return out


#: ``delta^2_0``, ``z^1_0``, ``sigma'(z^1_0)``: a statement's note, in math indices.
_NOTE_UNIT = re.compile(r"\^(\d+)_(\d+)")


def _module_notation(note: str) -> str:
    """A note in the module's variable names: ``delta^2_0`` -> ``delta2_0``."""
    return _NOTE_UNIT.sub(r"\1_\2", note)


def _meaning(spec: Spec, statement: Any) -> str:
    """What a statement's value is, in the module's names (``relu(z1_0)``, ``dC/dz2_0``,
    ``tanh'(z1_0)``, ``dC/dw1_0_0``), or "" when its expression says it all."""
    label, note = statement.label, statement.note
    unit = _NOTE_UNIT.search(note)
    derivation = derive_network(spec)
    if label in ("BP3", "BP4"):
        return f"dC/d{statement.target.name[len(naming.grad('')) :]}"
    if label == "BP1" and statement.target.name == naming.unit_sum(spec.depth):
        return _softmax_sum_meaning(spec.depth)
    if unit is None:
        return ""
    layer, j = int(unit.group(1)), unit.group(2)
    z = f"{naming.weighted_input(layer)}_{j}"
    if label == "BP1" and note.startswith("delta"):
        return f"dC/d{z}"
    if label == "BP2" and note.startswith("sigma'"):
        return f"{function_name(derivation, layer)}'({z})"
    if label == "forward" and note.startswith("a^") and derivation.activations[layer - 1]:
        source = spec.layers[layer - 1].skip_from
        skip = "" if source is None else f" + {naming.activation(source)}_{j}"
        dropout = spec.layers[layer - 1].dropout
        mask = f"{naming.dropout_mask_entry(layer, int(j))}*" if dropout else ""
        return f"{mask}{function_name(derivation, layer)}({z}){skip}"
    if label == "BN" and note.startswith("deltau"):
        return f"dC/d{naming.linear(layer)}_{j}"
    return ""


def _softmax_sum_meaning(layer: int) -> str:
    """``sum_k a2_k*dC/da2_k``: the sum over units in the softmax Jacobian product, written
    from the R(a_k, g_k) term that :func:`chainrule.derive.layers._softmax_jvp` derives."""
    _, _, r_part = _softmax_jvp()
    a_k = sp.Symbol(f"{naming.activation(layer)}_k")
    upstream = sp.Symbol(f"dC/d{naming.activation(layer)}_k")
    return f"sum_k {plain(r_part.xreplace({A: a_k, UPSTREAM: upstream}))}"


def _equation_comment(spec: Spec, statement: Any) -> str:
    """``BP2: delta1_0 = sp1_0*(delta2_0*w2_0_0 + delta2_1*w2_1_0)``: the scalar equation a
    forward or backprop statement implements, in the module's variable names, with
    piecewise parts as ``(x if c else y)`` (no raw SymPy)."""
    shown = plain(statement.expr)
    parts = [statement.target.name]
    meaning = _meaning(spec, statement)
    if meaning and meaning != shown:
        parts.append(meaning)
    parts.append(shown)
    return f"{statement.label}: {' = '.join(parts)}"


def _forward_section(
    spec: Spec, statements: list, helpers: set[str]
) -> tuple[list[dict], list[str], list[dict]]:
    """Forward statements, FORWARD_VALUES and the stacking of per-unit values: z^l and a^l
    of each layer, after u^l, mean^l, var^l and xhat^l of a batch-normalized one (the
    mean and the variance, one value per unit, shaped like a bias)."""
    lines = [_line(s.target.name, s.expr, _equation_comment(spec, s), helpers) for s in statements]
    cache = []
    stacks = []
    axis = 1 if spec.layout == "rows" else 0
    # In the parameters' dtype, as the vectorized module's buffers: an integer or float64
    # x with float32 parameters would otherwise give float64 values.
    dtype = f"params[{naming.weight(1)!r}].dtype".replace("'", '"')
    for layer in range(1, spec.depth + 1):
        n = spec.sizes[layer]
        bases = [naming.weighted_input(layer), naming.activation(layer)]
        if spec.layers[layer - 1].batch_norm:
            bases[:0] = [naming.linear(layer), naming.batch_mean(layer), naming.batch_var(layer)]
            bases[3:3] = [naming.normalized(layer)]
        statistics = (naming.batch_mean(layer), naming.batch_var(layer))
        for base in bases:
            names = ", ".join(unit_name(base, j) for j in range(n))
            cache.append(base)
            if base in statistics:
                shape = (1, n) if spec.layout == "rows" else (n, 1)
                code = f"np.stack([{names}], dtype={dtype}).reshape{shape}"
            else:
                code = f"np.stack([{names}], axis={axis}, dtype={dtype})"
            stacks.append({"name": base, "code": code})
    return lines, cache, stacks


def _forward_mask_lines(spec: Spec, used: set[str]) -> list[str]:
    """``D2_0 = 1.0 if masks is None else masks["D2"][0]``: _forward's mask entries (1
    without masks: inference)."""
    return [
        f"{name} = 1.0 if masks is None else {_mask_index(spec, name)}"
        for name in _mask_entries(spec)
        if name in used
    ]


def _cost_expr(spec: Spec) -> sp.Expr:
    """Per-example cost in the scalar symbols of the output layer (stable form)."""
    output = derive_network(spec).output
    big_l = spec.depth
    total = sp.Integer(0)
    for j in range(spec.sizes[-1]):
        a = naming.symbol(unit_name(naming.activation(big_l), j))
        z = naming.symbol(unit_name(naming.weighted_input(big_l), j))
        y = naming.symbol(naming.target_entry(j))
        # The unrolled cost is written in a itself: log a and log(1 - a) of the unit.
        total += output.loss_element.xreplace(
            {Z: z, A: a, Y: y, LOGP: sp.log(a), LOG1MP: sp.log(1 - a)}
        )
    # The L2/L1 penalty of every weight: the same for each example, so the batch mean adds
    # it once (none when l2 = l1 = 0).
    element = penalty.with_values(penalty.penalty_element(spec.l2, spec.l1), spec.l2, spec.l1)
    if element != 0:
        total += sp.Add(
            *(
                element.xreplace({penalty.WEIGHT: naming.symbol(naming.weight_entry(ly, j, k))})
                for ly in range(1, big_l + 1)
                for j in range(spec.sizes[ly])
                for k in range(spec.sizes[ly - 1])
            )
        )
    return total


def _strategy_lines(g: Gradients, labels: dict[sp.Symbol, str], helpers: set[str]) -> list[dict]:
    """The gradient statements of ``g``, each under a comment that says what it computes."""
    spec = g.network.spec
    lines = []
    for s in g.program:
        if g.strategy == "cse":
            note = _module_notation(labels.get(s.target, ""))
            comment = f"cse: {s.target.name} is {note}" if note else f"cse: {s.target.name}"
        else:
            comment = _equation_comment(spec, s)
        lines.append(_line(s.target.name, s.expr, comment, helpers))
    for a in g.grads:
        if a.expr == a.target:  # dC/dgamma, dC/dbeta: a statement of the program above
            continue
        param = a.target.name[len(naming.grad("")) :]
        if g.strategy == "naive":
            comment = f"naive: {a.target.name} = dC/d{param}, diff of the expanded cost"
        elif g.strategy == "cse":
            comment = f"cse: {a.target.name} = dC/d{param}, from the shared temporaries"
        else:
            comment = _equation_comment(spec, a)
        lines.append(_line(a.target.name, a.expr, comment, helpers))
    return lines


def _strategy_gradients(
    spec: Spec, strategy: str, engine: str, budget: int | None
) -> tuple[Gradients, list]:
    """The gradient statements of ``strategy`` and the forward pass's statements (the
    backprop program of :mod:`chainrule.derive.scalar_batch_norm` with batch norm)."""
    if spec.batch_norm_layers:
        g = batch_norm_gradients(spec)
        return g, [s for s in g.program if s.label == "forward"]
    g = gradients(spec, strategy, engine=engine, budget=budget)
    return g, [s for s in forward_program(spec) if s.label == "forward"]


def _shared_helpers(spec: Spec, program: Any) -> set[str]:
    """The base template's helpers the module needs beyond its own printed code:
    ``dropout_masks`` draws with the vectorized module's ``_dropout_mask``, and batch norm's
    inference (forward with state) is the base template's, in the plain form's statements."""
    helpers: set[str] = set(program.helpers) if spec.batch_norm_layers else set()
    if spec.dropout_layers:
        helpers.add("_dropout_mask")
    return helpers


def generate_unrolled(
    spec: Spec, strategy: str, *, engine: str = "auto", budget: int | None = None
) -> str:
    """The source of an unrolled module computing ``spec``'s gradient by ``strategy``.

    Raises
    ------
    CodegenError
        When the network is too large for an unrolled module.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> src = generate_unrolled(preset("cheatsheet-relu"), "backprop")
    >>> "delta1_0 = " in src and "def loss_and_grad(params, x, y, out=None, seed=None):" in src
    True
    """
    if strategy not in STRATEGIES:
        raise CodegenError(
            "strategy", f"unknown strategy {strategy!r}", "use one of: " + ", ".join(STRATEGIES)
        )
    check_unrolled_size(spec, strategy)
    g, forward = _strategy_gradients(spec, strategy, engine, budget)
    labels = label_temporaries(g) if strategy == "cse" else {}
    counts = count_strategy(g)
    program = build_program(derive_network(spec))
    context = _context(program)
    helpers = _shared_helpers(spec, program)
    forward_lines, cache, stacks = _forward_section(spec, forward, helpers)
    cost = _cost_expr(spec)
    body = _strategy_lines(g, labels, helpers)
    used = _free_names([s.expr for s in (*g.program, *g.grads)])
    fwd_used = _free_names([s.expr for s in forward])
    big_l = spec.depth
    out_names = [
        unit_name(base, j)
        for base in (naming.weighted_input(big_l), naming.activation(big_l))
        for j in range(spec.sizes[-1])
    ]
    cost_used = _free_names([cost])
    cost_unpack = []
    for name in out_names:
        if name in cost_used:
            base, _, j = name.rpartition("_")
            cost_unpack.append(f"{name} = {_unit_index(spec, base, int(j))}")
    forward_ops = program_ops([(s.expr, 1) for s in (*forward, forward_program(spec)[-1])])
    summary = (
        f"Unrolled {strategy} gradient of a {'-'.join(map(str, spec.sizes))} network "
        f"({spec.cost} cost), derived by SymPy."
    )
    context.update(
        {
            "marker": MARKER,
            "summary": summary,
            "strategy_text": _STRATEGY_TEXT[strategy],
            "strategy_literal": py_literal(strategy),
            "operations": py_literal({"gradient": counts.total, "forward": forward_ops}),
            "cache_literal": py_literal(tuple(cache)),
            "cache_tuple": ", ".join(cache),
            "forward_param_lines": _param_lines(g, fwd_used),
            "forward_input_lines": [ln for ln in _input_lines(g, fwd_used) if ln.startswith("x_")]
            + _forward_mask_lines(spec, fwd_used),
            "forward_lines": forward_lines,
            "stacks": stacks,
            "output_stack": naming.activation(big_l),
            "cost_unpack": cost_unpack,
            "cost_code": _code(cost, helpers),
            "cost_target_lines": [ln for ln in _input_lines(g, cost_used) if ln.startswith("y_")]
            + _param_lines(g, cost_used),
            "grad_param_lines": _param_lines(g, used),
            "grad_input_lines": _input_lines(g, used),
            "grad_lines": body,
            "grad_arrays": _grad_dict(g),
            "helpers": sorted(helpers),
        }
    )
    # loss() unpacks z^L and a^L from _forward: an array its cost does not read is "_".
    cost_text = "\n".join([*cost_unpack, context["cost_code"], *context["cost_target_lines"]])
    for key, name in (
        ("layer_output", naming.activation(big_l)),
        ("layer_z", naming.weighted_input(big_l)),
    ):
        context[key] = name if re.search(rf"\b{name}\b", cost_text) else "_"
    return _ENV.get_template("unrolled.py.j2").render(**context)


__all__ = ["MAX_NAIVE_OPS", "MAX_PARAMETERS", "check_unrolled_size", "generate_unrolled"]
