"""``chainrule derive --at``: the derivation worked out in numbers, checked by the module.

The published example is Matt Mazur's "A Step by Step Backpropagation Example": a
2-2-2 sigmoid network with E = sum 1/2 (target - out)^2 (chainrule's ``quadratic``
cost), one example and one gradient-descent step with learning rate 0.5 (Mazur
updates the weights only; chainrule shows the biases too). Mazur's w1..w4 are W1
row-major with rows = hidden units (columns layout), w5..w8 are W2 the same way.
"""

from __future__ import annotations

import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from chainrule.derive.document import derivation as symbolic_derivation
from chainrule.derive.document.worked import run_point, step_values
from chainrule.derive.errors import DerivationError
from chainrule.derive.spec import Spec, preset
from chainrule.derive.values import param_shapes, read_point
from mazur import MAZUR_POINT, MAZUR_SPEC

import chainrule
from chainrule import worked_check
from chainrule.cli import main

MAZUR_VALUES = """\
x = [0.05, 0.10]      # one example (a flat list), or a list of examples, one per row
y = [0.01, 0.99]
lr = 0.5              # optional
[params]
W1 = [[0.15, 0.20], [0.25, 0.30]]
b1 = [0.35, 0.35]     # a flat list for a bias
W2 = [[0.40, 0.45], [0.50, 0.55]]
b2 = [0.60, 0.60]
"""


#: Mazur's printed figures, as printed (the digits shown are the digits checked).
MAZUR_FIGURES = {
    "net_h1": "0.3775",
    "out_h1": "0.593269992",
    "out_h2": "0.596884378",
    "out_o1": "0.75136507",
    "out_o2": "0.772928465",
    "E_o1": "0.274811083",
    "E_o2": "0.023560026",
    "E_total": "0.298371109",
    "dE/dout_o1": "0.74136507",
    "dout_o1/dnet_o1": "0.186815602",
    "dnet_o1/dw5": "0.593269992",
    "dE/dw5": "0.082167041",
    "w5+": "0.35891648",
    "w6+": "0.408666186",
    "w7+": "0.511301270",
    "w8+": "0.561370121",
    "dE/dw1": "0.000438568",
    "w1+": "0.149780716",
    "w2+": "0.19956143",
    "w3+": "0.24975114",
    "w4+": "0.29950229",
}

#: Where each figure must stand in the text: (label as printed, figure name).
MAZUR_LABELLED = [
    ("z²₁ = ", "net_h1"),
    ("a²₁ = ", "out_h1"),
    ("a²₂ = ", "out_h2"),
    ("a³₁ = ", "out_o1"),
    ("a³₂ = ", "out_o2"),
    ("output unit 1: ", "E_o1"),
    ("output unit 2: ", "E_o2"),
    ("∂C/∂a³₁ = ", "dE/dout_o1"),
    ("σ'(z³₁) = ", "dout_o1/dnet_o1"),
    ("∂C/∂w³₁₁ = ", "dE/dw5"),
    ("∂C/∂w²₁₁ = ", "dE/dw1"),
]
#: Mazur's updated weights and the parameter each one is.
MAZUR_UPDATES = {
    "w5+": "w³₁₁",
    "w6+": "w³₁₂",
    "w7+": "w³₂₁",
    "w8+": "w³₂₂",
    "w1+": "w²₁₁",
    "w2+": "w²₁₂",
    "w3+": "w²₂₁",
    "w4+": "w²₂₂",
}

NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")


def mazur_spec() -> Spec:
    return Spec.from_sizes([2, 2, 2], ["sigmoid", "sigmoid"], "quadratic")


def rounds_to(text: str, printed: str) -> bool:
    """True when the number ``text`` rounds to ``printed`` at its printed decimals."""
    decimals = len(printed.split(".")[1])
    return f"{float(text):.{decimals}f}" == printed


def value_after(text: str, label: str) -> str:
    """The first number after ``label`` on a line of ``text``."""
    for line in text.splitlines():
        if label in line:
            found = NUMBER.search(line.split(label, 1)[1])
            if found:
                return found.group()
    raise AssertionError(f"no number after {label!r}")


