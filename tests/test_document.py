"""The step-by-step derivation: every equation holds, the seeds' forms come out, and the
vectorized section matches the generated module's statements line by line."""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp
from chainrule.codegen.program import build_program
from chainrule.codegen.render import generate_module
from chainrule.derive import batch
from chainrule.derive.batch import BatchStatement, batch_program
from chainrule.derive.document import (
    Step,
    _sections,
    check_step,
    derivation,
    sides_agree,
    to_unicode,
)
from chainrule.derive.layers import NetworkDerivation, derive_network
from chainrule.derive.spec import Spec, preset, preset_names

import chainrule

#: Small specs beyond the presets: softmax (with and without the sum-to-one
#: simplification), a custom activation, a linear layer, the rows layout.
EXTRA_SPECS = {
    "softmax-ce": Spec.from_sizes([2, 2, 2], ["tanh", "softmax"], "cross-entropy"),
    "softmax-quadratic": Spec.from_sizes([2, 1, 2], ["sigmoid", "softmax"], "quadratic"),
    "custom-linear": Spec.from_sizes([2, 2, 2], ["x*sigmoid(x)", "linear"], "quadratic"),
    "rows-tanh": Spec.from_sizes(
        [2, 3, 2], ["tanh", "sigmoid"], "binary-cross-entropy", layout="rows"
    ),
    "softmax-bce": Spec.from_sizes([2, 2, 3], ["sigmoid", "softmax"], "binary-cross-entropy"),
    "softmax-bce-rows": Spec.from_sizes([2, 3], ["softmax"], "binary-cross-entropy", layout="rows"),
}


def _unicode_steps(doc: chainrule.Derivation) -> list[str]:
    return [to_unicode(step.latex) for step in doc]


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_every_equation_of_every_preset_holds(name: str) -> None:
    doc = derivation(preset(name))
    assert len(doc) > 20
    failed = [step.title for step in doc if not check_step(step, points=1, seed=3)]
    assert failed == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXTRA_SPECS))
def test_every_equation_of_other_networks_holds(name: str) -> None:
    doc = derivation(EXTRA_SPECS[name])
    failed = [step.title for step in doc if not check_step(step, points=1, seed=5)]
    assert failed == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "notation"),
    [("3b1b-chain", "3b1b"), ("cheatsheet-relu", "cheatsheet"), ("deep-relu-sigmoid", "course")],
)
def test_every_equation_holds_in_the_seed_notations(name: str, notation: str) -> None:
    doc = derivation(preset(name), notation)
    assert all(check_step(step, points=2) for step in doc)


@pytest.mark.slow
def test_a_wrong_equation_is_caught() -> None:
    doc = derivation(preset("two-layer-nobias"))
    # The module's first weights: layer 2 in Nielsen's numbering (the input is layer 1).
    bp4 = next(s for s in doc if s.label == "BP4" and "layer 2" in s.title)
    lhs, rhs = bp4.equality
    assert sides_agree((lhs, rhs))
    wrong = dataclasses.replace(bp4, source=((lhs, rhs * 2),))
    assert not check_step(wrong)
    # The gradient of another weight is not this weight's gradient.
    other = bp4.checks[1][1]
    assert not check_step(dataclasses.replace(bp4, source=((lhs, other),)))


@pytest.mark.slow
def test_expanded_chain_is_compared_with_diff_of_the_full_scalar_cost() -> None:
    doc = derivation(preset("deep-relu-sigmoid"))
    # w1_0_0, the module's first weight, is in layer 2 in Nielsen's numbering.
    step = next(s for s in doc if s.title == "Chain rule for a weight of layer 2, written out")
    lhs = step.lhs
    assert isinstance(lhs, sp.Derivative)
    weight = lhs.variables[0]
    assert weight.name == "w1_0_0"
    # The differentiated expression is the cost of the whole witness network.
    assert {s.name for s in lhs.expr.free_symbols} >= {"w4_0_2", "b1_0", "x_0_0", "y_0_0"}
    assert len(step.sides) == 3 and check_step(step)


@pytest.mark.slow
def test_steps_carry_title_latex_and_a_sympy_equality() -> None:
    doc = chainrule.derivation(preset("nielsen"))
    steps = list(doc)
    assert steps == list(doc.steps)
    for step in steps:
        assert isinstance(step, Step) and step.title and step.latex
        lhs, rhs = step.equality
        assert isinstance(lhs, (sp.Basic, sp.MatrixBase))
        assert isinstance(rhs, (sp.Basic, sp.MatrixBase))
    titles = [section.title for section in doc.sections]
    assert titles == [
        "The network and the notation",
        "Forward equations",
        "Local partial derivatives",
        "The chain rule, written out and memoized",
        "As the book writes it",
        "Summary: BP1 to BP4",
        "Vectorized over a mini-batch",
    ]


