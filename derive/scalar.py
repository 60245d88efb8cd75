"""The scalar-level network: one SymPy symbol per weight, and three ways to its gradient.

Every scalar of a small network gets its own symbol (w^l_jk, b^l_j, x_k, y_j, named
by :mod:`chainrule.derive.naming`), and the per-example cost C is built as one expression in
them. Its gradient is then computed three ways:

``naive``
    ``diff(C, theta)`` of the fully expanded cost, for every parameter theta; nothing
    is shared, so each path through the network is written out again.
``cse``
    :func:`sympy.cse` over the naive gradients (canonical order, temporaries named
    ``_t0, _t1, ...``). :func:`label_temporaries` shows which temporaries are the
    backward terms delta^l_j of backpropagation and which are forward values.
``backprop``
    The memoized delta recursion as a straight-line program: the forward pass, then
    delta^L (BP1), delta^l from delta^(l+1) (BP2), dC/db = delta (BP3) and
    dC/dw = delta a (BP4); each delta is computed once. The local partials
    (sigma'(z) in terms of the cached a, dC/da^L) come from :mod:`chainrule.derive.layers`.

Finite differences are a cost model only (see :mod:`chainrule.derive.opcount` and
:func:`finite_difference_ops`). The naive expansion grows exponentially with depth,
so :func:`estimate_naive_ops` predicts its size in microseconds and
:func:`check_naive_budget` refuses oversized requests before any work is done.

With SymEngine installed (``pip install chainrule[fast]``) the heavy ``diff`` and
``cse`` of the naive and cse strategies run in its C++ core; the results are
converted back to SymPy and are the same functions of the parameters.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import sympy as sp
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.exprparse import X
from chainrule.derive.functions import sigmoid, softplus
from chainrule.derive.layers import UPSTREAM, A, Y, Z, _softmax_jvp, activation_expr, derive_network
from chainrule.derive.opcount import program_ops, tree_ops, tree_ops_many
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS
from chainrule.derive.tables import A as COST_A
from chainrule.derive.tables import Y as COST_Y

STRATEGIES = ("naive", "cse", "backprop")
ENGINES = ("auto", "sympy", "symengine")
#: Default limit on the estimated tree operations of all naive gradients together.
DEFAULT_BUDGET = 20_000_000
#: Above this many parameters no scalar network is built (use layer-level counts).
MAX_SCALAR_PARAMETERS = 4000

#: Progress callback: (stage, done, total).
Progress = Callable[[str, int, int], None]


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


# --------------------------------------------------------------------------- programs


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


@dataclass(frozen=True)
class Gradients:
    """The gradient of the per-example cost by one strategy.

    ``program`` holds the shared statements (empty for ``naive``); ``grads`` has one
    assignment per parameter, in ``network.params`` order, whose expression uses the
    program's targets as symbols.
    """

    strategy: str
    network: ScalarNetwork
    program: tuple[Assignment, ...]
    grads: tuple[Assignment, ...]
    engine: str

    def expressions(self) -> tuple[sp.Expr, ...]:
        """Each gradient with the program substituted in: a function of x, y and theta."""
        values: dict[sp.Symbol, sp.Expr] = {}
        for s in self.program:
            values[s.target] = s.expr.xreplace(values)
        return tuple(g.expr.xreplace(values) for g in self.grads)


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
        prev = avals
    return out


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
    return Assignment(_sym(naming.COST), expr, "cost", "C", big_l)


def _backprop_program(
    spec: Spec, representative: bool = False
) -> tuple[list[Assignment], list[Assignment]]:
    """The delta recursion after the forward pass: (program, gradient statements)."""
    derivation = derive_network(spec)
    sizes = spec.sizes
    big_l = spec.depth
    program = _forward_program(spec, representative)
    grads: list[Assignment] = []

    def zsym(layer: int, j: int) -> sp.Symbol:
        return _sym(unit_name(naming.weighted_input(layer), j))

    def asym(layer: int, j: int) -> sp.Symbol:
        if layer == 0:
            return _sym(naming.input_entry(j))
        return _sym(unit_name(naming.activation(layer), j))

    def dsym(layer: int, j: int) -> sp.Symbol:
        return _sym(unit_name(naming.delta(layer), j))

    n_out = sizes[big_l]
    units_out = range(1) if representative else range(n_out)
    output = derivation.output
    ys = [_sym(naming.target_entry(j)) for j in range(n_out)]
    if output.softmax is None:
        for j in units_out:
            local = {A: asym(big_l, j), Z: zsym(big_l, j), Y: ys[j]}
            out_expr = activation_expr(spec.layers[-1].activation).xreplace({X: zsym(big_l, j)})
            program.append(
                Assignment(
                    dsym(big_l, j),
                    output.delta.xreplace(local).xreplace(_masks(big_l, j, out_expr)),
                    "BP1",
                    f"delta^{big_l}_{j}",
                    big_l,
                    n_out if representative else 1,
                )
            )
    else:
        # The general softmax Jacobian product (no assumption on sum_j y_j, so that
        # it equals the naive gradient for any targets).
        p_part, q_part, r_part = _softmax_jvp()

        def g(j: int) -> sp.Expr:
            return output.dcost_da.xreplace({A: asym(big_l, j), Y: ys[j]})

        total = _sym(naming.unit_sum(big_l))
        program.append(
            Assignment(
                total,
                sp.Add(
                    *(r_part.xreplace({A: asym(big_l, k), UPSTREAM: g(k)}) for k in range(n_out))
                ),
                "BP1",
                "sum_k R(a_k, dC/da_k)",
                big_l,
            )
        )
        for j in units_out:
            expr = (
                p_part.xreplace({A: asym(big_l, j), UPSTREAM: g(j)})
                + q_part.xreplace({A: asym(big_l, j)}) * total
            )
            program.append(
                Assignment(
                    dsym(big_l, j),
                    expr,
                    "BP1",
                    f"delta^{big_l}_{j}",
                    big_l,
                    n_out if representative else 1,
                )
            )
    for layer in range(big_l, 0, -1):
        n, n_prev = sizes[layer], sizes[layer - 1]
        units = range(1) if representative else range(n)
        mult = n if representative else 1
        if layer < big_l:
            act = derivation.activations[layer - 1]
            n_up = sizes[layer + 1]
            for j in units:
                back = sp.Add(
                    *(
                        _sym(naming.weight_entry(layer + 1, i, j)) * dsym(layer + 1, i)
                        for i in range(n_up)
                    )
                )
                cached = act.cached.xreplace({A: asym(layer, j), Z: zsym(layer, j)})
                cached = cached.xreplace(
                    _masks(layer, j, act.forward.xreplace({Z: zsym(layer, j)}))
                )
                if cached == 1:
                    expr = back
                else:
                    spj = _sym(unit_name(naming.sigma_prime(layer), j))
                    program.append(
                        Assignment(spj, cached, "BP2", f"sigma'(z^{layer}_{j})", layer, mult)
                    )
                    expr = back * spj
                program.append(
                    Assignment(dsym(layer, j), expr, "BP2", f"delta^{layer}_{j}", layer, mult)
                )
        for j in units:
            for k in range(1 if representative else n_prev):
                w = _sym(naming.weight_entry(layer, j, k))
                grads.append(
                    Assignment(
                        _grad_target(w),
                        dsym(layer, j) * asym(layer - 1, k),
                        "BP4",
                        f"dC/dw^{layer}_{j}{k} = delta^{layer}_{j} a^{layer - 1}_{k}",
                        layer,
                        n * n_prev if representative else 1,
                    )
                )
        if spec.layers[layer - 1].bias:
            for j in units:
                b = _sym(naming.bias_entry(layer, j))
                grads.append(
                    Assignment(
                        _grad_target(b),
                        dsym(layer, j),
                        "BP3",
                        f"dC/db^{layer}_{j} = delta^{layer}_{j}",
                        layer,
                        mult,
                    )
                )
    if not representative:
        order = {p.symbol.name: i for i, p in enumerate(_param_infos(spec))}
        grads.sort(key=lambda s: order[s.target.name[len(naming.grad("")) :]])
    return program, grads


# --------------------------------------------------------------------------- budget


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
    return int(total)


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


# --------------------------------------------------------------------------- engines


def symengine_available() -> bool:
    """True when the optional SymEngine package can be imported."""
    try:
        import symengine  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, spec: Spec | None = None) -> str:
    """``auto`` becomes ``symengine`` when installed, else ``sympy``; others are checked.

    For a network with piecewise activations (ReLU) ``auto`` stays with SymPy:
    SymEngine has no if-then-else condition, so its CSE of those gradients is weaker.
    """
    if engine not in ENGINES:
        raise DerivationError(
            "engine", f"unknown engine {engine!r}", "use one of: " + ", ".join(ENGINES)
        )
    if engine == "auto":
        if spec is not None and any(
            act != "softmax" and activation_expr(act).has(sp.Piecewise) for act in spec.activations
        ):
            return "sympy"
        return "symengine" if symengine_available() else "sympy"
    if engine == "symengine" and not symengine_available():
        raise DerivationError(
            "engine",
            "SymEngine is not installed",
            "pip install 'chainrule[fast]' (or symengine), or use --engine sympy",
        )
    return engine


_SP_FUNCS: dict[str, Any] = {
    "sigmoid": sigmoid,
    "softplus": softplus,
}


class _ToSymEngine:
    """Convert SymPy expressions into SymEngine node by node (no text, no sympify)."""

    def __init__(self) -> None:
        import symengine as se

        self.se = se
        self.memo: dict[sp.Basic, Any] = {}
        self.symbols: dict[str, sp.Symbol] = {}
        self.functions: dict[str, Any] = {}

    def __call__(self, expr: sp.Basic) -> Any:
        se = self.se
        stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
        memo = self.memo
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if not ready and node.args and not isinstance(node, sp.Number):
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in memo)
                continue
            args = [memo[a] for a in node.args] if not isinstance(node, sp.Number) else []
            memo[node] = self._node(node, args, se)
        return memo[expr]

    def _node(self, node: sp.Basic, args: list, se: Any) -> Any:
        if isinstance(node, sp.Symbol):
            self.symbols[node.name] = node
            return se.Symbol(node.name)
        if isinstance(node, sp.Integer):
            return se.Integer(int(node))
        if isinstance(node, sp.Rational):
            return se.Rational(int(node.p), int(node.q))
        if isinstance(node, sp.Float):
            return se.RealDouble(float(node))
        if node is sp.E:
            return se.E
        if isinstance(node, sp.Add):
            return se.Add(*args)
        if isinstance(node, sp.Mul):
            return se.Mul(*args)
        if isinstance(node, sp.Pow):
            return se.Pow(*args)
        if isinstance(node, sp.exp):
            return se.exp(args[0])
        for cls, fn in ((sp.log, "log"), (sp.tanh, "tanh"), (sp.sin, "sin"), (sp.cos, "cos")):
            if isinstance(node, cls):
                return getattr(se, fn)(args[0])
        if isinstance(node, (sigmoid, softplus)):
            name = type(node).__name__
            self.functions[name] = type(node)
            return se.Function(name)(args[0])
        if isinstance(node, sp.Piecewise):
            return se.Piecewise(*args)
        if isinstance(node, sp.functions.elementary.piecewise.ExprCondPair):
            return (args[0], args[1])
        if node is sp.true:
            return se.true
        if node is sp.false:
            return se.false
        if isinstance(node, sp.ITE):
            cond, yes, no = args
            return se.Or(se.And(cond, yes), se.And(se.Not(cond), no))
        for cls, fn in ((sp.And, se.And), (sp.Or, se.Or), (sp.Not, se.Not)):
            if isinstance(node, cls):
                return fn(*args)
        rel = {
            sp.Equality: se.Eq,
            sp.Unequality: se.Ne,
            sp.StrictGreaterThan: se.Gt,
            sp.StrictLessThan: se.Lt,
            sp.GreaterThan: se.Ge,
            sp.LessThan: se.Le,
        }
        for cls, fn in rel.items():
            if isinstance(node, cls):
                return fn(args[0], args[1])
        raise DerivationError(
            "engine",
            f"SymEngine cannot take {type(node).__name__}",
            "use --engine sympy for this network",
        )


class _FromSymEngine:
    """Convert SymEngine results back to SymPy, replacing unevaluated derivatives of
    sigmoid/softplus by SymPy's derivative of them."""

    def __init__(self, to_se: _ToSymEngine) -> None:
        self.symbols = to_se.symbols
        self.functions = to_se.functions
        self.memo: dict[Any, sp.Basic] = {}
        self.extra: dict[str, sp.Symbol] = {}
        self.rename: dict[str, sp.Symbol] = {}

    def symbol(self, name: str) -> sp.Symbol:
        if name in self.rename:
            return self.rename[name]
        if name in self.symbols:
            return self.symbols[name]
        return self.extra.setdefault(name, _sym(name))

    def __call__(self, expr: Any) -> sp.Basic:
        memo = self.memo
        stack: list[tuple[Any, bool]] = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            kind = type(node).__name__
            kids = () if kind in ("Subs", "Derivative") else node.args
            if not ready and kids:
                stack.append((node, True))
                stack.extend((a, False) for a in kids if a not in memo)
                continue
            memo[node] = self._node(node, kind, [memo[a] for a in kids])
        return memo[expr]

    def _node(self, node: Any, kind: str, args: list) -> sp.Basic:
        if kind in ("Symbol", "Dummy"):
            return self.symbol(node.name)
        if node.is_Integer:
            return sp.Integer(int(node))
        if node.is_Rational:
            p, q = node.get_num_den()
            return sp.Rational(int(p), int(q))
        if kind == "RealDouble":
            return sp.Float(float(node))
        if kind == "Exp1" or (kind == "Constant" and str(node) == "E"):
            return sp.E
        if kind == "Add":
            return sp.Add(*args)
        if kind == "Mul":
            return sp.Mul(*args)
        if kind == "Pow":
            if str(node.args[0]) == "E":
                return sp.exp(args[1])
            return sp.Pow(*args)
        if kind in ("log", "tanh", "sin", "cos"):
            return getattr(sp, kind)(args[0])
        if kind == "FunctionSymbol":
            return self.functions[node.get_name()](args[0])
        if kind == "Piecewise":
            return sp.Piecewise(*[(args[i], args[i + 1]) for i in range(0, len(args), 2)])
        if kind == "BooleanTrue":
            return sp.true
        if kind == "BooleanFalse":
            return sp.false
        if kind in ("And", "Or", "Not"):
            return getattr(sp, kind)(*args)
        if kind == "Equality":
            return sp.Eq(*args)
        if kind == "Unequality":
            return sp.Ne(*args)
        if kind == "StrictLessThan":
            return sp.StrictLessThan(*args)
        if kind == "LessThan":
            return sp.LessThan(*args)
        if kind == "Subs":  # Subs(Derivative(f(xi), xi), xi, u): f'(u)
            name = node.expr.expr.get_name()
            return _derivative(self.functions[name], self(node.point[0]))
        if kind == "Derivative":
            inner = node.expr
            return _derivative(self.functions[inner.get_name()], self(inner.args[0]))
        raise DerivationError(
            "engine",
            f"cannot convert SymEngine {kind} back to SymPy",
            "use --engine sympy for this network",
        )