@pytest.fixture(scope="module")
def mazur_doc() -> chainrule.Derivation:
    return chainrule.derivation(mazur_spec(), at=MAZUR_POINT)


@pytest.fixture(scope="module")
def mazur_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mazur")
    (folder / "mazur.toml").write_text(MAZUR_SPEC)
    (folder / "values.toml").write_text(MAZUR_VALUES)
    return folder / "mazur.toml", folder / "values.toml"


def test_quadratic_cost_is_half_the_squared_error_as_mazur() -> None:
    # Mazur's E = sum 1/2 (target - out)^2: chainrule's quadratic cost, from the module.
    module = worked_check_module(mazur_spec())
    params, x, y = worked_check._arrays(
        read_point(mazur_spec(), MAZUR_POINT), "float64", "columns", False
    )
    out = module.forward(params, x)
    assert module.loss(params, x, y) == pytest.approx(0.5 * float(np.sum((out - y) ** 2)))


def worked_check_module(spec: Spec) -> types.ModuleType:
    from chainrule.cmd_train import module_from_spec

    return module_from_spec(spec)


@pytest.mark.slow
def test_cli_reproduces_mazurs_printed_figures(
    mazur_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file, values_file = mazur_files
    status = main(["derive", str(spec_file), "--at", str(values_file)])
    out, err = capsys.readouterr()
    assert status == 0, err
    numbers = NUMBER.findall(out)
    for name, printed in MAZUR_FIGURES.items():
        assert any(rounds_to(n, printed) for n in numbers), f"{name} = {printed} not shown"
    for label, name in MAZUR_LABELLED:
        assert rounds_to(value_after(out, label), MAZUR_FIGURES[name]), label
    for name, weight in MAZUR_UPDATES.items():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{weight} ←"))
        assert rounds_to(NUMBER.findall(line)[-1], MAZUR_FIGURES[name]), line
    # The total cost, written as the sum of the two output units' costs.
    total = next(ln for ln in out.splitlines() if ln.strip().startswith("C = 0.27"))
    assert [
        rounds_to(n, MAZUR_FIGURES[k])
        for n, k in zip(NUMBER.findall(total), ["E_o1", "E_o2", "E_total"], strict=True)
    ] == [True, True, True]


@pytest.mark.slow
def test_chain_product_for_w5_factor_by_factor(mazur_doc: chainrule.Derivation) -> None:
    # Mazur: dE/dw5 = 0.74136507 * 0.186815602 * 0.593269992 = 0.082167041.
    text = mazur_doc.to_text()
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip() == "∂C/∂w³₁₁ = ∂C/∂a³₁ σ'(z³₁) a²₁")
    factors = NUMBER.findall(lines[at + 1])
    names = ["dE/dout_o1", "dout_o1/dnet_o1", "dnet_o1/dw5", "dE/dw5"]
    assert [rounds_to(n, MAZUR_FIGURES[k]) for n, k in zip(factors, names, strict=True)] == [
        True
    ] * 4
    assert "×" in lines[at + 1]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["to_markdown", "to_latex"])
def test_markdown_and_latex_show_the_same_figures(
    mazur_doc: chainrule.Derivation, fmt: str
) -> None:
    out = getattr(mazur_doc, fmt)()
    numbers = NUMBER.findall(out)
    for name, printed in MAZUR_FIGURES.items():
        assert any(rounds_to(n, printed) for n in numbers), f"{name} missing from {fmt}"
    assert "Worked numbers at the given point" in out


def test_every_step_of_a_small_network_has_its_values(mazur_doc: chainrule.Derivation) -> None:
    # The 2-2-2 network fits the witness: every step shows numbers, but for the source's
    # general equations (in l, L, eta, m), which hold at every point and have no one value.
    assert_every_step_valued(mazur_doc)
    assert mazur_doc.worked.checked


