"""Dropout in the scalar expansion: ``compare`` counts the mask, ``graph`` draws it.

A layer with ``dropout = p`` computes a^l_j = D^l_j f(z^l_j), with the mask entry
D^l_j = r/(1 - p) a symbol: a constant of one training step. The naive chain rule gets
one more factor on every path through a dropped unit, and no new path; the memoized
program multiplies by D^l_j once per unit forward and once per unit in BP2.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import mpmath
import pytest
import sympy as sp
from chainrule.derive.scalar import (
    count_strategy,
    estimate_naive_ops,
    gradient_values,
    gradients,
    random_point,
)
from chainrule.derive.spec import Layer, Spec

from chainrule.cli import main
from chainrule.comparison import compare_spec, render_comparison
from chainrule.graph import build_graph

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


def _net(sizes: tuple[int, int, int], p: float) -> Spec:
    """n0-n1-n2: tanh (dropout p), sigmoid output, quadratic cost."""
    layers = (Layer(sizes[1], "tanh", dropout=p), Layer(sizes[2], "sigmoid"))
    return Spec(sizes[0], layers, "quadratic")


def _occurrences(expr: sp.Basic, symbols: set, memo: dict) -> int:
    """How many times ``symbols`` occur in ``expr`` read as a tree (repeats counted)."""
    if expr not in memo:
        memo[expr] = (
            1 if expr in symbols else sum(_occurrences(a, symbols, memo) for a in expr.args)
        )
    return memo[expr]


def _worst(reference, other, seeds: range) -> mpmath.mpf:
    """The checker of the scalar strategies: the largest relative difference of ``other``'s
    gradient from ``reference``'s at random rational points (masks drawn as in training)."""
    worst = mpmath.mpf(0)
    for seed in seeds:
        point = random_point(reference.network, seed)
        want, got = gradient_values(reference, point), gradient_values(other, point)
        for w, g in zip(want, got, strict=True):
            worst = max(worst, abs(w - g) / (1 + abs(w)))
    return worst


# ------------------------------------------------------------------------ counts


@pytest.mark.parametrize("sizes", [pytest.param((3, 4, 2), marks=pytest.mark.slow), (2, 3, 2)])
def test_compare_counts_differ_from_the_net_without_dropout_as_derived(sizes) -> None:
    """Expected, for n0-n1-n2 with dropout on layer 1 (n1 masks):

    * forward +n1: one product a^1_j = D^1_j h^1_j per unit (booked to layer 1);
    * backprop +2 n1: those products (the forward pass is booked to layer L) and one
      factor D^1_j in each delta^1_j (layer 1);
    * finite differences +(2P + 1) n1: 2P + 1 forward passes;
    * naive: one multiplication per occurrence of a mask in the expanded trees. By hand,
      dC/da^2_i = (a^2_i - y_i) sigma(z^2_i)(1 - sigma(z^2_i)) holds three copies of
      z^2_i, each with n1 masks, so dC/dw^2_ij has 3 n1 + 1 (the last: a^1_j), dC/db^2_i
      3 n1, and a parameter of unit j of layer 1 n2 (3 n1 + 1) (one path per output,
      each with D^1_j f'(z^1_j) once more);
    * cse finds the sharing backprop has: +2 n1;
    * same parameters, and the same number of paths (the graph's walk counts).
    """
    n0, n1, n2 = sizes
    plain = compare_spec(_net(sizes, 0.0), with_temporaries=False)
    drop = compare_spec(_net(sizes, 0.2), with_temporaries=False)
    assert drop.parameters == plain.parameters
    p = plain.parameters
    assert drop.forward_ops - plain.forward_ops == n1
    assert drop.backprop_ops - plain.backprop_ops == 2 * n1
    assert drop.finite_difference_ops - plain.finite_difference_ops == (2 * p + 1) * n1
    by_hand = n2 * n1 * (3 * n1 + 1) + n2 * 3 * n1 + n1 * (n0 + 1) * n2 * (3 * n1 + 1)
    assert drop.naive_ops - plain.naive_ops == by_hand
    assert drop.cse_ops - plain.cse_ops == 2 * n1
    rows = {(r.layer, k): getattr(r, k) for r in drop.layers for k in ("forward", "backprop")}
    before = {(r.layer, k): getattr(r, k) for r in plain.layers for k in ("forward", "backprop")}
    assert rows[1, "forward"] - before[1, "forward"] == n1
    assert rows[2, "forward"] == before[2, "forward"]
    assert rows[1, "backprop"] - before[1, "backprop"] == n1
    assert rows[2, "backprop"] - before[2, "backprop"] == n1
    assert drop.dropout == (0.2, 0.0) and plain.dropout == (0.0, 0.0)
    graphs = build_graph(_net(sizes, 0.2), "scalar"), build_graph(_net(sizes, 0.0), "scalar")
    assert graphs[0].naive_walks == graphs[1].naive_walks
    assert graphs[0].backprop_walks == graphs[1].backprop_walks