_DUMMY_ARG = sp.Dummy("u", real=True)


def _derivative(cls: Any, point: sp.Expr) -> sp.Expr:
    """SymPy's own derivative of the one-argument function ``cls`` at ``point``."""
    return _derivative_template(cls).xreplace({_DUMMY_ARG: point})


@functools.lru_cache(maxsize=16)
def _derivative_template(cls: Any) -> sp.Expr:
    return sp.diff(cls(_DUMMY_ARG), _DUMMY_ARG)


# --------------------------------------------------------------------------- strategies


def _naive_sympy(net: ScalarNetwork, progress: Progress | None) -> list[sp.Expr]:
    out = []
    total = len(net.params)
    for i, p in enumerate(net.params):
        out.append(sp.diff(net.cost, p))
        if progress:
            progress("naive diff", i + 1, total)
    return out


def _symengine_diff_cse(
    net: ScalarNetwork, do_cse: bool, progress: Progress | None
) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
    import symengine as se

    to_se = _ToSymEngine()
    cost = to_se(net.cost)
    params = [to_se(p) for p in net.params]
    raw = []
    for i, p in enumerate(params):
        raw.append(cost.diff(p))
        if progress:
            progress("naive diff", i + 1, len(params))
    # Replace the unevaluated derivatives of sigmoid/softplus inside SymEngine, so
    # that CSE sees sigmoid(u) in them and shares it with the forward value.
    back = _FromSymEngine(to_se)
    mapping = {}
    for node in _collect(raw, ("Subs", "Derivative")):
        if type(node).__name__ == "Subs":  # Subs(Derivative(f(xi), xi), xi, u)
            name, point = node.expr.expr.get_name(), node.point[0]
        else:  # Derivative(f(u), u)
            name, point = node.expr.get_name(), node.expr.args[0]
        template, var = _se_derivative(to_se, name)
        mapping[node] = template.xreplace({var: point})
    if mapping:
        raw = [r.xreplace(mapping) for r in raw]
    if not do_cse:
        return [], [back(r) for r in raw]
    pairs, reduced = se.cse(raw)
    replacements = []
    for i, (tmp, value) in enumerate(pairs):
        if tmp.name in to_se.symbols:  # pragma: no cover - SymEngine names are x0, x1, ...
            raise DerivationError("engine", f"temporary {tmp.name} clashes", "use --engine sympy")
        back.rename[tmp.name] = _sym(naming.temp(i))
        replacements.append((back.rename[tmp.name], value))
    back_pairs = [(new, back(value)) for new, value in replacements]
    return back_pairs, [back(r) for r in reduced]


