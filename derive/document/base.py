"""Shared pieces of the section writers: LaTeX helpers and the per-derivation state."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from chainrule.derive import penalty
from chainrule.derive.document.text import to_unicode
from chainrule.derive.document.witness import WITNESS_WIDTH, WitnessNetwork, at, witness
from chainrule.derive.layers import (
    LOGP,
    MASK,
    A,
    Y,
    Z,
    activation_expr,
    derive_network,
    dropout_factor,
    tidy,
)
from chainrule.derive.notation import notation
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS

#: Colour of the factors a layer shares with the layer above (memoized terms).
SHARED_COLOR = "teal"


def _tex(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    """SymPy's LaTeX of ``expr`` with the layer-level symbols named by the notation."""
    return sp.latex(expr, symbol_names=names)


def _has_product(expr: sp.Basic) -> bool:
    """True when ``expr`` holds a product of two or more non-numeric factors."""
    return any(
        isinstance(e, sp.Mul) and len(e.as_coeff_mul()[1]) > 1 for e in sp.preorder_traversal(expr)
    )


def odot_tex(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    r"""LaTeX of ``expr`` over vectors or matrices: each product of factors written with
    the elementwise product ``\odot`` (a quotient's parts too), as a product of
    vectors is elementwise.

    Examples
    --------
    >>> a, y = sp.symbols("a y")
    >>> print(odot_tex(a * (1 - a) * (a - y), {}))
    a \odot \left(1 - a\right) \odot \left(a - y\right)
    """
    if not _has_product(expr):
        return _tex(expr, names)
    if isinstance(expr, sp.Add):
        terms = [odot_tex(term, names) for term in expr.as_ordered_terms()]
        out = terms[0]
        for term in terms[1:]:
            out = plus(out, term)
        return out
    if not isinstance(expr, sp.Mul):
        return _tex(expr, names)
    coeff, factors = expr.as_coeff_mul()
    over = [f for f in factors if f.is_Pow and f.exp.is_negative]
    num = [f for f in factors if f not in over]
    under = [f.base ** (-f.exp) for f in over]

    def joined(parts: list[sp.Expr], alone: bool) -> str:
        shown = [
            f"\\left({_tex(f, names)}\\right)"
            if isinstance(f, sp.Add) and (len(parts) > 1 or not alone)
            else _tex(f, names)
            for f in parts
        ]
        return " \\odot ".join(shown) or "1"

    if under:
        body = f"\\frac{{{joined(num, True)}}}{{{joined(under, True)}}}"
    else:
        body = joined(num, coeff == 1)
    if coeff == -1:
        return f"- {body}"
    return body if coeff == 1 else f"{_tex(coeff, names)} {body}"


def plus(first: str, second: str) -> str:
    """``first + second`` in LaTeX, written ``first - rest`` when ``second`` is negated.

    Examples
    --------
    >>> plus("a", "- b c"), plus("a", "b")
    ('a - b c', 'a + b')
    """
    rest = second.lstrip()
    if rest.startswith("-"):
        return f"{first} - {rest[1:].lstrip()}"
    return f"{first} + {second}"


def _shown(expr: sp.Expr) -> sp.Expr:
    """The factored form a reader expects: 2(a - y) rather than 2a - 2y."""
    return expr if expr.has(sp.Piecewise) else sp.factor_terms(tidy(expr))


def _plain(latex: str) -> str:
    """LaTeX with sized parentheses made plain, to compare two printed forms."""
    return latex.replace("\\left(", "(").replace("\\right)", ")").replace(" ", "")


def _same_text(latex: str) -> str:
    """The printed form of ``latex`` with spacing dropped: two LaTeX spellings of one
    formula (``\\tanh`` and ``\\operatorname{tanh}``) compare equal, so no ``x = x`` is shown."""
    return to_unicode(latex).replace(" ", "")


def _color(body: str) -> str:
    return f"\\textcolor{{{SHARED_COLOR}}}{{{body}}}"


def _activation_words(name: str) -> str:
    """A table name as is; a custom activation as SymPy's LaTeX of the parsed expression."""
    if name in ACTIVATIONS:
        return name
    return "$" + sp.latex(activation_expr(name)) + "$"


@dataclass(frozen=True)
class _Factor:
    """One factor of a chain-rule product: its ratio form and its evaluated form."""

    ratio: str
    value: str
    shared: bool = False
    summation: str = ""


class SectionWriterBase:
    """What every section writer of one derivation (one spec, one notation) shares."""

    def __init__(self, spec: Spec, notation_name: str, width: int = WITNESS_WIDTH) -> None:
        self.spec = spec
        self.width = width
        self.nota = notation(notation_name, spec)
        self.d = derive_network(spec)
        self.example_net = witness(spec, 1, width)
        self.depth = spec.depth
        self.forward_order = notation_name == "3b1b"
        self.sep = " \\cdot " if notation_name == "cheatsheet" else " \\, "
        self.dcda = _shown(self.d.output.dcost_da)

    # -- L2/L1 regularization -------------------------------------------------------------
    def penalty_at(self, weight: sp.Expr) -> sp.Expr:
        """The penalty's term of dC/dw at one weight, by SymPy's diff, with the spec's
        coefficients (0 without regularization; see :mod:`chainrule.derive.penalty`)."""
        spec = self.spec
        slope = penalty.penalty_derivative(penalty.penalty_element(spec.l2, spec.l1))
        return penalty.with_values(slope, spec.l2, spec.l1).xreplace({penalty.WEIGHT: weight})

    @property
    def penalty_names(self) -> dict[sp.Symbol, str]:
        """The coefficients' LaTeX (see :func:`chainrule.derive.penalty.latex_names`)."""
        return penalty.latex_names(self.nota.name)

    def penalty_tex(self, weight: str) -> str:
        """`` + (the penalty's term of dC/dw)`` in LaTeX at weight ``weight`` ('' without);
        for a matrix, sign is taken entry by entry."""
        element = penalty.penalty_element(self.spec.l2, self.spec.l1)
        if element == 0:
            return ""
        names = {penalty.WEIGHT: weight, **self.penalty_names}
        return " + " + _tex(penalty.penalty_derivative(element), names)

    def penalty_cost_tex(self, weight: str | None = None, over: str = "\\sum_{l,j,k}") -> str:
        """`` + (the penalty)`` summed over every weight (``weight``, default w^l_jk in the
        notation; ``over`` the sum's LaTeX); '' without regularization."""
        element = penalty.penalty_element(self.spec.l2, self.spec.l1)
        if element == 0:
            return ""
        weight = self.nota.w("l", "j", "k") if weight is None else weight
        names = {penalty.WEIGHT: weight, **self.penalty_names}
        return "".join(f" + {over} {_tex(t, names)}" for t in sp.Add.make_args(element))

    def penalty_words(self) -> str:
        """One sentence naming the penalty's coefficients ('' without regularization)."""
        spec = self.spec
        if not spec.regularized:
            return ""
        words = (
            " The cost adds the L2/L1 penalty of every weight (never a bias), with the "
            f"spec's l2 = {spec.l2!r} and l1 = {spec.l1!r}"
        )
        if self.nota.name == "nielsen":
            return words + (
                " (lambda_1 is l1; Nielsen's chapter 3 writes the L2 term as lambda/(2n) "
                "times the sum of the squared weights over n training examples: his lambda/n "
                "is the lambda here, l2)."
            )
        return words + " (lambda_2 is l2, lambda_1 is l1)."

    def penalty_sum(self, net: WitnessNetwork) -> sp.Expr:
        """The penalty over every weight of the witness ``net`` (0 without one)."""
        spec = self.spec
        element = penalty.with_values(penalty.penalty_element(spec.l2, spec.l1), spec.l2, spec.l1)
        return sp.Add(
            *(element.xreplace({penalty.WEIGHT: w}) for layer in net.W.values() for w in layer)
        )

    def penalty_update_tex(self, weight: str) -> str:
        """`` - eta (the penalty's term of dC/dw)`` of a gradient-descent step ('' without)."""
        extra = self.penalty_tex(weight)
        return f" - \\eta \\left({extra[3:]}\\right)" if extra else ""

    # -- small pieces ------------------------------------------------------------------
    def names(self, layer: int, index: str | None) -> dict[sp.Symbol, str]:
        """LaTeX names of the layer-level symbols Z, A, Y, LOGP for one unit of ``layer``."""
        nota = self.nota
        a = nota.a(layer, index)
        return {Z: nota.z(layer, index), A: a, Y: nota.y(index), LOGP: f"\\log {a}"}

    def instances(self, layer: int) -> list[tuple[int, int]]:
        """Witness unit pairs (j, k) on which a per-weight equation of ``layer`` is checked."""
        n = self.example_net.n
        first, last = (0, 0), (n[layer] - 1, n[layer - 1] - 1)
        return [first] if first == last else [first, last]

    def units(self, layer: int) -> list[int]:
        """Witness units on which a per-unit equation of ``layer`` is checked."""
        return sorted({0, self.example_net.n[layer] - 1})

    def hidden_error_title(self, layer: int, words: str) -> str:
        """The title of a hidden layer's error: the cheatsheet calls it a hidden layer error."""
        if self.nota.name == "cheatsheet":
            return f"Hidden layer error, layer {self.nota.number(layer)}"
        return f"{words} {self.nota.number(layer)}"

    def join(self, parts: list[str]) -> str:
        return self.sep.join(p for p in parts if p)

    def dcda_tex(self, index: str | None, factor: bool = False) -> str:
        """dC/da^L as SymPy prints it; in parentheses when it is a sum used as a factor."""
        text = _tex(self.dcda, self.names(self.depth, index))
        return f"\\left({text}\\right)" if factor and isinstance(self.dcda, sp.Add) else text

    def sprime_at(self, layer: int, z: sp.Expr) -> sp.Expr:
        return at(self.d.activations[layer - 1].derivative, z)

    # -- dropout -------------------------------------------------------------------------
    def dropped(self, layer: int) -> bool:
        """True when ``layer`` (1..L) applies inverted dropout to its output in training."""
        return 1 <= layer <= self.depth and bool(self.spec.layers[layer - 1].dropout)

    def mask_factor(self, layer: int, unit: int, net: WitnessNetwork | None = None) -> sp.Expr:
        """What the mask multiplies f'(z^l_j) by in da^l_j/dz^l_j, at unit ``unit`` of the
        first example: SymPy's :func:`~chainrule.derive.layers.dropout_factor` at the
        witness's mask entry (1 for a layer without dropout)."""
        net = self.example_net if net is None else net
        if not self.dropped(layer):
            return sp.Integer(1)
        return dropout_factor().xreplace({MASK: net.mask[layer][unit, 0]})

    def mask_factors(self, layer: int, net: WitnessNetwork) -> sp.Matrix:
        """The mask factor of every unit and example of ``net`` (ones without dropout)."""
        if not self.dropped(layer):
            return sp.ones(net.n[layer], net.m)
        return net.mask[layer].applyfunc(lambda v: dropout_factor().xreplace({MASK: v}))

    def masked_sprime_tex(self, layer: int, index: str | None = None, vector: bool = False) -> str:
        """f'(z^l) in the notation, preceded by the mask D^l at a dropout layer (joined by
        the notation's product, elementwise for ``vector``)."""
        sprime = self.nota.sprime(layer, index)
        if not self.dropped(layer):
            return sprime
        joint = f" {self.nota.times(layer)} " if vector else self.sep
        return f"{self.nota.mask(layer, index)}{joint}{sprime}"

    # -- residual connections ------------------------------------------------------------
    def written_out(self, layer: int) -> bool:
        """True when every path from a weight of ``layer`` to C runs through the layers
        above it one by one: no residual connection leaves layer ``layer`` or above it
        (below a skip's source the paths split, see :meth:`ChainSection.two_paths_step`)."""
        return not any(k >= layer for k in self.spec.skips.values())

    def fed_by(self, layer: int) -> list[int]:
        """The layers that take a residual connection from ``layer``, in order."""
        return sorted(d for d, k in self.spec.skips.items() if k == layer)

    def in_order(self, backward: list[str]) -> list[str]:
        """Factors listed from the cost back, reversed for a notation that reads forward."""
        return backward if not self.forward_order else list(reversed(backward))
