"""Dropout met as a careless user meets it: p given as a Fraction or a NumPy scalar, p near
0 or near 1, dropout with a residual connection or an activation whose derivative is not
read from its output. Each test pins a defect that was found and fixed: every number and
equation printed must be the one the network uses."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from chainrule.derive import batch, naming
from chainrule.derive.document import derivation
from chainrule.derive.document.dropout import p_latex
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Layer, Spec

from chainrule.cli import main


def _spec(p: object, activation: str = "tanh") -> Spec:
    return Spec(2, (Layer(2, activation, dropout=p), Layer(1, "sigmoid")), "quadratic")


@pytest.mark.parametrize("p", [Fraction(1, 10), np.float32(0.5), np.float64(0.25)])
def test_a_fraction_or_numpy_p_is_the_float_it_equals(p: object) -> None:
    # Was: derive printed "p = Fraction(1, 10)", and a NumPy float32 crashed SymPy with a
    # TypeError; the module (generate) read float(p) all along.
    spec = _spec(p)
    assert type(spec.layers[0].dropout) is float
    assert spec.layers[0].dropout == float(p)
    text = derivation(spec).to_text()
    assert f"p = {float(p)!r}, E[D²ⱼ] = 1" in text
    assert "Fraction" not in text and "np." not in text


def test_no_dropout_given_as_numpy_zero_is_no_dropout() -> None:
    spec = _spec(np.int64(0))
    assert spec.layers[0].dropout == 0.0 and spec.dropout_layers == {}


@pytest.mark.parametrize("p", ["0.9999999", "0.30000000000000004"])
def test_compare_and_graph_print_p_as_written(
    p: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Was: p formatted with :g, so 0.9999999 read "p = 1" (a p the spec refuses) and
    # 0.30000000000000004 read 0.3, while --json gave the true value.
    args = ["--sizes", "2,2,1", "--activations", "tanh,sigmoid", "--cost", "quadratic"]
    args += ["--dropout", f"{p},0"]
    assert main(["compare", *args]) == 0
    assert f"dropout: layer 1 p = {p};" in capsys.readouterr().out
    assert main(["graph", *args]) == 0
    assert f"dropout p = {p} (layer 1)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("p", "latex"),
    [
        (0.2, "0.2"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e-12, "10^{-12}"),
        (2.5e-07, "2.5 \\times 10^{-7}"),
        (5e-324, "5 \\times 10^{-324}"),
    ],
)
def test_p_in_math_mode_is_a_power_of_ten_not_1e_minus_12(p: float, latex: str) -> None:
    # Was: "p = 1e-12" inside the equation, which LaTeX sets as 1e - 12 (e a variable).
    assert p_latex(p) == latex


def test_tiny_p_in_the_derivation_latex() -> None:
    tex = derivation(_spec(1e-12)).to_latex()
    assert "p = 10^{-12}" in tex
    assert "p = 1e-12," not in tex and "p = 1e-12 " not in tex


def _kept_line(text: str) -> str:
    lines = text.splitlines()
    return lines[lines.index("Own activation of layer 2 (before the mask) [forward]") + 1]


@pytest.mark.parametrize("activation", ["relu", "x*sigmoid(x)", "linear"])
def test_kept_output_is_not_claimed_to_give_the_derivative_when_it_does_not(
    activation: str,
) -> None:
    # Was: "relu(Z²) (kept: relu'(Z²) is computed from it)", though the module computes
    # relu'(Z) from Z (and linear needs no derivative at all).
    spec = _spec(0.2, activation)
    program = batch.batch_program(derive_network(spec))
    own = naming.own_activation(1)
    assert not any(s.quantity == "sigma_prime" and own in s.operands for s in program)
    line = _kept_line(derivation(spec).to_text())
    assert "computed from it" not in line
    assert " = " in line  # the kept output is written out instead


def test_kept_output_that_gives_the_derivative_still_says_so() -> None:
    spec = _spec(0.2, "tanh")
    program = batch.batch_program(derive_network(spec))
    own = naming.own_activation(1)
    assert any(s.quantity == "sigma_prime" and own in s.operands for s in program)
    assert _kept_line(derivation(spec).to_text()).endswith("(kept: tanh'(Z²) is computed from it)")


def test_residual_words_carry_the_mask_of_a_dropout_layer() -> None:
    # Was: "This network has residual connections (a³ = relu(z³) + a²)" with dropout on
    # layer 3, where training computes a³ = D³ ⊙ relu(z³) + a².
    layers = (
        Layer(2, "relu"),
        Layer(2, "relu", skip_from=1, dropout=0.3),
        Layer(1, "linear"),
    )
    text = derivation(Spec(2, layers, "quadratic")).to_text()
    assert "This network has residual connections (a³ = D³ ⊙ relu(z³) + a²)" in text


def test_cse_temporaries_are_labelled_the_same_whatever_p() -> None:
    # Was: the labels were matched at random points whose masks were drawn as in training,
    # so with p near 1 every mask was 0, a dropped unit's delta equalled its (zero)
    # activation, and compare said "11 temporaries, of which 1 are deltas" (4 at p = 0.2).
    from chainrule.comparison import compare_spec

    counts = {p: compare_spec(_spec(p), engine="sympy").temporaries for p in (0.2, 0.99, 0.9999999)}
    assert counts[0.2] == counts[0.99] == counts[0.9999999]
    # delta^2 and the two delta^1_j of the hidden units
    assert counts[0.99]["delta"] == 3


def test_sgd_treats_eps_and_betas_alike_in_float32(tmp_path) -> None:
    # Was: eps=np.float32(1e-8) passed for sgd as "the default" (NumPy compared it in
    # float32) while betas=(np.float32(0.9), np.float32(0.999)) was refused; both are now
    # compared as Python floats, and the true defaults, in any float type, still pass.
    from chainrule import generate, load_module

    path = tmp_path / "net.py"
    path.write_text(generate(_spec(0.2)))
    module = load_module(path)
    x = np.linspace(-1, 1, 8).reshape(2, 4)
    y = np.linspace(0, 1, 4).reshape(1, 4)

    def train(**kw: object) -> list:
        return module.train(module.init_params(0), x, y, epochs=1, batch_size=2, lr=0.1, **kw)

    assert len(train(eps=np.float64(1e-8), betas=np.array([0.9, 0.999]))) == 1
    with pytest.raises(ValueError, match=r"^eps: sgd takes none; got np\.float32"):
        train(eps=np.float32(1e-8))
    with pytest.raises(ValueError, match=r"^betas: sgd takes none"):
        train(betas=(np.float32(0.9), np.float32(0.999)))
    assert len(train(optimizer="adam", eps=np.float32(1e-8))) == 1


@pytest.mark.parametrize(
    "option", [["--dropout", "0.2,0"], ["--l2", "0.1"], ["--l1", "0.1"], ["--no-bias"]]
)
def test_a_sweep_refuses_options_it_would_ignore(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Was: `compare --sweep depth=1:2 --dropout 0.2,0` printed the counts of networks
    # without dropout (the same table as without the option), exit 0.
    assert main(["compare", "--sweep", "depth=1:2", *option]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"chainrule: error: {option[0]}: a sweep builds its own networks without it; "
        f"leave out {option[0]}\n"
    )


def test_layer_graph_names_an_expression_activation_f() -> None:
    # Was: "a¹ = D¹ ⊙ x*tanh(softplus(x))(z¹)", the expression in x applied to z¹ as if
    # it were a function's name (it reads as the expression times z¹).
    from chainrule.graph import activation_label

    layers = (Layer(2, "x*tanh(softplus(x))", dropout=0.5), Layer(2, "relu"), Layer(1, "linear"))
    spec = Spec(2, layers, "quadratic")
    assert activation_label(spec, 1) == "a¹ = D¹ ⊙ f(z¹), f(x) = x*tanh(softplus(x))"
    assert activation_label(spec, 2) == "a² = relu(z²)"


@pytest.mark.parametrize("given", ["net.toml", None, {"input": 3}], ids=["path", "none", "dict"])
def test_the_python_api_names_a_spec_given_as_something_else(tmp_path, given) -> None:
    """Every public function that takes a network says, in one line, that it wants a Spec
    and how to get one (it raised a raw AttributeError); the fix, followed, works."""
    import chainrule

    functions = (
        chainrule.derivation,
        chainrule.generate,
        chainrule.compare_spec,
        chainrule.build_graph,
        chainrule.derive_network,
    )
    for function in functions:
        with pytest.raises(chainrule.SpecError) as caught:
            function(given)
        assert caught.value.field == "spec", function.__name__
        assert "\n" not in str(caught.value)
        assert "chainrule.load_spec(path)" in str(caught.value)
    path = tmp_path / "net.toml"
    path.write_text(
        'input = 2\ncost = "quadratic"\n[[layers]]\nsize = 1\nactivation = "sigmoid"\n',
        encoding="utf-8",
    )
    assert "def loss_and_grad(" in chainrule.generate(chainrule.load_spec(path))
