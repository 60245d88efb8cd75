"""The scalar-level network: one SymPy symbol per weight, and the per-example cost.

Every scalar of a small network gets its own symbol (w^l_jk, b^l_j, x_k, y_j, named
by :mod:`chainrule.derive.naming`), and the per-example cost C is built as one
expression in them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.exprparse import X
from chainrule.derive.layers import activation_expr
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS
from chainrule.derive.tables import A as COST_A
from chainrule.derive.tables import Y as COST_Y

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
    """Where a scalar parameter sits: kind ``"w"`` (w^l_jk) or ``"b"`` (b^l_j, k = -1)."""

    symbol: sp.Symbol
    kind: str
    layer: int
    j: int
    k: int

    @property
    def array(self) -> str:
        """Key of the parameter array holding it in a module, e.g. ``W2``."""
        return naming.weight(self.layer) if self.kind == "w" else naming.bias(self.layer)


@dataclass(frozen=True)
class ScalarNetwork:
    """A network with one symbol per scalar, built once and never mutated.

    ``params`` lists w^1 (row-major over j, k), b^1, w^2, b^2, ...; ``z[l][j]`` and
    ``a[l][j]`` are expressions for l = 1..L (``z[0]`` is empty and ``a[0]`` is the
    inputs); ``cost`` is the per-example cost sum_j c(a^L_j, y_j).

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


def _activate(name: str, z: tuple[sp.Expr, ...]) -> tuple[sp.Expr, ...]:
    if name == "softmax":
        exps = [sp.exp(v) for v in z]
        total = sp.Add(*exps)
        return tuple(e / total for e in exps)
    template = activation_expr(name)
    return tuple(template.xreplace({X: v}) for v in z)


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
    sizes = spec.sizes
    inputs = tuple(_sym(naming.input_entry(k)) for k in range(sizes[0]))
    targets = tuple(_sym(naming.target_entry(j)) for j in range(sizes[-1]))
    zs: list[tuple[sp.Expr, ...]] = [()]
    acts: list[tuple[sp.Expr, ...]] = [inputs]
    for layer in range(1, spec.depth + 1):
        prev = acts[-1]
        bias = spec.layers[layer - 1].bias
        z = tuple(
            sp.Add(
                *(_sym(naming.weight_entry(layer, j, k)) * prev[k] for k in range(len(prev))),
                *((_sym(naming.bias_entry(layer, j)),) if bias else ()),
            )
            for j in range(sizes[layer])
        )
        zs.append(z)
        acts.append(_activate(spec.layers[layer - 1].activation, z))
    row = COSTS[spec.cost].expr
    cost = sp.Add(
        *(row.xreplace({COST_A: a, COST_Y: y}) for a, y in zip(acts[-1], targets, strict=True))
    )
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
    )