def test_naive_growth_is_one_multiplication_per_mask_occurrence() -> None:
    """Setting every mask to 1 gives back the naive gradients without dropout, expression
    for expression; each mask occurrence in the trees costs exactly one operation, and the
    budget's estimate grows by the same amount."""
    spec, bare = _net((3, 4, 2), 0.2), _net((3, 4, 2), 0.0)
    drop, plain = gradients(spec, "naive"), gradients(bare, "naive")
    masks = set(drop.network.masks)
    assert [m.name for m in drop.network.masks] == ["D1_0", "D1_1", "D1_2", "D1_3"]
    ones = dict.fromkeys(masks, 1)
    assert [g.expr.xreplace(ones) for g in drop.grads] == [g.expr for g in plain.grads]
    memo: dict = {}
    found = sum(_occurrences(g.expr, masks, memo) for g in drop.grads)
    grown = count_strategy(drop).total - count_strategy(plain).total
    assert grown == found == 544
    assert estimate_naive_ops(spec) - estimate_naive_ops(bare) == grown
    # The masks are constants: no gradient is taken with respect to them.
    assert not masks & set(drop.network.params)


# ------------------------------------------------------------------- agreement


QUICK = ("tanh-sigmoid", "residual")
NETS = {
    "tanh-sigmoid": _net((3, 4, 2), 0.2),
    "residual": Spec(
        2,
        (
            Layer(2, "sigmoid", dropout=0.5),
            Layer(2, "tanh", skip_from=1, dropout=0.25),
            Layer(2, "linear", skip_from=0),
        ),
        "quadratic",
    ),
    "penalty-relu-softmax": Spec(
        2, (Layer(2, "relu", dropout=0.3), Layer(2, "softmax")), "cross-entropy", l2=0.1, l1=0.05
    ),
}


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in NETS]
)
def test_naive_cse_and_backprop_agree_with_dropout(name) -> None:
    spec = NETS[name]
    naive = gradients(spec, "naive")
    for strategy in ("cse", "backprop"):
        assert _worst(naive, gradients(spec, strategy), range(4)) < mpmath.mpf("1e-30")
    # The checker's points drop units (D = 0) and keep others (D = 1/(1 - p)), as in training.
    net = naive.network
    drawn = {(m, random_point(net, s)[m]) for s in range(4) for m in net.masks}
    keep = {}
    for m in net.masks:  # D1_0 -> layer 1
        p = Fraction(str(spec.layers[int(m.name[1]) - 1].dropout))
        keep[m] = sp.Rational(p.denominator, p.denominator - p.numerator)
    assert all(v in (0, keep[m]) for m, v in drawn)
    assert {v for _, v in drawn if v} and {v for _, v in drawn if not v}