def assert_every_step_valued(doc: chainrule.Derivation) -> None:
    """Every step shows values but the source's general equations (in l, L, eta, m),
    which hold at every point and have no one value; the instantiated ones do."""
    bare = []
    for number, section in enumerate(doc.sections):
        for index, _ in enumerate(section.steps):
            if not doc.worked.lines_after(number, index):
                bare.append((section.title, index))
    assert {title for title, _ in bare} <= {"As the book writes it"}, bare
    source = next(s for s in doc.sections if s.title == "As the book writes it")
    assert len(bare) < len(source.steps)


@pytest.mark.slow
def test_every_step_of_a_network_up_to_six_units_wide_has_its_values() -> None:
    # two-layer-nobias is 4-5-3: wider than the 3-unit witness, so the steps are
    # evaluated on a witness as wide as the network (and checked against the module).
    spec = preset("two-layer-nobias")
    rng = np.random.default_rng(2)
    params = {k: rng.standard_normal(s).tolist() for k, s in param_shapes(spec).items()}
    point = {"x": [0.1, -0.2, 0.3, 0.4], "y": [0.2, 0.5, 0.9], "params": params}
    doc = chainrule.derivation(spec, at=point)
    assert_every_step_valued(doc)
    text = doc.to_text()
    module = worked_check_module(spec)
    arrays, x, y = worked_check._arrays(read_point(spec, point), "float64", "columns", False)
    _, grads = module.loss_and_grad(arrays, x, y)
    # The last weight of layer 1 (unit 5 from input 4), shown after its chain-rule step.
    assert f"→ ∂C/∂w²₅₄ = {grads['W1'][4, 3]:.10g}" in text


def test_values_carry_at_least_nine_significant_digits(mazur_doc: chainrule.Derivation) -> None:
    line = next(ln for ln in mazur_doc.to_text().splitlines() if "a²₁ = " in ln)
    digits = NUMBER.search(line.split("a²₁ = ")[1]).group().replace("0.", "", 1)
    assert len(digits.lstrip("0")) >= 9


def test_symbolic_document_is_unchanged_without_a_point() -> None:
    spec = mazur_spec()
    plain = chainrule.derivation(spec)
    assert plain is symbolic_derivation(spec, "nielsen")
    assert "Worked numbers" not in plain.to_text()
    # No value line (Nielsen's update rule w -> w - ... keeps its own arrow mid-line).
    assert not [ln for ln in plain.to_text().splitlines() if ln.lstrip().startswith("→")]


def test_without_lr_no_descent_step_is_shown() -> None:
    point = dict(MAZUR_POINT)
    del point["lr"]
    text = chainrule.derivation(mazur_spec(), at=point).to_text()
    assert "gradient-descent step" not in text
    assert "←" not in text


@pytest.mark.slow
def test_a_batch_shows_the_module_mean_cost(tmp_path: Path) -> None:
    point = dict(MAZUR_POINT, x=[[0.05, 0.10], [0.9, -0.3]], y=[[0.01, 0.99], [0.5, 0.2]])
    doc = chainrule.derivation(mazur_spec(), at=point)
    text = doc.to_text()
    module = worked_check_module(mazur_spec())
    checked = read_point(mazur_spec(), point)
    params, x, y = worked_check._arrays(checked, "float64", "columns", False)
    loss, grads = module.loss_and_grad(params, x, y)
    assert f"mean over the batch: C = {loss:.10g}" in text
    assert "(the first of 2 examples)" in text
    # The batch gradient entry shown is the module's.
    assert f"∂C/∂w²₂₁ = {grads['W1'][1, 0]:.10g}" in text


def test_the_cross_check_fires_when_the_module_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    real = worked_check_module(mazur_spec())

    def loss_and_grad(params: dict, x: np.ndarray, y: np.ndarray) -> tuple:
        cost, grads = real.loss_and_grad(params, x, y)
        grads = {k: v.copy() for k, v in grads.items()}
        grads["W1"][0, 1] *= 1 + 1e-7
        return cost, grads

    fake = types.SimpleNamespace(
        loss_and_grad=loss_and_grad,
        loss=real.loss,
        forward=real.forward,
        sgd_step=real.sgd_step,
        _forward=real._forward,
    )
    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: fake)
    with pytest.raises(DerivationError, match=r"dC_dW1\[0, 1\].*generated module gives"):
        chainrule.derivation(mazur_spec(), at=MAZUR_POINT)


