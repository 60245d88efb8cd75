"""The dropout mask of a derivation: its definition, displayed and checked by SymPy.

A layer with dropout p multiplies its output in training by a mask D^l drawn per unit
and per example, D^l_j = r^l_j / (1 - p) with r^l_j ~ Bernoulli(1 - p)
(:func:`~chainrule.derive.layers.mask_value`). The step that states it is checked with
``sympy.stats``: the mask's expectation is 1 (inverted dropout) and it is 0 with
probability p. The forward and BP2 steps that use the mask live with the other steps
of their sections; the witness carries one mask symbol per unit and example.
"""

from __future__ import annotations

import sympy as sp
import sympy.stats as stats
from chainrule.derive.document.base import SectionWriterBase, _tex
from chainrule.derive.document.steps import Step, closed
from chainrule.derive.layers import DROP, KEEP, Z, mask_value


def p_latex(p: float) -> str:
    r"""``p`` as written (its shortest repr) in LaTeX: an exponent as a power of ten, since
    ``1e-12`` in math mode reads as 1 e - 12.

    Examples
    --------
    >>> p_latex(0.2), p_latex(1e-12), p_latex(2.5e-07)
    ('0.2', '10^{-12}', '2.5 \\times 10^{-7}')
    """
    text = repr(float(p))
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    power = f"10^{{{int(exponent)}}}"
    return power if mantissa == "1" else f"{mantissa} \\times {power}"


class DropoutPieces(SectionWriterBase):
    """The mask's step and LaTeX, in the notation's symbols."""

    def drop_probability(self, layer: int) -> sp.Rational:
        """The layer's p as an exact rational (the spec's float, bit for bit)."""
        return sp.Rational(self.spec.layers[layer - 1].dropout)

    def mask_latex(self, layer: int, batch: bool = False) -> str:
        """D^l = r^l / (1 - p) with r^l ~ Bernoulli(1 - p), per unit (per entry of the
        batch's mask matrix when ``batch``), and the layer's p."""
        nota = self.nota
        index = None if batch else "j"
        mask = nota.mask(layer, index)
        # The draw is r (R for the batch's matrix); the cheatsheet's R is ReLU, so there it
        # is K (keep), capital like the cheatsheet's other per-unit symbols.
        letter = "K" if nota.name == "cheatsheet" else ("R" if batch else "r")
        keep = nota._base(letter, layer, nota._idx(layer, index))
        p = self.spec.layers[layer - 1].dropout
        names = {KEEP: keep, DROP: "p"}
        draw = " \\quad \\text{(entrywise)}" if batch else ""
        return (
            f"{mask} = {_tex(mask_value(), names)}, \\quad {keep} \\sim "
            f"\\operatorname{{Bernoulli}}(1 - p){draw}, \\quad p = {p_latex(p)}"
        )

    def mask_sides(self, layer: int) -> tuple[tuple[sp.Expr, ...], ...]:
        """E[D] = 1 and P(D = 0) = p, by ``sympy.stats`` over r ~ Bernoulli(1 - p)."""
        p = self.drop_probability(layer)
        r = stats.Bernoulli("r", 1 - p)
        mask = mask_value().xreplace({KEEP: r, DROP: p})
        return (
            (sp.Integer(1), stats.E(mask)),
            (p, stats.P(sp.Eq(mask, 0))),
        )

    def mask_step(self, layer: int) -> Step:
        """The mask of a dropout layer, drawn per unit and per example in training."""
        nota = self.nota
        expectation = f"\\mathbb{{E}}[{nota.mask(layer, 'j')}] = 1"
        latex = (
            f"{self.mask_latex(layer)}, \\quad {expectation} \\quad "
            "\\text{(drawn per unit and per example in training; no mask at inference)}"
        )
        return Step(
            f"Dropout mask of layer {nota.number(layer)} (training only)",
            latex,
            self.mask_sides(layer),
        )

    def masked_partial(
        self, layer: int, parts: list[str], sides: list[sp.Expr]
    ) -> tuple[list[str], list[sp.Expr]]:
        """da^l_j/dz^l_j of a dropout layer: each form of f'(z^l_j) times the mask factor
        (SymPy's :func:`~chainrule.derive.layers.dropout_factor`); the first side is
        ``diff`` of the masked activation itself."""
        net, derived = self.example_net, self.d.activations[layer - 1]
        z = net.zfree[layer][0, 0]
        factor = self.mask_factor(layer, 0)
        mask = self.nota.mask(layer, "j")
        forms = [None, derived.derivative]  # the SymPy form behind each part after the first
        pairs = zip(parts[1:], forms, strict=True)
        shown = [parts[0], *(self.masked(mask, p, f) for p, f in pairs)]
        own = factor * closed(derived.forward).subs(Z, z)
        return shown, [sp.diff(own, z), *(factor * side for side in sides[1:])]

    def masked(self, mask: str, text: str, form: sp.Expr | None) -> str:
        """``mask`` times ``text`` (the LaTeX of ``form``), in parentheses unless ``form`` is
        a symbol or a function's value (a sum, a negated product or a fraction would read
        as something else after the mask)."""
        if form is not None and not isinstance(form, (sp.Symbol, sp.Function)):
            text = f"\\left({text}\\right)"
        return f"{mask}{self.sep}{text}"

    def dropout_general_bp2(self, by_layer: dict[int, Step]) -> list[Step]:
        """BP2 for a layer l with dropout (not the book's: chapter 3 describes dropout in
        words only): the mask D^l joins sigma'(z^l), checked on every such layer; a layer
        with dropout that feeds skips has the skips' dC/da^d in the sum too."""
        nota, steps = self.nota, []
        back = f"({nota.weight_matrix('l+1')})^{{T}} {nota.delta('l+1')}"
        local = f"{nota.mask('l')} \\odot {nota.sprime('l')}"
        skips = f" + \\sum_{{d}} {nota.partial(nota.cost, nota.a('d'))}"
        for feeds, title in (
            (False, "The error of a layer l with dropout, from layer l+1"),
            (True, "The error of a layer l with dropout that feeds skips into layers d"),
        ):
            chosen = [
                step
                for ly, step in by_layer.items()
                if self.dropped(ly) and bool(self.fed_by(ly)) == feeds
            ]
            if not chosen:
                continue
            body = f"\\left({back}{skips if feeds else ''}\\right) \\odot {local}"
            checks = tuple(sides for step in chosen for sides in step.checks)
            steps.append(Step(title, f"{nota.delta('l')} = {body}", checks, "BP2"))
        return steps

    def dropout_words(self) -> str:
        """One sentence on dropout for the source's algorithm ('' without dropout)."""
        layers = [ly for ly in range(1, self.depth + 1) if self.dropped(ly)]
        if not layers:
            return ""
        nota = self.nota
        which = ", ".join(str(nota.number(ly)) for ly in layers)
        return (
            f" With dropout (here on layer{'s' if len(layers) > 1 else ''} {which}), training "
            f"multiplies the layer's activations by the mask: ${nota.a('l')} = {nota.mask('l')} "
            f"\\odot {nota.act_letter('l')}({nota.z('l')})$, and BP2 at that layer carries the "
            f"same factor ${nota.mask('l')}$; at inference there is no mask."
        )
