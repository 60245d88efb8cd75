"""Batch norm in ``compare`` and ``graph``: a symbolic batch of m examples.

Batch norm couples the examples of a batch, so a network with a batch-normalized layer
is expanded over m symbolic examples (``--batch``, default 2): the naive chain rule on
the batch cost, its CSE, and the memoized program with the three-term error, counted by
hand on a small case, checked to agree at random points, and shown to catch planted
bugs; the graph's walk counts are checked against every path listed by brute force.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import mpmath
import pytest
import sympy as sp
from chainrule.derive import batch_norm
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.scalar import gradients
from chainrule.derive.scalar_batch_program import estimate_batch_naive_ops
from chainrule.derive.scalar_network import batch_scalar_network, scalar_network
from chainrule.derive.spec import Layer, Spec, preset, preset_names
from test_compare_dropout import _worst

from chainrule import cmd_compare
from chainrule.cli import main
from chainrule.comparison import compare_spec, render_comparison
from chainrule.graph import build_graph
from chainrule.graph_batch_norm import walk_counts

#: 1-2-1, batch norm on the linear hidden layer, linear output, quadratic cost.
HAND = Spec(1, (Layer(2, "linear", batch_norm=True), Layer(1, "linear")), "quadratic")

SPEC_TOML = """\
input = 1
cost = "quadratic"
[[layers]]
size = 2
activation = "tanh"
batch_norm = true
[[layers]]
size = 1
activation = "sigmoid"
"""

NETS = {
    "tanh-sigmoid": Spec(1, (Layer(2, "tanh", batch_norm=True), Layer(1, "sigmoid")), "quadratic"),
    "relu-softmax-dropout": Spec(
        2,
        (Layer(2, "sigmoid", dropout=0.5), Layer(2, "relu", batch_norm=True), Layer(2, "softmax")),
        "cross-entropy",
    ),
    "two-normalized-residual-l2": Spec(
        2,
        (
            Layer(2, "tanh", batch_norm=True),
            Layer(2, "tanh", batch_norm=True, skip_from=1),
            Layer(1, "linear"),
        ),
        "quadratic",
        l2=0.1,
    ),
}
QUICK = ("tanh-sigmoid",)


# ------------------------------------------------------------------------ counts


def test_backprop_and_forward_counts_of_a_small_case_by_hand() -> None:
    """1-2-1 (linear, batch norm on layer 1; linear output; quadratic), m = 2.

    Forward, per unit j of layer 1: u_j,i = w x_i (1 each, 2); mean = u0/2 + u1/2 (3);
    var = (u0 - mean)^2/2 + (u1 - mean)^2/2 (3 per term + 1 = 7); rstd = 1/sqrt(var + eps)
    (2); xhat_i = rstd (u_i - mean) (2 each, 4); z_i = gamma xhat_i + beta (2 each, 4):
    22 per unit, 44 for layer 1. Layer 2: z_i = w a_0 + w a_1 + b (4 each, 8) and the cost
    (a_0 - y_0)^2/4 + (a_1 - y_1)^2/4 (3 per term + 1 = 7): 15. Forward 59.

    Backprop: the forward statements without the cost (52), delta^2_i = a_i - y_i (2),
    delta^1_j,i = delta^2_i w_j (4), per unit mean(delta) (3), mean(delta xhat) (5) and
    deltau_i = gamma rstd (delta_i - mean(delta) - mean(delta xhat) xhat_i) (5 each, 10):
    36 for both units; dC/dw^1_j = deltau_0 x_0/2 + deltau_1 x_1/2 (5 each, 10), dC/dgamma
    and dC/dbeta the two means (0), dC/dw^2_j (5 each, 10), dC/db^2 (3). Total 117.
    """
    c = compare_spec(HAND, engine="sympy")
    assert c.batch == 2 and c.parameters == 9  # w1 (2), gamma1, beta1 (2 + 2), w2 (2), b2
    assert c.forward_ops == 59
    assert [r.forward for r in c.layers] == [44, 15, 59]
    assert c.backprop_ops == 117
    assert [r.parameters for r in c.layers] == [6, 3, 9]
    assert c.finite_difference_ops == (2 * 9 + 1) * 59
    assert sum(r.backprop for r in c.layers[:2]) == c.backprop_ops
    assert sum(r.naive for r in c.layers[:2]) == c.naive_ops
    assert c.naive_ops > c.backprop_ops and c.cse_ops is not None
    names = [p["name"] for p in c.per_parameter]
    assert names == ["w1_0_0", "w1_1_0", "gamma1_0", "gamma1_1", "beta1_0", "beta1_1"] + [
        "w2_0_0",
        "w2_0_1",
        "b2_0",
    ]
    assert c.to_json()["batch"] == 2
    # CSE finds the errors dC/dz = delta / m of the batch among its temporaries
    assert c.temporaries["delta"] >= 2


@pytest.mark.slow
def test_every_count_grows_with_the_batch() -> None:
    two, three = compare_spec(HAND, engine="sympy"), compare_spec(HAND, engine="sympy", batch=3)
    assert three.batch == 3
    # Forward, per unit one more u (1), one more term in mean (division and addition, 2)
    # and in var (3 + 1), one more xhat and z (2 + 2); layer 2 one more example (4) and one
    # more cost term (3 + 1).
    assert three.forward_ops - two.forward_ops == 2 * (1 + 2 + 4 + 2 + 2) + 4 + 4
    assert three.naive_ops > two.naive_ops and three.backprop_ops > two.backprop_ops


def test_render_says_the_counts_are_per_batch() -> None:
    text = render_comparison(compare_spec(HAND, engine="sympy"))
    assert "operations per batch of 2 examples" in text
    assert "symbolic batch of m = 2 examples" in text


# ------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in NETS]
)
def test_naive_cse_and_backprop_agree_at_random_points(name: str) -> None:
    net = batch_scalar_network(NETS[name], 2)
    naive = gradients(net, "naive", engine="sympy")
    for strategy in ("cse", "backprop"):
        memo = gradients(net, strategy, engine="sympy")
        assert _worst(naive, memo, range(3)) < mpmath.mpf("1e-30")


def test_a_batch_of_three_agrees_too() -> None:
    net = batch_scalar_network(NETS["tanh-sigmoid"], 3)
    naive = gradients(net, "naive", engine="sympy")
    assert _worst(naive, gradients(net, "backprop"), range(3)) < mpmath.mpf("1e-30")


def _planted(memo, target_prefix: str, wrong) -> object:
    """``memo`` with ``wrong`` applied to each statement whose target starts so."""
    program = tuple(
        dataclasses.replace(s, expr=wrong(s)) if s.target.name.startswith(target_prefix) else s
        for s in memo.program
    )
    return dataclasses.replace(memo, program=program)


def test_planted_batch_norm_bugs_fail_the_checker() -> None:
    net = batch_scalar_network(NETS["tanh-sigmoid"], 2)
    naive, memo = gradients(net, "naive", engine="sympy"), gradients(net, "backprop")
    assert _worst(naive, memo, range(3)) < mpmath.mpf("1e-30")
    # mean(delta) and mean(delta xhat) are the statements dC/dbeta and dC/dgamma
    means = {s.target for s in memo.program if s.target.name.startswith("dC_dbeta")}
    spreads = {s.target for s in memo.program if s.target.name.startswith("dC_dgamma")}
    assert len(means) == len(spreads) == 2
    m = 2
    bugs = {
        # the path through the mean dropped: no - mean(delta) term
        "mean term": _planted(memo, "deltau", lambda s: s.expr.xreplace(dict.fromkeys(means, 0))),
        # the path through the variance dropped: no - xhat mean(delta xhat) term
        "variance term": _planted(
            memo, "deltau", lambda s: s.expr.xreplace(dict.fromkeys(spreads, 0))
        ),
        # the unbiased variance (1/(m - 1)) in place of the biased one (1/m)
        "unbiased variance": _planted(memo, "var", lambda s: s.expr * sp.Rational(m, m - 1)),
    }
    for name, planted in bugs.items():
        assert _worst(naive, planted, range(3)) > mpmath.mpf("1e-3"), name


def test_the_variance_path_through_the_mean_carries_zero() -> None:
    """d var / d mean = -(2/m) sum_i (u_i - mean) = 0 at the batch mean: dropping the
    variance's path through the mean is no bug (the graph still draws and counts it)."""
    u = sp.symbols("u1:4", real=True)
    mu = sp.Symbol("mu", real=True)
    through_mean = sp.diff(batch_norm.batch_variance(u, mu), mu)
    assert sp.simplify(through_mean.xreplace({mu: batch_norm.batch_mean(u)})) == 0
    assert through_mean != 0  # but not at any other point: the path is there