def _se_derivative(to_se: _ToSymEngine, name: str) -> tuple[Any, Any]:
    """SymPy's derivative of the function ``name``, in SymEngine, and its variable."""
    cls = to_se.functions[name]
    return to_se(_derivative(cls, _DUMMY_ARG)), to_se(_DUMMY_ARG)


def _collect(exprs: Sequence[Any], kinds: tuple[str, ...]) -> list[Any]:
    seen: set = set()
    found = []
    stack = list(exprs)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        kind = type(node).__name__
        if kind in kinds:
            found.append(node)
            continue
        stack.extend(node.args)
    return found


def _as_network(spec_or_net: Spec | ScalarNetwork) -> ScalarNetwork:
    if isinstance(spec_or_net, ScalarNetwork):
        return spec_or_net
    return scalar_network(spec_or_net)


def gradients(
    spec_or_net: Spec | ScalarNetwork,
    strategy: str,
    *,
    engine: str = "auto",
    budget: int | None = DEFAULT_BUDGET,
    progress: Progress | None = None,
) -> Gradients:
    """The gradient of the per-example cost with respect to every parameter.

    Parameters
    ----------
    spec_or_net : Spec or ScalarNetwork
        The network (a spec is expanded with :func:`scalar_network`).
    strategy : str
        ``naive``, ``cse`` or ``backprop`` (see the module docstring).
    engine : str
        ``auto`` (SymEngine when installed), ``sympy`` or ``symengine``; used for the
        diff and CSE of ``naive`` and ``cse``. ``backprop`` needs neither.
    budget : int or None
        Limit on :func:`estimate_naive_ops` for ``naive`` and ``cse``; None disables it.
    progress : callable, optional
        Called as ``progress(stage, done, total)`` while differentiating.

    Returns
    -------
    Gradients
        One assignment per parameter, in ``network.params`` order.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> g = gradients(preset("cheatsheet-relu"), "backprop")
    >>> [s.target.name for s in g.grads]
    ['dC_dw1_0_0', 'dC_dw2_0_0']
    """
    if strategy not in STRATEGIES:
        raise DerivationError(
            "strategy", f"unknown strategy {strategy!r}", "use one of: " + ", ".join(STRATEGIES)
        )
    spec = spec_or_net.spec if isinstance(spec_or_net, ScalarNetwork) else spec_or_net
    if strategy == "backprop":
        check_scalar_size(spec)
        net = _as_network(spec_or_net)
        program, grads = _backprop_program(spec)
        return Gradients("backprop", net, tuple(program), tuple(grads), "sympy")
    check_naive_budget(spec, budget)
    engine = resolve_engine(engine, spec)
    net = _as_network(spec_or_net)
    targets = [_grad_target(p) for p in net.params]
    notes = [f"dC/d{naming.latex(p.name)} by diff of the expanded cost" for p in net.params]
    layers = [info.layer for info in net.info]
    if engine == "symengine":
        pairs, exprs = _symengine_diff_cse(net, strategy == "cse", progress)
    else:
        exprs = _naive_sympy(net, progress)
        pairs = []
        if strategy == "cse":
            if progress:
                progress("cse", 0, 1)
            pairs, exprs = sp.cse(
                exprs,
                symbols=(_sym(naming.temp(i)) for i in range(10**9)),
                order="canonical",
            )
            if progress:
                progress("cse", 1, 1)
    grads = tuple(
        Assignment(t, e, "grad", n, layer)
        for t, e, n, layer in zip(targets, exprs, notes, layers, strict=True)
    )
    if strategy == "naive":
        return Gradients("naive", net, (), grads, engine)
    draft = [Assignment(t, e, "cse", "", 0) for t, e in pairs]
    owner = attribute_layers(draft, grads, net.depth)
    program = tuple(
        Assignment(s.target, s.expr, "cse", "", owner.get(s.target, net.depth)) for s in draft
    )
    return Gradients("cse", net, program, grads, engine)


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


