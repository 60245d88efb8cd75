"""The backprop strategy as a straight-line program over scalar symbols.

The forward pass unit by unit, then delta^L (BP1), delta^l from delta^(l+1) (BP2),
dC/db = delta (BP3) and dC/dw = delta a (BP4); each delta is computed once. With
dropout on layer l, a^l_j = D^l_j h^l_j (h^l_j = sigma(z^l_j) cached for sigma') and BP2
multiplies delta^l_j by the same mask entry D^l_j, an input of the step. The
local partials (sigma'(z) in terms of the cached a, dC/da^L) come from
:mod:`chainrule.derive.layers`. With ``representative=True`` one unit per layer is
built, with a count of how many identical statements it stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp
from chainrule.derive import naming, penalty
from chainrule.derive.exprparse import X
from chainrule.derive.layers import (
    MASK,
    UPSTREAM,
    A,
    ActivationDerivation,
    OutputDerivation,
    Y,
    Z,
    _softmax_jvp,
    activation_expr,
    derive_network,
    dropout_factor,
)
from chainrule.derive.scalar_network import _param_infos, _sym, softmax_normalizer, unit_name
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS
from chainrule.derive.tables import A as COST_A
from chainrule.derive.tables import Y as COST_Y


@dataclass(frozen=True)
class Assignment:
    """One statement ``target = expr`` of a straight-line program.

    ``label`` is ``forward``, ``cost``, ``BP1``..``BP4`` or ``cse``; ``note`` says
    what the value is (e.g. ``delta^2_1``); ``layer`` is the layer whose gradients
    first need it; ``count`` is how many identical statements it stands for (1 except
    in layer-level counting); ``stage`` is the layer whose value it computes.
    """

    target: sp.Symbol
    expr: sp.Expr
    label: str
    note: str
    layer: int
    count: int = 1
    stage: int = 0  # the layer this statement computes a value of (0 when not one layer's)


def _grad_target(param: sp.Symbol) -> sp.Symbol:
    return _sym(naming.grad(param.name))


def _masks(layer: int, j: int, expr: sp.Basic) -> dict[sp.Basic, sp.Symbol]:
    """The comparisons in a unit's activation, each cached once as a boolean mask.

    A kinked activation (ReLU: z > 0) and its derivative test the same condition;
    the memoized program evaluates it once in the forward pass and reuses it.
    """
    rels = sorted(expr.atoms(sp.core.relational.Relational), key=sp.default_sort_key)
    base = unit_name(naming.mask(layer), j)
    return {rel: sp.Symbol(base if i == 0 else f"{base}_{i}") for i, rel in enumerate(rels)}


def _forward_program(net_or_spec: Spec, representative: bool = False) -> list[Assignment]:
    """z^l_j = sum_k w a + b and a^l_j = sigma(z^l_j), unit by unit (or one per layer)."""
    spec = net_or_spec
    sizes = spec.sizes
    big_l = spec.depth
    out: list[Assignment] = []
    prev = [_sym(naming.input_entry(k)) for k in range(sizes[0])]
    for layer in range(1, big_l + 1):
        n = sizes[layer]
        units = range(1) if representative else range(n)
        count = n if representative else 1
        bias = spec.layers[layer - 1].bias
        zs = [_sym(unit_name(naming.weighted_input(layer), j)) for j in range(n)]
        for j in units:
            expr = sp.Add(
                *(_sym(naming.weight_entry(layer, j, k)) * prev[k] for k in range(len(prev))),
                *((_sym(naming.bias_entry(layer, j)),) if bias else ()),
            )
            note = f"z^{layer}_{j}"
            out.append(Assignment(zs[j], expr, "forward", note, big_l, count, layer))
        act = spec.layers[layer - 1].activation
        avals = [_sym(unit_name(naming.activation(layer), j)) for j in range(n)]
        if act == "softmax":
            total = _sym(softmax_normalizer(layer))
            out.append(
                Assignment(
                    total,
                    sp.Add(*(sp.exp(v) for v in zs)),
                    "forward",
                    "sum_k e^z_k",
                    big_l,
                    1,
                    layer,
                )
            )
            for j in units:
                out.append(
                    Assignment(
                        avals[j],
                        sp.exp(zs[j]) / total,
                        "forward",
                        f"a^{layer}_{j}",
                        big_l,
                        count,
                        layer,
                    )
                )
        else:
            template = activation_expr(act)
            for j in units:
                unit_expr = template.xreplace({X: zs[j]})
                masks = _masks(layer, j, unit_expr)
                for rel, flag in masks.items():
                    out.append(
                        Assignment(flag, rel, "forward", f"mask^{layer}_{j}", big_l, count, layer)
                    )
                out.append(
                    Assignment(
                        avals[j],
                        unit_expr.xreplace(masks),
                        "forward",
                        f"a^{layer}_{j}",
                        big_l,
                        count,
                        layer,
                    )
                )
            _own_output(spec, layer, units, count, out)
        prev = avals
    return out


def _hsym(layer: int, j: int) -> sp.Symbol:
    return _sym(unit_name(naming.own_activation(layer), j))


def _gsym(layer: int, j: int) -> sp.Symbol:
    return _sym(unit_name(naming.activation_gradient(layer), j))


def _msym(layer: int, j: int) -> sp.Symbol:
    return _sym(naming.dropout_mask_entry(layer, j))


def _mask_factor(spec: Spec, layer: int, j: int) -> sp.Expr:
    """D^l_j for a layer with dropout (SymPy's d(D sigma(z))/dz over sigma'(z)), else 1."""
    if not spec.layers[layer - 1].dropout:
        return sp.Integer(1)
    return dropout_factor().xreplace({MASK: _msym(layer, j)})


def _own_output(spec: Spec, layer: int, units: range, count: int, out: list[Assignment]) -> None:
    """With dropout or a skip into ``layer`` from k, the unit values just appended become
    h^l_j = sigma(z^l_j), and a^l_j = D^l_j h^l_j (dropout), h^l_j + a^k_j (skip) or
    D^l_j h^l_j + a^k_j (both) follows each."""
    source = spec.layers[layer - 1].skip_from
    if source is None and not spec.layers[layer - 1].dropout:
        return
    for j in units:
        index = max(i for i, s in enumerate(out) if s.target == _asym(layer, j))
        own = out[index]
        out[index] = Assignment(
            _hsym(layer, j), own.expr, own.label, f"sigma(z^{layer}_{j})", own.layer, count, layer
        )
        total = _mask_factor(spec, layer, j) * _hsym(layer, j)
        if source is not None:
            total += _asym(source, j)
        out.append(
            Assignment(_asym(layer, j), total, "forward", f"a^{layer}_{j}", own.layer, count, layer)
        )


def _residual_error(
    spec: Spec, act: ActivationDerivation, layer: int, representative: bool, back: list[sp.Expr]
) -> list[Assignment]:
    """dC/da^l_j = back_j + sum of dC/da of the layers l feeds by a skip, stored;
    then delta^l_j = dC/da^l_j D^l_j sigma'(z^l_j) (D^l_j only with dropout; sigma' from
    h^l_j when a skip enters l or dropout masks it)."""
    n = spec.sizes[layer]
    mult = n if representative else 1
    label = "BP1" if layer == spec.depth else "BP2"
    fed = [dest for dest, k in sorted(spec.skips.items()) if k == layer]
    out: list[Assignment] = []
    for j in range(1) if representative else range(n):
        g = _gsym(layer, j)
        total = sp.Add(back[j], *(_gsym(dest, j) for dest in fed))
        out.append(Assignment(g, total, label, f"dC/da^{layer}_{j}", layer, mult))
        cached = _cached_sigma_prime(spec, act, layer, j)
        expr = g * _mask_factor(spec, layer, j)
        if cached != 1:
            spj = _sym(unit_name(naming.sigma_prime(layer), j))
            out.append(Assignment(spj, cached, label, f"sigma'(z^{layer}_{j})", layer, mult))
            expr = expr * spj
        out.append(Assignment(_dsym(layer, j), expr, label, f"delta^{layer}_{j}", layer, mult))
    return out


def _residual_back(spec: Spec, layer: int) -> list[sp.Expr]:
    """sum_i w^{l+1}_ij delta^{l+1}_i for each unit j of ``layer`` (dC/da^L_j at the output)."""
    if layer == spec.depth:
        output = derive_network(spec).output
        return [
            output.dcost_da.xreplace({A: _asym(layer, j), Y: _sym(naming.target_entry(j))})
            for j in range(spec.sizes[layer])
        ]
    return [
        sp.Add(
            *(
                _sym(naming.weight_entry(layer + 1, i, j)) * _dsym(layer + 1, i)
                for i in range(spec.sizes[layer + 1])
            )
        )
        for j in range(spec.sizes[layer])
    ]


def _cost_statement(spec: Spec) -> Assignment:
    sizes = spec.sizes
    big_l = spec.depth
    row = COSTS[spec.cost].expr
    expr = sp.Add(
        *(
            row.xreplace(
                {
                    COST_A: _sym(unit_name(naming.activation(big_l), j)),
                    COST_Y: _sym(naming.target_entry(j)),
                }
            )
            for j in range(sizes[-1])
        )
    )
    # The L2/L1 penalty of every weight (none when l2 = l1 = 0).
    element = penalty.with_values(penalty.penalty_element(spec.l2, spec.l1), spec.l2, spec.l1)
    if element != 0:
        weights = [
            _sym(naming.weight_entry(layer, j, k))
            for layer in range(1, big_l + 1)
            for j in range(sizes[layer])
            for k in range(sizes[layer - 1])
        ]
        expr += sp.Add(*(element.xreplace({penalty.WEIGHT: w}) for w in weights))
    return Assignment(_sym(naming.COST), expr, "cost", "C", big_l)


def _zsym(layer: int, j: int) -> sp.Symbol:
    return _sym(unit_name(naming.weighted_input(layer), j))


def _asym(layer: int, j: int) -> sp.Symbol:
    if layer == 0:
        return _sym(naming.input_entry(j))
    return _sym(unit_name(naming.activation(layer), j))


def _dsym(layer: int, j: int) -> sp.Symbol:
    return _sym(unit_name(naming.delta(layer), j))


def _output_error(spec: Spec, output: OutputDerivation, representative: bool) -> list[Assignment]:
    """BP1: delta^L_j for each output unit (elementwise, or the softmax Jacobian product)."""
    big_l = spec.depth
    n_out = spec.sizes[big_l]
    units_out = range(1) if representative else range(n_out)
    count = n_out if representative else 1
    ys = [_sym(naming.target_entry(j)) for j in range(n_out)]
    out: list[Assignment] = []
    if output.softmax is None:
        for j in units_out:
            local = {A: _asym(big_l, j), Z: _zsym(big_l, j), Y: ys[j]}
            out_expr = activation_expr(spec.layers[-1].activation).xreplace({X: _zsym(big_l, j)})
            expr = output.delta.xreplace(local).xreplace(_masks(big_l, j, out_expr))
            out.append(Assignment(_dsym(big_l, j), expr, "BP1", f"delta^{big_l}_{j}", big_l, count))
        return out
    # The general softmax Jacobian product (no assumption on sum_j y_j, so that it
    # equals the naive gradient for any targets).
    p_part, q_part, r_part = _softmax_jvp()

    def g(j: int) -> sp.Expr:
        return output.dcost_da.xreplace({A: _asym(big_l, j), Y: ys[j]})

    total = _sym(naming.unit_sum(big_l))
    summed = sp.Add(*(r_part.xreplace({A: _asym(big_l, k), UPSTREAM: g(k)}) for k in range(n_out)))
    out.append(Assignment(total, summed, "BP1", "sum_k R(a_k, dC/da_k)", big_l))
    for j in units_out:
        expr = (
            p_part.xreplace({A: _asym(big_l, j), UPSTREAM: g(j)})
            + q_part.xreplace({A: _asym(big_l, j)}) * total
        )
        out.append(Assignment(_dsym(big_l, j), expr, "BP1", f"delta^{big_l}_{j}", big_l, count))
    return out


def _cached_sigma_prime(spec: Spec, act: ActivationDerivation, layer: int, j: int) -> sp.Expr:
    """sigma'(z^l_j) in terms of the cached values: of h^l_j = sigma(z^l_j) when a skip
    enters the layer or dropout masks it (a^l_j is then not sigma(z^l_j)), else of a^l_j."""
    masked = layer in spec.skips or bool(spec.layers[layer - 1].dropout)
    own = _hsym(layer, j) if masked else _asym(layer, j)
    cached = act.cached.xreplace({A: own, Z: _zsym(layer, j)})
    return cached.xreplace(_masks(layer, j, act.forward.xreplace({Z: _zsym(layer, j)})))


def _hidden_error(
    spec: Spec, act: ActivationDerivation, layer: int, representative: bool
) -> list[Assignment]:
    """BP2: sigma'(z^l_j) (when it is not 1) and delta^l_j from delta^(l+1), times the
    mask entry D^l_j with dropout."""
    n, n_up = spec.sizes[layer], spec.sizes[layer + 1]
    mult = n if representative else 1
    out: list[Assignment] = []
    for j in range(1) if representative else range(n):
        back = sp.Add(
            *(_sym(naming.weight_entry(layer + 1, i, j)) * _dsym(layer + 1, i) for i in range(n_up))
        )
        cached = _cached_sigma_prime(spec, act, layer, j)
        expr = back * _mask_factor(spec, layer, j)
        if cached != 1:
            spj = _sym(unit_name(naming.sigma_prime(layer), j))
            out.append(Assignment(spj, cached, "BP2", f"sigma'(z^{layer}_{j})", layer, mult))
            expr = expr * spj
        out.append(Assignment(_dsym(layer, j), expr, "BP2", f"delta^{layer}_{j}", layer, mult))
    return out


def _layer_gradients(spec: Spec, layer: int, representative: bool) -> list[Assignment]:
    """BP4 dC/dw^l_jk = delta^l_j a^(l-1)_k and BP3 dC/db^l_j = delta^l_j."""
    n, n_prev = spec.sizes[layer], spec.sizes[layer - 1]
    units = range(1) if representative else range(n)
    out: list[Assignment] = []
    # The L2/L1 penalty's term of dC/dw by SymPy's diff (0 without regularization).
    slope = penalty.penalty_derivative(penalty.penalty_element(spec.l2, spec.l1))
    slope = penalty.with_values(slope, spec.l2, spec.l1)
    for j in units:
        for k in range(1 if representative else n_prev):
            w = _sym(naming.weight_entry(layer, j, k))
            out.append(
                Assignment(
                    _grad_target(w),
                    _dsym(layer, j) * _asym(layer - 1, k) + slope.xreplace({penalty.WEIGHT: w}),
                    "BP4",
                    f"dC/dw^{layer}_{j}{k} = delta^{layer}_{j} a^{layer - 1}_{k}",
                    layer,
                    n * n_prev if representative else 1,
                )
            )
    if spec.layers[layer - 1].bias:
        for j in units:
            b = _sym(naming.bias_entry(layer, j))
            note = f"dC/db^{layer}_{j} = delta^{layer}_{j}"
            mult = n if representative else 1
            out.append(Assignment(_grad_target(b), _dsym(layer, j), "BP3", note, layer, mult))
    return out


def _backprop_program(
    spec: Spec, representative: bool = False
) -> tuple[list[Assignment], list[Assignment]]:
    """The delta recursion after the forward pass: (program, gradient statements)."""
    derivation = derive_network(spec)
    program = _forward_program(spec, representative)
    touched = {*spec.skips, *spec.skips.values()}
    if spec.depth in touched:
        back = _residual_back(spec, spec.depth)
        program += _residual_error(
            spec, derivation.activations[-1], spec.depth, representative, back
        )
    else:
        program += _output_error(spec, derivation.output, representative)
    grads: list[Assignment] = []
    for layer in range(spec.depth, 0, -1):
        if layer < spec.depth and layer in touched:
            act = derivation.activations[layer - 1]
            back = _residual_back(spec, layer)
            program += _residual_error(spec, act, layer, representative, back)
        elif layer < spec.depth:
            act = derivation.activations[layer - 1]
            program += _hidden_error(spec, act, layer, representative)
        grads += _layer_gradients(spec, layer, representative)
    if not representative:
        order = {p.symbol.name: i for i, p in enumerate(_param_infos(spec))}
        grads.sort(key=lambda s: order[s.target.name[len(naming.grad("")) :]])
    return program, grads


def attribute_layers(
    program: Sequence[Assignment], grads: Sequence[Assignment], depth: int
) -> dict[sp.Symbol, int]:
    """Layer of each program statement: the first layer, counting from L down to 1,
    whose gradients need it (directly or through other statements)."""
    deps: dict[sp.Symbol, set[sp.Symbol]] = {}
    targets = {s.target for s in program}
    for s in program:
        deps[s.target] = {v for v in s.expr.free_symbols if v in targets}
    owner: dict[sp.Symbol, int] = {}
    for layer in range(depth, 0, -1):
        stack = [v for g in grads if g.layer == layer for v in g.expr.free_symbols if v in targets]
        while stack:
            v = stack.pop()
            if v in owner:
                continue
            owner[v] = layer
            stack.extend(d for d in deps[v] if d not in owner)
    return owner


def forward_program(spec: Spec) -> tuple[Assignment, ...]:
    """The forward pass and the cost as a straight-line program (the unit of ``forward_ops``)."""
    return (*_forward_program(spec), _cost_statement(spec))


def backprop_program(spec: Spec) -> tuple[tuple[Assignment, ...], tuple[Assignment, ...]]:
    """The backprop straight-line program and its gradient statements (full scalar form)."""
    program, grads = _backprop_program(spec)
    return tuple(program), tuple(grads)
