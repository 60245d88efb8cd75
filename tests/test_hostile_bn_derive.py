"""Hostile input to ``derive`` and ``derive --at`` on batch-normalized networks: points
where batch norm magnifies the module's float rounding (every example alike), points
where the module's batch variance overflows, and the text each notation shows."""

from __future__ import annotations

import dataclasses
import re

import pytest
from chainrule.derive.document.batch_norm import batch_norm_section
from chainrule.derive.document.steps import Section
from chainrule.derive.errors import SpecError
from chainrule.derive.notation import notation
from chainrule.derive.spec import Layer, Spec

import chainrule

#: 1-2-1: a linear batch-normalized layer, a linear output, the quadratic cost.
BN = Spec(1, (Layer(2, "linear", batch_norm=True), Layer(1, "linear")), "quadratic")

PARAMS = {
    "W1": [[0.3], [-0.7]],
    "gamma1": [1.0, 0.5],
    "beta1": [0.0, 0.1],
    "W2": [[0.2, 0.4]],
    "b2": [0.05],
}


def _point(x: list[list[float]], **params: list) -> dict:
    return {
        "x": x,
        "y": [[0.1], [0.2], [0.3]][: len(x)],
        "lr": 0.1,
        "params": {**PARAMS, **params},
    }


@pytest.mark.slow
def test_every_example_alike_is_worked_out_not_reported_as_a_disagreement() -> None:
    """Every example equal: the variance is 0 and x-hat is 0 exactly in the derivation;
    the module's u - mean rounds to about 1e-17, which 1/sqrt(0 + eps) magnifies 316
    times. That is float rounding, not a disagreement to report."""
    doc = chainrule.derivation(BN, at=_point([[0.5], [0.5], [0.5]]))
    text = doc.to_text()
    assert "unit 1: μ²₁ = 0.15, v²₁ = 0\n" in text
    assert "x̂²₁ = (u²₁ - μ²₁)/(√(v²₁ + ε)) = (0.15 - 0.15)/√(0 + 1e-5) = 0" in text


def test_a_batch_variance_that_overflows_is_named_as_an_overflow() -> None:
    """x of 1e300: the module's batch variance overflows to inf (x-hat then 0, the
    gradient finite but wrong); the error names the overflow and the fix, it does not
    ask to report a disagreement."""
    point = _point([[1e300], [1.5], [-1.0]])
    with pytest.raises(SpecError, match=r"^--at: .*var1\[0, 0\].*overflows.*give smaller"):
        chainrule.derivation(BN, at=point)


#: Batch norm on the second of two hidden layers: its error at u feeds the layer below.
DEEP_BN = Spec(
    2, (Layer(2, "relu"), Layer(2, "tanh", batch_norm=True), Layer(1, "linear")), "quadratic"
)


def _section(name: str) -> Section:
    return batch_norm_section(notation(name, DEEP_BN))


@pytest.mark.parametrize("name", ["3b1b", "cheatsheet", "course"])
def test_the_batch_norm_section_names_bp_labels_only_in_nielsens_notation(name: str) -> None:
    """BP1 to BP4 are the labels of Nielsen's book: the other notations' batch-norm
    section says what it replaces and who takes m dC/du in their own words."""
    intro = _section(name).intro
    assert "BP" not in intro
    assert "the error of the layer below takes m dC/du in place of the error" in intro


def test_nielsens_batch_norm_section_keeps_its_bp_labels() -> None:
    intro = _section("nielsen").intro
    assert "BP2 of the layer below takes m dC/du" in intro and "BP1 to BP4" in intro


def test_3b1b_per_example_error_takes_the_cost_of_its_own_example() -> None:
    """The per-example error of example i is dC_i/dz_i: every dC_a/dz_b of the 3Blue1Brown
    batch-norm steps has a = b (the first term of the three-term form wrote dC_i/dz_j,
    with i free outside of its sum)."""
    pairs = [
        pair
        for step in _section("3b1b").steps
        for pair in re.findall(
            r"\\partial C_\{(\w)\}\}\{\\partial \{z\^\{\(L-1\)\}\}_\{(\w)\}\}", step.latex
        )
    ]
    assert len(pairs) == 5  # three in the three-term form, one each for gamma and beta
    assert all(cost == example for cost, example in pairs), pairs
    assert ("i", "i") in pairs and ("t", "t") in pairs


def test_cheatsheet_worked_error_at_u_is_in_prime_notation() -> None:
    """The cheatsheet writes derivatives as C'(.): the worked three-term error at u too,
    as its batch-norm section does (m C'(u))."""
    doc = chainrule.derivation(BN, "cheatsheet", at=_point([[0.5], [1.5], [-1.0]]))
    text = doc.to_text()
    lines = [ln for ln in text.splitlines() if "unit 1, example 1: m " in ln]
    assert lines and lines[0].split(": ", 1)[1].startswith("m C'(uₕ,₁) = γₕ,₁/")
    assert "∂" not in text.split("4. Worked numbers")[1]


