"""The backprop strategy of a network with batch normalization, unit by unit.

The scalar backprop program (:mod:`chainrule.derive.scalar_program`) treats one example
at a time; a batch-normalized layer couples a batch's examples through the mean and the
variance of each unit. Here each scalar symbol stands for one value per example (an
array over the batch, as in an unrolled module), and :class:`ExampleMean` is the mean
over the batch's examples, one value shared by all of them. Unit j of a
batch-normalized layer l is then, per example,

    u^l_j = sum_k w^l_jk a^(l-1)_k,  mean^l_j = mean(u^l_j),
    var^l_j = mean((u^l_j - mean^l_j)^2),  xhat^l_j = (u^l_j - mean^l_j) / sqrt(var^l_j + eps),
    z^l_j = gamma^l_j xhat^l_j + beta^l_j,

and after delta^l_j = dC/dz^l_j (the per-example error, m dC/dz, as in the mini-batch
program): dC/dgamma^l_j = mean(delta xhat), dC/dbeta^l_j = mean(delta), and the
three-term error at u, deltau^l_j, which BP2 below and BP4 of the layer use in place
of delta^l_j. The elementwise expressions (xhat, z, the three-term form) are the
mini-batch program's statements (:mod:`chainrule.derive.batch`, whose three-term form
:mod:`chainrule.derive.batch_norm` derives through the mean and the variance and checks),
moved to one unit; the means are the operations those statements name.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.batch import BatchStatement, batch_program
from chainrule.derive.layers import derive_network
from chainrule.derive.scalar import Gradients
from chainrule.derive.scalar_network import ScalarNetwork, _param_infos, unit_name
from chainrule.derive.scalar_program import (
    Assignment,
    _grad_target,
    backprop_program,
    forward_program,
)
from chainrule.derive.spec import Layer, Spec


class ExampleMean(sp.Function):
    """(1/m) sum over a batch's m examples of its argument (a per-example value).

    Examples
    --------
    >>> u = naming.symbol("u1_0")
    >>> str(ExampleMean(u))
    'mean(u1_0)'
    """

    nargs = 1

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real

    def _sympystr(self, printer: Any) -> str:
        return f"mean({printer._print(self.args[0])})"


def _sym(name: str) -> sp.Symbol:
    return naming.symbol(name)


def _without_batch_norm(spec: Spec) -> Spec:
    """``spec`` with each batch-normalized layer a plain one without a bias: its z is u."""
    layers = tuple(
        Layer(ly.size, ly.activation, bias=False, skip_from=ly.skip_from, dropout=ly.dropout)
        if ly.batch_norm
        else ly
        for ly in spec.layers
    )
    return replace(spec, layers=layers)


def _at_unit(expr: sp.Expr, j: int) -> sp.Expr:
    """A layer-level statement's expression at unit j: each symbol ``s`` becomes ``s_j``."""
    return expr.xreplace({s: _sym(unit_name(s.name, j)) for s in expr.free_symbols})


@lru_cache(maxsize=16)
def _statements(spec: Spec, layer: int) -> dict[str, BatchStatement]:
    """The mini-batch program's batch-norm statements of ``layer``, by operation (not to be
    changed: cached)."""
    program = batch_program(derive_network(spec))
    return {s.op: s for s in program if s.layer == layer and s.op.startswith("bn_")}


def _unit(name: str, j: int) -> sp.Symbol:
    return _sym(unit_name(name, j))


def normalization(spec: Spec, layer: int, j: int, u_expr: sp.Expr) -> list[Assignment]:
    """The forward statements of unit j of a batch-normalized layer: u, mean, var, xhat, z."""
    bn = _statements(spec, layer)
    u, mean, var = (
        _unit(f(layer), j) for f in (naming.linear, naming.batch_mean, naming.batch_var)
    )
    xhat, z = _unit(naming.normalized(layer), j), _unit(naming.weighted_input(layer), j)
    big_l = spec.depth
    values = (
        (u, u_expr, "u"),
        (mean, ExampleMean(u), "mean"),  # bn_mean: (1/m) u 1
        (var, ExampleMean((u - mean) ** 2), "var"),  # bn_var: the biased variance
        (xhat, _at_unit(bn["bn_normalize"].expr, j), "xhat"),
        (z, _at_unit(bn["bn_scale"].expr, j), "z"),
    )
    return [
        Assignment(t, e, "forward", f"{what}^{layer}_{j}", big_l, 1, layer) for t, e, what in values
    ]


