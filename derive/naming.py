"""The one place that names things: identifiers emitted in code and their LaTeX forms.

Every symbol chainrule creates gets its name here, and a SymPy symbol's name is the
identifier that will be generated, so no printer ever renames anything. The table
follows Nielsen's chapter 2: layers are numbered 1..L, ``a0`` is the input ``x``.

==================  ===============  =============================
math                identifier       LaTeX
==================  ===============  =============================
W^l, w^l_jk         ``W2``, ``w2_1_0``  ``W^{2}``, ``w^{2}_{10}``
b^l, z^l, a^l       ``b2``, ``z2``, ``a2``  ``b^{2}``, ``z^{2}``, ``a^{2}``
delta^l             ``delta2``        ``\\delta^{2}``
sigma'(z^l)         ``sp2``           ``\\sigma'(z^{2})``
dC/dW^l, dC/db^l    ``dC_dW2``        ``\\frac{\\partial C}{\\partial W^{2}}``
dC/da^l (residual)  ``dC_da2``        ``\\frac{\\partial C}{\\partial a^{2}}``
sigma(z^l) (resid.) ``h2``            ``\\sigma(z^{2})``
batch norm          ``u2``, ``mean2``, ``var2``, ``xhat2``, ``gamma2``, ``beta2``
dC/du^l (b. norm)   ``deltau2``       (the three-term error)
CSE temporaries     ``_t0``           ``t_{0}``
==================  ===============  =============================
"""

from __future__ import annotations

import sympy as sp

#: Reserved prefix of common-subexpression temporaries; no other name starts with it.
TEMP_PREFIX = "_t"


def weight(layer: int) -> str:
    """Identifier of the weight matrix of ``layer`` (1..L), e.g. ``W2``."""
    return f"W{layer}"


def bias(layer: int) -> str:
    """Identifier of the bias vector of ``layer``, e.g. ``b2``."""
    return f"b{layer}"


def weighted_input(layer: int) -> str:
    """Identifier of z^l, e.g. ``z2``."""
    return f"z{layer}"


def activation(layer: int) -> str:
    """Identifier of a^l; ``a0`` is the input x."""
    return f"a{layer}"


def delta(layer: int) -> str:
    """Identifier of delta^l = dC/dz^l, e.g. ``delta2``."""
    return f"delta{layer}"


def sigma_prime(layer: int) -> str:
    """Identifier of sigma'(z^l), e.g. ``sp2``."""
    return f"sp{layer}"


def grad(param: str) -> str:
    """Identifier of the gradient of a parameter, e.g. ``dC_dW2`` for ``W2``."""
    return f"dC_d{param}"


def weight_entry(layer: int, j: int, k: int) -> str:
    """Identifier of the scalar w^l_jk (j in layer l, k in layer l-1), e.g. ``w2_1_0``."""
    return f"w{layer}_{j}_{k}"


def bias_entry(layer: int, j: int) -> str:
    """Identifier of the scalar b^l_j, e.g. ``b2_1``."""
    return f"b{layer}_{j}"


def scale_entry(layer: int, j: int) -> str:
    """Identifier of the scalar gamma^l_j of a batch-normalized layer, e.g. ``gamma2_1``."""
    return f"{scale(layer)}_{j}"


def shift_entry(layer: int, j: int) -> str:
    """Identifier of the scalar beta^l_j of a batch-normalized layer, e.g. ``beta2_1``."""
    return f"{shift(layer)}_{j}"


def input_entry(k: int) -> str:
    """Identifier of the scalar input x_k."""
    return f"x_{k}"


def dropout_mask_entry(layer: int, j: int) -> str:
    """Identifier of the scalar dropout mask entry D^l_j of unit j, e.g. ``D1_0``: a
    constant of one training step (the masks are drawn once per step)."""
    return f"{dropout_mask(layer)}_{j}"


def target_entry(j: int) -> str:
    """Identifier of the scalar target y_j."""
    return f"y_{j}"


def temp(i: int) -> str:
    """Identifier of the i-th CSE temporary, e.g. ``_t0``."""
    return f"{TEMP_PREFIX}{i}"


