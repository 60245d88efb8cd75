"""The displayed math of the derivation: the summary a reader sees, and its reference sides.

The document checks each step's SymPy sides, not the LaTeX it shows, so a summary line
can be displayed wrong while every check passes. Here the displayed summary (BP1 to BP4,
as plain text) of every layout and output kind is compared with strings written out by
hand from the math: columns ``dC/dW = delta a^T``, rows ``dC/dW = a^T delta`` and
``delta^{l} = (delta^{l+1} (W^{l+1})^T) * sigma'``.

Second, the reference side of a checked derivative must come from the definition. A
wrong sigmoid identity planted in ``sigmoid.fdiff`` must make some equation fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import sympy as sp
from chainrule.derive.document import check_step, derivation, to_unicode
from chainrule.derive.functions import sigmoid
from chainrule.derive.spec import Spec

#: Hidden layers are sigmoid throughout, so that sigma names the function in any notation.
#: Nielsen's numbering: the input is layer 1, so the hidden layer is 2 and the output 3.
BP2_COLUMNS = "δ² = ((w³)ᵀ δ³) ⊙ σ'(z²)"
BP2_ROWS = "δ² = (δ³ (w³)ᵀ) ⊙ σ'(z²)"
BP3 = ["∂C/∂b³ = δ³", "∂C/∂b² = δ²"]
BP4_COLUMNS = ["∂C/∂w³ = δ³ (a²)ᵀ", "∂C/∂w² = δ² xᵀ"]
BP4_ROWS = ["∂C/∂w³ = (a²)ᵀ δ³", "∂C/∂w² = xᵀ δ²"]

#: BP1 per output kind: quadratic C = 1/2 |a - y|^2 gives (a - y) sigma'(z) with
#: sigma' = a (1 - a); BCE on a sigmoid gives a - y; softmax with cross-entropy
#: gives a - y; softmax with BCE gives
#: delta_j = (a_j - y_j)/(1 - a_j) - a_j sum_k (a_k - y_k)/(1 - a_k).
BP1 = {
    "sigmoid-quadratic": "δ³ = ∇ₐ C ⊙ σ'(z³) = (a³ - y) ⊙ σ'(z³) = a³ ⊙ (1 - a³) ⊙ (a³ - y)",
    "sigmoid-bce": "δ³ = ∇ₐ C ⊙ σ'(z³) = ((a³ - y)/(a³ ⊙ (1 - a³))) ⊙ σ'(z³) = a³ - y",
    "softmax-ce": "δ³ = (J³)ᵀ ∇ₐ C = a³ - y",
    "softmax-bce": "δ³ = (J³)ᵀ ∇ₐ C = (a³ - y)/(1 - a³) - a³ Σₖ (a³ₖ - yₖ)/(1 - a³ₖ)",
}

OUTPUTS = {
    "sigmoid-quadratic": (["sigmoid", "sigmoid"], "quadratic", 2),
    "sigmoid-bce": (["sigmoid", "sigmoid"], "binary-cross-entropy", 2),
    "softmax-ce": (["sigmoid", "softmax"], "cross-entropy", 2),
    "softmax-bce": (["sigmoid", "softmax"], "binary-cross-entropy", 3),
}


def _summary(spec: Spec) -> list[str]:
    doc = derivation(spec)
    section = next(s for s in doc.sections if s.title.startswith("Summary"))
    return [to_unicode(step.latex) for step in section.steps]


def _expected(kind: str, layout: str, bias: bool = True) -> list[str]:
    rows = layout == "rows"
    return [
        BP1[kind],
        BP2_ROWS if rows else BP2_COLUMNS,
        *(BP3 if bias else []),
        *(BP4_ROWS if rows else BP4_COLUMNS),
    ]


def _cases() -> Iterator:
    for kind, (acts, cost, width) in OUTPUTS.items():
        for layout in ("columns", "rows"):
            yield pytest.param(kind, layout, acts, cost, width, id=f"{kind}-{layout}")


@pytest.mark.parametrize(("kind", "layout", "acts", "cost", "width"), list(_cases()))
@pytest.mark.slow
def test_displayed_summary_of_each_output_kind_and_layout(kind, layout, acts, cost, width):
    spec = Spec.from_sizes([2, 3, width], acts, cost, layout=layout)
    assert _summary(spec) == _expected(kind, layout)


@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_displayed_summary_without_biases(layout):
    spec = Spec.from_sizes([2, 3, 2], ["sigmoid"] * 2, "quadratic", layout=layout, bias=False)
    assert _summary(spec) == _expected("sigmoid-quadratic", layout, bias=False)


@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_displayed_summary_of_a_linear_output(layout):
    """Linear output, squared error C = |a - y|^2: sigma' = 1, delta = 2 (a - y)."""
    spec = Spec.from_sizes([2, 3, 2], ["sigmoid", "linear"], "squared-error", layout=layout)
    got = _summary(spec)
    bp1 = got[0]
    assert bp1.startswith("δ³ = ∇ₐ C ⊙ ") and bp1.endswith("= 2 a³ - 2 y"), bp1
    assert "(2 (a³ - y))" in bp1
    assert got[1:] == _expected("sigmoid-quadratic", layout)[1:]


def test_a_rows_bp4_shown_as_delta_a_transpose_fails_the_comparison():
    """The planted display bug of the audit: a rows BP4 shown in the columns form."""
    spec = Spec.from_sizes([2, 3, 2], ["sigmoid"] * 2, "quadratic", layout="rows")
    shown = _summary(spec)
    planted = [line.replace("(a²)ᵀ δ³", "δ³ (a²)ᵀ") for line in shown]
    assert planted != shown
    assert planted != _expected("sigmoid-quadratic", "rows")


# ------------------------------------------------------------- reference sides


def _clear_caches() -> None:
    """Empty every cache of chainrule's modules and SymPy's, so that no derivative taken
    with the planted identity outlives the test (or one taken before is reused in it)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("chainrule.") and module is not None:
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()
    sp.core.cache.clear_cache()


@pytest.fixture
def wrong_sigmoid_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sigmoid' = sigma (1 + sigma), a wrong identity, in the class's own fdiff."""

    def fdiff(self: sigmoid, argindex: int = 1) -> sp.Expr:
        s = sigmoid(self.args[0])
        return s * (1 + s)

    _clear_caches()
    monkeypatch.setattr(sigmoid, "fdiff", fdiff)
    yield
    monkeypatch.undo()
    _clear_caches()


@pytest.mark.slow
def test_a_wrong_sigmoid_identity_fails_an_equation(wrong_sigmoid_identity):
    spec = Spec.from_sizes([1, 1, 1], ["sigmoid"] * 2, "quadratic", name="wrong-identity")
    doc = derivation(spec)
    failed = [step.title for step in doc if not check_step(step, points=1, seed=2)]
    assert "Derivative of the activation of layer 2" in failed, failed  # Nielsen: hidden = 2


@pytest.mark.slow
def test_the_same_network_holds_with_the_real_identity():
    spec = Spec.from_sizes([1, 1, 1], ["sigmoid"] * 2, "quadratic", name="wrong-identity")
    doc = derivation(spec)
    assert [step.title for step in doc if not check_step(step, points=1, seed=2)] == []