# ------------------------------------------------------------------------ limits


def test_one_example_scalar_network_still_refuses_batch_norm() -> None:
    with pytest.raises(ChainruleError) as info:
        scalar_network(HAND)
    message = str(info.value)
    assert info.value.field == "layers[0].batch_norm" and "\n" not in message
    assert "unrolled" in message and "compare, graph" not in message


@pytest.mark.parametrize("batch", [0, 1, 5, 99, True, 2.0, "2"])
def test_api_refuses_a_bad_batch(batch) -> None:
    with pytest.raises(SpecError) as info:
        compare_spec(HAND, batch=batch)
    assert info.value.field == "batch"
    with pytest.raises(SpecError):
        build_graph(HAND, batch=batch)


def test_a_network_too_large_for_the_batch_expansion_is_refused() -> None:
    wide = Spec(40, (Layer(40, "tanh", batch_norm=True), Layer(2, "sigmoid")), "quadratic")
    with pytest.raises(ChainruleError) as info:
        compare_spec(wide, batch=4)  # 1,762 parameters, over 4000 / 4
    assert "too many for a scalar-level expansion (limit 1000)" in str(info.value)
    with pytest.raises(SpecError) as info:
        build_graph(wide, "scalar")
    assert info.value.field == "network" and "unreadable" in str(info.value)
    assert "--level layer" in str(info.value)
    assert build_graph(wide).level == "layer"  # auto falls back to the layer graph


