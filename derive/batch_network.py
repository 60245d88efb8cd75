"""The softmax family of a vector, and one scalar network over a batch of m examples.

:func:`softmax`, :func:`log_softmax` and :func:`log1m_softmax` build the three
functions of a softmax output from their definitions, for a vector of SymPy
expressions; every check and strategy that needs them builds them here.

:func:`scalar_batch` builds the forward network with one symbol per scalar and an
examples axis: x is n_0 x m, W^l is n_l x n_(l-1), b^l is n_l x 1, and z^l, a^l are
n_l x m matrices of expressions in them; the cost is (1/m) sum over examples of
sum_j c(a^L_j, y_j). The scalar strategies use it with m = 1. A layer with dropout gets
one mask symbol D^l_j per unit and example, a constant of the training step, and
a^l = D^l ⊙ f(z^l). A batch-normalized layer gets gamma^l_j and beta^l_j per unit and
computes u^l = W^l a^(l-1), the batch mean and biased variance of each unit (over the
m columns), xhat^l and z^l = gamma^l xhat^l + beta^l by the definitions of
:mod:`chainrule.derive.batch_norm`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.exprparse import X
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS, COSTS
from chainrule.derive.tables import A as COST_A
from chainrule.derive.tables import Y as COST_Y


def softmax(z: Sequence[sp.Expr]) -> list[sp.Expr]:
    """e^(z_j) / sum_k e^(z_k) for each j.

    Examples
    --------
    >>> z = sp.symbols("z0:2")
    >>> softmax(z)[0]
    exp(z0)/(exp(z0) + exp(z1))
    """
    exps = [sp.exp(v) for v in z]
    total = sp.Add(*exps)
    return [e / total for e in exps]


def log_softmax(z: Sequence[sp.Expr]) -> list[sp.Expr]:
    """z_j - log sum_k e^(z_k) for each j.

    Examples
    --------
    >>> z = sp.symbols("z0:2")
    >>> log_softmax(z)[1]
    z1 - log(exp(z0) + exp(z1))
    """
    norm = sp.log(sp.Add(*(sp.exp(v) for v in z)))
    return [v - norm for v in z]


def log1m_softmax(z: Sequence[sp.Expr]) -> list[sp.Expr]:
    """log(1 - softmax_j) = log sum_(k != j) e^(z_k) - log sum_k e^(z_k) for each j.

    Examples
    --------
    >>> z = sp.symbols("z0:2")
    >>> log1m_softmax(z)[0]
    -log(exp(z0) + exp(z1)) + log(exp(z1))
    """
    exps = [sp.exp(v) for v in z]
    norm = sp.log(sp.Add(*exps))
    return [sp.log(sp.Add(*exps[:j], *exps[j + 1 :])) - norm for j in range(len(exps))]


def columnwise(fn: Callable[[Sequence[sp.Expr]], list[sp.Expr]], z: sp.Matrix) -> sp.Matrix:
    """``fn`` (one of the three above) applied to each column of ``z`` (units x examples)."""
    out = sp.zeros(*z.shape)
    for i in range(z.shape[1]):
        for j, value in enumerate(fn(list(z[:, i]))):
            out[j, i] = value
    return out


#: How an elementwise activation (an expression in x) is applied to a value.
Apply = Callable[[sp.Expr, sp.Expr], sp.Expr]


def _replace_x(template: sp.Expr, value: sp.Expr) -> sp.Expr:
    return template.xreplace({X: value})


@dataclass(frozen=True, eq=False)
class ScalarBatch:
    """The forward network over m examples, one symbol per scalar (see :func:`scalar_batch`).

    ``z[l]`` and ``a[l]`` are n_l x m matrices for l = 1..L; ``a[0]`` is ``x``; ``mask[l]``
    is the n_l x m matrix of dropout mask symbols of a layer with dropout.
    """

    spec: Spec
    m: int
    widths: tuple[int, ...]
    x: sp.Matrix
    y: sp.Matrix
    W: dict[int, sp.Matrix]
    b: dict[int, sp.Matrix]
    apply: Apply = field(repr=False)
    #: gamma^l and beta^l (n_l x 1) of each batch-normalized layer (absent otherwise).
    gamma: dict[int, sp.Matrix] = field(default_factory=dict)
    beta: dict[int, sp.Matrix] = field(default_factory=dict)
    z: dict[int, sp.Matrix] = field(default_factory=dict)
    a: dict[int, sp.Matrix] = field(default_factory=dict)
    #: The dropout mask D^l (n_l x m, one symbol per unit and example) of each layer
    #: with dropout (absent otherwise).
    mask: dict[int, sp.Matrix] = field(default_factory=dict)

    def ones(self) -> sp.Matrix:
        """The 1 x m row of ones that broadcasts a bias over the examples."""
        return sp.ones(1, self.m)

    def affine(self, layer: int, prev: sp.Matrix) -> sp.Matrix:
        """z^l from the previous activations ``prev`` (n_(l-1) x k): W^l prev + b^l 1^T, or
        for a batch-normalized layer :meth:`normalize` of W^l prev (over the k columns)."""
        if layer in self.gamma:
            return self.normalize(layer, self.W[layer] * prev)
        return self.W[layer] * prev + self.b[layer] * sp.ones(1, prev.cols)

    def statistics(self, u: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix]:
        """The batch mean and biased variance of each row of ``u`` (units x k), n x 1 each,
        by :func:`chainrule.derive.batch_norm.batch_mean` and ``batch_variance``."""
        from chainrule.derive import batch_norm

        mean = sp.Matrix(u.rows, 1, lambda j, _: batch_norm.batch_mean(list(u[j, :])))
        var = sp.Matrix(
            u.rows, 1, lambda j, _: batch_norm.batch_variance(list(u[j, :]), mean[j, 0])
        )
        return mean, var

    def normalized(self, u: sp.Matrix) -> sp.Matrix:
        """xhat = (u - mean) / sqrt(var + eps), per unit over the columns of ``u``."""
        from chainrule.derive import batch_norm

        mean, var = self.statistics(u)
        return sp.Matrix(
            u.rows, u.cols, lambda j, i: batch_norm.normalize(u[j, i], mean[j, 0], var[j, 0])
        )

    def normalize(self, layer: int, u: sp.Matrix) -> sp.Matrix:
        """z^l = gamma^l xhat + beta^l of a batch-normalized layer at weighted sums ``u``."""
        from chainrule.derive import batch_norm

        xhat, gamma, beta = self.normalized(u), self.gamma[layer], self.beta[layer]
        return sp.Matrix(
            u.rows,
            u.cols,
            lambda j, i: batch_norm.scale_shift(gamma[j, 0], xhat[j, i], beta[j, 0]),
        )

    def activate(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """The activation of ``layer`` applied to a matrix of weighted inputs."""
        row = ACTIVATIONS.get(self.spec.layers[layer - 1].activation)
        if row is not None and row.expr is None:
            return columnwise(softmax, z)
        from chainrule.derive.layers import activation_expr

        template = activation_expr(self.spec.layers[layer - 1].activation)
        return z.applyfunc(lambda v: self.apply(template, v))

    def dropped(self, layer: int, own: sp.Matrix) -> sp.Matrix:
        """``own`` (f(z^l), n_l x k with k <= m) times the layer's dropout mask elementwise
        (its first k columns); ``own`` itself when the layer has no mask."""
        if layer not in self.mask:
            return own
        return own.multiply_elementwise(self.mask[layer][:, : own.cols])

    def example_costs(self, out: sp.Matrix) -> list[sp.Expr]:
        """Per-example cost sum_j c(a^L_j, y_j) for each column of ``out``."""
        c = COSTS[self.spec.cost].expr
        return [
            sp.Add(
                *(c.xreplace({COST_A: out[j, i], COST_Y: self.y[j, i]}) for j in range(out.rows))
            )
            for i in range(out.cols)
        ]

    def batch_cost(self, out: sp.Matrix) -> sp.Expr:
        """(1/m) sum over examples of the per-example cost."""
        return sp.Add(*self.example_costs(out)) / self.m

    @property
    def cost(self) -> sp.Expr:
        """The batch cost of the network's own output a^L, with the spec's L2/L1 penalty
        on every weight (:mod:`chainrule.derive.penalty`; none when both are 0)."""
        from chainrule.derive import penalty

        spec = self.spec
        element = penalty.with_values(penalty.penalty_element(spec.l2, spec.l1), spec.l2, spec.l1)
        total = sp.Add(
            *(element.xreplace({penalty.WEIGHT: w}) for layer in self.W.values() for w in layer)
        )
        return self.batch_cost(self.a[self.spec.depth]) + total


def scalar_batch(
    spec: Spec,
    m: int = 1,
    *,
    width: int | None = None,
    apply: Apply = _replace_x,
    targets_sum_to_one: bool = False,
    indexed: bool | None = None,
) -> ScalarBatch:
    """Build the forward network of ``spec`` over ``m`` examples.

    Parameters
    ----------
    spec : Spec
        The network.
    m : int
        Number of examples (columns of x, y, z^l, a^l).
    width : int, optional
        Cap on every layer's width (a narrower witness of a wide network).
    apply : callable
        ``apply(template, value)`` applies an elementwise activation (an expression in
        x) to one weighted input; the default substitutes x.
    targets_sum_to_one : bool
        Write the last target of each example as 1 minus the others (for a derivation
        that assumes sum_j y_j = 1).
    indexed : bool, optional
        Suffix each per-example symbol with its example index ``_i`` (x_0_2); the
        default is True when m > 1.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> batch = scalar_batch(preset("cheatsheet-relu"), 2)
    >>> batch.x
    Matrix([[x_0_0, x_0_1]])
    >>> batch.z[1]
    Matrix([[w1_0_0*x_0_0, w1_0_0*x_0_1]])
    """
    sym = naming.symbol
    indexed = m > 1 if indexed is None else indexed
    n = tuple(size if width is None else min(size, width) for size in spec.sizes)
    big_l = spec.depth

    def entry(name: str, i: int) -> sp.Symbol:
        return sym(f"{name}_{i}" if indexed else name)

    x = sp.Matrix(n[0], m, lambda k, i: entry(naming.input_entry(k), i))
    y = sp.Matrix(n[big_l], m, lambda j, i: entry(naming.target_entry(j), i))
    if targets_sum_to_one:
        for i in range(m):
            y[n[big_l] - 1, i] = 1 - sum(y[j, i] for j in range(n[big_l] - 1))
    weights, biases = {}, {}
    for layer in range(1, big_l + 1):
        weights[layer] = sp.Matrix(
            n[layer], n[layer - 1], lambda j, k, ly=layer: sym(naming.weight_entry(ly, j, k))
        )
        biases[layer] = (
            sp.Matrix(n[layer], 1, lambda j, _, ly=layer: sym(naming.bias_entry(ly, j)))
            if spec.layers[layer - 1].bias
            else sp.zeros(n[layer], 1)
        )
    batch = ScalarBatch(spec, m, n, x, y, weights, biases, apply)
    for layer in spec.batch_norm_layers:
        batch.gamma[layer] = sp.Matrix(
            n[layer], 1, lambda j, _, ly=layer: sym(naming.scale_entry(ly, j))
        )
        batch.beta[layer] = sp.Matrix(
            n[layer], 1, lambda j, _, ly=layer: sym(naming.shift_entry(ly, j))
        )
    batch.a[0] = x
    for layer in range(1, big_l + 1):
        if spec.layers[layer - 1].dropout:  # inverted dropout: a^l = D^l * f(z^l)
            batch.mask[layer] = sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: entry(naming.dropout_mask_entry(ly, j), i)
            )
        batch.z[layer] = batch.affine(layer, batch.a[layer - 1])
        batch.a[layer] = batch.dropped(layer, batch.activate(layer, batch.z[layer]))
        source = spec.layers[layer - 1].skip_from
        if source is not None:  # a residual connection: a^l = f(z^l) + a^k
            batch.a[layer] = batch.a[layer] + batch.a[source]
    return batch