_LATEX_PATTERNS: tuple[tuple[str, str], ...] = (
    ("dC_da", r"\frac{\partial C}{\partial a^{%s}}"),
    ("dC_dW", r"\frac{\partial C}{\partial W^{%s}}"),
    ("dC_db", r"\frac{\partial C}{\partial b^{%s}}"),
    ("delta", r"\delta^{%s}"),
    ("sp", r"\sigma'(z^{%s})"),
    ("h", r"\sigma(z^{%s})"),
    ("W", "W^{%s}"),
    ("b", "b^{%s}"),
    ("z", "z^{%s}"),
    ("a", "a^{%s}"),
    ("D", "D^{%s}"),
)


def latex(name: str) -> str:
    """LaTeX form of an identifier issued by this module.

    Examples
    --------
    >>> latex("W2"), latex("w2_1_0"), latex("delta3"), latex("_t4"), latex("D1_0")
    ('W^{2}', 'w^{2}_{10}', '\\\\delta^{3}', 't_{4}', 'D^{1}_{0}')
    """
    if name.startswith(TEMP_PREFIX) and name[len(TEMP_PREFIX) :].isdigit():
        return f"t_{{{name[len(TEMP_PREFIX) :]}}}"
    parts = name.split("_")
    if len(parts) == 3 and parts[0][:1] in "wb" and parts[0][1:].isdigit():
        return f"{parts[0][0]}^{{{parts[0][1:]}}}_{{{parts[1]}{parts[2]}}}"
    if len(parts) == 2 and parts[0][:1] in "wbzD" and parts[0][1:].isdigit():
        return f"{parts[0][0]}^{{{parts[0][1:]}}}_{{{parts[1]}}}"
    if len(parts) == 2 and parts[0] in ("x", "y") and parts[1].isdigit():
        return f"{parts[0]}_{{{parts[1]}}}"
    for prefix, pattern in _LATEX_PATTERNS:
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.isdigit():
            return pattern % rest
    return name


def symbol(name: str, **assumptions: bool) -> sp.Symbol:
    """A SymPy symbol whose name is the identifier ``name`` (real by default)."""
    assumptions.setdefault("real", True)
    return sp.Symbol(name, **assumptions)


def log_output(layer: int) -> str:
    """Identifier of log(a^l) for a softmax layer (the log-softmax), e.g. ``logp2``."""
    return f"logp{layer}"


def log_complement(layer: int) -> str:
    """Identifier of log(1 - a^l) for a softmax layer, e.g. ``log1ma2``."""
    return f"log1ma{layer}"


def other_units(layer: int) -> str:
    """Identifier of the other-units term of a softmax layer's delta, e.g. ``rest2``.

    rest_j = sum over units k != j of v_k a_j / (1 - a_k): the chain rule through
    log(1 - a_k) (see :class:`chainrule.derive.layers.ComplementJVP`).
    """
    return f"rest{layer}"


def mask(layer: int) -> str:
    """Identifier of the cached comparisons (e.g. z > 0 of a ReLU) of layer l, e.g. ``mask2``."""
    return f"mask{layer}"


def unit_sum(layer: int) -> str:
    """Identifier of the per-example sum over the units of layer l, e.g. ``s2``."""
    return f"s{layer}"


def linear(layer: int) -> str:
    """Identifier of u^l = W^l a^(l-1) of a batch-normalized layer, e.g. ``u2``."""
    return f"u{layer}"


def batch_mean(layer: int) -> str:
    """Identifier of the batch mean of u^l per unit, e.g. ``mean2``."""
    return f"mean{layer}"


def batch_var(layer: int) -> str:
    """Identifier of the biased batch variance of u^l per unit, e.g. ``var2``."""
    return f"var{layer}"


def normalized(layer: int) -> str:
    """Identifier of xhat^l = (u^l - mean^l) / sqrt(var^l + eps), e.g. ``xhat2``."""
    return f"xhat{layer}"


def scale(layer: int) -> str:
    """Identifier of a batch-norm layer's scale parameter gamma^l, e.g. ``gamma2``."""
    return f"gamma{layer}"


