"""The scalar-level network: one SymPy symbol per weight, and the per-example cost.

Every scalar of a small network gets its own symbol (w^l_jk, b^l_j, x_k, y_j, named
by :mod:`chainrule.derive.naming`), and the per-example cost C is built as one
expression in them. A layer with dropout adds one symbol D^l_j per unit: the mask entry
r/(1 - p), a constant during one training step, with a^l_j = D^l_j f(z^l_j).

A batch-normalized layer couples the examples of a batch (the variance of one example
is 0), so :func:`scalar_network` refuses it; :func:`batch_scalar_network` builds the same
network over m symbolic examples, with gamma^l_j and beta^l_j as parameters and the
batch cost (1/m) sum_i C_i, for ``compare`` and ``graph``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.spec import Spec

#: Above this many parameters no scalar network is built (use layer-level counts).
MAX_SCALAR_PARAMETERS = 4000


def unit_name(base: str, j: int) -> str:
    """Identifier of unit j of a per-layer quantity, e.g. ``unit_name("delta2", 1)``."""
    return f"{base}_{j}"


def softmax_normalizer(layer: int) -> str:
    """Identifier of sum_k exp(z^l_k) in scalar code, e.g. ``sumexp2``."""
    return f"sumexp{layer}"


def _sym(name: str) -> sp.Symbol:
    return naming.symbol(name)


@dataclass(frozen=True)
class ParamInfo:
    """Where a scalar parameter sits: kind ``"w"`` (w^l_jk), ``"b"`` (b^l_j), ``"gamma"`` or
    ``"beta"`` (gamma^l_j, beta^l_j of a batch-normalized layer); k = -1 but for ``"w"``."""

    symbol: sp.Symbol
    kind: str
    layer: int
    j: int
    k: int

    @property
    def array(self) -> str:
        """Key of the parameter array holding it in a module, e.g. ``W2``."""
        arrays = {"w": naming.weight, "b": naming.bias, "gamma": naming.scale, "beta": naming.shift}
        return arrays[self.kind](self.layer)


@dataclass(frozen=True)
class ScalarNetwork:
    """A network with one symbol per scalar, built once and never mutated.

    ``params`` lists w^1 (row-major over j, k), b^1 (or gamma^1, beta^1 with batch
    norm), w^2, b^2, ...; ``z[l][j]`` and ``a[l][j]`` are expressions for l = 1..L
    (``z[0]`` is empty and ``a[0]`` is the inputs); ``cost`` is the per-example cost
    sum_j c(a^L_j, y_j). ``masks`` lists the dropout mask entries D^l_j (layer by layer,
    empty without dropout): constants, not parameters, so no gradient is taken with
    respect to them. A batch network (``m`` > 1, :func:`batch_scalar_network`) has a
    symbol per example (x_k_i, y_j_i, D^l_j_i), ``z[l]`` and ``a[l]`` unit-major
    (entry j m + i is unit j of example i), and ``cost`` the batch cost (1/m) sum_i C_i.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> net = scalar_network(preset("cheatsheet-relu"))
    >>> [p.name for p in net.params]
    ['w1_0_0', 'w2_0_0']
    >>> net.z[1][0]
    w1_0_0*x_0
    """

    spec: Spec
    params: tuple[sp.Symbol, ...]
    info: tuple[ParamInfo, ...]
    inputs: tuple[sp.Symbol, ...]
    targets: tuple[sp.Symbol, ...]
    z: tuple[tuple[sp.Expr, ...], ...]
    a: tuple[tuple[sp.Expr, ...], ...]
    cost: sp.Expr
    masks: tuple[sp.Symbol, ...] = ()
    m: int = 1

    @property
    def depth(self) -> int:
        """L, the number of layers."""
        return self.spec.depth

    def weight(self, layer: int, j: int, k: int) -> sp.Symbol:
        """The symbol w^layer_jk."""
        return _sym(naming.weight_entry(layer, j, k))

    def bias(self, layer: int, j: int) -> sp.Symbol:
        """The symbol b^layer_j."""
        return _sym(naming.bias_entry(layer, j))


def _param_infos(spec: Spec) -> tuple[ParamInfo, ...]:
    sizes = spec.sizes
    out = []
    for layer in range(1, spec.depth + 1):
        for j in range(sizes[layer]):
            for k in range(sizes[layer - 1]):
                out.append(ParamInfo(_sym(naming.weight_entry(layer, j, k)), "w", layer, j, k))
        if spec.layers[layer - 1].bias:
            for j in range(sizes[layer]):
                out.append(ParamInfo(_sym(naming.bias_entry(layer, j)), "b", layer, j, -1))
        if spec.layers[layer - 1].batch_norm:
            for kind, base in (("gamma", naming.scale(layer)), ("beta", naming.shift(layer))):
                for j in range(sizes[layer]):
                    out.append(ParamInfo(_sym(unit_name(base, j)), kind, layer, j, -1))
    return tuple(out)


def check_scalar_size(spec: Spec, limit: int = MAX_SCALAR_PARAMETERS) -> None:
    """Raise :class:`DerivationError` when ``spec`` has too many parameters for scalars."""
    if spec.parameter_count > limit:
        raise DerivationError(
            "network",
            f"{spec.parameter_count} parameters is too many for a scalar-level expansion "
            f"(limit {limit})",
            "use the layer-level derivation (chainrule generate) or a smaller network",
        )


def refuse_batch_norm(spec: Spec, where: str, fix: str | None = None) -> None:
    """Raise :class:`DerivationError` when ``spec`` has a batch-normalized layer: ``where``
    works one example at a time, and batch norm couples the examples of a batch."""
    if spec.batch_norm_layers:
        index = spec.batch_norm_layers[0] - 1
        raise DerivationError(
            f"layers[{index}].batch_norm",
            f"{where} does not support batch normalization (it couples a batch's examples)",
            fix or "use the vectorized module (chainrule generate), or set batch_norm = false",
        )


def scalar_network(spec: Spec) -> ScalarNetwork:
    """Build the scalar network of ``spec``: a symbol per scalar and the cost expression.

    Raises
    ------
    DerivationError
        When the network has more than :data:`MAX_SCALAR_PARAMETERS` parameters.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> scalar_network(preset("3b1b-chain")).cost
    (-y_0 + sigmoid(b3_0 + w3_0_0*sigmoid(b2_0 + w2_0_0*sigmoid(b1_0 + w1_0_0*x_0))))**2
    """
    check_scalar_size(spec)
    refuse_batch_norm(
        spec,
        "the one-example scalar level",
        "expand a batch instead (batch_scalar_network; compare and graph do), or use "
        "chainrule generate (any form; unrolled with --strategy backprop)",
    )
    return _from_batch(spec, 1)


@functools.lru_cache(maxsize=4)
def batch_scalar_network(spec: Spec, m: int) -> ScalarNetwork:
    """Build the scalar network of ``spec`` over ``m`` symbolic examples: a symbol per
    parameter (gamma^l_j and beta^l_j too) and per example's input, target and mask, and
    the batch cost (1/m) sum_i C_i. Used for a network with batch norm. The expansion
    can take minutes for a few hundred parameters, so the last few are kept (the network
    is immutable): ``compare`` estimates from it, then counts on it, expanding it once.

    Examples
    --------
    >>> from chainrule.derive.spec import Layer, Spec
    >>> spec = Spec(1, (Layer(1, "tanh", batch_norm=True), Layer(1, "linear")), "quadratic")
    >>> net = batch_scalar_network(spec, 2)
    >>> [p.name for p in net.params], [x.name for x in net.inputs]
    (['w1_0_0', 'gamma1_0', 'beta1_0', 'w2_0_0', 'b2_0'], ['x_0_0', 'x_0_1'])
    """
    check_scalar_size(spec, MAX_SCALAR_PARAMETERS // max(1, m))
    return _from_batch(spec, m)


def _from_batch(spec: Spec, m: int) -> ScalarNetwork:
    """The :class:`ScalarNetwork` of :func:`~chainrule.derive.batch_network.scalar_batch`."""
    from chainrule.derive.batch_network import scalar_batch

    batch = scalar_batch(spec, m)
    inputs, targets = tuple(batch.x), tuple(batch.y)
    zs = ((), *(tuple(batch.z[layer]) for layer in range(1, spec.depth + 1)))
    acts = (inputs, *(tuple(batch.a[layer]) for layer in range(1, spec.depth + 1)))
    cost = batch.cost
    masks = tuple(s for layer in sorted(batch.mask) for s in batch.mask[layer])
    info = _param_infos(spec)
    return ScalarNetwork(
        spec=spec,
        params=tuple(p.symbol for p in info),
        info=info,
        inputs=inputs,
        targets=targets,
        z=tuple(zs),
        a=tuple(acts),
        cost=cost,
        masks=masks,
        m=m,
    )
