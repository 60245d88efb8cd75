"""Each preset, in its source's notation, against a table of that source's key equations.

Every table below is written by hand from the source text, in the source's numbering and
symbols (Nielsen's book numbers the input layer 1, so [784, 30, 10] has output L = 3; the
video counts back from L; the cheatsheet writes rows Z = XW with E_o and E_h; the course
keeps A^0 = X and goes through dA before dZ; the two-layer text writes outer products with
h and y). The document's step of that title, rendered as text, must read exactly so, and
SymPy must hold its sides equal on the witness network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from chainrule.derive.document import WITNESS_BATCH, check_step, derivation, to_unicode
from chainrule.derive.document.source import ETA
from chainrule.derive.spec import Spec, preset

#: Nielsen, "Neural Networks and Deep Learning", chapter 2: BP1-BP4 for any layer, then
#: for the network; the update rule of gradient descent over a mini-batch.
NIELSEN = {
    "Weighted input of layer 2": "z²ⱼ = Σₖ w²ⱼₖ xₖ + b²ⱼ",
    "The error of the output layer L": "δᴸ = ∇ₐ C ⊙ σ'(zᴸ)",
    "The error of layer l from layer l+1": "δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)",
    "The rate of change with a bias": "∂C/∂bˡⱼ = δˡⱼ",
    "The rate of change with a weight": "∂C/∂wˡⱼₖ = aˡ⁻¹ₖ δˡⱼ",
    "Output error": "δ³ = ∇ₐ C ⊙ σ'(z³) = (a³ - y) ⊙ σ'(z³) = a³ ⊙ (1 - a³) ⊙ (a³ - y)",
    "Error of layer 2": "δ² = ((w³)ᵀ δ³) ⊙ σ'(z²)",
    "Weight gradient of layer 3": "∂C/∂w³ = δ³ (a²)ᵀ",
    "Gradient descent on a mini-batch: the weights": "wˡ → wˡ - η/m Σₓ δˣ,ˡ (aˣ,ˡ⁻¹)ᵀ",
    "Gradient descent on a mini-batch: the biases": "bˡ → bˡ - η/m Σₓ δˣ,ˡ",
}

#: 3Blue1Brown, "Backpropagation calculus": one neuron per layer, C_0 = (a^(L) - y)^2.
VIDEO = {
    "Weighted input of layer 3": "z⁽ᴸ⁾ = w⁽ᴸ⁾ a⁽ᴸ⁻¹⁾ + b⁽ᴸ⁾",
    "Activation of layer 3": "a⁽ᴸ⁾ = σ(z⁽ᴸ⁾) = 1/(1 + exp(- z⁽ᴸ⁾))",
    "Cost of one example": "C₀ = (a⁽ᴸ⁾ - y)²",
    "Chain rule for a weight of layer 3, written out": (
        "∂C₀/∂w⁽ᴸ⁾ = ∂z⁽ᴸ⁾/∂w⁽ᴸ⁾ ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ ∂C₀/∂a⁽ᴸ⁾\n= a⁽ᴸ⁻¹⁾ σ'(z⁽ᴸ⁾) 2 (a⁽ᴸ⁾ - y)"
    ),
    "The chain for a bias": (
        "∂C₀/∂b⁽ᴸ⁾ = ∂z⁽ᴸ⁾/∂b⁽ᴸ⁾ ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ ∂C₀/∂a⁽ᴸ⁾ = 1 σ'(z⁽ᴸ⁾) 2 (a⁽ᴸ⁾ - y)"
    ),
    "Sensitivity to an activation of the previous layer": (
        "∂C₀/∂a⁽ᴸ⁻¹⁾ = ∂z⁽ᴸ⁾/∂a⁽ᴸ⁻¹⁾ ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ ∂C₀/∂a⁽ᴸ⁾ = w⁽ᴸ⁾ σ'(z⁽ᴸ⁾) 2 (a⁽ᴸ⁾ - y)"
    ),
    "The cost over all n training examples": "C = 1/n Σₖ₌₀ⁿ⁻¹ Cₖ",
    "Its derivative, the average of the examples' derivatives": "∂C/∂w⁽ᴸ⁾ = 1/n Σₖ₌₀ⁿ⁻¹ ∂Cₖ/∂w⁽ᴸ⁾",
}

#: The ML cheatsheet, "Backpropagation": a ReLU chain in rows, E_o, E_h and C'(W).
CHEATSHEET = {
    "Weighted input of layer 1": "Zₕ = X Wₕ",
    "Weighted input of layer 2": "Zₒ = H Wₒ",
    "Chain rule for a weight of layer 2, written out": (
        "C'(Wₒ) = C'(ŷ) · ŷ'(Zₒ) · Zₒ'(Wₒ)\n= (ŷ - y) · R'(Zₒ) · H"
    ),
    "Chain rule for a weight of layer 1, written out": (
        "C'(Wₕ) = C'(ŷ) · ŷ'(Zₒ) · Zₒ'(H) · H'(Zₕ) · Zₕ'(Wₕ)\n= (ŷ - y) · R'(Zₒ) · Wₒ · R'(Zₕ) · X"
    ),
    "Output layer error": "Eₒ = C'(ŷ) · R'(Zₒ) = (ŷ - y) · R'(Zₒ)",
    "Hidden layer error, layer 1": "Eₕ = Eₒ · Wₒ · R'(Zₕ)",
    "The same, memoized: current layer error times current layer input": (
        "C'(Wₒ) = Eₒ · H\nC'(Wₕ) = Eₕ · X"
    ),
}

#: The two-layer network without biases: outer products with h_1 and the output y.
OUTER = {
    "Outer-product form of the gradient, layer 2 of the text": "∂C/∂W₂ = (∇C(y) ⊙ σ'(z₂)) ⊗ h₁",
    "Outer-product form of the gradient, layer 1 of the text": (
        "∂C/∂W₁ = (W₂ᵀ (∇C(y) ⊙ σ'(z₂)) ⊙ σ'(z₁)) ⊗ x"
    ),
}

#: The deep ReLU network of the course text: A^0 = X, dZ^L = A^L - Y, dA before dZ.
COURSE = {
    "Input batch": "A⁰ = X",
    "Weighted inputs of layer 1": "Z¹ = W¹ A⁰ + b¹ 𝟙ₘᵀ",
    "Output error of the batch": "dZ⁴ = A⁴ - Y (elementwise)",
    "Weight gradient of layer 4 over the batch": "∂C/∂W⁴ = 1/m dZ⁴ (A³)ᵀ",
    "Bias gradient of layer 4 over the batch": "∂C/∂b⁴ = 1/m dZ⁴ 𝟙ₘ",
    "Gradient with respect to the activations of layer 3": "dA³ = (W⁴)ᵀ dZ⁴",
    "Error of layer 3 from dA": "dZ³ = dA³ ⊙ relu'(Z³)",
    "The slope of ReLU at 0": "relu'(0) = 0",
}

TABLES = [
    pytest.param("nielsen", "nielsen", NIELSEN, id="nielsen", marks=pytest.mark.slow),
    pytest.param("3b1b-chain", "3b1b", VIDEO, id="3b1b"),
    pytest.param("cheatsheet-relu", "cheatsheet", CHEATSHEET, id="cheatsheet"),
    pytest.param("two-layer-nobias", "nielsen", OUTER, id="two-layer"),
    pytest.param("deep-relu-sigmoid", "course", COURSE, id="course", marks=pytest.mark.slow),
]


def _step(doc, title: str):
    """The step of ``title``: the last one (the vector form of the summary, after the
    per-unit chain of section 4)."""
    matches = [step for step in doc if step.title == title]
    assert matches, f"no step titled {title!r}"
    return matches[-1]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "notation", "table"), TABLES)
def test_the_document_reproduces_the_source_table(name: str, notation: str, table: dict) -> None:
    doc = derivation(preset(name), notation)
    for title, expected in table.items():
        step = _step(doc, title)
        assert to_unicode(step.latex) == expected, title
        assert check_step(step, points=1), title


@pytest.mark.slow
def test_a_wrong_equation_of_a_table_fails_its_check() -> None:
    """The tables are held by SymPy, not by the text alone: the update with eta in place
    of eta/m (no mean over the mini-batch) fails its check."""
    doc = derivation(preset("nielsen"))
    step = _step(doc, "Gradient descent on a mini-batch: the weights")
    m = WITNESS_BATCH  # the examples of the witness mini-batch
    wrong = tuple((left, right.xreplace({ETA: ETA * m})) for left, right in step.checks)
    assert check_step(step, points=1)
    assert not check_step(dataclasses.replace(step, source=wrong), points=1)


@pytest.mark.slow
def test_each_source_speaks_only_its_own_labels() -> None:
    for name, notation in [("3b1b-chain", "3b1b"), ("cheatsheet-relu", "cheatsheet")]:
        text = derivation(preset(name), notation).to_text()
        assert "BP1" not in text and "δ" not in text
    course = derivation(preset("deep-relu-sigmoid"), "course").to_text()
    assert "[BP" not in course and "A⁰ = X" in course
    assert "(A¹ = X" not in course  # the book's numbering stays in Nielsen's notation


def _readme_pages() -> list[tuple[list[str], list[str]]]:
    """The derive excerpts of the README's derivation section: (arguments, lines)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Step-by-step derivations", 1)[1].split("\n## ", 1)[0]
    # The worked example's excerpt (values at a point) is held by its own tests.
    section = section.split("\n### Worked example with numbers", 1)[0]
    pages = []
    for block in section.split("```text\n")[1:]:
        command, *lines = block.split("```", 1)[0].rstrip("\n").split("\n")
        assert command.startswith("$ chainrule derive ")
        pages.append((command.split()[3:], [ln for ln in lines if ln != "..."]))
    return pages


