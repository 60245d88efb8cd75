"""Layer-level derivation: the local partials and the delta recursion, for any width.

SymPy derives every elementwise piece of the backward pass from the rows of
:mod:`chainrule.derive.tables`:

* sigma'(z) by ``diff`` of the activation, rewritten in terms of the cached
  forward value a = sigma(z) where SymPy can (sigmoid' = a(1 - a), tanh' = 1 - a^2);
* the output error delta^L (BP1) by differentiating the cost composed with the
  output activation and simplifying (sigmoid + binary cross-entropy gives a - y);
* for softmax, the Jacobian-vector product, derived on three symbolic units and
  split into an elementwise part and one sum over units; where the sum reduces to
  sum_j y_j, the assumption sum_j y_j = 1 is applied and recorded;
* for softmax with a cost in log(1 - a) (binary cross-entropy), the cost written in
  log a and log(1 - a), both exact functions of the logits, and delta^L through them
  (:class:`ComplementJVP`), checked by SymPy against the composed cost on three units.

The matrix structure (z = W a + b, W^T delta, delta a^T) is the chain rule's
shape and lives in the program builder; no derivative is written by hand.
All expressions use the per-element symbols :data:`Z`, :data:`A`, :data:`Y`,
:data:`LOGP` (log of the softmax output), :data:`LOG1MP` (log of one minus it),
:data:`REST`, :data:`UNIT_SUM` and :data:`UPSTREAM`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
from chainrule.derive import batch_network, numeric
from chainrule.derive.errors import DerivationError
from chainrule.derive.exprparse import X, parse_activation
from chainrule.derive.functions import sigmoid, stable_log_rules
from chainrule.derive.spec import Spec, require_spec
from chainrule.derive.tables import ACTIVATIONS, COSTS
from chainrule.derive.tables import A as COST_A
from chainrule.derive.tables import Y as COST_Y

#: Per-element symbols of the layer-level expressions.
Z = sp.Symbol("z", real=True)
A = sp.Symbol("a", real=True)
Y = sp.Symbol("y", real=True)
LOGP = sp.Symbol("logp", real=True)
LOG1MP = sp.Symbol("log1mp", real=True)
REST = sp.Symbol("rest", real=True)
UNIT_SUM = sp.Symbol("s", real=True)
UPSTREAM = sp.Symbol("g", real=True)


@dataclass(frozen=True)
class ActivationDerivation:
    """An elementwise activation and its derivative.

    ``forward`` is sigma(z) in :data:`Z`; ``derivative`` is sympy.diff of it;
    ``cached`` is the same derivative in the cheapest verified form over the
    symbols :data:`A` (the cached output) and :data:`Z`.
    """

    name: str
    forward: sp.Expr
    derivative: sp.Expr
    cached: sp.Expr

    @property
    def uses_a(self) -> bool:
        """True when sigma'(z) is computed from the cached output a."""
        return A in self.cached.free_symbols


@dataclass(frozen=True)
class SoftmaxJVP:
    """delta_j = elementwise_j + scale_j * sum_k summand_k, for a softmax output.

    ``elementwise`` and ``scale`` are in :data:`A` (and :data:`Y`); ``summand`` is
    in :data:`A` and :data:`Y`. When ``summand_total`` is not None the sum was
    replaced by that constant under ``assumption`` and ``scale`` is already folded
    into ``elementwise``.
    """

    elementwise: sp.Expr
    scale: sp.Expr
    summand: sp.Expr
    summand_total: sp.Expr | None
    assumption: str | None


@dataclass(frozen=True)
class ComplementJVP:
    """delta^L for a softmax output whose cost is written in log a and log(1 - a).

    With the cost c(LOGP, LOG1MP, y), u = dc/dLOGP and v = dc/dLOG1MP (``sympy.diff``),
    the chain rule through log a_j = z_j - log sum_k e^(z_k) and
    log(1 - a_j) = log sum_(k != j) e^(z_k) - log sum_k e^(z_k) gives

        delta_j = u_j - a_j sum_k (u_k + v_k) + rest_j,
        rest_j  = sum_(k != j) v_k a_j / (1 - a_k),

    which SymPy checks against the derivative of the composed cost (on three units).
    Every term is bounded where the softmax saturates, unlike dc/da = (1-y)/(1-a) + ...
    ``delta`` is that expression over :data:`A`, :data:`Y`, :data:`REST` and, unless the
    summand u + v is a constant (then the sum is ``units`` times it), :data:`UNIT_SUM`.
    """

    dlogp: sp.Expr  # u, in Y (and LOGP, LOG1MP)
    dlog1m: sp.Expr  # v
    summand: sp.Expr  # u + v
    summand_is_constant: bool
    delta: sp.Expr