def test_the_cross_check_fires_through_the_cli(
    mazur_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = worked_check_module(mazur_spec())

    def forward(params: dict, x: np.ndarray) -> np.ndarray:
        return real.forward(params, x) + 1e-6

    fake = types.SimpleNamespace(
        loss_and_grad=real.loss_and_grad,
        loss=real.loss,
        forward=forward,
        sgd_step=real.sgd_step,
        _forward=real._forward,
    )
    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: fake)
    spec_file, values_file = mazur_files
    status = main(["derive", str(spec_file), "--at", str(values_file)])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "forward: a2[0, 0]" in err


def test_the_cross_check_covers_the_hidden_forward_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = worked_check_module(mazur_spec())

    def cache(params: dict, x: np.ndarray) -> tuple:
        z1, a1, *rest = real._forward(params, x)
        return (z1, a1 * (1 + 1e-7), *rest)

    fake = types.SimpleNamespace(
        loss_and_grad=real.loss_and_grad,
        loss=real.loss,
        forward=real.forward,
        sgd_step=real.sgd_step,
        _forward=cache,
    )
    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: fake)
    with pytest.raises(DerivationError, match=r"forward cache on the first example: a1\[0, 0\]"):
        chainrule.derivation(mazur_spec(), at=MAZUR_POINT)


def test_step_sides_are_checked_against_the_program() -> None:
    # A per-example gradient that disagrees with a step's derivative side is refused.
    spec = mazur_spec()
    point = read_point(spec, MAZUR_POINT)
    first = run_point(spec, point)
    first["dC_dW2"] = first["dC_dW2"].copy()
    first["dC_dW2"][0, 0] *= 1.000001
    doc = symbolic_derivation(spec, "nielsen")
    with pytest.raises(DerivationError, match="against the program"):
        step_values(spec, "nielsen", point, first, doc.sections)


@pytest.mark.slow
def test_a_wide_network_shows_its_representative_units() -> None:
    spec = preset("nielsen")
    rng = np.random.default_rng(0)
    params = {k: (rng.standard_normal(s) * 0.1).tolist() for k, s in param_shapes(spec).items()}
    point = {"x": rng.uniform(0, 1, 784).tolist(), "y": np.eye(10)[3].tolist(), "params": params}
    text = chainrule.derivation(spec, at=point).to_text()
    worked = text[text.index("Worked numbers at the given point") :]
    assert "z²₁ = " in worked and "z²₃₀ = " in worked
    assert "z²₂ = " not in worked  # a 30-unit layer shows its first and last units
    module = worked_check_module(spec)
    arrays, x, y = worked_check._arrays(read_point(spec, point), "float64", "columns", False)
    _, grads = module.loss_and_grad(arrays, x, y)
    assert f"∂C/∂w²₃₀,₇₈₄ = {grads['W1'][29, 783]:.10g}" in worked
    assert "a layer wider than 6 units" in worked
    # The mini-batch statements show their first and last entries.
    assert f"(30 by 784) entry (1,1): {grads['W1'][0, 0]:.10g}" in text


@pytest.mark.slow
def test_the_worked_latex_compiles(tmp_path: Path, mazur_doc: chainrule.Derivation) -> None:
    from chainrule.cmd_derive import compile_pdf

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    pdf = compile_pdf(mazur_doc.to_latex())
    assert pdf.startswith(b"%PDF-")


@pytest.mark.slow
def test_readme_shows_what_the_command_prints(
    tmp_path: Path, mazur_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Worked example with numbers", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```text\n", 1)[1].split("```", 1)[0]
    # The values file the README shows is the one run.
    values_file = tmp_path / "values.toml"
    values_file.write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    spec_file, _ = mazur_files
    assert main(["derive", str(spec_file), "--at", str(values_file)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in shown.splitlines() if ln.strip() and ln.strip() != "..."]
    assert len(lines) >= 8
    for line in lines:
        assert line in out.splitlines(), line
