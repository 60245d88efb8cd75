"""Operation counts of the scalar strategies, and the budget of the naive expansion.

Counts follow :mod:`chainrule.derive.opcount`. The naive expansion grows
exponentially with depth, so :func:`estimate_naive_ops` predicts its size without
building it and :func:`check_naive_budget` refuses oversized requests before any
work is done. Finite differences are a cost model only (:func:`finite_difference_ops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp
from chainrule.derive import penalty
from chainrule.derive.errors import DerivationError
from chainrule.derive.exprparse import X
from chainrule.derive.layers import activation_expr
from chainrule.derive.opcount import program_ops, tree_ops, tree_ops_many
from chainrule.derive.scalar_network import MAX_SCALAR_PARAMETERS, check_scalar_size
from chainrule.derive.scalar_program import _backprop_program, _cost_statement, attribute_layers
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS
from chainrule.derive.tables import A as COST_A

if TYPE_CHECKING:
    from chainrule.derive.scalar import Gradients


#: Default limit on the estimated tree operations of all naive gradients together.
DEFAULT_BUDGET = 20_000_000


def _occurrences(expr: sp.Basic, sym: sp.Symbol) -> int:
    if expr == sym:
        return 1
    return sum(_occurrences(a, sym) for a in expr.args)


def _template_size(expr: sp.Expr, sym: sp.Symbol) -> tuple[int, int]:
    """(occurrences of ``sym``, operations) of a one-variable template."""
    return _occurrences(expr, sym), tree_ops(expr)


def estimate_naive_ops(spec: Spec) -> int:
    """Predict the tree operations of all naive gradients, without building them.

    The chain rule applied to the expanded cost nests one factor sigma'(z^l) per
    layer of every path from the parameter to the cost, and each sigma'(z^l) holds
    whole copies of the z^l subtree. Layer by layer (all units of a layer have the
    same fan-in, so the same sizes) this gives the size in O(L^2) arithmetic.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> estimate_naive_ops(preset("3b1b-chain")) < 1000
    True
    """
    sizes = spec.sizes
    big_l = spec.depth
    t_z = [0] * (big_l + 1)
    t_a = [0] * (big_l + 1)
    t_d = [0] * (big_l + 1)  # sigma'(z^l) as a tree
    for layer in range(1, big_l + 1):
        n_prev = sizes[layer - 1]
        bias = spec.layers[layer - 1].bias
        t_z[layer] = n_prev * (t_a[layer - 1] + 1) + n_prev - 1 + int(bias)
        name = spec.layers[layer - 1].activation
        if name == "softmax":
            n = sizes[layer]
            t_a[layer] = t_z[layer] + n * (t_z[layer] + 1) + n + 1
            t_d[layer] = 2 * t_a[layer] + 2
        else:
            f = activation_expr(name)
            occ, own = _template_size(f, X)
            t_a[layer] = occ * t_z[layer] + own
            d = sp.diff(f, X)
            occ_d, own_d = _template_size(d, X)
            t_d[layer] = occ_d * t_z[layer] + own_d
        if spec.layers[layer - 1].dropout:  # a^l = D^l f(z^l): one factor more, in both
            t_a[layer] += 1
            t_d[layer] += 1
        if spec.layers[layer - 1].skip_from is not None:  # a^l = f(z^l) + a^k
            t_a[layer] += t_a[spec.layers[layer - 1].skip_from] + 1
    dc = sp.diff(COSTS[spec.cost].expr, COST_A)
    occ_c, own_c = _template_size(dc, COST_A)
    t_dc = occ_c * t_a[big_l] + own_c
    softmax_out = spec.layers[-1].activation == "softmax"
    total = 0
    for layer in range(1, big_l + 1):
        # d a^layer_j / d theta for one parameter of unit j, then upward.
        for kind in ("w", "b"):
            if kind == "b" and not spec.layers[layer - 1].bias:
                continue
            d = t_d[layer] + (t_a[layer - 1] + 2 if kind == "w" else 1)
            touched = 1
            for upper in range(layer + 1, big_l + 1):
                d = t_d[upper] + 1 + touched * (d + 2)
                touched = sizes[upper]
            if softmax_out:
                d = d * sizes[big_l]
            # A parameter below the output layer (or under softmax) reaches every output
            # unit's cost term; an output-layer parameter reaches only its own unit's.
            if layer < big_l or softmax_out:
                per_param = sizes[big_l] * (t_dc + 1 + d) + sizes[big_l] - 1
            else:
                per_param = t_dc + 1 + d
            count = sizes[layer] * (sizes[layer - 1] if kind == "w" else 1)
            total += count * per_param
    # The weight penalty's gradient l2 w + l1 sign(w) (SymPy's) joins each weight's by one
    # sum (the cost's penalty is not in any gradient's tree otherwise).
    slope = penalty.penalty_derivative(penalty.penalty_element(spec.l2, spec.l1))
    per_weight = (
        tree_ops(penalty.with_values(slope, spec.l2, spec.l1)) + 1 if spec.regularized else 0
    )
    weights = sum(sizes[i] * sizes[i + 1] for i in range(big_l))
    # Each skip adds a path from every parameter below it: at most doubles every term.
    return int(total) * 2 ** len(spec.skips) + per_weight * weights


def check_naive_budget(spec: Spec, budget: int | None = DEFAULT_BUDGET) -> int:
    """Refuse a naive expansion whose estimated size passes ``budget``; return the estimate.

    Raises
    ------
    DerivationError
        One line saying how big the expansion would be, and suggesting ``backprop``
        or a smaller network.
    """
    if spec.parameter_count > MAX_SCALAR_PARAMETERS:
        check_scalar_size(spec)
    estimate = estimate_naive_ops(spec)
    if budget is not None and estimate > budget:
        raise DerivationError(
            "strategy",
            f"the naive (fully expanded) gradient of the {'-'.join(map(str, spec.sizes))} "
            f"network would take about {estimate:.2g} operations, over the budget of "
            f"{budget:.2g}",
            "use the backprop strategy (memoized, about "
            f"{layer_counts(spec).backprop_ops:,} operations), a smaller network, "
            "or raise the budget (--budget)",
        )
    return estimate


@dataclass(frozen=True)
class StrategyCount:
    """Operations of one strategy: total, per layer (index 0 is layer 1), per parameter."""

    total: int
    per_layer: tuple[int, ...]
    per_parameter: tuple[int, ...] | None


def count_strategy(g: Gradients) -> StrategyCount:
    """Count ``g``'s operations with the definitions of :mod:`chainrule.derive.opcount`.

    ``naive``: tree operations of each gradient. ``cse`` and ``backprop``: the
    program's statements counted once each; a statement belongs to the first layer
    (from L down) whose gradients need it; a parameter's count is the operations of
    every statement its gradient needs (its dependency cone).
    """
    depth = g.network.depth
    memo: dict = {}
    if g.strategy == "naive":
        per_param = tree_ops_many([a.expr for a in g.grads], memo)
        per_layer = [0] * depth
        for a, n in zip(g.grads, per_param, strict=True):
            per_layer[a.layer - 1] += n
        return StrategyCount(sum(per_param), tuple(per_layer), tuple(per_param))
    owner = attribute_layers(g.program, g.grads, depth)
    own = dict(
        zip(
            [s.target for s in g.program],
            tree_ops_many([s.expr for s in g.program], memo),
            strict=True,
        )
    )
    grad_ops = tree_ops_many([a.expr for a in g.grads], memo)
    per_layer = [0] * depth
    for target, n in own.items():
        if target in owner:
            per_layer[owner[target] - 1] += n
    for a, n in zip(g.grads, grad_ops, strict=True):
        per_layer[a.layer - 1] += n
    targets = set(own)
    deps = {s.target: [v for v in s.expr.free_symbols if v in targets] for s in g.program}
    per_param = []
    for a, n in zip(g.grads, grad_ops, strict=True):
        seen: set[sp.Symbol] = set()
        stack = [v for v in a.expr.free_symbols if v in targets]
        while stack:
            v = stack.pop()
            if v not in seen:
                seen.add(v)
                stack.extend(deps[v])
        per_param.append(n + sum(own[v] for v in seen))
    total = sum(n for t, n in own.items() if t in owner) + sum(grad_ops)
    return StrategyCount(total, tuple(per_layer), tuple(per_param))


@dataclass(frozen=True)
class LayerCounts:
    """Layer-level counts, exact for any width: forward pass and backprop program."""

    parameters: int
    forward_ops: int
    forward_per_layer: tuple[int, ...]
    backprop_ops: int
    backprop_per_layer: tuple[int, ...]


def layer_counts(spec: Spec) -> LayerCounts:
    """Forward and backprop operation counts computed one representative unit per layer.

    Every unit of a layer has the same fan-in, so its statements have the same count;
    one of each is built and multiplied. The result equals counting the full scalar
    program (the tests check this), at any width.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> c = layer_counts(preset("nielsen"))
    >>> c.backprop_ops / c.forward_ops < 4
    True
    """
    program, grads = _backprop_program(spec, representative=True)
    cost = _cost_statement(spec)
    memo: dict = {}
    fwd = [s for s in program if s.label == "forward"]
    forward_per_layer = [0] * spec.depth
    for s in fwd:
        forward_per_layer[s.stage - 1] += program_ops([(s.expr, s.count)], memo)
    forward_per_layer[-1] += program_ops([(cost.expr, 1)], memo)
    bp_per_layer = [0] * spec.depth
    for s in (*program, *grads):
        bp_per_layer[s.layer - 1] += program_ops([(s.expr, s.count)], memo)
    return LayerCounts(
        parameters=spec.parameter_count,
        forward_ops=sum(forward_per_layer),
        forward_per_layer=tuple(forward_per_layer),
        backprop_ops=sum(bp_per_layer),
        backprop_per_layer=tuple(bp_per_layer),
    )


def finite_difference_ops(spec: Spec, forward_ops: int, central: bool = True) -> int:
    """Seed 002's cost model: (2P + 1) forward passes with central differences, else P + 1."""
    p = spec.parameter_count
    return (2 * p + 1 if central else p + 1) * forward_ops