@dataclass(frozen=True)
class OutputDerivation:
    """BP1 for this network: dC/da^L, and delta^L either elementwise or as a softmax JVP."""

    cost_element: sp.Expr  # c(a, y)
    dcost_da: sp.Expr  # dc/da in A, Y
    delta: sp.Expr | None  # elementwise delta^L in A, Z, Y (None for softmax)
    softmax: SoftmaxJVP | None
    loss_element: sp.Expr  # stable per-element cost in Z, A, Y, LOGP, LOG1MP
    assumptions: tuple[str, ...]
    #: For softmax with a cost in log(1 - a): the stable form the module computes.
    complement: ComplementJVP | None = None


@dataclass(frozen=True)
class NetworkDerivation:
    """Everything SymPy derived for a spec: hidden activations and the output error."""

    spec: Spec
    activations: tuple[ActivationDerivation | None, ...]  # None for a softmax layer
    output: OutputDerivation

    @property
    def assumptions(self) -> tuple[str, ...]:
        """Assumptions the derivation relies on (stated in docs and modules)."""
        return self.output.assumptions


def equal_at_points(
    lhs: sp.Expr, rhs: sp.Expr, subs_a: sp.Expr | None = None, count: int = 6, seed: int = 0
) -> bool:
    """Numerically compare two expressions at random rational points (30 digits).

    With ``subs_a`` given, :data:`A` is replaced by ``subs_a`` (a function of
    :data:`Z`) before comparing, so a cached form can be checked against its source.
    The output :data:`A` is sampled in (0, 1), every other symbol in [-3, 3].
    """
    if subs_a is not None:
        lhs, rhs = lhs.subs(A, subs_a), rhs.subs(A, subs_a)
    return numeric.equal_at_points(lhs, rhs, ranges={A: (5, 95)}, count=count, seed=seed)


def activation_expr(name: str) -> sp.Expr:
    """The SymPy expression in x of an elementwise activation (name or expression text)."""
    row = ACTIVATIONS.get(name)
    if row is not None:
        if row.expr is None:
            raise DerivationError(
                "activation", f"{name!r} is not elementwise", "use it only in the output layer"
            )
        return row.expr
    return parse_activation(name)


@functools.lru_cache(maxsize=256)
def derive_activation(name: str) -> ActivationDerivation:
    """Derive sigma'(z) for an elementwise activation and its cached form.

    Examples
    --------
    >>> derive_activation("sigmoid").cached
    a*(1 - a)
    >>> derive_activation("tanh").cached
    1 - a**2
    """
    f = activation_expr(name)
    d = sp.diff(f, X)
    forward = f.subs(X, Z)
    derivative = d.subs(X, Z)
    candidates = [derivative]
    in_a = tidy(derivative.subs(forward, A)) if forward != Z else derivative
    if Z not in in_a.free_symbols and in_a != derivative:
        candidates.insert(0, in_a)
    chosen = derivative
    for candidate in candidates:
        if equal_at_points(candidate, derivative, subs_a=forward):
            chosen = candidate
            break
    return ActivationDerivation(name, forward, derivative, chosen)


def _softmax_jvp() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """Split the softmax vector-Jacobian product into P(a, g) + Q(a) * sum_k R(a_k, g_k).

    Derived on three units: delta_0 = sum_k g_k d softmax_k / d z_0, with exp(z_i)
    replaced by a_i T (T the normalizer) and sum_i a_i = 1 (checked by SymPy).
    """
    n = 3
    zs = sp.symbols("z0:3", real=True)
    gs = sp.symbols("g0:3", real=True)
    as_ = sp.symbols("a0:3", positive=True)
    total = sp.Symbol("T", positive=True)
    probs = batch_network.softmax(zs)
    if sp.simplify(sum(probs) - 1) != 0:  # pragma: no cover - a SymPy regression
        raise DerivationError("activation", "softmax does not sum to one", "report this")
    delta0 = sum(gs[k] * sp.diff(probs[k], zs[0]) for k in range(n))
    delta0 = sp.simplify(delta0.subs({sp.exp(zs[i]): as_[i] * total for i in range(n)}))
    delta0 = sp.expand(delta0.subs(sum(as_), 1))
    unit_sum = {as_[2]: 1 - as_[0] - as_[1]}
    cross = sp.factor(delta0.coeff(gs[1]) * gs[1])
    q_part, r_part = sp.Integer(1), sp.Integer(1)
    for factor in sp.Mul.make_args(cross):
        if factor.free_symbols <= {as_[0], gs[0]}:
            q_part *= factor
        elif factor.free_symbols <= {as_[1], gs[1]}:
            r_part *= factor
        else:
            raise DerivationError("activation", "softmax Jacobian does not separate", "report this")
    summand = r_part.subs({as_[1]: A, gs[1]: UPSTREAM})
    scale = q_part.subs({as_[0]: A})
    reduced = sum(r_part.subs({as_[1]: as_[k], gs[1]: gs[k]}) for k in range(n))
    elementwise = sp.factor(sp.expand(delta0 - q_part * reduced).subs(unit_sum))
    if elementwise.free_symbols - {as_[0], gs[0]}:
        raise DerivationError("activation", "softmax Jacobian does not separate", "report this")
    return elementwise.subs({as_[0]: A, gs[0]: UPSTREAM}), scale, summand