def test_the_batch_expansion_is_built_once_for_the_estimate_and_the_counts() -> None:
    """compare estimates the naive size from the expanded batch network, then counts on
    it: the expansion (minutes for a few hundred parameters) is kept, not built twice."""
    from chainrule.derive.scalar_network import batch_scalar_network

    assert batch_scalar_network(BN, 2) is batch_scalar_network(BN, 2)
    assert batch_scalar_network(BN, 3).m == 3


def test_a_slow_batch_expansion_says_so_on_stderr(monkeypatch, capsys) -> None:
    """A symbolic expansion still running after a few seconds prints one line on stderr
    (8-8-8-2 with tanh and two batch-normalized layers took 100 s, silently)."""
    import time

    from chainrule.derive import scalar_network

    from chainrule import cmd_compare

    real = scalar_network.batch_scalar_network

    def slow(spec: Spec, m: int) -> object:
        time.sleep(0.5)
        return real(spec, m)

    monkeypatch.setattr(scalar_network, "batch_scalar_network", slow)
    monkeypatch.setattr(cmd_compare, "SLOW_EXPANSION_SECONDS", 0.05)
    cmd_compare._warn_long_batch(BN, 2, 20_000_000)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("chainrule: expanding the 1-2-1 network over a batch of 2")
    assert "Ctrl-C stops it" in err


@pytest.mark.parametrize("name", ["nielsen", "3b1b", "cheatsheet", "course"])
def test_batch_norm_step_titles_hold_no_ascii_subscripts(name: str) -> None:
    """A title is prose, printed as is in the TeX and PDF (u\\_j there): an index is said
    in words, not written as an ASCII subscript."""
    titles = [step.title for step in _section(name).steps]
    assert not [t for t in titles if "_" in t]
    assert (
        "Every example's z depends on the u of example i (through the mean and the variance)"
        in titles
    )


@pytest.mark.parametrize("name", ["nielsen", "3b1b", "cheatsheet", "course"])
def test_batch_norm_examples_are_i_and_t_never_a_unit_letter(name: str) -> None:
    """j and k number a layer's units in every section (w_jk, BP4's a_k): the batch-norm
    steps numbered examples j and k too, so that u_j (example j) sat two lines above
    w_jk (units j and k). Examples are now i and t (s is the mini-batch section's sum over
    the output units); j and k appear only in BP4's w_jk."""
    steps = _section(name).steps
    index = re.compile(r"(?:_\{|,)([a-z])(?=[},])")
    for step in steps[:-1]:
        letters = set(index.findall(step.latex))
        assert letters <= {"i", "t", "h", "o"}, (step.title, letters)  # h, o: cheatsheet layers
    weight = steps[-1]
    assert weight.title == "Weight gradient, with m dC/du as the error"
    assert "jk}" in weight.latex and "\\sum_{i=1}^{m}" in weight.latex
    assert set(index.findall(weight.latex)) == {"i", "k"}  # example i; unit k of a^(l-1)
    assert "t numbers another example; j and k number units" in _section(name).intro


@pytest.mark.parametrize("text", ["1", "0", "-2", "5", "44"])
def test_a_batch_out_of_range_is_told_the_whole_range(text: str) -> None:
    """--batch 1 said 'give 2 or more', and --batch 5, followed literally, was refused in
    turn: the message gives the range 2 to 4 either side."""
    from chainrule.comparison_batch import batch_type

    with pytest.raises(SpecError, match=rf"^--batch: {text} is outside 2 to 4; give 2 to 4$"):
        batch_type(text)


def test_large_close_examples_are_checked_within_their_rounding() -> None:
    """Inputs of 1e5 apart by 1: u - mean keeps 5 fewer digits, and the weights'
    gradient sums error-at-u terms that cancel; the module's float64 numbers are right to
    their rounding, not a disagreement to report."""
    doc = chainrule.derivation(BN, at=_point([[1e5], [1e5], [1.00001e5]]))
    assert "C = 0.009386219035" in doc.to_text()


@pytest.mark.parametrize(("dtype", "x"), [("float64", 1e8), ("float32", 1e5)])
def test_examples_closer_than_the_dtype_resolves_are_refused_naming_x(dtype: str, x) -> None:
    """Inputs of 1e8 apart by 1 (float32: 1e5): x-hat's rounding alone passes the
    check's tolerance, so the module's numbers cannot be checked; refused in one line
    naming x and the fix, not reported as a disagreement between module and derivation."""
    spec = dataclasses.replace(BN, dtype=dtype)
    point = _point([[x], [x], [x * 1.00001 if dtype == "float32" else x + 1]])
    with pytest.raises(SpecError, match=r"^x: the weighted sums u1 of a batch-normalized .*"):
        chainrule.derivation(spec, at=point)


def test_epsilon_is_spaced_like_any_other_symbol_in_text() -> None:
    """The text rendering ate the space after epsilon, as TeX does after a command name:
    "ε= 10⁻⁵". A space after ε is kept now, so the intro reads "ε = 10⁻⁵"."""
    text = chainrule.derivation(BN, "nielsen").to_text()
    assert "with ε = 10⁻⁵ (PyTorch's)" in text and "ε=" not in text
    assert "√(v² + ε)" in text
