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

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath
import sympy as sp
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.layers import DROP, KEEP, mask_value
from chainrule.derive.numeric import Evaluator, evaluate, sample_point, sample_targets
from chainrule.derive.scalar_counts import (
    DEFAULT_BUDGET,
    LayerCounts,
    StrategyCount,
    check_naive_budget,
    count_strategy,
    estimate_naive_ops,
    finite_difference_ops,
    layer_counts,
)
from chainrule.derive.scalar_network import (
    MAX_SCALAR_PARAMETERS,
    ParamInfo,
    ScalarNetwork,
    _sym,
    check_scalar_size,
    scalar_network,
    softmax_normalizer,
    unit_name,
)
from chainrule.derive.scalar_program import (
    Assignment,
    _backprop_program,
    _grad_target,
    attribute_layers,
    backprop_program,
    forward_program,
)
from chainrule.derive.spec import Spec
from chainrule.derive.symengine_bridge import (
    ENGINES,
    Progress,
    _symengine_diff_cse,
    resolve_engine,
    symengine_available,
)
from chainrule.derive.tables import COSTS

STRATEGIES = ("naive", "cse", "backprop")


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


def _naive_sympy(net: ScalarNetwork, progress: Progress | None) -> list[sp.Expr]:
    out = []
    total = len(net.params)
    for i, p in enumerate(net.params):
        out.append(sp.diff(net.cost, p))
        if progress:
            progress("naive diff", i + 1, total)
    return out


def _as_network(spec_or_net: Spec | ScalarNetwork) -> ScalarNetwork:
    if isinstance(spec_or_net, ScalarNetwork):
        return spec_or_net
    return scalar_network(spec_or_net)


def _backprop(spec_or_net: Spec | ScalarNetwork) -> Gradients:
    """The ``backprop`` strategy: the memoized program (over the m examples of a batch
    network, :mod:`chainrule.derive.scalar_batch_program`)."""
    spec = spec_or_net.spec if isinstance(spec_or_net, ScalarNetwork) else spec_or_net
    check_scalar_size(spec)
    net = _as_network(spec_or_net)
    if net.m > 1:
        from chainrule.derive.scalar_batch_program import batch_program

        program, grads = batch_program(spec, net.m)
    else:
        program, grads = _backprop_program(spec)
    return Gradients("backprop", net, tuple(program), tuple(grads), "sympy")


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
        The network (a spec is expanded with :func:`scalar_network`); a batch network
        (:func:`~chainrule.derive.scalar_network.batch_scalar_network`, for batch norm)
        gives the gradient of its batch cost, and ``backprop`` runs over its m examples.
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
        return _backprop(spec_or_net)
    if isinstance(spec_or_net, ScalarNetwork) and spec_or_net.m > 1:
        from chainrule.derive.scalar_batch_program import check_batch_budget

        check_batch_budget(spec_or_net, budget)
    else:
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


def random_point(net: ScalarNetwork, seed: int = 0) -> dict[sp.Symbol, sp.Rational]:
    """Random rationals for every parameter and input in [-1.5, 1.5], targets in the
    cost row's target range (see :func:`chainrule.derive.numeric.sample_targets`), and
    each dropout mask entry D^l_j = r/(1 - p) with r ~ Bernoulli(1 - p), as in training."""
    rng = random.Random(seed)
    point = sample_point((*net.params, *net.inputs), rng)
    point.update(sample_targets(net.targets, rng, COSTS[net.spec.cost].targets))
    point.update(sample_masks(net, rng))
    return point


def sample_masks(net: ScalarNetwork, rng: random.Random) -> dict[sp.Symbol, sp.Rational]:
    """A mask entry r/(1 - p) for each D^l_j of ``net``: 0 with probability p (the unit is
    dropped), else 1/(1 - p), with p read exactly as its shortest decimal (0.2 is 1/5)."""
    return {
        mask: kept if rng.random() >= net.spec.layers[layer - 1].dropout else sp.Integer(0)
        for (mask, layer), kept in _kept_masks(net).items()
    }


def _kept_masks(net: ScalarNetwork) -> dict[tuple[sp.Symbol, int], sp.Rational]:
    """{(D^l_j, l): 1/(1 - p)} for each mask entry of ``net``, in layer and unit order,
    with p read exactly as its shortest decimal (0.2 is 1/5)."""
    out = {}
    for layer in range(1, net.depth + 1):
        p = net.spec.layers[layer - 1].dropout
        if not p:
            continue
        drop = sp.Rational(Fraction(repr(float(p))))  # the float's shortest decimal, exactly
        scale = mask_value().xreplace({KEEP: 1, DROP: drop})  # a kept unit's D
        for j in range(net.spec.sizes[layer]):
            name = naming.dropout_mask_entry(layer, j)
            examples = [name] if net.m == 1 else [f"{name}_{i}" for i in range(net.m)]
            for entry in examples:
                out[(_sym(entry), layer)] = scale
    return out