def _complement_jvp(loss: sp.Expr, units: int) -> ComplementJVP:
    """delta^L through log a and log(1 - a) of a softmax, verified on three units.

    ``loss`` is the per-unit cost over :data:`LOGP`, :data:`LOG1MP` and :data:`Y`.
    """
    u = sp.simplify(sp.diff(loss, LOGP))
    v = sp.simplify(sp.diff(loss, LOG1MP))
    summand = sp.simplify(u + v)
    constant = not summand.free_symbols

    def delta_for(count: int) -> sp.Expr:
        total = count * summand if constant else UNIT_SUM
        return tidy(sp.expand(u - A * total)) + REST

    # The check: on three units, the emitted delta_0 (its sum and other-units term
    # spelled out) against the derivative of the composed cost w.r.t. z_0.
    n = 3
    zs = sp.symbols("z0:3", real=True)
    ys = sp.symbols("y0:3", real=True)
    logp = batch_network.log_softmax(zs)
    log1m = batch_network.log1m_softmax(zs)
    probs = batch_network.softmax(zs)

    def at(expr: sp.Expr, j: int) -> sp.Expr:
        return expr.subs({LOGP: logp[j], LOG1MP: log1m[j], Y: ys[j], A: probs[j]})

    composed = sum(at(loss, j) for j in range(n))
    exact = sp.diff(composed, zs[0])
    claimed = at(delta_for(n), 0).subs(
        {
            UNIT_SUM: sum(at(summand, k) for k in range(n)),
            REST: sum(at(v, k) * probs[0] / (1 - probs[k]) for k in range(1, n)),
        }
    )
    ranges = {**dict.fromkeys(zs, (-300, 300)), **dict.fromkeys(ys, (0, 100))}
    if not numeric.equal_at_points(exact, claimed, ranges=ranges, count=4, seed=7):
        raise DerivationError(
            "cost",
            "the chain rule through log(1 - softmax) does not match the cost's derivative",
            "report this",
        )
    return ComplementJVP(u, v, summand, constant, delta_for(units))


def _cost_element(cost: str) -> sp.Expr:
    return COSTS[cost].expr.subs({COST_A: A, COST_Y: Y})


def _op_count(expr: sp.Expr) -> int:
    return int(sp.count_ops(expr))


def tidy(expr: sp.Expr) -> sp.Expr:
    """Factor ``expr`` and write its binomial factors the way a reader expects.

    ``-a*(a - 1)`` becomes ``a*(1 - a)`` and ``-(y - a)`` becomes ``a - y``: the
    same expression, with constants leading ``1 - a`` and the sign absorbed.
    """
    if expr.has(sp.Piecewise):
        return expr
    factored = sp.factor(expr)
    coeff, factors = factored.as_coeff_mul()
    out = []
    for f in factors:
        base, exp = f.as_base_exp()
        if isinstance(base, sp.Add) and exp.is_odd and base.as_coeff_add()[0].is_negative:
            coeff, f = -coeff, sp.expand(-base) ** exp
        out.append(f)
    if coeff.is_negative:
        for i, f in enumerate(out):
            base, exp = f.as_base_exp()
            if isinstance(base, sp.Add) and exp.is_odd and base.as_coeff_add()[0] == 0:
                coeff, out[i] = -coeff, sp.expand(-base) ** exp
                break
    tidied = sp.Mul(coeff, *out)
    expanded = sp.expand(expr)
    return expanded if _op_count(expanded) < _op_count(tidied) else tidied


def derive_output(spec: Spec) -> OutputDerivation:
    """BP1: the output error delta^L for the spec's output activation and cost."""
    return _derive_output(spec.layers[-1].activation, spec.cost, spec.sizes[-1])