def test_nielsen_summary_is_bp1_to_bp4() -> None:
    # Nielsen's numbering: the input is layer 1, so [784, 30, 10] has output layer L = 3.
    summary = derivation(preset("nielsen")).sections[5].steps
    by_label = [(s.label, s.latex) for s in summary]
    assert by_label == [
        (
            "BP1",
            r"\delta^{3} = \nabla_a C \odot \sigma'(z^{3}) = \left(a^{3} - y\right) \odot "
            r"\sigma'(z^{3}) = a^{3} \odot \left(1 - a^{3}\right) \odot \left(a^{3} - y\right)",
        ),
        ("BP2", r"\delta^{2} = \left((w^{3})^{T} \delta^{3}\right) \odot \sigma'(z^{2})"),
        ("BP3", r"\frac{\partial C}{\partial b^{3}} = \delta^{3}"),
        ("BP3", r"\frac{\partial C}{\partial b^{2}} = \delta^{2}"),
        ("BP4", r"\frac{\partial C}{\partial w^{3}} = \delta^{3} (a^{2})^{T}"),
        ("BP4", r"\frac{\partial C}{\partial w^{2}} = \delta^{2} x^{T}"),
    ]


def test_nielsen_component_forms() -> None:
    text = _unicode_steps(derivation(preset("nielsen")))
    assert "∂C/∂w³ⱼₖ = δ³ⱼ a²ₖ" in text
    assert "∂C/∂b²ⱼ = δ²ⱼ" in text
    assert "δ²ⱼ = ∂C/∂z²ⱼ = Σₚ δ³ₚ w³ₚⱼ σ'(z²ⱼ)" in text


def test_3b1b_chain_reproduces_the_three_ratios() -> None:
    doc = derivation(preset("3b1b-chain"), "3b1b")
    step = next(s for s in doc if s.title == "Chain rule for a weight of layer 3, written out")
    assert to_unicode(step.latex).splitlines() == [
        "∂C₀/∂w⁽ᴸ⁾ = ∂z⁽ᴸ⁾/∂w⁽ᴸ⁾ ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ ∂C₀/∂a⁽ᴸ⁾",
        "= a⁽ᴸ⁻¹⁾ σ'(z⁽ᴸ⁾) 2 (a⁽ᴸ⁾ - y)",
    ]
    # The output error, shared by every layer below, is highlighted.
    assert r"\textcolor{teal}{\sigma'(z^{(L)})}" in step.latex
    assert r"\textcolor{teal}{2 \left(a^{(L)} - y\right)}" in step.latex
    deeper = next(s for s in doc if s.title == "Chain rule for a weight of layer 1, written out")
    assert to_unicode(deeper.latex).splitlines()[-1].startswith("= x σ'(z⁽ᴸ⁻²⁾) w⁽ᴸ⁻¹⁾")


def test_cheatsheet_reproduces_e_o_and_e_h() -> None:
    text = _unicode_steps(derivation(preset("cheatsheet-relu"), "cheatsheet"))
    assert "Eₒ = C'(Zₒ) = C'(ŷ) · R'(Zₒ) = (ŷ - y) · R'(Zₒ)" in text
    assert "Eₕ = Eₒ · Wₒ · R'(Zₕ)" in text
    assert "C'(Wₒ) = C'(ŷ) · ŷ'(Zₒ) · Zₒ'(Wₒ)\n= (ŷ - y) · R'(Zₒ) · H" in text
    assert "C'(Wₕ) = Eₕ · X" in text


@pytest.mark.slow
def test_simplified_output_error_for_sigmoid_and_cross_entropy() -> None:
    doc = derivation(preset("deep-relu-sigmoid"))
    bp1 = doc.sections[5].steps[0]
    assert bp1.label == "BP1" and bp1.latex.endswith("= a^{5} - y")
    softmax = derivation(EXTRA_SPECS["softmax-ce"]).sections[5].steps[0]
    assert softmax.latex.endswith("= a^{3} - y")


