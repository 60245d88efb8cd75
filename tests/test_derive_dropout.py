"""The derivation of a network with dropout: the mask, the masked forward pass and BP2 with
the mask's factor, in every notation, each equation checked by SymPy; and the one-line
seed that ``derive --at`` needs; and dropout next to batch norm on another layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sympy as sp
from chainrule.derive import batch, naming
from chainrule.derive.batch import batch_program
from chainrule.derive.document import DerivationWriter, _sections, check_step, derivation
from chainrule.derive.document import base as document_base
from chainrule.derive.document import dropout as document_dropout
from chainrule.derive.layers import DROP, KEEP, derive_network, dropout_factor
from chainrule.derive.spec import Layer, Spec

from chainrule.cli import main

#: input 2, a tanh layer with dropout 0.2, a sigmoid output: small enough to check fast.
SPEC = Spec(2, (Layer(2, "tanh", dropout=0.2), Layer(1, "sigmoid")), "quadratic")

SPEC_TOML = """\
input = 3
cost = "quadratic"
[[layers]]
size = 4
activation = "tanh"
dropout = 0.2
[[layers]]
size = 2
activation = "sigmoid"
"""

#: Per notation, lines the text rendering must print: the mask (per unit, then over the
#: batch), the masked forward pass, its derivative, BP2 per unit, in vector form and over
#: the batch. Each notation writes the hidden layer with its own symbols.
EXPECTED = {
    "nielsen": [
        "Dˡⱼ: dropout mask of unit j of layer l (training only): layer 2 (p = 0.2)",
        "D²ⱼ = r²ⱼ/(1 - p), r²ⱼ ~ Bernoulli(1 - p), p = 0.2, E[D²ⱼ] = 1 "
        "(drawn per unit and per example in training; no mask at inference)",
        "a²ⱼ = D²ⱼ tanh(z²ⱼ) = D²ⱼ ((exp(z²ⱼ) - exp(- z²ⱼ))/(exp(z²ⱼ) + exp(- z²ⱼ)))",
        "∂a²ⱼ/∂z²ⱼ = D²ⱼ tanh'(z²ⱼ) = D²ⱼ (1 - tanh²(z²ⱼ))",
        "δ²ⱼ = ∂C/∂z²ⱼ = δ³ w³₁ⱼ D²ⱼ tanh'(z²ⱼ)",
        "δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ Dˡ ⊙ f'(zˡ)",
        "δ² = ((w³)ᵀ δ³) ⊙ D² ⊙ tanh'(z²)",
        "D² = R²/(1 - p), R² ~ Bernoulli(1 - p) (entrywise), p = 0.2",
        "A² = D² ⊙ tanh(Z²)",
        "Δ² = ((w³)ᵀ Δ³) ⊙ D² ⊙ tanh'(Z²)",
    ],
    "3b1b": [
        "D⁽ᴸ⁻¹⁾ⱼ = r⁽ᴸ⁻¹⁾ⱼ/(1 - p), r⁽ᴸ⁻¹⁾ⱼ ~ Bernoulli(1 - p), p = 0.2, E[D⁽ᴸ⁻¹⁾ⱼ] = 1 "
        "(drawn per unit and per example in training; no mask at inference)",
        "a⁽ᴸ⁻¹⁾ⱼ = D⁽ᴸ⁻¹⁾ⱼ tanh(z⁽ᴸ⁻¹⁾ⱼ) = D⁽ᴸ⁻¹⁾ⱼ "
        "((exp(z⁽ᴸ⁻¹⁾ⱼ) - exp(- z⁽ᴸ⁻¹⁾ⱼ))/(exp(z⁽ᴸ⁻¹⁾ⱼ) + exp(- z⁽ᴸ⁻¹⁾ⱼ)))",
        "∂C₀/∂z⁽ᴸ⁻¹⁾ⱼ = D⁽ᴸ⁻¹⁾ⱼ tanh'(z⁽ᴸ⁻¹⁾ⱼ) w⁽ᴸ⁾₀ⱼ ∂C₀/∂z⁽ᴸ⁾",
        "∂C₀/∂z⁽ᴸ⁻¹⁾ = ((W⁽ᴸ⁾)ᵀ ∂C₀/∂z⁽ᴸ⁾) ⊙ D⁽ᴸ⁻¹⁾ ⊙ tanh'(z⁽ᴸ⁻¹⁾)",
        "Δ⁽ᴸ⁻¹⁾ = ((W⁽ᴸ⁾)ᵀ Δ⁽ᴸ⁾) ⊙ D⁽ᴸ⁻¹⁾ ⊙ tanh'(Z⁽ᴸ⁻¹⁾)",
        "D⁽ᴸ⁻¹⁾ = R⁽ᴸ⁻¹⁾/(1 - p), R⁽ᴸ⁻¹⁾ ~ Bernoulli(1 - p) (entrywise), p = 0.2",
        "A⁽ᴸ⁻¹⁾ = D⁽ᴸ⁻¹⁾ ⊙ tanh(Z⁽ᴸ⁻¹⁾)",
    ],
    "cheatsheet": [
        "Dₕ,ⱼ = Kₕ,ⱼ/(1 - p), Kₕ,ⱼ ~ Bernoulli(1 - p), p = 0.2, E[Dₕ,ⱼ] = 1 "
        "(drawn per unit and per example in training; no mask at inference)",
        "Hⱼ = Dₕ,ⱼ · tanh(Zₕ,ⱼ) = Dₕ,ⱼ · ((exp(Zₕ,ⱼ) - exp(- Zₕ,ⱼ))/(exp(Zₕ,ⱼ) + exp(- Zₕ,ⱼ)))",
        "Hⱼ'(Zₕ,ⱼ) = Dₕ,ⱼ · tanh'(Zₕ,ⱼ) = Dₕ,ⱼ · (1 - tanh²(Zₕ,ⱼ))",
        "Eₕ,ⱼ = C'(Zₕ,ⱼ) = Eₒ · Wₒ,₁ⱼ · Dₕ,ⱼ · tanh'(Zₕ,ⱼ)",
        "Eₕ = (Wₒᵀ Eₒ) ⊙ Dₕ ⊙ tanh'(Zₕ)",
        "Dₕ = Kₕ/(1 - p), Kₕ ~ Bernoulli(1 - p) (entrywise), p = 0.2",
        "H = Dₕ ⊙ tanh(Zₕ)",
    ],
    "course": [
        "D¹ⱼ = r¹ⱼ/(1 - p), r¹ⱼ ~ Bernoulli(1 - p), p = 0.2, E[D¹ⱼ] = 1 "
        "(drawn per unit and per example in training; no mask at inference)",
        "a¹ⱼ = D¹ⱼ tanh(z¹ⱼ) = D¹ⱼ ((exp(z¹ⱼ) - exp(- z¹ⱼ))/(exp(z¹ⱼ) + exp(- z¹ⱼ)))",
        "dz¹ⱼ = ∂C/∂z¹ⱼ = dz² w²₁ⱼ D¹ⱼ tanh'(z¹ⱼ)",
        "dz¹ = ((W²)ᵀ dz²) ⊙ D¹ ⊙ tanh'(z¹)",
        "dZ¹ = dA¹ ⊙ D¹ ⊙ tanh'(Z¹)",
        "D¹ = R¹/(1 - p), R¹ ~ Bernoulli(1 - p) (entrywise), p = 0.2",
        "A¹ = D¹ ⊙ tanh(Z¹)",
        "dZ¹ = ((W²)ᵀ dZ²) ⊙ D¹ ⊙ tanh'(Z¹)",
    ],
}


def _lines(notation: str) -> list[str]:
    return [line.strip() for line in derivation(SPEC, notation).to_text().splitlines()]


@pytest.mark.parametrize("notation", sorted(EXPECTED))
def test_each_notation_prints_the_mask_the_forward_pass_and_bp2(notation: str) -> None:
    lines = _lines(notation)
    missing = [line for line in EXPECTED[notation] if line not in lines]
    assert missing == []


def test_the_cheatsheet_draw_is_not_its_relu() -> None:
    """The cheatsheet writes ReLU as R: its dropout draw is K (keep), so that no R in a
    ReLU layer with dropout is a Bernoulli draw (it was: Dₕ = Rₕ/(1 - p) above
    H = Dₕ ⊙ R(Zₕ))."""
    spec = Spec(2, (Layer(2, "relu", dropout=0.5), Layer(1, "sigmoid")), "quadratic")
    text = derivation(spec, "cheatsheet").to_text()
    assert "Dₕ = Kₕ/(1 - p), Kₕ ~ Bernoulli(1 - p) (entrywise), p = 0.5" in text
    assert "H = Dₕ ⊙ R(Zₕ)" in text
    draws = [ln for ln in text.splitlines() if "Bernoulli" in ln]
    assert len(draws) == 2 and not [ln for ln in draws if "R" in ln.split("Bernoulli")[0]]


def test_without_dropout_no_mask_is_printed() -> None:
    plain = Spec(2, (Layer(2, "tanh"), Layer(1, "sigmoid")), "quadratic")
    text = derivation(plain).to_text()
    assert "D²" not in text and "Bernoulli" not in text
    assert "δ² = ((w³)ᵀ δ³) ⊙ tanh'(z²)" in [ln.strip() for ln in text.splitlines()]


def test_sigma_names_only_the_sigmoid() -> None:
    # A sigmoid hidden layer with dropout is written with sigma; tanh never is.
    spec = Spec(2, (Layer(2, "sigmoid", dropout=0.5), Layer(1, "sigmoid")), "quadratic")
    lines = [ln.strip() for ln in derivation(spec).to_text().splitlines()]
    assert "A² = D² ⊙ σ(Z²)" in lines
    # A form that is not a function's value is parenthesized after the mask.
    assert "∂a²ⱼ/∂z²ⱼ = D²ⱼ σ'(z²ⱼ) = D²ⱼ (- (σ(z²ⱼ) - 1) σ(z²ⱼ))" in lines
    assert "δ² = ((w³)ᵀ δ³) ⊙ D² ⊙ σ'(z²)" in lines


def test_the_vectorized_section_renders_the_dropout_program() -> None:
    # The mini-batch section is the batch program with its mask statement, statement for
    # statement: the same source the generated module is printed from.
    program = batch_program(derive_network(SPEC))
    assert "dropout" in [s.op for s in program]
    doc = derivation(SPEC, "nielsen")
    assert [(s.label, s.target) for s in doc.vectorized] == [(s.label, s.target) for s in program]
    backprop = next(s for s in program if s.op == "backprop" and s.layer == 1)
    assert "D1" in backprop.operands  # the mask factor the module multiplies by


def test_the_mask_factor_is_sympys() -> None:
    # d(D f(z))/dz over f'(z), by SymPy: the factor BP2 displays and checks.
    assert dropout_factor() == sp.Symbol("D", real=True)


def _dropout_steps(notation: str) -> list:
    """The steps that write the mask (its definition, or D^l / D_h as a factor)."""
    mask = DerivationWriter(SPEC, notation, 1).nota.mask(1)
    return [s for s in derivation(SPEC, notation) if mask in s.latex]


@pytest.mark.slow
@pytest.mark.parametrize("notation", sorted(EXPECTED))
def test_every_dropout_equation_holds(notation: str) -> None:
    steps = _dropout_steps(notation)
    titles = {s.title for s in steps}
    assert any("Dropout mask" in t for t in titles)
    assert any(s.label == "BP2" or "error" in s.title.lower() for s in steps)
    failed = [s.title for s in steps if not check_step(s, points=1, seed=7)]
    assert failed == []


@pytest.mark.slow
def test_every_equation_of_a_deeper_dropout_network_holds() -> None:
    # Two dropout layers (relu, then sigmoid), a softmax output, the rows layout.
    spec = Spec(
        2,
        (Layer(2, "relu", dropout=0.5), Layer(2, "sigmoid", dropout=0.25), Layer(2, "softmax")),
        "cross-entropy",
        layout="rows",
    )
    doc = derivation(spec, "course")
    failed = [s.title for s in doc if not check_step(s, points=1, seed=3)]
    assert failed == []


def test_the_mask_step_holds_and_a_wrong_mask_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = DerivationWriter(SPEC, "nielsen", 1)
    batch_mask = next(s for s in writer.vectorized().steps if s.target == "D1")
    assert check_step(writer.mask_step(1)) and check_step(batch_mask)
    # Planted: D = r (1 - p), not inverted dropout: E[D] = (1 - p)^2, not 1.
    monkeypatch.setattr(document_dropout, "mask_value", lambda: KEEP * (1 - DROP))
    assert not check_step(writer.mask_step(1))
    fresh = DerivationWriter(SPEC, "nielsen", 1)
    assert not check_step(next(s for s in fresh.vectorized().steps if s.target == "D1"))


def test_a_wrong_bp2_factor_fails_its_check(monkeypatch: pytest.MonkeyPatch) -> None:
    right = DerivationWriter(SPEC, "nielsen", 1).bp2_vector(1)
    assert check_step(right, points=1)
    # Planted: the mask counted twice in BP2 (factor D^2 instead of SymPy's D).
    monkeypatch.setattr(document_base, "dropout_factor", lambda: dropout_factor() ** 2)
    wrong = DerivationWriter(SPEC, "nielsen", 1).bp2_vector(1)
    assert wrong.latex == right.latex
    assert not check_step(wrong, points=1)


def test_a_wrong_statement_in_the_batch_program_fails_its_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The vectorized BP2 is the batch program's own statement, run on the witness batch:
    # dropping the mask from it makes its check fail.
    original = batch.batch_program

    def unmasked(derived):  # noqa: ANN001, ANN202
        out = []
        for s in original(derived):
            if s.op == "backprop" and "D1" in s.operands:
                s = type(s)(**{**s.__dict__, "operands": tuple(o for o in s.operands if o != "D1")})
            out.append(s)
        return tuple(out)

    monkeypatch.setattr(batch, "batch_program", unmasked)
    writer = DerivationWriter(SPEC, "nielsen", 1)
    step = next(s for s in writer.vectorized().steps if s.target == naming.delta(1))
    assert not check_step(step, points=1)
    _sections.cache_clear()
    derivation.cache_clear()


@pytest.mark.parametrize("fmt", ["text", "md", "tex"])
def test_the_command_derives_a_network_with_dropout(tmp_path: Path, capsys, fmt: str) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    assert main(["derive", str(path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "Bernoulli" in out
    mask = {"text": "D²", "md": "D^{2}", "tex": "D^{2}"}[fmt]
    assert mask in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_pdf_compiles(tmp_path: Path) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    out = tmp_path / "d.pdf"
    assert main(["derive", str(path), "--notation", "course", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF-")


def test_derive_at_with_dropout_without_a_seed_is_refused_in_one_line(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    values = tmp_path / "values.toml"
    values.write_text(
        "x = [1.0, 2.0, 3.0]\ny = [0.0, 1.0]\n[params]\n"
        "W1 = [[0.1, 0.2, 0.3], [0.0, -0.1, 0.2], [0.3, 0.1, 0.0], [-0.2, 0.1, 0.4]]\n"
        "b1 = [0, 0, 0, 0]\nW2 = [[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]\nb2 = [0, 0]\n"
    )
    assert main(["derive", str(path), "--at", str(values)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err == (
        "chainrule: error: seed: missing: this network has dropout, and its masks are drawn "
        "from a seed; give seed = 0 (any whole number >= 0), as loss_and_grad(..., seed=0) takes"
    )


#: Dropout on the source of a skip (layer 1) and on its target (layer 2).
SKIP_SOURCE = Spec(
    2,
    (Layer(2, "tanh", dropout=0.5), Layer(2, "tanh", skip_from=1), Layer(1, "sigmoid")),
    "quadratic",
)
SKIP_TARGET = Spec(
    2,
    (Layer(2, "tanh"), Layer(2, "sigmoid", skip_from=1, dropout=0.5), Layer(1, "sigmoid")),
    "quadratic",
)


def test_dropout_next_to_a_skip_is_derived() -> None:
    source = [ln.strip() for ln in derivation(SKIP_SOURCE).to_text().splitlines()]
    assert "δ²ⱼ = ∂C/∂z²ⱼ = ∂C/∂a²ⱼ D²ⱼ tanh'(z²ⱼ)" in source
    assert "δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹ + Σ_d ∂C/∂a^d) ⊙ Dˡ ⊙ f'(zˡ)" in source
    assert "δ² = ((w³)ᵀ δ³ + ∂C/∂a³) ⊙ D² ⊙ tanh'(z²)" in source
    assert "Δ² = D² ⊙ ∂C/∂A² ⊙ tanh'(Z²) (elementwise)" in source
    target = [ln.strip() for ln in derivation(SKIP_TARGET).to_text().splitlines()]
    assert "a³ⱼ = D³ⱼ σ(z³ⱼ) + a²ⱼ = D³ⱼ (1/(1 + exp(- z³ⱼ))) + a²ⱼ" in target
    assert "A³ = D³ ⊙ σ(Z³) + A²" in target
    assert "δ³ = ((w⁴)ᵀ δ⁴) ⊙ D³ ⊙ σ'(z³)" in target


@pytest.mark.slow
@pytest.mark.parametrize("spec", [SKIP_SOURCE, SKIP_TARGET], ids=["source", "target"])
def test_every_equation_with_dropout_next_to_a_skip_holds(spec: Spec) -> None:
    doc = derivation(spec, "nielsen")
    failed = [s.title for s in doc if not check_step(s, points=1, seed=11)]
    assert failed == []


def test_the_readme_says_derive_shows_dropout() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "`chainrule derive` (also with `--at`, given a `seed` in the values" in flat
    assert "`chainrule derive` shows dropout in every notation" in flat
    assert "in an unrolled module (every strategy) each mask entry" in flat
    assert "also on a layer a residual connection goes into or out of" in flat


def test_dropout_in_a_batch_normalized_network_is_derived(tmp_path: Path, capsys) -> None:
    path = tmp_path / "net.toml"
    path.write_text(
        'input = 3\ncost = "quadratic"\n'
        '[[layers]]\nsize = 4\nactivation = "tanh"\ndropout = 0.2\n'
        '[[layers]]\nsize = 3\nactivation = "relu"\nbatch_norm = true\n'
        '[[layers]]\nsize = 2\nactivation = "sigmoid"\n'
    )
    assert main(["derive", str(path)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "2. Batch normalization's backward pass" in lines
    # the mask in the forward pass, and in BP2 under the batch-normalized layer's error at U
    assert "A² = D² ⊙ tanh(Z²)" in lines and "Δ² = ((w³)ᵀ (m ∂C/∂U³)) ⊙ D² ⊙ tanh'(Z²)" in lines


@pytest.mark.slow
def test_the_python_api_derives_dropout_and_works_a_seeded_point_out() -> None:
    import chainrule

    text = chainrule.derivation(SPEC, "course").to_text()
    assert "A¹ = D¹ ⊙ tanh(Z¹)" in [ln.strip() for ln in text.splitlines()]
    point = {
        "x": [1.0, 2.0],
        "y": [0.0],
        "seed": 0,
        "params": {"W1": [[0.1, 0.2], [0.3, -0.4]], "b1": [0, 0], "W2": [[0.5, 0.6]], "b2": [0]},
    }
    doc = chainrule.derivation(SPEC, at=point)
    assert doc.worked.checked and doc.worked.point.seed == 0