# --------------------------------------------------------------------------- numbers


def _to_mp(value: Any) -> Any:
    if isinstance(value, sp.Rational):
        return mpmath.mpf(int(value.p)) / int(value.q)
    if isinstance(value, sp.Basic):
        raise DerivationError("point", f"not a number: {value!r}", "give rationals or floats")
    return mpmath.mpf(value)


class Evaluator:
    """Evaluate SymPy expressions with mpmath at a point; distinct subexpressions once.

    ``env`` maps symbols to numbers and grows as program statements are evaluated
    (:meth:`assign`), so a straight-line program costs one pass and an exponentially
    large naive gradient costs as much as its DAG. No text is parsed.
    """

    def __init__(self, point: dict[sp.Symbol, Any], digits: int = 40) -> None:
        self.digits = digits
        with mpmath.workdps(digits):
            self.memo: dict[sp.Basic, Any] = {s: _to_mp(v) for s, v in point.items()}

    def assign(self, target: sp.Symbol, expr: sp.Expr) -> Any:
        """Evaluate ``expr`` and bind it to ``target``; returns the value."""
        value = self(expr)
        self.memo[target] = value
        return value

    def __call__(self, root: sp.Basic) -> Any:
        memo = self.memo
        with mpmath.workdps(self.digits):
            stack = [(root, False)]
            while stack:
                node, ready = stack.pop()
                if node in memo:
                    continue
                if isinstance(node, sp.Piecewise):
                    memo[node] = self._piecewise(node)
                    continue
                kids = node.args if not isinstance(node, sp.Number) else ()
                if not ready and kids:
                    stack.append((node, True))
                    stack.extend((k, False) for k in kids if k not in memo)
                    continue
                if isinstance(node, sp.Symbol):
                    raise DerivationError(
                        "point", f"no value for {node.name}", "give every free symbol a value"
                    )
                memo[node] = _eval_node(node, [memo[k] for k in kids])
            return memo[root]

    def _piecewise(self, node: sp.Piecewise) -> Any:
        for value, cond in node.args:
            if cond is sp.true or self(cond):
                return self(value)
        raise DerivationError("expression", "Piecewise without a matching branch", "report this")


