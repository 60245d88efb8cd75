"""The witness network on which every step of a derivation is checked.

A witness has the spec's depth, activations, cost, biases and layout, with each layer
cut to at most :data:`WITNESS_WIDTH` units and every weight, bias, input and target its
own SymPy symbol; its deltas and gradients are unevaluated derivatives of its cost.
"""

from __future__ import annotations

import functools
from typing import Any

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.batch_network import scalar_batch
from chainrule.derive.exprparse import X
from chainrule.derive.layers import NetworkDerivation, Z, derive_network
from chainrule.derive.spec import Spec

#: Units per layer of the witness network on which the equations are checked.
WITNESS_WIDTH = 3
#: Examples in the witness mini-batch of the vectorized section.
WITNESS_BATCH = 2

Side = Any  # a SymPy expression or matrix

_WRAPPED: dict[sp.Expr, type] = {}


def _wrapped(expr: sp.Expr) -> type:
    """A SymPy function equal to ``expr`` (in :data:`Z`) that stays unevaluated off numbers.

    Substituting a ReLU into a ReLU makes SymPy fold the nested piecewise conditions,
    which grows exponentially with depth; a function application keeps the witness
    linear in size, evaluates to ``expr`` at any number and differentiates to the
    wrapped ``diff(expr, Z)``.
    """
    if expr not in _WRAPPED:

        def evaluate(cls: type, arg: sp.Expr) -> sp.Expr | None:
            return expr.subs(Z, arg) if arg.is_Number else None

        def fdiff(self: sp.Function, argindex: int = 1) -> sp.Expr:
            return _wrapped(sp.diff(expr, Z))(self.args[0])

        _WRAPPED[expr] = type(
            f"piecewise{len(_WRAPPED)}",
            (sp.Function,),
            {"nargs": 1, "eval": classmethod(evaluate), "fdiff": fdiff},
        )
    return _WRAPPED[expr]


def at(expr: sp.Expr, value: sp.Expr) -> sp.Expr:
    """``expr`` (in :data:`Z`) at ``value``; piecewise forms stay wrapped (see :func:`_wrapped`)."""
    if expr.has(sp.Piecewise) and not value.is_Symbol:
        return _wrapped(expr)(value)
    return expr.subs(Z, value)


class _At(sp.Expr):
    """``expr`` with ``variables`` replaced by ``values``, kept unevaluated.

    Like ``sympy.Subs`` but built in constant time: the layer errors of a deep
    witness are large expressions, and ``Subs`` inspects them on construction.
    """

    is_commutative = True

    def __new__(cls, expr: sp.Expr, variables: sp.Tuple, values: sp.Tuple) -> _At:
        return sp.Basic.__new__(cls, expr, variables, values)

    @property
    def free_symbols(self) -> set[sp.Basic]:
        expr, variables, values = self.args
        return (expr.free_symbols - set(variables)) | values.free_symbols

    def doit(self, **hints: Any) -> sp.Expr:
        expr, variables, values = self.args
        return expr.doit(**hints).xreplace(dict(zip(variables, values, strict=True)))


def _name(*parts: object) -> str:
    return "_".join(str(p) for p in parts)