def test_a_planted_wrong_mask_factor_fails_the_checker() -> None:
    spec = NETS["residual"]
    naive, memo = gradients(spec, "naive"), gradients(spec, "backprop")
    masks = set(memo.network.masks)
    assert _worst(naive, memo, range(4)) < mpmath.mpf("1e-30")
    bp2 = [s for s in memo.program if s.note.startswith("delta") and s.expr.free_symbols & masks]
    assert len(bp2) == 4  # one D^l_j factor per dropped unit, in its delta
    for wrong in ({m: 1 for m in masks}, {m: m**2 for m in masks}):
        program = tuple(
            dataclasses.replace(s, expr=s.expr.xreplace(wrong)) if s in bp2 else s
            for s in memo.program
        )
        planted = dataclasses.replace(memo, program=program)
        assert _worst(naive, planted, range(4)) > mpmath.mpf("1e-3")


def test_memoized_equals_naive_as_expressions_for_any_mask() -> None:
    """A polynomial activation keeps both gradients polynomials in the weights, inputs,
    targets and masks: their difference expands to 0, for every value of D."""
    spec = Spec(2, (Layer(2, "x*x/2 + x", dropout=0.5), Layer(1, "linear")), "quadratic")
    naive, memo = gradients(spec, "naive"), gradients(spec, "backprop")
    for a, b in zip(naive.expressions(), memo.expressions(), strict=True):
        assert sp.expand(a - b) == 0
    assert any(e.free_symbols & set(naive.network.masks) for e in naive.expressions())


# ------------------------------------------------------------------------ graph


def test_graph_draws_the_masks_and_says_what_they_are() -> None:
    spec = _net((3, 4, 2), 0.2)
    scalar = build_graph(spec, "scalar").dot
    for j, sub in enumerate("₀₁₂₃"):
        assert f'z1_{j} -> a1_{j} [color="#4a78a8", xlabel="×D¹{sub}"];' in scalar
        assert f'delta1_{j} [label="δ¹{sub}\\n(×D¹{sub})"' in scalar
    assert "×D²" not in scalar  # the output layer has no mask
    for dot in (scalar, build_graph(spec, "layer").dot):
        assert "legend_mask" in dot and "dropout mask D = r/(1 − p)" in dot
        assert "dropout p = 0.2 (layer 1)" in dot
    assert "a¹ = D¹ ⊙ tanh(z¹)" in build_graph(spec, "layer").dot
    plain = build_graph(_net((3, 4, 2), 0.0), "scalar").dot
    assert "×D" not in plain and "legend_mask" not in plain


def test_graph_composes_with_residual_and_penalty() -> None:
    residual = build_graph(NETS["residual"], "scalar")
    assert 'xlabel="×D²₁"' in residual.dot and 'xlabel="skip"' in residual.dot
    undropped = NETS["residual"].replace(
        layers=tuple(dataclasses.replace(ly, dropout=0) for ly in NETS["residual"].layers)
    )
    assert residual.naive_walks == build_graph(undropped, "scalar").naive_walks
    assert "a² = D² ⊙ tanh(z²) + a¹" in build_graph(NETS["residual"], "layer").dot
    penalty = build_graph(NETS["penalty-relu-softmax"], "scalar").dot
    assert 'xlabel="×D¹₁"' in penalty and "legend_pen" in penalty and "legend_mask" in penalty


# -------------------------------------------------------------------------- CLI


def test_compare_and_graph_commands_accept_dropout(tmp_path, capsys) -> None:
    path = tmp_path / "ds.toml"
    path.write_text(SPEC_TOML)
    assert main(["compare", str(path), "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["dropout"] == [0.2, 0.0] and data["refused"] is None
    assert data["naive_ops"] > data["cse_ops"] >= data["backprop_ops"]
    text = render_comparison(compare_spec(_net((3, 4, 2), 0.2), with_temporaries=False))
    assert "dropout: layer 1 p = 0.2; each mask entry D^l_j = r/(1 - p)" in text
    out = tmp_path / "ds.dot"
    assert main(["graph", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (scalar graph")
    assert out.read_text(encoding="utf-8").count("×D¹") == 8  # 4 edges, 4 deltas
