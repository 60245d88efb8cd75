"""Every line of the derivation reads true as written, in each format and notation."""

from __future__ import annotations

import re

import pytest
from chainrule.derive.document import check_step, derivation, to_unicode
from chainrule.derive.notation import NOTATIONS
from chainrule.derive.notation import notation as make_notation
from chainrule.derive.spec import Spec, preset, preset_names

#: A small sigmoid + binary cross-entropy net: its module writes the cost in the logits.
SIGMOID_BCE = Spec.from_sizes([2, 2, 1], ["tanh", "sigmoid"], "binary-cross-entropy")


def _step(doc, title: str):
    return next(step for step in doc if step.title == title)


@pytest.mark.parametrize("notation", NOTATIONS)
def test_text_never_speaks_of_colours_the_latex_and_markdown_show(notation: str) -> None:
    doc = derivation(preset("deep-relu-sigmoid"), notation)
    assert "colour" not in doc.to_text().lower()
    for shown in (doc.to_latex(), doc.to_markdown()):
        assert "\\textcolor" in shown and "those factors are coloured" in shown


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("notation", NOTATIONS)
def test_latex_prose_holds_no_literal_scripts(name: str, notation: str) -> None:
    """Symbols in prose are typeset, never escaped as text (no wˆl_jk, aˆ(L), Z_h)."""
    tex = derivation(preset(name), notation).to_latex()
    assert "\\^{}" not in tex and "\\_" not in tex
    first_lines = tex.split("\\section*{1.")[0]
    assert "Notation:" in first_lines and "$" in first_lines.split("Notation:")[1]


def test_batch_cost_is_bracketed_defines_softplus_and_links_to_a_and_y() -> None:
    doc = derivation(SIGMOID_BCE)
    step = _step(doc.vectorized, "Cost of the batch")
    text = to_unicode(step.latex)
    # Both sums cover the whole per-entry cost; softplus is defined on the line.
    assert "Σᵢ Σⱼ (- Yⱼᵢ Z³ⱼᵢ + softplus(Z³ⱼᵢ))" in text
    assert "softplus(t) = log(1 + eᵗ)" in text
    # The same cost in a and y, as the source writes it, is a checked side.
    assert "Σᵢ Σⱼ (- Yⱼᵢ log(A³ⱼᵢ) - (1 - Yⱼᵢ) log(1 - A³ⱼᵢ))" in text.replace(" )", ")")
    assert len(step.checks[0]) == 3
    assert check_step(step, points=1)


def test_a_cost_in_a_and_y_is_written_once_and_without_softplus() -> None:
    step = _step(derivation(preset("two-layer-nobias")).vectorized, "Cost of the batch")
    assert "softplus" not in step.latex and step.latex.count("=") == 1


def test_elementwise_products_are_written_with_odot() -> None:
    doc = derivation(preset("two-layer-nobias"))
    bp1 = to_unicode(doc.sections[5].steps[0].latex)
    assert bp1.endswith("= a³ ⊙ (1 - a³) ⊙ (a³ - y)")
    batch_bp1 = to_unicode(_step(doc.vectorized, "Output error of the batch").latex)
    assert batch_bp1.startswith("Δ³ = A³ ⊙ (1 - A³) ⊙ (A³ - Y)")
    assert check_step(doc.sections[5].steps[0], points=1)


def test_the_ones_vector_is_named_with_its_length() -> None:
    doc = derivation(preset("deep-relu-sigmoid"))
    section = doc.sections[-1]
    assert "$\\mathbf{1}_{m}$ is the vector of m ones" in section.intro
    bias = _step(doc.vectorized, "Bias gradient of layer 5 over the batch")
    assert to_unicode(bias.latex) == "∂C/∂b⁵ = 1/m Δ⁵ 𝟙ₘ"
    assert "𝟙ₘ is the vector of m ones" in doc.to_text()
    nobias = derivation(preset("two-layer-nobias")).sections[-1]
    assert "ones" not in nobias.intro


def test_the_number_of_equations_is_counted() -> None:
    with_bias = derivation(preset("nielsen")).sections[5]
    without = derivation(preset("two-layer-nobias")).sections[5]
    assert with_bias.title == "Summary: BP1 to BP4" and "four equations" in with_bias.intro
    assert without.title == "Summary: BP1, BP2 and BP4" and "three equations" in without.intro
    assert {step.label for step in without.steps} == {"BP1", "BP2", "BP4"}
    assert "no bias gradient (BP3)" in without.intro


def test_sigma_prime_is_not_tagged_as_the_equation_it_serves() -> None:
    doc = derivation(preset("two-layer-nobias"))
    step = _step(doc.vectorized, "Activation derivative of layer 2, a factor of BP2")
    assert step.label == "BP2"  # the module's label, unchanged
    text = doc.to_text()
    assert "Activation derivative of layer 2, a factor of BP2\n" in text
    assert "[BP2]" in text  # BP2 itself is still tagged
    three = derivation(preset("two-layer-nobias"), "3b1b").to_text()
    assert "Activation derivative of layer 1, a factor of the error of layer 1" in three


