"""The one place batch normalization is spliced into the scalar backprop program.

The scalar backprop program (:mod:`chainrule.derive.scalar_program`) treats one example
at a time; a batch-normalized layer couples a batch's examples through the mean and the
variance of each unit. :func:`batch_norm_program` writes the program of one example in
which each scalar symbol stands for one value per example and :class:`ExampleMean` is
the mean over the batch's examples, one value shared by all of them. Unit j of a
batch-normalized layer l is then, per example (the definitions of
:mod:`chainrule.derive.batch_norm`),

    u^l_j = sum_k w^l_jk a^(l-1)_k,  mean^l_j = mean(u^l_j),
    var^l_j = mean((u^l_j - mean^l_j)^2),  rstd^l_j = 1 / sqrt(var^l_j + eps),
    xhat^l_j = (u^l_j - mean^l_j) rstd^l_j,  z^l_j = gamma^l_j xhat^l_j + beta^l_j,

and after delta^l_j = dC/dz^l_j (the per-example error, m dC/dz, as in the mini-batch
program): dC/dgamma^l_j = mean(delta xhat), dC/dbeta^l_j = mean(delta), and the
three-term error at u, deltau^l_j, which BP2 below and BP4 of the layer use in place
of delta^l_j. Two forms are read from it: :func:`batch_norm_gradients`, the unrolled
module's program (each symbol an array over the batch, rstd written in place), and
:func:`~chainrule.derive.scalar_batch_program.batch_program`, its mechanical expansion
over m symbolic examples (counted by ``compare``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import sympy as sp
from chainrule.derive import batch_norm, naming
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


def _unit(name: str, j: int) -> sp.Symbol:
    return _sym(unit_name(name, j))


def _named_rstd(layer: int, j: int) -> dict[sp.Expr, sp.Symbol]:
    """{1/sqrt(var^l_j + eps): rstd^l_j}: the factor batch_norm's formulas write, named."""
    var = _unit(naming.batch_var(layer), j)
    return {1 / sp.sqrt(var + batch_norm.EPS): _unit(naming.inverse_std(layer), j)}


def normalization(spec: Spec, layer: int, j: int, u_expr: sp.Expr) -> list[Assignment]:
    """The forward statements of unit j of a batch-normalized layer: u (= ``u_expr``, the
    one-example z^l_j without a bias), mean, var (biased), rstd, xhat and z, each per
    example except the three statistics (means over the examples, shared)."""
    u, mean, var, rstd, xhat, z = (
        _unit(f(layer), j)
        for f in (
            naming.linear,
            naming.batch_mean,
            naming.batch_var,
            naming.inverse_std,
            naming.normalized,
            naming.weighted_input,
        )
    )
    gamma, beta = _unit(naming.scale(layer), j), _unit(naming.shift(layer), j)
    normal = batch_norm.normalize(u, mean, var).xreplace(_named_rstd(layer, j))
    assert rstd in normal.free_symbols, "normalize: 1/sqrt(var + eps) not shared"
    values = (
        (u, u_expr, "u"),
        (mean, ExampleMean(u), "mean"),  # batch_norm.batch_mean
        (var, ExampleMean((u - mean) ** 2), "var"),  # batch_norm.batch_variance
        (rstd, 1 / sp.sqrt(var + batch_norm.EPS), "rstd"),
        (xhat, normal, "xhat"),
        (z, batch_norm.scale_shift(gamma, xhat, beta), "z"),
    )
    big_l = spec.depth
    return [
        Assignment(t, e, "forward", f"{what}^{layer}_{j}", big_l, 1, layer) for t, e, what in values
    ]