@pytest.mark.parametrize("spec", [preset(n) for n in preset_names()] + list(EXTRA_SPECS.values()))
@pytest.mark.slow
def test_vectorized_section_renders_the_module_statements(spec: Spec) -> None:
    # The module's statements, less the temporaries it adds for speed, are the batch
    # program's statements; the document renders the same ones, in the same order.
    program = build_program(derive_network(spec))
    statements = [*program.forward, program.cost, *program.backward]
    expected = [(st.label, st.target) for st in statements if st.source is not None]
    assert [(s.label, s.target) for s in batch_program(derive_network(spec))] == expected
    for notation in ("nielsen", "cheatsheet"):
        doc = derivation(spec, notation)
        assert [(s.label, s.target) for s in doc.vectorized] == expected


def test_a_changed_statement_shows_in_the_module_its_comment_and_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One source: doubling sigma'(z^1) in the batch program changes the module's code,
    # the module's comment and the derivation's vectorized section, and the document's
    # check of that statement fails.
    spec = preset("nielsen")
    original = batch.batch_program

    def doubled(derived: NetworkDerivation) -> tuple[BatchStatement, ...]:
        out = []
        for s in original(derived):
            if s.target == "sp1":
                s = dataclasses.replace(s, expr=2 * s.expr, equation="sp1 = DOUBLED")
            out.append(s)
        return tuple(out)

    def sp1_text() -> tuple[str, str, str, bool]:
        derivation.cache_clear()
        _sections.cache_clear()
        source = generate_module(spec)
        line = "\n".join(ln for ln in source.splitlines() if ln.strip().startswith("sp1 "))
        (comment,) = [ln for ln in source.splitlines() if "# BP2: sp1 = " in ln]
        step = next(s for s in derivation(spec).vectorized if s.target == "sp1")
        return line, comment, step.latex, check_step(step, points=1)

    before = sp1_text()
    monkeypatch.setattr(batch, "batch_program", doubled)
    after = sp1_text()
    monkeypatch.undo()
    derivation.cache_clear()
    _sections.cache_clear()
    assert before[3] is True and after[3] is False
    assert "2" in after[0] and after[0] != before[0]
    assert after[1].strip() == "# BP2: sp1 = DOUBLED"
    # A product of batch matrices is elementwise: written with odot.
    doubled_tex = r"2 A^{2} \odot \left(1 - A^{2}\right)"  # the module's sp1: Nielsen's layer 2
    assert after[2].endswith(doubled_tex)
    assert not before[2].endswith(doubled_tex)


def test_large_layers_are_not_expanded_scalar_by_scalar() -> None:
    doc = derivation(preset("nielsen"))
    tex = doc.to_latex()
    assert "784" in tex  # the table gives the real size
    assert "_{783" not in tex and "w^{1}_{0" not in tex
    assert len(tex) < 40_000
    assert "at most 3 units per layer" in doc.sections[0].intro


@pytest.mark.slow
def test_softmax_binary_cross_entropy_is_shown_through_log_one_minus_a() -> None:
    doc = derivation(EXTRA_SPECS["softmax-bce"])
    text = {step.title: to_unicode(step.latex) for step in doc.vectorized}
    assert "log(1 - A³)" in text["Log of one minus the softmax"]
    assert (
        "log(1 - A³ⱼᵢ)" in text["Cost of the batch"] and "log1mp" not in text["Cost of the batch"]
    )
    assert "Σₖ≠ⱼ" in text["Other units of the output error"]
    assert text["Output error of the batch"].startswith("Δ³ = 3 A³ + R³ - Y")


def test_user_name_never_appears() -> None:
    name = r"EVIL}\input{/etc/passwd} $x$ <b>"
    spec = preset("two-layer-nobias").replace(name=name)
    doc = derivation(spec)
    for text in (doc.to_latex(), doc.to_markdown(), doc.to_text(), doc._repr_latex_()):
        assert "EVIL" not in text and "passwd" not in text


def test_custom_activation_is_shown_as_sympy_latex() -> None:
    doc = derivation(EXTRA_SPECS["custom-linear"])
    table = doc.sections[0].table
    assert table[1 + 1][2] == r"$x \sigma\left(x\right)$"
    activation = next(s for s in doc if s.title == "Activation of layer 2")
    assert r"z^{2}_{j} \sigma\left(z^{2}_{j}\right)" in activation.latex