def test_a_dropped_index_never_moves_into_the_other_slot() -> None:
    """w^l_jk: j is the unit into which the weight goes. With a single output unit the
    weight keeps the unit's number rather than writing the k index where j goes."""
    text = derivation(preset("deep-relu-sigmoid")).to_text()
    assert "δ⁴ⱼ = ∂C/∂z⁴ⱼ = δ⁵ w⁵₁ⱼ relu'(z⁴ⱼ)" in text
    assert not re.search("w⁵[ⱼₖ]", text)
    assert "keeps 1, the number of the single unit" in text
    chain = derivation(preset("3b1b-chain"), "3b1b").to_text()
    assert "keeps" not in chain  # every layer has one unit: every index is dropped


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("notation", NOTATIONS)
def test_sigma_is_only_the_sigmoid(name: str, notation: str) -> None:
    """No line writes sigma for an activation other than the logistic function."""
    spec = preset(name)
    doc = derivation(spec, notation)
    text = doc.to_text()
    if all(layer.activation != "sigmoid" for layer in spec.layers):
        assert "σ" not in text
    for step in doc:
        if step.title.startswith("Activation of layer"):
            # The title's number is the notation's: Nielsen numbers the input layer 1, the
            # module 0; the cheatsheet numbers a deeper net's first weight layer 0.
            shown = int(step.title.split()[-1])
            nota = make_notation(notation, spec)
            (layer,) = [ly for ly in range(1, spec.depth + 1) if nota.number(ly) == shown]
            is_sigmoid = spec.layers[layer - 1].activation == "sigmoid"
            assert ("\\sigma" in step.latex) == is_sigmoid, step.latex


@pytest.mark.parametrize("notation", ["3b1b", "cheatsheet"])
def test_nielsens_labels_and_delta_stay_in_his_notation(notation: str) -> None:
    for name in ("deep-relu-sigmoid", "3b1b-chain", "cheatsheet-relu"):
        doc = derivation(preset(name), notation)
        for shown in (doc.to_text(), doc.to_markdown(), doc.to_latex()):
            assert "BP1" not in shown and "BP2" not in shown and "BP4" not in shown
            assert "δ" not in shown and "\\delta" not in shown
    nielsen = derivation(preset("deep-relu-sigmoid")).to_text()
    assert "[BP1]" in nielsen and "δ⁴" in nielsen


def test_the_cheatsheet_writes_rows_its_own_names_and_no_sigma_for_relu() -> None:
    doc = derivation(preset("cheatsheet-relu"), "cheatsheet")
    text = doc.to_text()
    assert to_unicode(doc.sections[1].steps[0].latex) == "Zₕ = X Wₕ"
    assert "σ" not in text and "R'(Zₗ,ⱼ): derivative" in text
    assert "layer errors Eₕ and Eₒ" in text and "layer error of unit j" in text
    # The input is X, with its shape; no A₀ that nothing defines.
    assert "A₀" not in text and "X ∈ ℝᵐˣ¹" in text


def test_nielsen_numbers_layers_from_the_input() -> None:
    """In the book a [784, 30, 10] network has input layer 1, hidden 2, output L = 3."""
    doc = derivation(preset("nielsen"))
    assert [row[0] for row in doc.sections[0].table[1:]] == ["1 (input)", "2", "3"]
    assert "the output is layer L = 3" in doc.sections[0].intro
    text = doc.to_text()
    assert "z²ⱼ = Σₖ w²ⱼₖ xₖ + b²ⱼ" in text and "δ³ = ∇ₐ C ⊙ σ'(z³)" in text
    assert "w¹" not in text and "δ¹" not in text
    # One mapping line, in the vectorized section, from the module's names to the book's.
    mapping = "W1 is w², W2 is w³, b1 is b², b2 is b³"
    assert text.count("W1 is w²") == 1 and mapping in doc.to_text()
    assert mapping not in derivation(preset("nielsen"), "cheatsheet").to_text()


@pytest.mark.parametrize("notation", ["3b1b", "cheatsheet"])
def test_other_notations_keep_the_input_as_layer_0(notation: str) -> None:
    doc = derivation(preset("nielsen"), notation)
    assert doc.sections[0].table[1][0] == "0 (input)"
    assert "W1 is" not in doc.to_text()


def test_source_sections_describe_only_what_they_show() -> None:
    """A network without a hidden layer: no backpropagation step in Nielsen's algorithm,
    no sensitivity to a previous layer in the video's section."""
    spec = Spec.from_sizes([2, 2], ["sigmoid"], "quadratic")
    book = derivation(spec).sections[4]
    assert "nothing to do without a hidden layer" in book.intro and "BP2 for" not in book.intro
    video = derivation(spec, "3b1b").sections[4]
    assert "previous layer" not in " ".join(step.title for step in video.steps)
    assert "before the output" not in video.intro and "the chain for a bias" in video.intro