class WitnessNetwork:
    """The scalar network on which every step's sides are built (m examples).

    The forward network is :func:`~chainrule.derive.batch_network.scalar_batch` cut to
    ``width`` units per layer: ``x``, ``y``, ``W``, ``b``, ``z``, ``a``, ``cost`` and its
    methods ``ones``, ``affine``, ``activate``, ``example_costs``, ``batch_cost`` are
    the batch's. The document's own parts are the free weighted inputs and activations
    (``zfree``, ``afree``), the free output gradient ``grad_a`` and the deltas.
    """

    def __init__(
        self, spec: Spec, derivation: NetworkDerivation, m: int, width: int = WITNESS_WIDTH
    ) -> None:
        self.spec = spec
        self.derivation = derivation
        self.m = m
        self.depth = spec.depth
        batch = scalar_batch(
            spec,
            m,
            width=width,
            apply=lambda template, value: at(template.xreplace({X: Z}), value),
            # The derivation relies on sum_j y_j = 1: the witness targets satisfy it.
            targets_sum_to_one=bool(derivation.assumptions),
            indexed=True,
        )
        self.batch = batch
        self.n = batch.widths
        self.x, self.y, self.W, self.b = batch.x, batch.y, batch.W, batch.b
        self.z, self.a = batch.z, batch.a
        self.ones, self.affine, self.activate = batch.ones, batch.affine, batch.activate
        self.mask, self.dropped = batch.mask, batch.dropped
        self.example_costs, self.batch_cost = batch.example_costs, batch.batch_cost
        self.cost = batch.cost
        self.gamma, self.beta = batch.gamma, batch.beta
        sym = naming.symbol
        n, big_l = self.n, self.depth
        #: The free weighted sums u^l (before batch norm) of each batch-normalized layer.
        self.ufree = {
            layer: sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: sym(_name(naming.linear(ly), j, i))
            )
            for layer in spec.batch_norm_layers
        }
        self.zfree = {
            layer: sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: sym(_name(naming.weighted_input(ly), j, i))
            )
            for layer in range(1, big_l + 1)
        }
        self.afree = {0: self.x}
        for layer in range(1, big_l + 1):
            self.afree[layer] = sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: sym(_name(naming.activation(ly), j, i))
            )
        self.grad_a = sp.Matrix(
            n[big_l], m, lambda j, i: sym(_name(naming.grad(naming.activation(big_l)), j, i))
        )

    @functools.cached_property
    def _cost_at_z(self) -> dict[int, sp.Expr]:
        costs = {}
        for layer in range(1, self.depth + 1):
            if self.spec.skips:
                own = self.dropped(layer, self.activate(layer, self.zfree[layer]))
                costs[layer] = self._residual_cost(layer, own)
                continue
            a = self.dropped(layer, self.activate(layer, self.zfree[layer]))
            for upper in range(layer + 1, self.depth + 1):
                a = self.dropped(upper, self.activate(upper, self.affine(upper, a)))
            costs[layer] = self.batch_cost(a)
        return costs

    def _residual_cost(self, layer: int, own: sp.Matrix, skip: bool = True) -> sp.Expr:
        """The cost with f(z^l) of ``layer`` replaced by ``own`` (a^l itself when ``skip``
        is False), through the layers above and their skips; the layers below keep
        their values."""
        values = dict(self.a)
        source = self.spec.layers[layer - 1].skip_from
        values[layer] = own + values[source] if skip and source is not None else own
        for upper in range(layer + 1, self.depth + 1):
            values[upper] = self.dropped(
                upper, self.activate(upper, self.affine(upper, values[upper - 1]))
            )
            k = self.spec.layers[upper - 1].skip_from
            if k is not None:
                values[upper] = values[upper] + values[k]
        return self.batch_cost(values[self.depth])

    @functools.cached_property
    def _cost_at_a(self) -> dict[int, sp.Expr]:
        return {
            layer: self._residual_cost(layer, self.afree[layer], skip=False)
            for layer in range(1, self.depth + 1)
        }

    def linear(self, layer: int) -> sp.Matrix:
        """u^l = W^l a^(l-1) of a batch-normalized layer, in the inputs and parameters."""
        return self.W[layer] * self.a[layer - 1]

    def linear_delta_full(self, layer: int) -> sp.Matrix:
        """m dC/du^l of a batch-normalized layer (through the batch mean and variance, by
        ``diff`` of the cost), as a function of the inputs and parameters, unevaluated."""
        free = self.ufree[layer]
        own = self.dropped(layer, self.activate(layer, self.batch.normalize(layer, free)))
        cost = self._residual_cost(layer, own)
        values = sp.Tuple(*self.linear(layer))
        return free.applyfunc(
            lambda v: _At(self.m * sp.Derivative(cost, v), sp.Tuple(*free), values)
        )

    def output_of(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """a^l at weighted inputs ``z``: sigma(z), plus a^k at its value when the layer
        has a residual connection from k."""
        source = self.spec.layers[layer - 1].skip_from
        own = self.dropped(layer, self.activate(layer, z))
        return own if source is None else own + self.a[source][:, : z.cols]

    def grad_a_full(self, layer: int) -> sp.Matrix:
        """m dC/da^l (a residual network's stored quantity) as a function of the inputs
        and parameters, unevaluated."""
        cost, free = self._cost_at_a[layer], self.afree[layer]
        values = sp.Tuple(*self.a[layer])
        return free.applyfunc(
            lambda v: _At(self.m * sp.Derivative(cost, v), sp.Tuple(*free), values)
        )

    def delta(self, layer: int) -> sp.Matrix:
        """m dC/dz^l as unevaluated derivatives, in the free weighted inputs of ``layer``."""
        cost = self._cost_at_z[layer]
        z = self.zfree[layer]
        return z.applyfunc(lambda v: self.m * sp.Derivative(cost, v))

    def delta_at(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """delta^l with the free weighted inputs replaced by ``z`` (kept unevaluated)."""
        free, values = sp.Tuple(*self.zfree[layer]), sp.Tuple(*z)
        return self.delta(layer).applyfunc(lambda e: _At(e, free, values))

    def delta_full(self, layer: int) -> sp.Matrix:
        """delta^l as a function of the inputs and parameters."""
        return self.delta_at(layer, self.z[layer])

    def dcost(self, param: sp.Symbol) -> sp.Expr:
        """dC/d(param) of the full cost, unevaluated."""
        return sp.Derivative(self.cost, param)

    def free_to_full(self, expr: Side) -> Side:
        """Replace free z^l, a^l symbols by their values in the inputs and parameters."""
        mapping: dict[sp.Symbol, sp.Expr] = {}
        for layer in range(1, self.depth + 1):
            mapping.update(zip(self.zfree[layer], self.z[layer], strict=True))
            mapping.update(zip(self.afree[layer], self.a[layer], strict=True))
        return expr.xreplace(mapping)


@functools.lru_cache(maxsize=32)
def witness(spec: Spec, m: int, width: int = WITNESS_WIDTH) -> WitnessNetwork:
    return WitnessNetwork(spec, derive_network(spec), m, width)