def test_the_naive_budget_refuses_with_a_fix_and_keeps_backprop() -> None:
    c = compare_spec(HAND, budget=100)
    assert c.naive_ops is None and c.cse_ops is None and c.backprop_ops == 117
    assert "over a batch of 2" in c.refused and "--budget" in c.refused
    assert "--batch 2" not in c.refused  # already the smallest batch
    assert "--batch 2" in compare_spec(HAND, budget=100, batch=3).refused
    assert c.naive_estimate > 100


# ------------------------------------------------------------------------ graph


def _forward_paths(spec: Spec, m: int) -> list[int]:
    """Every path from C down to a parameter of the forward unit graph over m examples,
    listed one by one (no memo); each entry is its number of edges above the parameter.
    The forward graph: C -> z^L_j,i (through a^L); z^l_j,i -> w^l_j., b^l_j and
    z^(l-1)_k,i (through a^(l-1)_k,i); for batch norm z_j,i -> gamma_j, beta_j, xhat_j,i;
    xhat_j,i -> u_j,i, mean_j, var_j; var_j -> every u_j,i' and mean_j; mean_j -> every
    u_j,i'; u_j,i -> w^l_j. and z^(l-1)_k,i. Plus C -> P^l -> w for a penalty."""
    n, paths = spec.sizes, []

    def at_u(layer: int, j: int, i: int, walked: int) -> None:
        paths.extend([walked] * n[layer - 1])
        if layer > 1:
            for k in range(n[layer - 1]):
                at_z(layer - 1, k, i, walked + 1)

    def at_mean(layer: int, j: int, walked: int) -> None:
        for i in range(m):
            at_u(layer, j, i, walked + 1)

    def at_z(layer: int, j: int, i: int, walked: int) -> None:
        if spec.layers[layer - 1].batch_norm:
            paths.extend([walked] * 2)  # gamma_j, beta_j
            walked += 1  # z -> xhat
            at_u(layer, j, i, walked + 1)
            at_mean(layer, j, walked + 1)
            for i2 in range(m):  # xhat -> var -> u
                at_u(layer, j, i2, walked + 2)
            at_mean(layer, j, walked + 2)  # xhat -> var -> mean
            return
        paths.extend([walked] * (n[layer - 1] + spec.layers[layer - 1].bias))
        if layer > 1:
            for k in range(n[layer - 1]):
                at_z(layer - 1, k, i, walked + 1)

    for j in range(n[-1]):
        for i in range(m):
            at_z(spec.depth, j, i, 1)
    if spec.regularized:
        for layer in range(1, spec.depth + 1):
            paths.extend([1] * (n[layer] * n[layer - 1]))
    return paths