def shift(layer: int) -> str:
    """Identifier of a batch-norm layer's shift parameter beta^l, e.g. ``beta2``."""
    return f"beta{layer}"


def inverse_std(layer: int) -> str:
    """Identifier of 1 / sqrt(var^l + eps) per unit, e.g. ``rstd2`` (scalar batch level)."""
    return f"rstd{layer}"


def linear_delta(layer: int) -> str:
    """Identifier of the error at u^l, dC/du^l (per example), e.g. ``deltau2``."""
    return f"deltau{layer}"


def running_mean(layer: int) -> str:
    """Key of a batch-norm layer's running mean in the module's state, e.g. ``running_mean2``."""
    return f"running_mean{layer}"


def running_var(layer: int) -> str:
    """Key of a batch-norm layer's running (unbiased) variance in the state."""
    return f"running_var{layer}"


def activation_gradient(layer: int) -> str:
    """Identifier of g^l = dC/da^l, stored for a layer a residual connection touches,
    e.g. ``dC_da2``: a skip's source sums it from the layers it feeds."""
    return f"dC_da{layer}"


def own_activation(layer: int) -> str:
    """Identifier of sigma(z^l) of a layer with a residual connection, e.g. ``h2``:
    there a^l = sigma(z^l) + a^k, and sigma'(z^l) is computed from this cached value."""
    return f"h{layer}"


def dropout_mask(layer: int) -> str:
    """Identifier of the dropout mask D^l = r^l / (1 - p) of layer l, e.g. ``D2``: there
    a^l = D^l * sigma(z^l), with sigma(z^l) cached as ``h2`` for sigma'(z^l)."""
    return f"D{layer}"


#: Identifiers of the batch arrays, the example count and the cost.
INPUT = "x"
TARGET = "y"
BATCH = "m"
COST = "C"


#: Per-layer identifier prefixes and the quantity each names, longest prefix first so
#: that ``log1ma2`` is not read as ``a``-something.
_KINDS: tuple[tuple[str, str], ...] = (
    ("dC_dgamma", "scale_gradient"),
    ("dC_dbeta", "shift_gradient"),
    ("deltau", "linear_delta"),
    ("gamma", "scale"),
    ("beta", "shift"),
    ("mean", "batch_mean"),
    ("var", "batch_var"),
    ("xhat", "normalized"),
    ("u", "linear"),
    ("dC_da", "activation_gradient"),
    ("dC_dW", "weight_gradient"),
    ("dC_db", "bias_gradient"),
    ("log1ma", "log_complement"),
    ("logp", "log_output"),
    ("delta", "delta"),
    ("rest", "other_units"),
    ("mask", "mask"),
    ("sp", "sigma_prime"),
    ("W", "weight"),
    ("b", "bias"),
    ("z", "weighted_input"),
    ("a", "activation"),
    ("s", "unit_sum"),
    ("h", "own_activation"),
    ("D", "dropout_mask"),
)


def parse(name: str) -> tuple[str, int | None]:
    """The quantity an identifier issued here names, and its layer (None when it has none).

    Examples
    --------
    >>> parse("log1ma2"), parse("dC_dW3"), parse("delta1"), parse("C")
    (('log_complement', 2), ('weight_gradient', 3), ('delta', 1), ('cost', None))
    """
    fixed = {COST: "cost", INPUT: "input", TARGET: "target", BATCH: "batch"}
    if name in fixed:
        return fixed[name], None
    for prefix, kind in _KINDS:
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.isdigit():
            return kind, int(rest)
    if name.startswith(TEMP_PREFIX) and name[len(TEMP_PREFIX) :].isdigit():
        return "temporary", None
    raise ValueError(f"{name!r} is not a per-layer identifier issued by chainrule.derive.naming")


def kind(name: str) -> str:
    """The quantity an identifier names, e.g. ``delta`` for ``delta2``."""
    return parse(name)[0]


def layer_of(name: str) -> int:
    """The layer of a per-layer identifier, e.g. 2 for ``log1ma2``."""
    layer = parse(name)[1]
    if layer is None:
        raise ValueError(f"{name!r} belongs to no layer")
    return layer
