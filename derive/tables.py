"""Activations and costs: one row each, holding every fact about the function.

A row never holds a derivative. Every derivative chainrule uses is computed from
these expressions by ``sympy.diff``; adding an activation means adding one row
here (or passing an expression string, see :mod:`chainrule.derive.exprparse`).
Besides the expression, a row carries what its consumers read instead of testing
names: the activation's output range and kinks, the cost's required output and
target ranges, and the framework layers an importer maps to it. How each
elementary function in an expression is printed, evaluated and converted is in
:data:`chainrule.derive.functions.FUNCTION_ROWS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from chainrule.derive.exprparse import X
from chainrule.derive.functions import sigmoid, softplus

#: Per-element output and target symbols of a cost row.
A = sp.Symbol("a", real=True)
Y = sp.Symbol("y", real=True)


@dataclass(frozen=True)
class Range:
    """An interval of the real line; ``simplex`` adds "each column sums to one".

    Examples
    --------
    >>> UNIT.text, Range(0, math.inf, closed_low=True).text
    ('(0, 1)', '[0, inf)')
    """

    low: float = -math.inf
    high: float = math.inf
    closed_low: bool = False
    closed_high: bool = False
    simplex: bool = False

    @property
    def text(self) -> str:
        """The interval as a reader writes it, e.g. ``(0, 1)`` or ``[0, 1]``."""
        left = "[" if self.closed_low and math.isfinite(self.low) else "("
        right = "]" if self.closed_high and math.isfinite(self.high) else ")"
        body = f"{left}{_num(self.low)}, {_num(self.high)}{right}"
        return body + ", each column summing to one" if self.simplex else body

    def within(self, other: Range) -> bool:
        """True when every value of this range lies in ``other`` (and sums to one if it must)."""
        if other.simplex and not self.simplex:
            return False
        low_ok = self.low > other.low or (
            self.low == other.low and (other.closed_low or not self.closed_low)
        )
        high_ok = self.high < other.high or (
            self.high == other.high and (other.closed_high or not self.closed_high)
        )
        return low_ok and high_ok

    def holds(self, values: Any) -> bool:
        """True when every entry of the array ``values`` lies in the interval."""
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        low = v >= self.low if self.closed_low else v > self.low
        high = v <= self.high if self.closed_high else v < self.high
        return bool(np.all(low & high & np.isfinite(v)))


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


REAL = Range()
UNIT = Range(0, 1)
UNIT_CLOSED = Range(0, 1, closed_low=True, closed_high=True)
PROBABILITIES = Range(0, 1, closed_low=True, closed_high=True, simplex=True)


@dataclass(frozen=True)
class Match:
    """A framework layer (PyTorch module or Keras layer class) that computes an activation.

    ``settings`` are the attributes (PyTorch) or config keys (Keras) it must have, with
    their required values; a float32-rounded float matches the value it rounds from.
    ``aliases`` are older config keys for a setting (Keras 2's ``alpha``); ``hint`` is
    the fix said when a setting differs.
    """

    cls: str
    settings: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    hint: str = ""


@dataclass(frozen=True)
class ActivationRow:
    """One activation: its expression in ``x`` (None for softmax) and its facts.

    ``output`` is the range of its values; ``kinks`` the points x where its derivative
    jumps; ``keras`` the Keras activation names, ``keras_layer`` and ``torch`` the
    layers that compute it (the names of Keras layer classes and ``torch.nn`` modules).
    """

    name: str
    expr: sp.Expr | None
    latex: str
    output: Range
    kinks: tuple[float, ...] = ()
    keras: tuple[str, ...] = ()
    keras_layer: Match | None = None
    torch: Match | None = None
    #: Keras activation names that look like this one but compute another function:
    #: (name, why it is refused, the fix), as an importer says it.
    keras_refused: tuple[tuple[str, str, str], ...] = ()

    @property
    def unicode(self) -> str:
        """The name a plain-text derivation uses."""
        return self.name


@dataclass(frozen=True)
class CostRow:
    """One cost: the per-element cost c(a, y), summed over outputs, averaged over examples.

    ``output`` is the range the output activation's values must lie in for c to be
    defined; ``targets`` the range the targets y must lie in; ``min_outputs`` the
    fewest output units it takes.
    """

    name: str
    expr: sp.Expr
    latex: str
    output: Range = REAL
    targets: Range = REAL
    min_outputs: int = 1


#: PyTorch's SELU constants (torch.nn.SELU), to 32 significant digits.
SELU_SCALE = sp.Float("1.0507009873554804934193349852946", 32)
SELU_ALPHA = sp.Float("1.6732632423543772848170429916717", 32)

ACTIVATIONS: dict[str, ActivationRow] = {
    row.name: row
    for row in (
        ActivationRow(
            "sigmoid",
            sigmoid(X),
            r"\sigma(x) = \frac{1}{1 + e^{-x}}",
            UNIT,
            keras=("sigmoid",),
            torch=Match("Sigmoid"),
        ),
        ActivationRow(
            "tanh", sp.tanh(X), r"\tanh(x)", Range(-1, 1), keras=("tanh",), torch=Match("Tanh")
        ),
        ActivationRow(
            "relu",
            sp.Piecewise((X, X > 0), (0, True)),
            r"\max(0, x)",
            Range(0, math.inf, closed_low=True),
            kinks=(0.0,),
            keras=("relu",),
            torch=Match("ReLU"),
        ),
        ActivationRow(
            "leaky-relu",
            sp.Piecewise((X, X > 0), (X / 100, True)),
            r"\max(0.01\,x, x)",
            REAL,
            kinks=(0.0,),
            keras_refused=(
                (
                    "leaky_relu",
                    "the activation 'leaky_relu' has slope 0.2, not 0.01",
                    "use a LeakyReLU layer with negative_slope=0.01 (alpha=0.01 in Keras 2)",
                ),
            ),
            keras_layer=Match(
                "LeakyReLU",
                {"negative_slope": 0.01},
                {"negative_slope": "alpha"},
                "use negative_slope=0.01 (alpha=0.01 in Keras 2), or write the activation "
                "as an expression in a spec file",
            ),
            torch=Match("LeakyReLU", {"negative_slope": 0.01}, hint="use nn.LeakyReLU(0.01)"),
        ),
        ActivationRow(
            "softplus",
            softplus(X),
            r"\log(1 + e^{x})",
            Range(0, math.inf),
            keras=("softplus",),
            torch=Match(
                "Softplus",
                {"beta": 1.0, "threshold": 20.0},
                hint="use nn.Softplus() (beta=1, threshold=20), or write the activation as "
                "an expression such as softplus(2*x)/2",
            ),
        ),
        ActivationRow("linear", X, "x", REAL, keras=("linear",), torch=Match("Identity")),
        ActivationRow(
            "elu",
            sp.Piecewise((X, X > 0), (sp.exp(X) - 1, True)),
            r"x \text{ for } x > 0,\; e^{x} - 1 \text{ otherwise}",
            Range(-1, math.inf),
            keras=("elu",),
            keras_layer=Match("ELU", {"alpha": 1.0}, hint="use alpha=1.0"),
            torch=Match("ELU", {"alpha": 1.0}, hint="use nn.ELU() (alpha=1)"),
        ),
        ActivationRow(
            "selu",
            SELU_SCALE * sp.Piecewise((X, X > 0), (SELU_ALPHA * (sp.exp(X) - 1), True)),
            r"\lambda x \text{ for } x > 0,\; \lambda \alpha (e^{x} - 1) \text{ otherwise}",
            Range(-float(SELU_SCALE * SELU_ALPHA), math.inf),
            kinks=(0.0,),
            keras=("selu",),
            torch=Match("SELU"),
        ),
        ActivationRow(
            "gelu",
            X / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (X + sp.Rational(44715, 10**6) * X**3))),
            r"\tfrac{x}{2}\left(1 + \tanh\left(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\right)\right)",
            Range(-0.171, math.inf),
            keras_refused=(
                (
                    "gelu",
                    "Keras 'gelu' is the exact (erf) GELU, which chainrule does not support",
                    "chainrule's gelu is the tanh form x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 "
                    'x^3))): set activation = "gelu" in a spec file',
                ),
            ),
            torch=Match(
                "GELU",
                {"approximate": "tanh"},
                hint="use nn.GELU(approximate='tanh'), the tanh form "
                "x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); exact (erf) GELU is not supported",
            ),
        ),
        ActivationRow(
            "mish",
            X * sp.tanh(softplus(X)),
            r"x \tanh(\log(1 + e^{x}))",
            Range(-0.309, math.inf),
            keras=("mish",),
            torch=Match("Mish"),
        ),
        ActivationRow(
            "softmax",
            None,
            r"\frac{e^{z_j}}{\sum_k e^{z_k}}",
            Range(0, 1, simplex=True),
            keras=("softmax",),
        ),
    )
}

COSTS: dict[str, CostRow] = {
    row.name: row
    for row in (
        CostRow("quadratic", (A - Y) ** 2 / 2, r"\tfrac{1}{2}(a - y)^2"),
        CostRow("squared-error", (A - Y) ** 2, r"(a - y)^2"),
        CostRow(
            "binary-cross-entropy",
            -(Y * sp.log(A) + (1 - Y) * sp.log(1 - A)),
            r"-\left(y \log a + (1 - y) \log(1 - a)\right)",
            output=UNIT,
            targets=UNIT_CLOSED,
        ),
        CostRow(
            "cross-entropy",
            -Y * sp.log(A),
            r"-y \log a",
            output=Range(0, 1, simplex=True),
            targets=PROBABILITIES,
            min_outputs=2,
        ),
        CostRow(
            "huber",
            sp.Piecewise(((A - Y) ** 2 / 2, sp.Abs(A - Y) <= 1), (sp.Abs(A - Y) - sp.S.Half, True)),
            r"\tfrac{1}{2}(a - y)^2 \text{ if } |a - y| \le 1, |a - y| - \tfrac{1}{2} \text{ else}",
        ),
    )
}


def output_range(activation: str) -> Range:
    """The range of an activation's values: its row's, or the whole line for an expression."""
    row = ACTIVATIONS.get(activation)
    return row.output if row is not None else REAL
