"""The backprop strategy over a batch of m examples, for a network with batch norm.

Batch norm couples the examples of a batch, so its memoized program runs on m symbolic
examples at once. It is built from the one-example program of
:mod:`chainrule.derive.scalar_program`: each of its statements is written once per
example (x_k -> x_k_i, z^l_j -> z^l_j_i, ...; the parameters are shared), layer by layer,
and a batch-normalized layer l adds, unit by unit, with the definitions of
:mod:`chainrule.derive.batch_norm`:

* forward: u^l_j_i (the one-example z^l_j, which has no bias), mean^l_j and var^l_j
  (biased) over the examples, rstd^l_j = 1/sqrt(var^l_j + eps) once, xhat^l_j_i and
  z^l_j_i = gamma^l_j xhat^l_j_i + beta^l_j;
* backward, once delta^l_j_i = m dC/dz^l_j_i is known: mean(delta) (= dC/dbeta^l_j),
  mean(delta xhat) (= dC/dgamma^l_j) and the three-term error deltau^l_j_i = m dC/du^l_j_i,
  which BP2 of layer l - 1 and BP4 of layer l take in place of delta^l.

The cost is the batch mean (1/m) sum_i C_i (plus the L2/L1 penalty once), so every
gradient is a mean over the examples: dC/dw^l_jk = mean_i(delta^l_j_i a^(l-1)_k_i) (deltau
for a batch-normalized layer) and dC/db^l_j = mean_i(delta^l_j_i).
"""

from __future__ import annotations

import sympy as sp
from chainrule.derive import batch_norm, naming, penalty
from chainrule.derive.errors import DerivationError
from chainrule.derive.opcount import tree_ops
from chainrule.derive.scalar_network import ScalarNetwork, _param_infos, _sym, unit_name
from chainrule.derive.scalar_program import (
    Assignment,
    _backprop_program,
    _cost_statement,
    _grad_target,
)
from chainrule.derive.spec import Spec


def example_symbol(s: sp.Symbol, i: int) -> sp.Symbol:
    """The symbol of example i of a per-example symbol (``x_0`` -> ``x_0_1``), with the
    same assumptions, as :func:`~chainrule.derive.batch_network.scalar_batch` names it."""
    return sp.Symbol(f"{s.name}_{i}", **s.assumptions0)


def _entry(base: str, j: int, i: int | None = None) -> sp.Symbol:
    name = unit_name(base, j)
    return _sym(name if i is None else f"{name}_{i}")


def _renamer(spec: Spec, program: list[Assignment], m: int) -> list[dict]:
    """For each example i, the map of every per-example symbol to its example-i copy."""
    shared = {p.symbol for p in _param_infos(spec)}
    local = {s.target for s in program}
    local |= {_sym(naming.input_entry(k)) for k in range(spec.sizes[0])}
    local |= {_sym(naming.target_entry(j)) for j in range(spec.sizes[-1])}
    for layer in range(1, spec.depth + 1):
        if spec.layers[layer - 1].dropout:
            local |= {_sym(naming.dropout_mask_entry(layer, j)) for j in range(spec.sizes[layer])}
        if spec.layers[layer - 1].batch_norm:  # BP2 below it takes deltau^l_j per example
            local |= {
                _sym(unit_name(naming.linear_delta(layer), j)) for j in range(spec.sizes[layer])
            }
    local -= shared
    return [{s: example_symbol(s, i) for s in local} for i in range(m)]


def _copy(s: Assignment, names: dict, note: str) -> Assignment:
    return Assignment(
        s.target.xreplace(names),
        s.expr.xreplace(names),
        s.label,
        f"{s.note}{note}",
        s.layer,
        s.count,
        s.stage,
    )