def normalized_error(spec: Spec, layer: int, j: int) -> list[Assignment]:
    """dC/dgamma^l_j = mean(delta xhat), dC/dbeta^l_j = mean(delta) and the three-term
    error deltau^l_j at u, from delta^l_j."""
    bn = _statements(spec, layer)
    delta, xhat = _unit(naming.delta(layer), j), _unit(naming.normalized(layer), j)
    gamma, beta = _unit(naming.scale(layer), j), _unit(naming.shift(layer), j)
    three = _at_unit(bn["bn_backward"].expr, j)
    return [
        Assignment(_grad_target(gamma), ExampleMean(delta * xhat), "BN", "dC/dgamma", layer),
        Assignment(_grad_target(beta), ExampleMean(delta), "BN", "dC/dbeta", layer),
        Assignment(_unit(naming.linear_delta(layer), j), three, "BN", f"deltau^{layer}_{j}", layer),
    ]


def _program(spec: Spec) -> tuple[list[Assignment], list[Assignment]]:
    """The backprop program and gradient statements of ``spec`` (with batch norm)."""
    plain_program, plain_grads = backprop_program(_without_batch_norm(spec))
    normed = spec.batch_norm_layers
    last_delta = {layer: _unit(naming.delta(layer), spec.sizes[layer] - 1) for layer in normed}
    swap: dict[sp.Symbol, sp.Symbol] = {}
    program: list[Assignment] = []
    for old in plain_program:
        s = replace(old, expr=old.expr.xreplace(swap))
        if s.label == "forward" and s.stage in normed and s.note.startswith("z^"):
            j = int(s.note.rsplit("_", 1)[1])
            program.extend(normalization(spec, s.stage, j, s.expr))
            continue
        program.append(s)
        for layer, target in last_delta.items():
            if s.target == target:
                for j in range(spec.sizes[layer]):
                    program.extend(normalized_error(spec, layer, j))
                    swap[_unit(naming.delta(layer), j)] = _unit(naming.linear_delta(layer), j)
    grads = [replace(g, expr=g.expr.xreplace(swap)) for g in plain_grads]
    order = {_grad_target(p.symbol): i for i, p in enumerate(_param_infos(spec))}
    # dC/dgamma and dC/dbeta stay statements of the program (the three-term error reads
    # them); their gradient entries name them.
    grads += [replace(s, expr=s.target) for s in program if s.target in order]
    grads.sort(key=lambda s: order[s.target])
    return program, grads


def forward_statements(program: list[Assignment] | tuple[Assignment, ...]) -> list[Assignment]:
    """The forward part of a backprop program (label ``forward``)."""
    return [s for s in program if s.label == "forward"]


def batch_norm_gradients(spec: Spec) -> Gradients:
    """The backprop strategy's gradient of a network with batch-normalized layers.

    The network's ``z``, ``a`` and ``cost`` are the forward statements substituted into
    each other: expressions in the per-example symbols and :class:`ExampleMean`.
    dC/dgamma^l_j and dC/dbeta^l_j are statements of the program, since the three-term
    error reads them; their entries in ``grads`` are their own targets.

    Examples
    --------
    >>> s = Spec(input_size=1, layers=(Layer(2, "tanh", batch_norm=True), Layer(1, "linear")),
    ...          cost="quadratic")
    >>> g = batch_norm_gradients(s)
    >>> [a.target.name for a in g.grads][:4]
    ['dC_dw1_0_0', 'dC_dw1_1_0', 'dC_dgamma1_0', 'dC_dgamma1_1']
    """
    program, grads = _program(spec)
    values: dict[sp.Symbol, sp.Expr] = {}
    # Substituted as written, not evaluated: evaluating asks SymPy's assumptions about
    # every nested exp and sqrt, which took minutes from 16 inputs up (hours at 64).
    with sp.evaluate(False):
        for s in forward_statements(program):
            values[s.target] = s.expr.xreplace(values)
        cost = forward_program(_without_batch_norm(spec))[-1].expr.xreplace(values)
    sizes = spec.sizes
    info = _param_infos(spec)
    net = ScalarNetwork(
        spec=spec,
        params=tuple(p.symbol for p in info),
        info=info,
        inputs=tuple(_sym(naming.input_entry(k)) for k in range(sizes[0])),
        targets=tuple(_sym(naming.target_entry(j)) for j in range(sizes[-1])),
        z=(
            (),
            *(
                tuple(values[_unit(naming.weighted_input(ly), j)] for j in range(sizes[ly]))
                for ly in range(1, spec.depth + 1)
            ),
        ),
        a=(
            tuple(_sym(naming.input_entry(k)) for k in range(sizes[0])),
            *(
                tuple(values[_unit(naming.activation(ly), j)] for j in range(sizes[ly]))
                for ly in range(1, spec.depth + 1)
            ),
        ),
        cost=cost,
        masks=tuple(
            _sym(naming.dropout_mask_entry(ly, j))
            for ly in range(1, spec.depth + 1)
            if spec.layers[ly - 1].dropout
            for j in range(sizes[ly])
        ),
    )
    return Gradients("backprop", net, tuple(program), tuple(grads), "sympy")


__all__ = [
    "ExampleMean",
    "batch_norm_gradients",
    "forward_statements",
    "normalization",
    "normalized_error",
]
