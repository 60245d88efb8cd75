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
from chainrule.derive.layers import A, NetworkDerivation, Y, Z, derive_network
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
    """The scalar network on which every step's sides are built (m examples)."""

    def __init__(
        self, spec: Spec, derivation: NetworkDerivation, m: int, width: int = WITNESS_WIDTH
    ) -> None:
        self.spec = spec
        self.derivation = derivation
        self.m = m
        self.depth = spec.depth
        self.n = tuple(min(size, width) for size in spec.sizes)
        sym = naming.symbol
        n, big_l = self.n, self.depth
        self.x = sp.Matrix(n[0], m, lambda k, i: sym(_name(naming.input_entry(k), i)))
        self.W: dict[int, sp.Matrix] = {}
        self.b: dict[int, sp.Matrix] = {}
        for layer in range(1, big_l + 1):
            self.W[layer] = sp.Matrix(
                n[layer], n[layer - 1], lambda j, k, ly=layer: sym(naming.weight_entry(ly, j, k))
            )
            if spec.layers[layer - 1].bias:
                self.b[layer] = sp.Matrix(
                    n[layer], 1, lambda j, _, ly=layer: sym(naming.bias_entry(ly, j))
                )
            else:
                self.b[layer] = sp.zeros(n[layer], 1)
        y = sp.Matrix(n[big_l], m, lambda j, i: sym(_name(naming.target_entry(j), i)))
        if derivation.assumptions:
            # The derivation relies on sum_j y_j = 1: the witness targets satisfy it.
            for i in range(m):
                y[n[big_l] - 1, i] = 1 - sum(y[j, i] for j in range(n[big_l] - 1))
        self.y = y
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
        self.zfull: dict[int, sp.Matrix] = {}
        self.afull = {0: self.x}
        for layer in range(1, big_l + 1):
            self.zfull[layer] = self.affine(layer, self.afull[layer - 1])
            self.afull[layer] = self.act(layer, self.zfull[layer])
        self.cost_full = self.batch_cost(self.afull[big_l])

    def ones(self) -> sp.Matrix:
        return sp.ones(1, self.m)

    def affine(self, layer: int, prev: sp.Matrix) -> sp.Matrix:
        """W^l prev + b^l 1^T."""
        return self.W[layer] * prev + self.b[layer] * self.ones()

    def act(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """The activation of ``layer`` applied to a matrix of weighted inputs."""
        derived = self.derivation.activations[layer - 1]
        if derived is None:
            out = sp.zeros(*z.shape)
            for i in range(z.shape[1]):
                norm = sum(sp.exp(z[k, i]) for k in range(z.shape[0]))
                for j in range(z.shape[0]):
                    out[j, i] = sp.exp(z[j, i]) / norm
            return out
        return z.applyfunc(lambda v: at(derived.forward, v))

    def example_costs(self, out: sp.Matrix) -> list[sp.Expr]:
        """Per-example cost sum_j c(a^L_j, y_j) for each column of ``out``."""
        c = self.derivation.output.cost_element
        return [
            sp.Add(*[c.xreplace({A: out[j, i], Y: self.y[j, i]}) for j in range(out.shape[0])])
            for i in range(out.shape[1])
        ]

    def batch_cost(self, out: sp.Matrix) -> sp.Expr:
        """(1/m) sum over examples of the per-example cost."""
        return sp.Add(*self.example_costs(out)) / self.m

    @functools.cached_property
    def _cost_at_z(self) -> dict[int, sp.Expr]:
        costs = {}
        for layer in range(1, self.depth + 1):
            a = self.act(layer, self.zfree[layer])
            for upper in range(layer + 1, self.depth + 1):
                a = self.act(upper, self.affine(upper, a))
            costs[layer] = self.batch_cost(a)
        return costs

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
        return self.delta_at(layer, self.zfull[layer])

    def dcost(self, param: sp.Symbol) -> sp.Expr:
        """dC/d(param) of the full cost, unevaluated."""
        return sp.Derivative(self.cost_full, param)

    def free_to_full(self, expr: Side) -> Side:
        """Replace free z^l, a^l symbols by their values in the inputs and parameters."""
        mapping: dict[sp.Symbol, sp.Expr] = {}
        for layer in range(1, self.depth + 1):
            mapping.update(zip(self.zfree[layer], self.zfull[layer], strict=True))
            mapping.update(zip(self.afree[layer], self.afull[layer], strict=True))
        return expr.xreplace(mapping)


def _log1m_softmax(z: sp.Matrix) -> sp.Matrix:
    """log(1 - softmax) of each column of ``z`` (units x examples), from the definition:
    log sum over the other units of e^z, less log sum over all units."""
    units, m = z.shape

    def entry(j: int, i: int) -> sp.Expr:
        every = [sp.exp(z[k, i]) for k in range(units)]
        return sp.log(sp.Add(*every[:j], *every[j + 1 :])) - sp.log(sp.Add(*every))

    return sp.Matrix(units, m, entry)


@functools.lru_cache(maxsize=32)
def witness(spec: Spec, m: int, width: int = WITNESS_WIDTH) -> WitnessNetwork:
    return WitnessNetwork(spec, derive_network(spec), m, width)