def normalized_error(layer: int, j: int) -> list[Assignment]:
    """dC/dgamma^l_j = mean(delta xhat), dC/dbeta^l_j = mean(delta) (shared) and the
    three-term error deltau^l_j at u (per example), from delta^l_j."""
    delta, xhat = _unit(naming.delta(layer), j), _unit(naming.normalized(layer), j)
    gamma, var = _unit(naming.scale(layer), j), _unit(naming.batch_var(layer), j)
    d_gamma, d_beta = _grad_target(gamma), _grad_target(_unit(naming.shift(layer), j))
    three = batch_norm.input_error(gamma, var, delta, d_beta, xhat, d_gamma)
    three = three.xreplace(_named_rstd(layer, j))
    assert _unit(naming.inverse_std(layer), j) in three.free_symbols, "rstd not shared"
    deltau = _unit(naming.linear_delta(layer), j)
    note = f"^{layer}_{j}"
    return [
        Assignment(d_gamma, ExampleMean(delta * xhat), "BN", f"mean(delta{note} xhat)", layer),
        Assignment(d_beta, ExampleMean(delta), "BN", f"mean(delta{note})", layer),
        Assignment(deltau, three, "BN", f"deltau{note}", layer),
    ]


@lru_cache(maxsize=16)
def batch_norm_program(spec: Spec) -> tuple[tuple[Assignment, ...], tuple[Assignment, ...]]:
    """The backprop program of ``spec`` (with batch norm) over per-example symbols, and its
    gradient statements, as :func:`~chainrule.derive.scalar_program.backprop_program`.

    The one-example program of ``spec`` without batch norm, with :func:`normalization` in
    place of each z^l_j of a batch-normalized layer l, :func:`normalized_error` after its
    last delta^l_j, and deltau^l_j in place of delta^l_j from there on (BP2 below, BP4).
    dC/dgamma^l_j and dC/dbeta^l_j are statements (the three-term error reads them);
    their gradient entries name them. BP3/BP4 entries are per example (their batch mean
    is the gradient).

    Examples
    --------
    >>> s = Spec(input_size=1, layers=(Layer(1, "tanh", batch_norm=True), Layer(1, "linear")),
    ...          cost="quadratic")
    >>> program, grads = batch_norm_program(s)
    >>> [a.target.name for a in program][:6]
    ['u1_0', 'mean1_0', 'var1_0', 'rstd1_0', 'xhat1_0', 'z1_0']
    >>> [str(a.expr) for a in grads[:3]]
    ['deltau1_0*x_0', 'dC_dgamma1_0', 'dC_dbeta1_0']
    """
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
                    program.extend(normalized_error(layer, j))
                    swap[_unit(naming.delta(layer), j)] = _unit(naming.linear_delta(layer), j)
    grads = [replace(g, expr=g.expr.xreplace(swap)) for g in plain_grads]
    order = {_grad_target(p.symbol): i for i, p in enumerate(_param_infos(spec))}
    grads += [replace(s, expr=s.target) for s in program if s.target in order]
    grads.sort(key=lambda s: order[s.target])
    return tuple(program), tuple(grads)


def forward_statements(program: list[Assignment] | tuple[Assignment, ...]) -> list[Assignment]:
    """The forward part of a backprop program (label ``forward``)."""
    return [s for s in program if s.label == "forward"]


def batch_norm_gradients(spec: Spec) -> Gradients:
    """The backprop strategy's gradient of a network with batch-normalized layers.

    The network's ``z``, ``a`` and ``cost`` are the forward statements substituted into
    each other: expressions in the per-example symbols and :class:`ExampleMean`.
    The program is :func:`batch_norm_program`'s (1/sqrt(var + eps) named rstd^l_j once per
    unit); each symbol stands for an array over the batch and :class:`ExampleMean` for its
    mean.

    Examples
    --------
    >>> s = Spec(input_size=1, layers=(Layer(2, "tanh", batch_norm=True), Layer(1, "linear")),
    ...          cost="quadratic")
    >>> g = batch_norm_gradients(s)
    >>> [a.target.name for a in g.grads][:4]
    ['dC_dw1_0_0', 'dC_dw1_1_0', 'dC_dgamma1_0', 'dC_dgamma1_1']
    """
    program, grads = batch_norm_program(spec)
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
    "batch_norm_program",
    "forward_statements",
    "normalization",
    "normalized_error",
]