def evaluate(exprs: Sequence[sp.Expr], point: dict[sp.Symbol, Any], digits: int = 40) -> list[Any]:
    """Values of ``exprs`` at ``point`` (mpmath numbers at ``digits`` digits).

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> float(evaluate([sigmoid(x) * 2], {x: 0})[0])
    1.0
    """
    ev = Evaluator(point, digits)
    return [ev(e) for e in exprs]


def _eval_node(node: sp.Basic, args: list) -> Any:
    if isinstance(node, sp.Number):
        if isinstance(node, sp.Rational):
            return mpmath.mpf(int(node.p)) / int(node.q)
        return mpmath.mpf(str(node))
    if node is sp.E:
        return mpmath.e
    if node is sp.true:
        return True
    if node is sp.false:
        return False
    if isinstance(node, sp.Add):
        return mpmath.fsum(args)
    if isinstance(node, sp.Mul):
        out = mpmath.mpf(1)
        for a in args:
            out *= a
        return out
    if isinstance(node, sp.Pow):
        return args[0] ** args[1]
    if isinstance(node, sp.ITE):
        return args[1] if args[0] else args[2]
    if isinstance(node, sp.And):
        return all(args)
    if isinstance(node, sp.Or):
        return any(args)
    if isinstance(node, sp.Not):
        return not args[0]
    if isinstance(node, sigmoid):
        return 1 / (1 + mpmath.exp(-args[0]))
    if isinstance(node, softplus):
        return mpmath.log1p(mpmath.exp(args[0]))
    simple = {
        sp.exp: mpmath.exp,
        sp.log: mpmath.log,
        sp.tanh: mpmath.tanh,
        sp.sin: mpmath.sin,
        sp.cos: mpmath.cos,
    }
    for cls, fn in simple.items():
        if isinstance(node, cls):
            return fn(args[0])
    if isinstance(node, sp.core.relational.Relational):
        lhs, rhs = args
        return {
            ">": lhs > rhs,
            "<": lhs < rhs,
            ">=": lhs >= rhs,
            "<=": lhs <= rhs,
            "==": lhs == rhs,
            "!=": lhs != rhs,
        }[node.rel_op]
    raise DerivationError(
        "expression", f"cannot evaluate {type(node).__name__} numerically", "report this"
    )