def gradient_values(g: Gradients, point: dict[sp.Symbol, Any], digits: int = 40) -> list[Any]:
    """Each parameter's gradient at ``point`` (program evaluated statement by statement)."""
    ev = Evaluator(point, digits)
    for s in g.program:
        ev.assign(s.target, s.expr)
    return [ev(a.expr) for a in g.grads]


#: Random points a CSE temporary must match a backprop value at: at one point a kinked
#: unit (ReLU) may sit on the side where two different values coincide.
LABEL_POINTS = 8


def _backprop_values(net: ScalarNetwork, point: dict) -> dict[str, list[str]]:
    """Notes of the backprop values at ``point`` (delta^l_j, dC/da^l_j, z, a, sigma'),
    keyed by value (and by minus the value, as ``-note``), in program order."""
    reference = Evaluator(point, 30)
    known: dict[str, list[str]] = {}
    sigma_primes: set[sp.Symbol] = set()
    masks = set(net.masks)
    if net.m > 1:
        from chainrule.derive.scalar_batch_program import batch_program

        program = list(batch_program(net.spec, net.m)[0])
    else:
        program = _backprop_program(net.spec)[0]
    for s in program:
        value = reference.assign(s.target, s.expr)
        entries = [(value, s.note)] if s.note.startswith(("delta", "z^", "a^", "sigma")) else []
        if s.note.startswith("sigma'"):
            sigma_primes.add(s.target)
        if s.label == "BP2" and s.note.startswith("delta"):
            # delta^l_j = (sum_i w^(l+1)_ij delta^(l+1)_i) D^l_j sigma'(z^l_j): the sum is
            # dC/da^l_j (D^l_j only with dropout).
            local = s.expr.free_symbols & (sigma_primes | masks)
            back = s.expr.xreplace(dict.fromkeys(local, 1))
            entries.append((reference(back), "dC/da" + s.note[len("delta") :]))
        if net.m > 1 and s.note.startswith("delta"):  # a batch: the error is m dC/dz
            with mpmath.workdps(30):
                entries += [(v / net.m, f"{note} / m") for v, note in list(entries)]
        for v, note in entries:
            known.setdefault(_key(v), []).append(note)
            with mpmath.workdps(30):
                known.setdefault(_key(-v), []).append("-" + note)
    return known


def label_temporaries(g: Gradients, seed: int = 0) -> dict[sp.Symbol, str]:
    """Say what each CSE temporary is: a delta^l_j, another backward term, or forward.

    Each temporary's value is matched against the values the backprop program computes
    (delta^l_j, z^l_j, a^l_j, sigma'(z^l_j)) at :data:`LABEL_POINTS` random points (every
    dropout mask entry at its kept value 1/(1 - p)), and
    named by the first one it equals at all of them; an unmatched temporary is a
    *forward value* when it does not depend on the targets y, and a *backward term* (a
    partial product of the chain rule) otherwise.
    """
    net = g.network
    candidates: dict[sp.Symbol, list[str]] = {}
    # Matching is by identity, so every unit is kept (D = 1/(1 - p)): a dropped unit's
    # zeros (its a^l_j, its delta^l_j) would coincide, and the labels would follow p.
    masks = {mask: value for (mask, _), value in _kept_masks(net).items()}
    for i in range(LABEL_POINTS):
        point = {**random_point(net, seed + i), **masks}
        known = _backprop_values(net, point)
        ev = Evaluator(point, 30)
        for s in g.program:
            found = known.get(_key(ev.assign(s.target, s.expr)), [])
            kept = candidates.get(s.target, found)
            candidates[s.target] = [note for note in kept if note in found]
    targets = set(net.targets)
    uses_y: dict[sp.Symbol, bool] = {}
    labels: dict[sp.Symbol, str] = {}
    for s in g.program:
        free = s.expr.free_symbols
        uses_y[s.target] = bool(free & targets) or any(uses_y.get(v, False) for v in free)
        if candidates[s.target]:
            labels[s.target] = candidates[s.target][0]
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


__all__ = [
    "ENGINES",
    "MAX_SCALAR_PARAMETERS",
    "check_scalar_size",
    "softmax_normalizer",
    "unit_name",
    "attribute_layers",
    "is_backward_label",
    "Progress",
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
    "sample_masks",
    "scalar_network",
    "symengine_available",
]