@pytest.mark.slow
def test_the_readme_shows_one_page_per_notation_as_printed() -> None:
    pages = _readme_pages()
    notations = set()
    for args, lines in pages:
        options = dict(zip(args[::2], args[1::2], strict=True))
        notation = options.get("--notation", "nielsen")
        notations.add(notation)
        printed = derivation(preset(options["--preset"]), notation).to_text().splitlines()
        for line in lines:
            assert line in printed, (args, line)
    assert notations == {"nielsen", "3b1b", "cheatsheet", "course"}


def test_the_cheatsheet_memoized_chain_for_a_deeper_net() -> None:
    """The page's list C'(W_3) ... C'(W_0) for a four-layer ReLU chain (it writes O for
    the output, and ŷ in the rest of the page), at any depth a user gives."""
    spec = Spec.from_sizes([1, 1, 1, 1, 1], ["relu"] * 4, "quadratic", bias=False, layout="rows")
    doc = derivation(spec, "cheatsheet")
    chain = _step(doc, "Every weight, from the output layer down")
    assert to_unicode(chain.latex).splitlines() == [
        "C'(W₃) = (ŷ - y) · R'(Z₃) · H₂",
        "C'(W₂) = (ŷ - y) · R'(Z₃) · W₃ · R'(Z₂) · H₁",
        "C'(W₁) = (ŷ - y) · R'(Z₃) · W₃ · R'(Z₂) · W₂ · R'(Z₁) · H₀",
        "C'(W₀) = (ŷ - y) · R'(Z₃) · W₃ · R'(Z₂) · W₂ · R'(Z₁) · W₁ · R'(Z₀) · X",
    ]
    memo = _step(doc, "The same, memoized: current layer error times current layer input")
    assert to_unicode(memo.latex).splitlines() == [
        "C'(W₃) = E₃ · H₂",
        "C'(W₂) = E₂ · H₁",
        "C'(W₁) = E₁ · H₀",
        "C'(W₀) = E₀ · X",
    ]
    assert check_step(chain, points=1) and check_step(memo, points=1)
