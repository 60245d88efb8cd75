"""The notations a derivation can be written in: Nielsen's, 3Blue1Brown's, the cheatsheet's
and the course notation of the deep ReLU text (A^0 = X, dZ, dA, g).

A notation maps each mathematical object of a network (a weight w^l_jk, the weighted
input z^l_j, the layer error delta^l, a partial derivative, ...) to the LaTeX the
corresponding seed text uses for it. It never names identifiers in code: those come
from :mod:`chainrule.derive.naming`. Layers are numbered as the text numbers them:
Nielsen's book counts the input as layer 1 (a network of two weight layers has output
layer 3); the others count it as 0. Unit indices are dropped for layers of a single unit, as
the seeds do for their one-neuron chains (``w^{(L)}`` rather than ``w^{(L)}_{00}``).

================  ======================  ====================  ======================
object            ``nielsen``             ``3b1b``              ``cheatsheet``
================  ======================  ====================  ======================
weight (matrix)   ``w^{3}``               ``W^{(L)}``           ``W_o``, ``W_h``
weight entry      ``w^{3}_{jk}``          ``w^{(L)}_{jk}``      ``W_{o,kj}`` (rows)
input, output     ``x``, ``a^{3}``        ``x``, ``a^{(L)}``    ``X``, ``\\hat{y}``
hidden output     ``a^{2}``               ``a^{(L-1)}``         ``H``
layer error       ``\\delta^{3}``          ``dC_0/dz^{(L)}``     ``E_o``, ``E_h``
cost              ``C``                   ``C_0``               ``C``
derivative        ``\\frac{\\partial C}{\\partial w}``  (same)       ``C'(W_o)``
================  ======================  ====================  ======================
"""

from __future__ import annotations

from dataclasses import dataclass

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec

#: Names accepted by ``--notation``, the default first.
NOTATIONS: tuple[str, ...] = ("nielsen", "3b1b", "cheatsheet", "course")

#: Letters used for the unit index of layers above the one being differentiated.
_SUM_LETTERS = "prsuv"