def _normalization(spec: Spec, layer: int, m: int) -> list[Assignment]:
    """mean, var, rstd per unit, then xhat and z per unit and example (batch norm forward)."""
    big_l, out = spec.depth, []
    rstd_of: dict[int, sp.Symbol] = {}
    for j in range(spec.sizes[layer]):
        u = [_entry(naming.linear(layer), j, i) for i in range(m)]
        mean, var = _entry(naming.batch_mean(layer), j), _entry(naming.batch_var(layer), j)
        rstd = rstd_of[j] = _entry(naming.inverse_std(layer), j)
        out.append(
            Assignment(
                mean, batch_norm.batch_mean(u), "forward", f"mean^{layer}_{j}", big_l, 1, layer
            )
        )
        variance = batch_norm.batch_variance(u, mean)
        out.append(Assignment(var, variance, "forward", f"var^{layer}_{j}", big_l, 1, layer))
        inverse = 1 / sp.sqrt(var + batch_norm.EPS)
        out.append(Assignment(rstd, inverse, "forward", f"rstd^{layer}_{j}", big_l, 1, layer))
    for j in range(spec.sizes[layer]):
        mean, var = _entry(naming.batch_mean(layer), j), _entry(naming.batch_var(layer), j)
        inverse = {1 / sp.sqrt(var + batch_norm.EPS): rstd_of[j]}
        gamma, beta = _entry(naming.scale(layer), j), _entry(naming.shift(layer), j)
        for i in range(m):
            u, xhat = _entry(naming.linear(layer), j, i), _entry(naming.normalized(layer), j, i)
            normal = batch_norm.normalize(u, mean, var).xreplace(inverse)
            assert rstd_of[j] in normal.free_symbols, "normalize: 1/sqrt(var + eps) not shared"
            note = f"^{layer}_{j} (example {i})"
            out.append(Assignment(xhat, normal, "forward", "xhat" + note, big_l, 1, layer))
            z = _sym(f"{unit_name(naming.weighted_input(layer), j)}_{i}")
            shifted = batch_norm.scale_shift(gamma, xhat, beta)
            out.append(Assignment(z, shifted, "forward", "z" + note, big_l, 1, layer))
    return out


def _normalized_errors(spec: Spec, layer: int, m: int) -> list[Assignment]:
    """mean(delta), mean(delta xhat) per unit and the three-term deltau per unit and example."""
    out = []
    for j in range(spec.sizes[layer]):
        delta = [_sym(f"{unit_name(naming.delta(layer), j)}_{i}") for i in range(m)]
        xhat = [_entry(naming.normalized(layer), j, i) for i in range(m)]
        mdelta, mdx = (
            _entry(naming.mean_error(layer), j),
            _entry(naming.mean_error_normalized(layer), j),
        )
        note = f"^{layer}_{j}"
        out.append(
            Assignment(mdelta, batch_norm.batch_mean(delta), "BN", f"mean(delta{note})", layer)
        )
        products = [d * x for d, x in zip(delta, xhat, strict=True)]
        out.append(
            Assignment(mdx, batch_norm.batch_mean(products), "BN", f"mean(delta{note} xhat)", layer)
        )
        gamma, var = _entry(naming.scale(layer), j), _entry(naming.batch_var(layer), j)
        inverse = {1 / sp.sqrt(var + batch_norm.EPS): _entry(naming.inverse_std(layer), j)}
        for i in range(m):
            error = batch_norm.input_error(gamma, var, delta[i], mdelta, xhat[i], mdx)
            error = error.xreplace(inverse)
            assert set(inverse.values()) <= error.free_symbols, "input_error: rstd not shared"
            target = _entry(naming.linear_delta(layer), j, i)
            out.append(Assignment(target, error, "BN", f"deltau{note} (example {i})", layer))
    return out


def _gradients(spec: Spec, m: int) -> list[Assignment]:
    """BP4 (and BP3) as means over the examples; gamma and beta from the batch-norm terms."""
    slope = penalty.penalty_derivative(penalty.penalty_element(spec.l2, spec.l1))
    slope = penalty.with_values(slope, spec.l2, spec.l1)
    out = []
    for p in _param_infos(spec):
        layer, j = p.layer, p.j
        normalized = spec.layers[layer - 1].batch_norm
        base = naming.linear_delta(layer) if normalized else naming.delta(layer)
        error = [_sym(f"{unit_name(base, j)}_{i}") for i in range(m)]
        if p.kind == "w":
            prev = (
                naming.input_entry(p.k)
                if layer == 1
                else unit_name(naming.activation(layer - 1), p.k)
            )
            terms = [e * _sym(f"{prev}_{i}") for i, e in enumerate(error)]
            expr = batch_norm.batch_mean(terms) + slope.xreplace({penalty.WEIGHT: p.symbol})
            label, note = (
                "BP4",
                f"dC/dw^{layer}_{j}{p.k} = mean(err^{layer}_{j} a^{layer - 1}_{p.k})",
            )
        elif p.kind == "b":
            expr, label, note = batch_norm.batch_mean(error), "BP3", f"dC/db^{layer}_{j}"
        else:
            base = naming.mean_error_normalized if p.kind == "gamma" else naming.mean_error
            expr, label, note = _entry(base(layer), j), "BN", f"dC/d{p.kind}^{layer}_{j}"
        out.append(Assignment(_grad_target(p.symbol), expr, label, note, layer))
    return out