def random_point(net: ScalarNetwork, seed: int = 0) -> dict[sp.Symbol, sp.Rational]:
    """Random rationals for every parameter, input and target (targets in (0, 1))."""
    rng = random.Random(seed)
    point: dict[sp.Symbol, sp.Rational] = {}
    for s in (*net.params, *net.inputs):
        point[s] = sp.Rational(rng.randint(-150, 150), 100)
    for s in net.targets:
        point[s] = sp.Rational(rng.randint(5, 95), 100)
    if net.spec.cost == "cross-entropy":
        total = sum(point[s] for s in net.targets)
        for s in net.targets:
            point[s] = point[s] / total
    return point


def gradient_values(g: Gradients, point: dict[sp.Symbol, Any], digits: int = 40) -> list[Any]:
    """Each parameter's gradient at ``point`` (program evaluated statement by statement)."""
    ev = Evaluator(point, digits)
    for s in g.program:
        ev.assign(s.target, s.expr)
    return [ev(a.expr) for a in g.grads]


def label_temporaries(g: Gradients, seed: int = 0) -> dict[sp.Symbol, str]:
    """Say what each CSE temporary is: a delta^l_j, another backward term, or forward.

    Each temporary's value at a random point is matched against the values the
    backprop program computes there (delta^l_j, z^l_j, a^l_j, sigma'(z^l_j)); an
    unmatched temporary is a *forward value* when it does not depend on the targets
    y, and a *backward term* (a partial product of the chain rule) otherwise.
    """
    net = g.network
    point = random_point(net, seed)
    reference = Evaluator(point, 30)
    known: dict[str, str] = {}
    sigma_primes: set[sp.Symbol] = set()
    for s in _backprop_program(net.spec)[0]:
        value = reference.assign(s.target, s.expr)
        entries = [(value, s.note)] if s.note.startswith(("delta", "z^", "a^", "sigma")) else []
        if s.note.startswith("sigma'"):
            sigma_primes.add(s.target)
        if s.label == "BP2" and s.note.startswith("delta"):
            # delta^l_j = (sum_i w^(l+1)_ij delta^(l+1)_i) sigma'(z^l_j): the sum is dC/da^l_j.
            back = s.expr.xreplace(dict.fromkeys(s.expr.free_symbols & sigma_primes, 1))
            entries.append((reference(back), "dC/da" + s.note[len("delta") :]))
        for v, note in entries:
            known.setdefault(_key(v), note)
            with mpmath.workdps(30):
                known.setdefault(_key(-v), "-" + note)
    ev = Evaluator(point, 30)
    targets = set(net.targets)
    uses_y: dict[sp.Symbol, bool] = {}
    labels: dict[sp.Symbol, str] = {}
    for s in g.program:
        key = _key(ev.assign(s.target, s.expr))
        free = s.expr.free_symbols
        uses_y[s.target] = bool(free & targets) or any(uses_y.get(v, False) for v in free)
        if key in known:
            labels[s.target] = known[key]
        else:
            labels[s.target] = "backward term" if uses_y[s.target] else "forward value"
    return labels