GRAPH_NETS = {
    "1-2-1": HAND,
    "2-2-2-1 two normalized": Spec(
        2,
        (Layer(2, "tanh", batch_norm=True), Layer(2, "relu", batch_norm=True), Layer(1, "linear")),
        "quadratic",
    ),
    "2-3-1 normalized on top": Spec(
        2, (Layer(3, "tanh"), Layer(2, "tanh", batch_norm=True), Layer(1, "sigmoid")), "quadratic"
    ),
    "1-1-1 penalty dropout": Spec(
        1,
        (Layer(1, "sigmoid", batch_norm=True), Layer(1, "tanh", dropout=0.2), Layer(1, "linear")),
        "quadratic",
        l2=0.01,
    ),
}


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("name", sorted(GRAPH_NETS))
def test_walk_counts_equal_the_paths_listed_by_brute_force(name: str, m: int) -> None:
    spec = GRAPH_NETS[name]
    graph = build_graph(spec, batch=m)
    listed = _forward_paths(spec, m)
    assert graph.naive_walks == sum(listed)
    counts = walk_counts(spec, m)
    penalty_edges = spec.depth if spec.regularized else 0
    assert graph.backprop_walks == len(counts) + penalty_edges
    drawn = re.findall(r"^  (\w+) -> (\w+) \[.*?xlabel=\"×([\d,]+)\"", graph.dot, re.M)
    assert {(s, d): int(c.replace(",", "")) for s, d, c in drawn if not d.startswith("dP")} == (
        counts
    )


def test_the_batch_graph_draws_the_statistics_and_explains_them() -> None:
    dot = build_graph(HAND).dot
    assert "batch of 2 examples, scalar graph" in dot
    for j, sub in enumerate("₀₁"):
        assert f'mean1_{j} [label="mean¹{sub}"' in dot and f'var1_{j} [label="var¹{sub}"' in dot
        for i, isub in enumerate("₀₁"):
            assert f'xhat1_{j}_e{i} [label="x̂¹{sub},{isub}"' in dot
            assert f"u1_{j}_e{i} -> mean1_{j} " in dot and f"u1_{j}_e{i} -> var1_{j} " in dot
            assert f"mean1_{j} -> xhat1_{j}_e{i} " in dot
            assert f"gmean1_{j} -> du1_{j}_e{i} " in dot and f"gvar1_{j} -> du1_{j}_e{i} " in dot
        assert f"mean1_{j} -> var1_{j} " in dot and f"gvar1_{j} -> gmean1_{j} " in dot
    assert "batch statistics of one unit" in dot and "shared by the m examples" in dot
    assert "computed once per batch" in dot and "δu sums the paths at u (three terms)" in dot
    assert "∂C/∂γ¹₀ = mean(δ¹₀ x̂¹₀), ∂C/∂β¹₀ = mean(δ¹₀)" in dot


def test_graph_refuses_what_it_does_not_draw() -> None:
    with pytest.raises(SpecError) as info:
        build_graph(HAND, "vector")
    assert info.value.field == "level"
    with pytest.raises(SpecError) as info:
        build_graph(preset("3b1b-chain"), batch=2)
    assert info.value.field == "batch"