def batch_program(spec: Spec, m: int) -> tuple[tuple[Assignment, ...], tuple[Assignment, ...]]:
    """The memoized program over ``m`` examples and its gradient statements.

    Returns ``(program, grads)`` as :func:`~chainrule.derive.scalar_program.backprop_program`
    does, one gradient per parameter of
    :func:`~chainrule.derive.scalar_network.batch_scalar_network` in its order.

    Examples
    --------
    >>> from chainrule.derive.spec import Layer, Spec
    >>> spec = Spec(1, (Layer(1, "linear", batch_norm=True), Layer(1, "linear")), "quadratic")
    >>> program, grads = batch_program(spec, 2)
    >>> [s.target.name for s in program if s.note.startswith("mean^")]
    ['mean1_0']
    >>> [g.target.name for g in grads]
    ['dC_dw1_0_0', 'dC_dgamma1_0', 'dC_dbeta1_0', 'dC_dw2_0_0', 'dC_db2_0']
    """
    single, _ = _backprop_program(spec)
    names = _renamer(spec, single, m)
    bn_layers = set(spec.batch_norm_layers)
    # BP2 below a batch-normalized layer takes its error at u, not at z.
    to_u = {
        _sym(unit_name(naming.delta(layer), j)): _sym(unit_name(naming.linear_delta(layer), j))
        for layer in bn_layers
        for j in range(spec.sizes[layer])
    }
    out: list[Assignment] = []
    forward = [s for s in single if s.label == "forward"]
    for layer in range(1, spec.depth + 1):
        own = [s for s in forward if s.stage == layer]
        if layer in bn_layers:  # the one-example z^l_j (no bias) is u^l_j_i here
            zs = [
                _sym(unit_name(naming.weighted_input(layer), j)) for j in range(spec.sizes[layer])
            ]
            firsts = {s.target: s for s in own if s.target in zs}
            own = [s for s in own if s.target not in firsts]
            for i in range(m):
                for j, z in enumerate(zs):
                    s = firsts[z]
                    u = _entry(naming.linear(layer), j, i)
                    note = f"u^{layer}_{j} (example {i})"
                    expr = s.expr.xreplace(names[i])
                    out.append(Assignment(u, expr, s.label, note, s.layer, s.count, s.stage))
            out += _normalization(spec, layer, m)
        for i in range(m):
            out += [_copy(s, names[i], f" (example {i})") for s in own]
    backward = [s for s in single if s.label != "forward"]
    for layer in range(spec.depth, 0, -1):
        for i in range(m):
            for s in backward:
                if s.layer == layer:
                    moved = Assignment(s.target, s.expr.xreplace(to_u), s.label, s.note, s.layer)
                    out.append(_copy(moved, names[i], f" (example {i})"))
        if layer in bn_layers:
            out += _normalized_errors(spec, layer, m)
    return tuple(out), tuple(_gradients(spec, m))


def batch_cost_statement(spec: Spec, m: int) -> Assignment:
    """C = (1/m) sum_i C_i (each the one-example cost of example i) plus the penalty once."""
    plain = spec.replace(l2=0.0, l1=0.0)
    per_example = _cost_statement(plain)
    single, _ = _backprop_program(spec)
    names = _renamer(spec, single, m)
    extra = _cost_statement(spec).expr - per_example.expr
    costs = [per_example.expr.xreplace(names[i]) for i in range(m)]
    return Assignment(
        _sym(naming.COST), batch_norm.batch_mean(costs) + extra, "cost", "C", spec.depth
    )


#: The batch of a scalar expansion with batch norm: 2 examples by default, at most 4.
DEFAULT_BATCH = 2
MAX_BATCH = 4
#: Naive gradients measured at most this many times (cost tree) x (parameters) in size
#: (about 3-3.8 on the networks of tests/test_compare_batch_norm.py).
NAIVE_PER_COST_OPS = 4


def estimate_batch_naive_ops(net: ScalarNetwork) -> int:
    """Estimated tree operations of all naive gradients of a batch network: 4 times the
    cost's tree size times the number of parameters (cheap: the cost is built shared)."""
    return NAIVE_PER_COST_OPS * tree_ops(net.cost) * len(net.params)


def check_batch_budget(net: ScalarNetwork, budget: int | None) -> int:
    """Refuse a naive expansion of a batch network estimated over ``budget``; return
    the estimate (see :func:`estimate_batch_naive_ops`)."""
    estimate = estimate_batch_naive_ops(net)
    if budget is not None and estimate > budget:
        raise DerivationError(
            "strategy",
            f"the naive (fully expanded) gradient of the {'-'.join(map(str, net.spec.sizes))} "
            f"network over a batch of {net.m} would take about {estimate:.2g} operations, "
            f"over the budget of {budget:.2g}",
            "use a smaller network"
            + (" or batch (--batch 2)" if net.m > 2 else "")
            + ", or raise the budget (--budget)",
        )
    return estimate


__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH",
    "batch_cost_statement",
    "batch_program",
    "check_batch_budget",
    "estimate_batch_naive_ops",
    "example_symbol",
]