@dataclass(frozen=True)
class Notation:
    """LaTeX for the objects of one network in one notation.

    Every method takes a layer number l (0..L, 0 being the input) and, for entries,
    index letters; an index is dropped when its layer has a single unit.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> notation("3b1b", preset("3b1b-chain")).w(3, "j", "k")
    'w^{(L)}'
    >>> notation("nielsen", preset("nielsen")).w(2, "j", "k")
    'w^{3}_{jk}'
    """

    name: str
    spec: Spec

    # -- structure ---------------------------------------------------------------
    @property
    def depth(self) -> int:
        """L, the number of layers with weights."""
        return self.spec.depth

    def size(self, layer: int) -> int:
        """Number of units of ``layer`` (0 is the input)."""
        return self.spec.sizes[layer]

    def _idx(self, layer: int | str, index: str | None) -> str | None:
        if isinstance(layer, str):
            return index
        return None if index is None or self.size(layer) == 1 else index

    def sum_letter(self, above: int, layer: int) -> str:
        """Index letter of ``layer`` when it is summed over, ``above`` layers up the chain."""
        if 1 <= above <= len(_SUM_LETTERS):
            return _SUM_LETTERS[above - 1]
        return f"i_{{{self.number(layer)}}}"

    @property
    def rows(self) -> bool:
        """True when examples are rows (Z = XW), as in the cheatsheet."""
        return self.spec.layout == "rows"

    # -- layer tags --------------------------------------------------------------
    @property
    def from_input_one(self) -> bool:
        """True when layers are numbered from the input as layer 1, as Nielsen's book does
        (the module, and the other notations, number the input 0)."""
        return self.name == "nielsen"

    def number(self, layer: int) -> int:
        """The number the notation gives ``layer`` (0 being the module's input layer).

        The cheatsheet's page numbers a deeper net's weight layers from 0 (``W_0`` takes
        ``X`` to ``Z_0``), so there the first layer with weights is layer 0 and the input
        has no number (-1); its two-layer form names the layers h and o and keeps 1 and 2.
        """
        if self.from_input_one:
            return layer + 1
        if self.name == "cheatsheet" and self.depth != 2:
            return layer - 1
        return layer

    def tag(self, layer: int | str) -> str:
        """The layer as written in superscripts: ``2``, ``(L-1)``; or a subscript tag.

        A string layer such as ``"l"`` or ``"l-1"`` is a generic layer.
        """
        if isinstance(layer, str):
            return f"({layer})" if self.name == "3b1b" else layer
        if self.name == "3b1b":
            offset = self.depth - layer
            return "(L)" if offset == 0 else f"(L-{offset})"
        if self.name == "cheatsheet":
            if self.depth == 2:
                return "o" if layer == self.depth else "h"
            # A deeper net as the page's memoized chain numbers it: W_0 takes X to Z_0, and
            # the output layer's weights are W_{L-1}.
            return str(self.number(layer))
        return str(self.number(layer))

    def _base(self, letter: str, layer: int | str, index: str | None) -> str:
        """``letter`` of ``layer`` with an optional unit index."""
        if self.name == "cheatsheet":
            sub = self.tag(layer)
            return f"{letter}_{{{sub},{index}}}" if index else f"{letter}_{{{sub}}}"
        sup = f"^{{{self.tag(layer)}}}"
        return f"{letter}{sup}_{{{index}}}" if index else f"{letter}{sup}"

    # -- objects -----------------------------------------------------------------
    def x(self, index: str | None = None) -> str:
        """The input (a^0)."""
        index = self._idx(0, index)
        letter = "X" if self.name == "cheatsheet" else "x"
        return f"{letter}_{{{index}}}" if index else letter

    def y(self, index: str | None = None) -> str:
        """The target."""
        index = self._idx(self.depth, index)
        return f"y_{{{index}}}" if index else "y"

    def a(self, layer: int | str, index: str | None = None) -> str:
        """The activation a^l (the input x for l = 0)."""
        if layer == 0:
            return self.x(index)
        index = self._idx(layer, index)
        if self.name == "cheatsheet":
            if isinstance(layer, str):
                return self._base("H", layer, index)
            if layer == self.depth:
                return f"\\hat{{y}}_{{{index}}}" if index else "\\hat{y}"
            if self.depth == 2:
                return f"H_{{{index}}}" if index else "H"
            return self._base("H", layer, index)
        return self._base("a", layer, index)

    def z(self, layer: int | str, index: str | None = None) -> str:
        """The weighted input z^l."""
        return self._base("Z" if self.name == "cheatsheet" else "z", layer, self._idx(layer, index))

    def b(self, layer: int | str, index: str | None = None) -> str:
        """The bias b^l."""
        return self._base("b", layer, self._idx(layer, index))

    def weight_matrix(self, layer: int) -> str:
        """The weight matrix W^l (w^l in Nielsen's book, which writes z^l = w^l a^{l-1} + b^l)."""
        return self._base("w" if self.name == "nielsen" else "W", layer, None)

    def w(self, layer: int | str, j: str | None, k: str | None) -> str:
        """The weight from unit k of layer l-1 to unit j of layer l."""
        below = f"{layer}-1" if isinstance(layer, str) else layer - 1
        kept_j, kept_k = self._idx(layer, j), self._idx(below, k)
        if (kept_j is None) == (kept_k is None):
            j, k = kept_j, kept_k
        else:
            # One end has a single unit: it keeps its unit number, so the index left
            # is never read in the other slot (w^4_{1j}, not w^4_{j}).
            j, k = kept_j or self.only_unit, kept_k or self.only_unit
        pair = "".join(i for i in ((k, j) if self.rows else (j, k)) if i)
        if self.name == "cheatsheet":
            return self._base("W", layer, pair or None)
        return self._base("w", layer, pair or None)

    def delta(self, layer: int | str, index: str | None = None) -> str:
        """The layer error delta^l = dC/dz^l (E in the cheatsheet; 3Blue1Brown names no
        letter for it and writes the ratio dC_0/dz^(L))."""
        if self.name == "3b1b":
            return self.partial(self.cost, self.z(layer, index))
        letter = {"cheatsheet": "E", "course": "dz"}.get(self.name, "\\delta")
        return self._base(letter, layer, self._idx(layer, index))

    def mask(self, layer: int | str, index: str | None = None) -> str:
        """The dropout mask D^l of a layer (one entry per unit, and per example in a batch),
        written with the layer's tag as the notation writes its other quantities."""
        return self._base("D", layer, self._idx(layer, index))

    @property
    def only_unit(self) -> str:
        """The number of the one unit of a single-unit layer (3Blue1Brown counts from 0)."""
        return "0" if self.name == "3b1b" else "1"

    @property
    def bp_labels(self) -> bool:
        """True when the notation names its equations BP1 to BP4 (Nielsen's book only)."""
        return self.name == "nielsen"

    def act_letter(self, layer: int | str) -> str:
        """The function symbol of a layer's activation.

        sigma only when the activation is the logistic function, so that sigma is never
        read as the logistic function where it is not; otherwise the table name (R for
        ReLU in the cheatsheet), or f for an activation given as an expression. A generic
        layer (a string such as ``"l"``) is sigma only when every layer with an
        activation is a sigmoid.
        """
        if isinstance(layer, str):
            # A softmax output is not the logistic function: then the generic layer is f.
            names = {ly.activation for ly in self.spec.layers}
            if names <= {"sigmoid"}:
                return "\\sigma"
            if self.name == "course":
                return "g"
            return "R" if self.name == "cheatsheet" and names == {"relu"} else "f"
        spec_layer = self.spec.layers[layer - 1]
        name = spec_layer.activation
        if name == "sigmoid":
            return "\\sigma"
        if self.name == "cheatsheet" and name == "relu":
            return "R"
        if spec_layer.is_custom:
            return "f"
        return f"\\operatorname{{{name}}}"

    def jacobian(self, layer: int) -> str:
        """J, the Jacobian of a softmax layer's activations by its weighted inputs, with the
        layer's tag (J^2, J^(L), or J_o as the cheatsheet writes its layers)."""
        if self.name == "cheatsheet":
            return f"J_{{{self.tag(layer)}}}"
        return f"J^{{{self.tag(layer)}}}"

    def sprime(self, layer: int | str, index: str | None = None) -> str:
        """sigma'(z^l): the derivative of the layer's activation at its weighted input."""
        return f"{self.act_letter(layer)}'({self.z(layer, index)})"

    @property
    def cost(self) -> str:
        """The cost of one example."""
        return "C_0" if self.name == "3b1b" else "C"

    def partial(self, num: str, den: str) -> str:
        """d num / d den: a fraction of partials, or prime notation in the cheatsheet."""
        if self.name == "cheatsheet":
            return f"{num}'({den})"
        return f"\\frac{{\\partial {num}}}{{\\partial {den}}}"

    def grad(self, num: str, den: str) -> str:
        """Derivative of the cost with respect to a parameter."""
        if self.name == "cheatsheet":
            return f"{num}'({den})"
        return f"\\frac{{\\partial {num}}}{{\\partial {den}}}"

    def transpose(self, body: str) -> str:
        """A transposed matrix or vector."""
        return f"({body})^{{T}}" if (" " in body or "^" in body) else f"{body}^{{T}}"

    def sum(self, layer: int, letter: str) -> str:
        """A sum over the units of ``layer`` (empty for a single unit)."""
        return "" if self.size(layer) == 1 else f"\\sum_{{{letter}}} "

    def times(self, layer: int) -> str:
        """Elementwise product over the units of ``layer`` (a plain product for one unit)."""
        return "\\cdot" if self.size(layer) == 1 else "\\odot"

    @property
    def batch_a0(self) -> str:
        """The mini-batch input written as the activation of layer 0."""
        return "A_{0}" if self.name == "cheatsheet" else self._base("A", 0, None)

    def grad_a(self) -> str:
        """The gradient of the cost with respect to the output activation."""
        if self.name == "nielsen":
            return "\\nabla_a C"
        return self.partial(self.cost, self.a(self.depth))

    def batch(self, letter: str, layer: int) -> str:
        """A mini-batch matrix: Z^l, A^l, Delta^l (the cheatsheet's symbols already are), and
        R^l, the other-units term of a softmax output's error under a cost in log(1 - a)
        (Q in the cheatsheet, whose R is ReLU)."""
        if letter == "R":
            return self._base("Q" if self.name == "cheatsheet" else "R", layer, None)
        if self.name == "cheatsheet":
            table = {
                "Z": self.z(layer),
                "A": self.a(layer) if layer != self.depth else "\\hat{Y}",
                "D": self.delta(layer),
            }
            return table[letter]
        if letter == "A" and layer == 0 and self.name != "course":
            return "X"
        error = "dZ" if self.name == "course" else "\\Delta"
        return self._base({"Z": "Z", "A": "A", "D": error}[letter], layer, None)


def notation(name: str, spec: Spec) -> Notation:
    """The notation called ``name`` for the network ``spec``.

    Raises
    ------
    SpecError
        When ``name`` is not one of :data:`NOTATIONS`.
    """
    if name not in NOTATIONS:
        raise SpecError(
            "notation", f"unknown notation {name!r}", f"use one of: {', '.join(NOTATIONS)}"
        )
    return Notation(name, spec)