# ------------------------------------------------------------- no batch norm


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.slow
def test_a_network_without_batch_norm_is_counted_and_drawn_as_before(name: str) -> None:
    spec = preset(name)
    graph = build_graph(spec)
    assert "batch of" not in graph.dot and "mean" not in graph.dot
    if spec.parameter_count > 100:
        return
    c = compare_spec(spec, engine="sympy", with_temporaries=False)
    assert c.batch == 1 and "batch" not in c.to_json()
    assert "operations per example" in render_comparison(c) and "batch" not in render_comparison(c)


# -------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("command", ["compare", "graph"])
@pytest.mark.parametrize("value", ["0", "1", "5", "99", "two", "２", "-2", "2.5", ""])
def test_cli_refuses_a_bad_batch_in_one_line(tmp_path, capsys, command: str, value: str) -> None:
    path = tmp_path / "bn.toml"
    path.write_text(SPEC_TOML, encoding="utf-8")
    out = tmp_path / "g.dot"
    extra = ["-o", str(out)] if command == "graph" else []
    assert main([command, str(path), f"--batch={value}", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert (
        captured.err.startswith("chainrule: error: --batch: ") and "Traceback" not in captured.err
    )
    assert not out.exists()


@pytest.mark.parametrize("command", ["compare", "graph"])
def test_cli_refuses_a_batch_without_batch_norm(capsys, command: str) -> None:
    assert main([command, "--preset", "3b1b-chain", "--batch", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch: a batch applies to a network with batch_norm" in err


def test_cli_compare_and_graph_accept_batch_norm(tmp_path, capsys) -> None:
    path = tmp_path / "bn.toml"
    path.write_text(SPEC_TOML, encoding="utf-8")
    assert main(["compare", str(path), "--json", "--batch", "3", "--engine", "sympy"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == 3 and data["refused"] is None
    assert data["naive_ops"] > data["cse_ops"] and data["backprop_ops"] < data["naive_ops"]
    out = tmp_path / "bn.dot"
    assert main(["graph", str(path), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (scalar graph")
    dot = out.read_text(encoding="utf-8")
    assert dot.startswith("digraph chainrule {") and "mean1_0" in dot


def test_cli_warns_before_a_long_batch_expansion(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "bn.toml"
    path.write_text(SPEC_TOML, encoding="utf-8")
    monkeypatch.setattr(cmd_compare, "SLOW_BATCH_ESTIMATE", 10)
    assert main(["--quiet", "compare", str(path), "--engine", "sympy"]) == 0
    err = capsys.readouterr().err
    assert "the naive expansion over a batch of 2 is estimated at" in err
    assert err.count("\n") == 1
    assert main(["compare", str(path), "--budget", "10"]) == 0  # refused: no warning
    assert "estimated at" not in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bad_batch_has_no_traceback_in_a_subprocess(run_cli, tmp_path) -> None:
    (tmp_path / "bn.toml").write_text(SPEC_TOML, encoding="utf-8")
    for command in ("compare", "graph"):
        done = run_cli(command, "bn.toml", "--batch", "２", cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_readme_figures_are_the_code_s() -> None:
    text = " ".join((Path(__file__).parents[1] / "README.md").read_text("utf-8").split())
    c = compare_spec(HAND, engine="sympy", with_temporaries=False)
    counts = (
        f"counts forward {c.forward_ops}, backprop {c.backprop_ops}, cse {c.cse_ops} "
        f"and naive {c.naive_ops:,} operations"
    )
    assert counts in text
    g = build_graph(HAND)
    assert (
        f"walks its backward edges {g.naive_walks:,} times by the naive chain rule, "
        f"{g.backprop_walks:,} by backpropagation" in text
    )
    assert "`compare` and `graph` work on a symbolic batch of examples (`--batch M`" in text
    assert cmd_compare.SLOW_BATCH_ESTIMATE == 1e6 and "past an estimated 1e6" in text
    relu = Spec(4, (Layer(6, "relu", batch_norm=True), Layer(3, "softmax")), "cross-entropy")
    estimate = estimate_batch_naive_ops(batch_scalar_network(relu, 2))
    shown = f"{estimate:.2g}".replace("e+0", "e")
    assert f"softmax and cross-entropy: estimated at {shown} operations" in text
