"""The derivation of a batch-normalized network shows the whole network: the batch-norm
section (in place of the per-example sections, with one line saying why), and the
mini-batch section printing the module's own statements (batch norm's, L2/L1 in BP4,
a residual skip, dropout on another layer), every one checked by SymPy; planted bugs fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from chainrule.derive import batch, naming
from chainrule.derive.batch import batch_program
from chainrule.derive.document import DerivationWriter, _sections, check_step, derivation
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Layer, Spec

from chainrule.cli import main

NOTATIONS = ("nielsen", "3b1b", "cheatsheet", "course")

#: Batch norm on layer 1, dropout and a skip from layer 1 on layer 2, L2: small to check.
SPEC = Spec(
    2,
    (
        Layer(2, "tanh", batch_norm=True),
        Layer(2, "sigmoid", dropout=0.5, skip_from=1),
        Layer(1, "sigmoid"),
    ),
    "quadratic",
    l2=0.01,
)

SPEC_TOML = """\
input = 2
cost = "cross-entropy"
l1 = 0.02
[[layers]]
size = 3
activation = "relu"
batch_norm = true
[[layers]]
size = 3
activation = "tanh"
dropout = 0.25
[[layers]]
size = 2
activation = "softmax"
"""

#: The per-example sections a batch-normalized network's document must not show.
PER_EXAMPLE = (
    "Forward equations",
    "Local partial derivatives",
    "The chain rule, written out and memoized",
    "As the book writes it",
    "Summary: BP1 to BP4",
)


def why(notation: str) -> str:
    """The sentence saying why the per-example sections are replaced (BP1 to BP4 are the
    labels of Nielsen's book alone)."""
    replaced = (
        "BP1 to BP4" if notation == "nielsen" else "the error of each layer and the gradients"
    )
    return (
        "This section replaces the per-example sections (one example's forward pass, local "
        f"partials, chain rule and {replaced}): with batch normalization the error of a layer "
        "at u depends on every example of the batch, through the mean and the variance, so "
        "equations written for one example alone do not hold."
    )


@pytest.mark.parametrize("notation", NOTATIONS)
@pytest.mark.slow
def test_the_document_holds_the_sections_true_for_a_batch_normalized_network(notation):
    doc = derivation(SPEC, notation)
    titles = [s.title for s in doc.sections]
    assert titles == [
        "The network and the notation",
        "Batch normalization's backward pass",
        "Vectorized over a mini-batch",
    ]
    assert not set(PER_EXAMPLE) & set(titles)
    assert why(notation) in doc.sections[1].intro
    # the mini-batch section is the module's program, statement by statement, in order
    program = batch_program(derive_network(SPEC))
    assert [s.target for s in doc.vectorized] == [s.target for s in program]
    targets = {s.target for s in doc.vectorized}
    assert {"u1", "mean1", "var1", "xhat1", "deltau1", "dC_dgamma1", "dC_dbeta1"} <= targets
    assert {"D2", "h2", "dC_da1"} <= targets  # the mask, sigma(z) kept, the skip's gradient


#: Per notation, lines of the text rendering: U = W A, the normalization, the three-term
#: error, BP4 with the error at U and the L2 term, the mask, the residual sum.
EXPECTED = {
    "nielsen": [
        "U² = w² X",
        "X̂² = (U² - μ²)/(√(v² + ε)) (elementwise)",
        "Z² = γ² ⊙ X̂² + β² (elementwise)",
        "m ∂C/∂U² = γ²/(√(v² + ε)) ⊙ (Δ² - ∂C/∂β² - X̂² ⊙ ∂C/∂γ²) (elementwise)",
        "∂C/∂w² = 1/m (m ∂C/∂U²) Xᵀ + λ w²",
        "∂C/∂γ² = 1/m (Δ² ⊙ X̂²) 𝟙ₘ",
        "A³ = D³ ⊙ σ(Z³) + A²",
    ],
    "3b1b": [
        "U⁽ᴸ⁻²⁾ = W⁽ᴸ⁻²⁾ X",
        "∂C/∂W⁽ᴸ⁻²⁾ = 1/m (m ∂C/∂U⁽ᴸ⁻²⁾) Xᵀ + λ₂ W⁽ᴸ⁻²⁾",
    ],
    "cheatsheet": [
        "U₀ = W₀ X",
        "m C'(U₀) = γ₀/(√(v₀ + ε)) ⊙ (E₀ - C'(β₀) - X̂₀ ⊙ C'(γ₀)) (elementwise)",
    ],
    "course": [
        "U¹ = W¹ A⁰",
        "dU¹ = γ¹/(√(v¹ + ε)) ⊙ (dZ¹ - ∂C/∂β¹ - X̂¹ ⊙ ∂C/∂γ¹) (elementwise)",
        "∂C/∂W¹ = 1/m dU¹ (A⁰)ᵀ + λ₂ W¹",
    ],
}


@pytest.mark.parametrize("notation", NOTATIONS)
def test_each_notation_prints_the_batch_norm_statements(notation):
    doc = derivation(SPEC, notation)
    lines = [line.strip() for line in doc.to_text().splitlines()]
    missing = [want for want in EXPECTED[notation] if want not in lines]
    assert missing == [], "\n".join(lines)
    latex, markdown = doc.to_latex(), doc.to_markdown()
    assert "\\hat{X}" in latex and "\\hat{X}" in markdown
    assert latex.count("\\begin{equation*}") == len(doc)
    assert "replaces the per-example sections" in markdown


def _step(doc, target):
    return next(s for s in doc.vectorized if s.target == target)


@pytest.mark.slow
def test_the_batch_norm_forward_statements_and_the_masked_error_hold():
    doc = derivation(SPEC, "course")
    for target in ("mean1", "var1", "xhat1", "z1", "D2"):
        assert check_step(_step(doc, target), points=1), target
    for target in ("delta2", "dC_dW2"):  # masked BP2, BP4 with the L2 term
        assert check_step(_step(doc, target), points=1), target


@pytest.mark.slow
def test_the_three_term_error_and_the_batch_norm_gradients_hold():
    doc = derivation(SPEC, "course")
    for target in ("deltau1", "dC_dgamma1", "dC_dbeta1", "dC_dW1"):
        assert check_step(_step(doc, target), points=1), target


@pytest.fixture
def planted(monkeypatch):
    """Replace statements of the batch program (``change(statement)``), then clear the caches."""

    def plant(change):
        original = batch.batch_program
        monkeypatch.setattr(batch, "batch_program", lambda d: tuple(map(change, original(d))))
        return DerivationWriter(SPEC, "nielsen", 1).vectorized()

    yield plant
    _sections.cache_clear()
    derivation.cache_clear()


def test_a_batch_norm_network_without_its_dropout_mask_fails(planted):
    def unmasked(s):
        if s.op in ("map", "backprop") and "D2" in s.operands and s.label.startswith("BP"):
            expr = None if s.expr is None else s.expr.subs(naming.symbol("D2"), 1)
            operands = tuple(o for o in s.operands if o != "D2")
            return dataclasses.replace(s, expr=expr, operands=operands)
        return s

    section = planted(unmasked)
    step = next(s for s in section.steps if s.target == "delta2")
    assert "D" not in step.latex.split("=", 1)[1]  # the mask is gone from BP2
    assert not check_step(step, points=1)


@pytest.mark.slow
def test_a_wrong_three_term_statement_fails(planted):
    def two_terms(s):  # the variance's term dropped
        if s.op == "bn_backward":
            return dataclasses.replace(s, expr=s.expr.subs(naming.symbol("dC_dgamma1"), 0))
        return s

    section = planted(two_terms)
    assert not check_step(next(s for s in section.steps if s.target == "deltau1"), points=1)


def test_a_missing_l2_term_in_bp4_fails(planted):
    def bare(s):
        return dataclasses.replace(s, penalty=()) if s.op == "outer" and s.layer == 1 else s

    section = planted(bare)
    assert not check_step(next(s for s in section.steps if s.target == "dC_dW1"), points=1)


@pytest.mark.slow
@pytest.mark.parametrize("notation", NOTATIONS)
def test_every_equation_of_a_batch_normalized_network_holds(notation):
    doc = derivation(SPEC, notation)
    failed = [s.title for s in doc if not check_step(s, points=1, seed=5)]
    assert failed == []


@pytest.mark.slow
def test_every_equation_holds_in_the_rows_layout_with_dropout_below_batch_norm():
    spec = Spec(
        2,
        (Layer(2, "tanh", dropout=0.25), Layer(2, "sigmoid", batch_norm=True), Layer(1, "sigmoid")),
        "quadratic",
        layout="rows",
        l1=0.02,
    )
    doc = derivation(spec, "cheatsheet")
    failed = [s.title for s in doc if not check_step(s, points=1, seed=2)]
    assert failed == []
    assert "U₁ = H₀ W₁" in [line.strip() for line in doc.to_text().splitlines()]


@pytest.mark.parametrize("fmt", ["text", "md", "tex"])
def test_the_command_derives_batch_norm_with_dropout(tmp_path: Path, capsys, fmt):
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML, encoding="utf-8")
    assert main(["derive", str(path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "Batch normalization's backward pass" in out
    assert "Vectorized over a mini-batch" in out
    assert "Forward equations" not in out and "Summary: BP1 to BP4" not in out
    assert ("D^{3}" if fmt != "text" else "D³ = R³/(1 - p)") in out


def test_bp4_and_the_layer_below_take_the_error_at_u_as_the_section_says():
    spec = Spec(
        2, (Layer(2, "tanh"), Layer(2, "relu", batch_norm=True), Layer(1, "sigmoid")), "quadratic"
    )
    program = batch_program(derive_network(spec))
    weight_gradient = next(s for s in program if s.target == "dC_dW2")
    below = next(s for s in program if s.target == "delta1")
    assert weight_gradient.operands[0] == "deltau2" and below.operands[1] == "deltau2"
    words = derivation(spec).sections[-1].intro  # the section's words name those takers
    assert "BP2 of the layer below and BP4 take it in place of the error" in words
    course = derivation(spec, "course").sections[-1].intro
    assert "the error of the layer below and the weights' gradient take it" in course


def test_the_readme_says_what_derive_shows_for_batch_norm():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "`chainrule derive` on such a network shows three sections, in each notation" in flat
    assert "and dropout on another layer." in flat
    assert "It refuses dropout in a network with batch norm" not in flat
