"""Lines of the derivation document read as a learner reads them: each one true, defined
and in the notation's own numbering, in the format it is printed in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chainrule.derive.document import derivation, to_unicode
from chainrule.derive.notation import NOTATIONS, notation
from chainrule.derive.spec import Spec, preset, preset_names

#: One layer, a softmax output: no hidden layer, no sigmoid anywhere.
SOFTMAX_ONLY = Spec.from_sizes([3, 2], ["softmax"], "cross-entropy")
#: One layer without biases: the two-layer text's mapping has no hidden activation.
ONE_NOBIAS = Spec.from_sizes([3, 2], ["sigmoid"], "quadratic", bias=False)


def _step(steps, title: str):
    return next(step for step in steps if step.title == title)


def test_the_cheatsheet_gives_the_input_its_shape_in_the_networks_layout() -> None:
    """X is (m, n0) with one example per row, (n0, m) with one per column."""
    columns = derivation(preset("deep-relu-sigmoid"), "cheatsheet")
    rows = derivation(preset("cheatsheet-relu"), "cheatsheet")
    assert to_unicode(_step(columns.vectorized, "Input batch").latex) == "X ∈ ℝ¹²ˣᵐ"
    assert to_unicode(_step(rows.vectorized, "Input batch").latex) == "X ∈ ℝᵐˣ¹"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deep-relu-sigmoid", "3b1b-chain", "nielsen"])
@pytest.mark.parametrize("nota", ["cheatsheet", "nielsen", "course"])
def test_a_title_names_the_layer_its_symbols_belong_to(name: str, nota: str) -> None:
    """ "Weighted input of layer N" defines Z of layer N, not of N+1 or N-1 (the
    cheatsheet numbers a deeper net's weight layers from 0, its titles too)."""
    doc = derivation(preset(name), nota)
    for step in doc.sections[1].steps:
        if step.title.startswith("Weighted input of layer "):
            shown = step.title.rsplit(" ", 1)[1]
            tag = re.match(r"[zZ](?:\^\{|_\{)(\w+)", step.latex)
            assert tag, step.latex
            if tag.group(1) not in ("h", "o"):
                assert tag.group(1) == shown, (step.title, step.latex)
    table = [row[0] for row in doc.sections[0].table[1:]]
    assert "input" in table[0]
    assert len(set(table)) == len(table)


def test_3b1b_says_what_L_is() -> None:
    doc = derivation(preset("3b1b-chain"), "3b1b")
    text = doc.to_text()
    assert "the output layer L (here L = 3, the input is layer 0)" in text
    assert "a⁽ᴸ⁻¹⁾ is the activation of layer 2" in text


@pytest.mark.slow
def test_the_network_sentence_counts_its_layers_in_english() -> None:
    assert "with 2 weight layers," in derivation(preset("cheatsheet-relu"), "3b1b").to_text()
    one = derivation(SOFTMAX_ONLY, "course").to_text()
    assert "with 1 weight layer," in one and "layer(s)" not in one


def test_text_has_no_carets_and_no_space_before_a_bracket() -> None:
    """Plain text shows exp(...), superscripts and the source's sums, never ^ or a
    stray space left by \\right."""
    nielsen = derivation(preset("nielsen")).to_text()
    assert "Σₓ δˣ,ˡ (aˣ,ˡ⁻¹)ᵀ" in nielsen and "1/(1 + exp(- z²ⱼ))" in nielsen
    deep = derivation(preset("deep-relu-sigmoid"), "course").to_text()
    assert "C = - y log(a⁴) - (1 - y) log(1 - a⁴)" in deep
    assert "softplus(t) = log(1 + eᵗ)" in deep
    for text in (nielsen, deep):
        assert "^" not in text and not re.search(r"\S \)", text)


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("nota", NOTATIONS)
def test_no_preset_prints_a_caret_or_an_underscored_point_in_text(name: str, nota: str) -> None:
    text = derivation(preset(name), nota).to_text()
    assert "^" not in text and "_" not in text and "layer(s)" not in text


def test_text_writes_indices_as_subscripts_and_a_wrapped_product_keeps_its_dots() -> None:
    """The summed unit's letter has a subscript (Σₚ, not Σ_q) and so has the cheatsheet's
    layer-and-unit pair (Zₗ,ⱼ, not Z_(l,j)); a product the cheatsheet writes with dots
    that runs onto a second line starts it with a dot, not a bare factor."""
    nielsen = derivation(preset("nielsen")).to_text()
    assert "δ²ⱼ = ∂C/∂z²ⱼ = Σₚ δ³ₚ w³ₚⱼ σ'(z²ⱼ)" in nielsen
    sheet = derivation(preset("deep-relu-sigmoid"), "cheatsheet").to_text()
    assert "Zₗ,ⱼ: weighted input of unit j of layer l" in sheet
    lines = sheet.splitlines()
    at = lines.index("Chain rule for a weight of layer 0, written out")
    assert lines[at + 2].strip() == "· Z₀,ⱼ'(W₀,ⱼₖ)" and lines[at + 4].strip() == "· Xₖ"
    assert "_" not in nielsen + sheet


def test_the_notation_line_is_true_of_the_network() -> None:
    """The cheatsheet's line names the layers the equations use and the product order of
    the layout; the course's says one example per row in the rows layout."""
    deep = derivation(preset("deep-relu-sigmoid"), "cheatsheet").to_text().splitlines()[2]
    assert "Z₀ to Z₃" in deep and "columns Z = WX" in deep
    assert "Zₕ" not in deep and "rows" not in deep
    small = derivation(preset("cheatsheet-relu"), "cheatsheet").to_text().splitlines()[2]
    assert "Zₕ, Zₒ" in small and "rows Z = XW" in small
    course = derivation(preset("cheatsheet-relu"), "course").to_text().splitlines()[2]
    assert "one example per row" in course and "per column" not in course


def test_the_two_layer_texts_symbols_are_all_mapped() -> None:
    """Its z₁, z₂ are named, its gradient at y is ∇C(y) in text, and a net without a hidden
    layer gets no empty clause."""
    text = derivation(preset("two-layer-nobias")).to_text()
    assert "z₁ is z², z₂ is z³" in text and "h₁ is a²" in text
    assert "∂C/∂W₂ = (∇C(y) ⊙ σ'(z₂)) ⊗ h₁" in text
    one = derivation(ONE_NOBIAS).to_text()
    assert "there , " not in one and "there its y is the output a²" in one


@pytest.mark.slow
@pytest.mark.parametrize("nota", NOTATIONS)
def test_a_softmax_network_defines_J_and_writes_no_sigma(nota: str) -> None:
    """J is defined where it first appears (the softmax step), and with no sigmoid
    anywhere no line says sigma: the algorithm's and the legend's generic letter is f."""
    doc = derivation(SOFTMAX_ONLY, nota)
    text = doc.to_text()
    assert "σ" not in text
    first = next(ln for ln in text.splitlines() if ln.startswith("    ") and "J" in ln)
    jac = to_unicode(notation(nota, SOFTMAX_ONLY).jacobian(1))
    assert first.strip().startswith(f"(({jac})ᵀ g)ⱼ = Σₖ") or first.strip().startswith(
        f"({jac}ᵀ g)ⱼ = Σₖ"
    )
    summary = doc.sections[-2].steps[0]
    assert jac in to_unicode(summary.latex)


@pytest.mark.slow
def test_the_output_units_ones_vector_is_named_with_its_length() -> None:
    """A softmax's ones vector runs over the output units, not the m examples: it carries
    its length, the intro defines it (and I), and text shows no underscore for k ≠ j."""
    spec = Spec.from_sizes([3, 2], ["softmax"], "binary-cross-entropy", layout="rows")
    doc = derivation(spec, "course")
    text = doc.to_text()
    assert "𝟙₂ is the vector of 2 ones, one per output unit, and I the 2 by 2 identity" in text
    shown = to_unicode(_step(doc.vectorized, "Log-softmax").latex)
    assert shown == "log A¹ = Z¹ - log(exp(Z¹) 𝟙₂) 𝟙₂ᵀ"
    assert "Σₖ≠ⱼ Vᵢₖ" in text and "_" not in text.replace("loss_and_grad", "")
    assert not re.search("𝟙(?![ₘ₂])", text)


@pytest.mark.slow
def test_the_other_units_term_keeps_the_example_index_on_every_entry() -> None:
    # R, V and A are matrices of units by examples: each entry of the sum names both.
    for layout, line in (
        ("columns", "R¹ⱼᵢ = Σₖ≠ⱼ Vₖᵢ A¹ⱼᵢ/(1 - A¹ₖᵢ)"),
        ("rows", "R¹ᵢⱼ = Σₖ≠ⱼ Vᵢₖ A¹ᵢⱼ/(1 - A¹ᵢₖ)"),
    ):
        spec = Spec.from_sizes([3, 2], ["softmax"], "binary-cross-entropy", layout=layout)
        assert line in derivation(spec, "course").to_text(), layout


@pytest.mark.slow
def test_the_readme_names_the_activations_as_printed() -> None:
    """README: σ only for the sigmoid, relu' by its name, f for an expression and for the
    generic layer of a network that is not all sigmoids."""
    custom = Spec.from_sizes([2, 3, 2], ["x*sigmoid(x)", "sigmoid"], "quadratic", bias=False)
    text = derivation(custom).to_text()
    assert "a²ⱼ = f(z²ⱼ) = z²ⱼ σ(z²ⱼ)" in text and "a³ⱼ = σ(z³ⱼ)" in text
    assert "aˡ = f(zˡ)" in text
    deep = derivation(preset("deep-relu-sigmoid")).to_text()
    assert "relu'(z²ⱼ)" in deep and "aˡ = f(zˡ)" in deep
    assert "aˡ = σ(zˡ)" in derivation(preset("nielsen")).to_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "f stands for an activation given as an expression and for the generic layer" in (
        " ".join(readme.split())
    )


@pytest.mark.parametrize("nota", NOTATIONS)
def test_the_batch_section_says_its_c_is_not_one_examples_cost(nota: str) -> None:
    """The legend's C (C₀ in 3Blue1Brown's notation) is one example's cost; the batch
    section's C is a mean, and says so where it starts to mean that."""
    doc = derivation(preset("3b1b-chain"), nota)
    legend = dict(doc.sections[0].items)
    intro = to_unicode(doc.sections[-1].intro)
    if nota == "3b1b":
        assert legend["$y$, $C_0$"] == "target and cost of one example"
        assert "here C is the mean of the examples' costs Cₖ over the m examples" in intro
    else:
        assert legend["$y$, $C$"] == "target and cost of one example"
        assert "here C is the mean of the m examples' costs, no longer the cost of one" in intro


def test_the_course_names_the_activation_letter_the_equations_use() -> None:
    """The course's g where the network mixes activations; σ where all are sigmoids, in the
    notation line and in the dA-then-dZ prose alike (no g' that nothing defines)."""
    mixed = derivation(preset("deep-relu-sigmoid"), "course").to_text()
    assert "dAˡ, g, one example" in mixed and "the activation's derivative g' to dZ" in mixed
    sig = derivation(preset("two-layer-nobias"), "course").to_text()
    assert "dAˡ, σ, one example" in sig and "the activation's derivative σ' to dZ" in sig
    assert "g'" not in sig and ", g," not in sig


@pytest.mark.slow
def test_a_one_layer_network_gets_no_step_or_symbol_it_does_not_have() -> None:
    """Without a hidden layer: no dA step promised, no g' or ⊙ defined for nothing, and
    the cheatsheet counts one weight layer."""
    course = derivation(SOFTMAX_ONLY, "course").to_text()
    assert "Without a hidden layer there is no step back through dA" in course
    assert "two steps" not in course and "derivative g'" not in course and "⊙" not in course
    sheet = derivation(SOFTMAX_ONLY, "cheatsheet").to_text()
    assert "(1 weight layer here)" in sheet
    with_odot = derivation(preset("nielsen")).to_text()
    assert "⊙ is the elementwise product" in with_odot


@pytest.mark.parametrize("nota", NOTATIONS)
def test_the_batch_layout_words_follow_the_layout(nota: str) -> None:
    """One example per row: the errors of the examples are one above the other, not side
    by side (the columns layout's words)."""
    rows = derivation(preset("cheatsheet-relu"), nota).to_text()
    assert "one per row" in rows and "side by side" not in rows
    assert "of the examples one above the other" in rows
    columns = derivation(preset("two-layer-nobias"), nota).to_text()
    assert "side by side" in columns and "one above the other" not in columns


@pytest.mark.parametrize("nota", ["3b1b", "course"])
def test_the_capital_weight_matrix_is_in_the_legend(nota: str) -> None:
    """The summary's and the batch's W (capital) is defined next to the legend's w_jk."""
    doc = derivation(preset("nielsen"), nota)
    text = doc.to_text()
    matrix = "W⁽ˡ⁾" if nota == "3b1b" else "Wˡ"
    entry = "w⁽ˡ⁾ⱼₖ" if nota == "3b1b" else "wˡⱼₖ"
    assert f"  {matrix}: the matrix of the weights {entry} of layer l" in text
    assert "(W" in to_unicode(doc.sections[-2].steps[1].latex)


def test_an_index_the_legend_does_not_give_is_named_where_it_is_used() -> None:
    # 3Blue1Brown's total-cost gradient writes the weight w_ji because k counts the
    # examples there; the legend's weight is w_jk, so the step itself must say what i is.
    for name in ("nielsen", "3b1b-chain"):
        text = derivation(preset(name), "3b1b").to_text().splitlines()
        at = next(i for i, ln in enumerate(text) if ln.startswith("Its derivative, the average"))
        uses_i = "ᵢ " in text[at + 1] or text[at + 1].endswith("ᵢ")
        assert uses_i == ("i: the unit of the layer below" in text[at]), (name, text[at : at + 2])
    assert uses_i is False  # the 1-1-1-1 chain drops the indices, and says nothing of i