def is_backward_label(label: str) -> bool:
    """True for a label of :func:`label_temporaries` that names a backward quantity."""
    return label.lstrip("-").startswith(("delta", "dC/da", "backward"))


def _key(value: Any) -> str:
    # 20 significant digits: equal values agree, distinct random values do not.
    with mpmath.workdps(30):
        return mpmath.nstr(+value, 20)


# --------------------------------------------------------------------------- counts


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


def forward_program(spec: Spec) -> tuple[Assignment, ...]:
    """The forward pass and the cost as a straight-line program (the unit of ``forward_ops``)."""
    return (*_forward_program(spec), _cost_statement(spec))


def backprop_program(spec: Spec) -> tuple[tuple[Assignment, ...], tuple[Assignment, ...]]:
    """The backprop straight-line program and its gradient statements (full scalar form)."""
    program, grads = _backprop_program(spec)
    return tuple(program), tuple(grads)


def finite_difference_ops(spec: Spec, forward_ops: int, central: bool = True) -> int:
    """Seed 002's cost model: (2P + 1) forward passes with central differences, else P + 1."""
    p = spec.parameter_count
    return (2 * p + 1 if central else p + 1) * forward_ops


__all__ = [
    "Assignment",
    "DEFAULT_BUDGET",
    "Evaluator",
    "Gradients",
    "LayerCounts",
    "ParamInfo",
    "ScalarNetwork",
    "StrategyCount",
    "STRATEGIES",
    "backprop_program",
    "check_naive_budget",
    "count_strategy",
    "estimate_naive_ops",
    "evaluate",
    "finite_difference_ops",
    "forward_program",
    "gradient_values",
    "gradients",
    "label_temporaries",
    "layer_counts",
    "random_point",
    "resolve_engine",
    "scalar_network",
    "symengine_available",
]