@functools.lru_cache(maxsize=256)
def _derive_output(out_name: str, cost: str, units: int) -> OutputDerivation:
    """:func:`derive_output` of an output activation, a cost and the output layer's
    width, derived once per process (the result is frozen, SymPy's expressions are
    immutable)."""
    c = _cost_element(cost)
    dc_da = sp.simplify(sp.diff(c, A))
    assumptions: list[str] = []
    if out_name == "softmax":
        loss = c.subs(sp.log(A), LOGP).subs(sp.log(1 - A), LOG1MP)
        p_part, q_part, r_part = _softmax_jvp()
        elementwise = tidy(sp.simplify(p_part.subs(UPSTREAM, dc_da)))
        scale = tidy(sp.simplify(q_part))
        summand = tidy(sp.simplify(r_part.subs(UPSTREAM, dc_da)))
        total = None
        assumption = None
        if summand.free_symbols == {Y} and sp.degree(summand, Y) == 1:
            coefficient = sp.simplify(summand / Y)
            if Y not in coefficient.free_symbols:
                total = coefficient
                assumption = (
                    "each target column sums to one (sum_j y_j = 1, a one-hot or "
                    "probability vector)"
                )
                assumptions.append(assumption)
                elementwise = tidy(sp.simplify(elementwise + scale * total))
        softmax = SoftmaxJVP(elementwise, scale, summand, total, assumption)
        complement = None
        if LOG1MP in loss.free_symbols:
            if A in loss.free_symbols:  # pragma: no cover - no cost row mixes both forms
                raise DerivationError("cost", "mixes a and log(1 - a)", "report this")
            complement = _complement_jvp(loss, units)
        return OutputDerivation(
            c, dc_da, None, softmax, loss, tuple(assumptions), complement=complement
        )

    act = derive_activation(out_name)
    product = dc_da * act.cached
    composed = sp.simplify(sp.diff(c.subs(A, act.forward), Z))
    composed_in_a = tidy(composed.subs(act.forward, A)) if act.forward != Z else composed
    delta = tidy(product)
    # A simplified composed form wins when it needs only cached values and is no longer.
    if (
        Z not in composed_in_a.free_symbols
        and _op_count(composed_in_a) <= _op_count(delta)
        and equal_at_points(composed_in_a, product, subs_a=act.forward)
    ):
        delta = composed_in_a
    loss = c
    if out_name == "sigmoid" and c.has(sp.log):
        # Logits form: log(sigmoid(z)) and log(1 - sigmoid(z)) through softplus.
        loss = sp.expand(c.subs(A, sigmoid(Z))).subs(stable_log_rules(Z))
        loss = sp.simplify(loss).subs(sigmoid(Z), A)
    return OutputDerivation(c, dc_da, delta, None, loss, tuple(assumptions))


def derive_network(spec: Spec) -> NetworkDerivation:
    """Derive the activations of every layer and the output error of ``spec``.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> derive_network(preset("deep-relu-sigmoid")).output.delta
    a - y
    """
    require_spec(spec)
    acts = tuple(
        None if layer.activation == "softmax" else derive_activation(layer.activation)
        for layer in spec.layers
    )
    return NetworkDerivation(spec, acts, derive_output(spec))


#: Per-element symbol of a dropout mask entry D = r / (1 - p) (r is 0 or 1).
MASK = sp.Symbol("D", real=True)


@functools.lru_cache(maxsize=1)
def dropout_factor() -> sp.Expr:
    """What dropout multiplies sigma'(z) by in BP2, derived by SymPy for any activation.

    With a = D sigma(z) and sigma an undefined function, da/dz = D sigma'(z) (``diff``);
    the factor is that derivative with sigma'(z) set to 1.

    Examples
    --------
    >>> dropout_factor()
    D
    """
    sigma = sp.Function("sigma")
    local = sp.diff(MASK * sigma(Z), Z)
    return local.subs(sp.Derivative(sigma(Z), Z), 1)


#: The keep indicator r of a dropout mask entry (1 with probability 1 - p, else 0) and
#: the drop probability p.
KEEP = sp.Symbol("r", nonnegative=True)
DROP = sp.Symbol("p", positive=True)


def mask_value() -> sp.Expr:
    """A dropout mask entry D in the keep indicator r and the drop probability p.

    Inverted dropout scales a kept unit by 1/(1 - p), so that E[D] = 1 and the expected
    activation in training is the activation at inference, where there is no mask.

    Examples
    --------
    >>> mask_value()
    r/(1 - p)
    """
    return KEEP / (1 - DROP)