def test_jupyter_display() -> None:
    doc = chainrule.derivation(preset("3b1b-chain"), notation="3b1b")
    latex = doc._repr_latex_()
    assert latex.startswith("$$") and latex.rstrip().endswith("$$")
    assert latex.count("{") == latex.count("}")
    assert latex.count("$$") % 2 == 0
    markdown = doc._repr_markdown_()
    assert markdown.startswith("# Backpropagation, step by step: a 1-1-1-1 network")
    assert markdown.count("$$") == 2 * len(doc)
    # BP1 to BP4 are Nielsen's names: tagged in his notation only.
    assert "\\tag{BP" not in markdown
    assert "\\tag{BP1}" in chainrule.derivation(preset("3b1b-chain"))._repr_markdown_()


@pytest.mark.slow
def test_text_is_plain_unicode() -> None:
    for name in preset_names():
        for notation in ("nielsen", "3b1b", "cheatsheet"):
            text = derivation(preset(name), notation).to_text()
            assert "\\" not in text and "$" not in text


def test_to_unicode_of_fractions_and_scripts() -> None:
    assert to_unicode(r"\frac{\partial C}{\partial w^{2}_{jk}} = a^{1}_{k} \delta^{2}_{j}") == (
        "∂C/∂w²ⱼₖ = a¹ₖ δ²ⱼ"
    )
    assert to_unicode(r"\sum_{q} x_{q}") == "Σ_q x_q"


def test_unknown_notation_is_a_spec_error() -> None:
    with pytest.raises(chainrule.SpecError, match="notation"):
        derivation(preset("nielsen"), "leibniz")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nielsen", "deep-relu-sigmoid"])
def test_layout_does_not_depend_on_the_witness_width(name: str) -> None:
    from chainrule.derive.document import WITNESS_WIDTH, _sections

    light = _sections(preset(name), "nielsen", 1)
    full = _sections(preset(name), "nielsen", WITNESS_WIDTH)
    assert [s.latex for sec in light for s in sec.steps] == [
        s.latex for sec in full for s in sec.steps
    ]


@pytest.mark.slow
def test_deep_networks_render_quickly() -> None:
    spec = Spec.from_sizes([4] * 40 + [2], ["relu"] * 39 + ["softmax"], "cross-entropy")
    doc = derivation(spec, "3b1b")
    assert len(doc) > 600 and "\\end{document}" in doc.to_latex()


#: Layers whose activation is not the logistic function, and a softmax output.
READS_TRUE = {
    "swish": Spec.from_sizes([2, 2, 1], ["x*sigmoid(x)", "sigmoid"], "quadratic"),
    "softplus": Spec.from_sizes([2, 2, 1], ["softplus", "sigmoid"], "quadratic"),
    "softmax-ce": Spec.from_sizes([2, 2, 2], ["tanh", "softmax"], "cross-entropy"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(READS_TRUE))
def test_sigma_is_only_the_logistic_function(name: str) -> None:
    doc = derivation(READS_TRUE[name])
    text = doc.to_text()
    # The hidden layer is not a sigmoid: its activation is never written sigma.
    assert "σ(z²ⱼ) = z²ⱼ σ(z²ⱼ)" not in text and "σ'(z²ⱼ) = σ(z²ⱼ)" not in text
    assert "σ'(z²" not in text and "= σ(z²ⱼ) =" not in text
    for output in (text, doc.to_markdown(), doc.to_latex()):
        assert "\\sigma'(z^{2}" not in output
    if name == "swish":
        assert "a²ⱼ = f(z²ⱼ) = z²ⱼ σ(z²ⱼ)" in text
        assert "f'(z²ⱼ) = - z²ⱼ (σ(z²ⱼ) - 1) σ(z²ⱼ) + σ(z²ⱼ)" in text
    if name == "softplus":
        assert "softplus'(z²ⱼ) = σ(z²ⱼ)" in text
        assert "\\operatorname{softplus}'(z^{2}_{j}) = \\sigma\\left(z^{2}_{j}\\right)" in (
            doc.to_latex()
        )
    if name == "softmax-ce":
        assert "a²ⱼ = tanh(z²ⱼ) = (exp(z²ⱼ)" in text  # no tanh(z) = tanh(z)


@pytest.mark.slow
def test_sum_to_one_assumption_reads_as_one_sentence() -> None:
    doc = derivation(READS_TRUE["softmax-ce"])
    assert "(Σⱼ yⱼ = 1)." in doc.to_text()
    assert "($\\sum_j y_j = 1$)." in doc.to_latex()
    assert "($\\sum_j y_j = 1$)." in doc.to_markdown()
    for output in (doc.to_text(), doc.to_latex(), doc.to_markdown()):
        assert "\\\\sum" not in output and "(\n" not in output
