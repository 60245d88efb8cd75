"""``chainrule graph`` of a batch-normalized network at the layer level, and batch norm with
residual connections at both levels.

The walk counts are checked against every path from C to a parameter listed one by one on
the forward graph of the batch (no memo), and the layer graph's edges against the scalar
graph's unit edges merged kind by kind; the labels' formulas against PyTorch's autograd.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from chainrule.derive import batch_norm
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec

from chainrule import graph_batch_norm, graph_batch_norm_layer
from chainrule.cli import main
from chainrule.graph import _PARAM, SCALAR_HARD_MAX_WEIGHTS, build_graph
from chainrule.graph_batch_norm import _STAT, _STAT_BACK, MAX_BATCH_UNITS
from chainrule.graph_residual import touched

HAS_DOT = shutil.which("dot") is not None

NETS = {
    "1-2-1": Spec(1, (Layer(2, "linear", batch_norm=True), Layer(1, "linear")), "quadratic"),
    "2-2-2-1 two normalized l1": Spec(
        2,
        (Layer(2, "tanh", batch_norm=True), Layer(2, "relu", batch_norm=True), Layer(1, "linear")),
        "quadratic",
        l1=0.01,
    ),
    "2-3-2-1 normalized on top": Spec(
        2, (Layer(3, "tanh"), Layer(2, "tanh", batch_norm=True), Layer(1, "sigmoid")), "quadratic"
    ),
    "1-1-1 penalty dropout": Spec(
        1,
        (Layer(1, "sigmoid", batch_norm=True), Layer(1, "tanh", dropout=0.2), Layer(1, "linear")),
        "quadratic",
        l2=0.01,
    ),
    "residual normalized to normalized l2": Spec(
        2,
        (
            Layer(2, "tanh", batch_norm=True),
            Layer(2, "tanh", batch_norm=True, skip_from=1),
            Layer(1, "linear"),
        ),
        "quadratic",
        l2=0.1,
    ),
    "skip from the input into a normalized layer": Spec(
        2,
        (Layer(2, "tanh", batch_norm=True, skip_from=0), Layer(2, "tanh"), Layer(1, "linear")),
        "quadratic",
    ),
    "skip leaving a normalized layer, dropout, l1": Spec(
        2,
        (
            Layer(2, "relu", batch_norm=True),
            Layer(2, "tanh", dropout=0.2),
            Layer(2, "tanh", skip_from=1),
            Layer(1, "linear"),
        ),
        "quadratic",
        l1=0.01,
    ),
    "chain with a skip into the output": Spec(
        1, (Layer(1, "tanh", batch_norm=True), Layer(1, "linear", skip_from=1)), "quadratic"
    ),
}
#: The [784, 256, 256, 10] network of benchmarks/batch_norm.py.
BENCHMARK = Spec(
    784,
    (
        Layer(256, "relu", batch_norm=True),
        Layer(256, "relu", batch_norm=True),
        Layer(10, "softmax"),
    ),
    "cross-entropy",
)


def _forward_paths(spec: Spec, m: int) -> list[int]:
    """Every path from C down to a parameter of the batch's forward unit graph, listed one
    by one (no memo); each entry is the number of backward edges the drawn graph gives the
    path. The forward graph, example i: C -> a^L_j,i; a^l_j,i -> z^l_j,i, and -> a^k_j,i
    when l skips from k >= 1; a plain z^l_j,i -> w^l_j., b^l_j and a^(l-1)_k,i; a normalized
    z_j,i -> gamma_j, beta_j and xhat_j,i -> u_j,i, mean_j, var_j; var_j -> every u_j,i' and
    mean_j; mean_j -> every u_j,i'; u_j,i -> w^l_j. and a^(l-1)_k,i. A layer a skip touches
    has a drawn node for a^l (one more edge on the way to z); others do not. Plus C -> P^l
    -> w for a penalty."""
    n, paths, stored = spec.sizes, [], touched(spec)

    def at_a(layer: int, j: int, i: int, walked: int) -> None:  # walked: edges into a
        if layer == 0:
            return
        if layer in stored:
            at_z(layer, j, i, walked + 1)
            if spec.skips.get(layer, 0) > 0:
                at_a(spec.skips[layer], j, i, walked + 1)
        else:
            at_z(layer, j, i, walked)

    def at_u(layer: int, i: int, walked: int) -> None:
        paths.extend([walked] * n[layer - 1])
        for k in range(n[layer - 1]):
            at_a(layer - 1, k, i, walked + 1)

    def at_z(layer: int, j: int, i: int, walked: int) -> None:
        if spec.layers[layer - 1].batch_norm:
            paths.extend([walked] * 2)  # gamma_j, beta_j
            walked += 1  # z -> xhat
            at_u(layer, i, walked + 1)
            for i2 in range(m):  # xhat -> mean -> u, xhat -> var -> u, xhat -> var -> mean -> u
                at_u(layer, i2, walked + 2)
                at_u(layer, i2, walked + 2)
                at_u(layer, i2, walked + 3)
            return
        paths.extend([walked] * (n[layer - 1] + spec.layers[layer - 1].bias))
        for k in range(n[layer - 1]):
            at_a(layer - 1, k, i, walked + 1)

    for j in range(n[-1]):
        for i in range(m):
            at_a(spec.depth, j, i, 1)
    if spec.regularized:
        for layer in range(1, spec.depth + 1):
            paths.extend([1] * (n[layer] * n[layer - 1]))
    return paths


def _backprop_edges(spec: Spec, m: int) -> int:
    """The backward unit edges, counted by kind: C to the top, per normalized unit 6m + 1
    (delta -> dC/dxhat, three out of dC/dxhat, var -> mean, m each from mean and var to
    u), n_l n_(l-1) m between layers, m n_l into and out of each skip's stored dC/da."""
    n, stored = spec.sizes, touched(spec)
    total = m * n[-1] + (spec.depth if spec.regularized else 0)
    for layer in range(1, spec.depth + 1):
        if spec.layers[layer - 1].batch_norm:
            total += n[layer] * (6 * m + 1)
        if layer > 1:
            total += m * n[layer] * n[layer - 1]
        total += m * n[layer] * ((layer in stored) + (spec.skips.get(layer, 0) > 0))
    return total


def _merged(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], tuple[int, int]]:
    """The scalar graph's unit edges merged by kind and layer: (naive walks, unit edges)."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for (src, dst), count in counts.items():
        key = (src.split("_")[0], dst.split("_")[0])
        naive, units = out.get(key, (0, 0))
        out[key] = (naive + count, units + 1)
    return out


def _layer_labels(dot: str) -> dict[tuple[str, str], tuple[int, int]]:
    """The counted backward edges of a layer graph's DOT text: (naive, backprop)."""
    found = re.findall(
        r'^  (\w+) -> (\w+) \[.*?label="[^"]*?naive ([\d,]+), backprop ([\d,]+)"', dot, re.M
    )
    return {(s, d): (int(a.replace(",", "")), int(b.replace(",", ""))) for s, d, a, b in found}


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("name", sorted(NETS))
def test_walk_counts_at_both_levels_equal_the_paths_listed_by_brute_force(
    name: str, m: int
) -> None:
    spec = NETS[name]
    listed = _forward_paths(spec, m)
    scalar, layer = build_graph(spec, "scalar", m), build_graph(spec, "layer", m)
    assert (scalar.level, layer.level) == ("scalar", "layer")
    for graph in (scalar, layer):
        assert graph.naive_walks == sum(listed)
        assert graph.backprop_walks == _backprop_edges(spec, m)
    counts = graph_batch_norm.walk_counts(spec, m)
    drawn = re.findall(r"^  (\w+) -> (\w+) \[.*?xlabel=\"×([\d,]+)\"", scalar.dot, re.M)
    assert {(s, d): int(c.replace(",", "")) for s, d, c in drawn if not d.startswith("dP")} == (
        counts
    )
    merged = _merged(counts)
    assert graph_batch_norm_layer.walk_counts(spec, m) == merged
    labels = _layer_labels(layer.dot)
    penalty = {k: v for k, v in labels.items() if k[1].startswith("dP")}
    assert {k: v for k, v in labels.items() if k not in penalty} == merged
    n = spec.sizes
    assert penalty == (
        {("C", f"dP{l}"): (n[l] * n[l - 1], 1) for l in range(1, spec.depth + 1)}  # noqa: E741
        if spec.regularized
        else {}
    )


@pytest.mark.parametrize("name", sorted(NETS))
def test_an_edge_is_red_exactly_when_the_naive_chain_rule_walks_a_unit_edge_again(
    name: str,
) -> None:
    dot = build_graph(NETS[name], "layer").dot
    for line in dot.splitlines():
        found = re.search(r"naive ([\d,]+), backprop ([\d,]+)", line)
        if found and "-> dP" not in line:
            naive, units = (int(g.replace(",", "")) for g in found.groups())
            assert ('color="#d62728"' in line) == (naive > units), line


def test_the_layer_graph_draws_every_batch_norm_value_once_per_layer() -> None:
    dot = build_graph(NETS["2-2-2-1 two normalized l1"], "layer").dot
    assert "batch of 2 examples, layer graph" in dot
    for l, s in ((1, "¹"), (2, "²")):  # noqa: E741
        p = "⁰¹"[l - 1]
        assert f'u{l} [label="U{s} = W{s} A{p}\\n(2 × m)", ' in dot
        assert f'xhat{l} [label="X̂{s} = (U{s} − mean{s}) / √(var{s} + ε)\\n(2 × m)"' in dot
        assert f'z{l} [label="Z{s} = γ{s} ⊙ X̂{s} + β{s}\\n(2 × m)"' in dot
        for node in (f"mean{l}", f"var{l}"):
            assert re.search(rf'  {node} \[label="[^"]*\\n\(2\)", {re.escape(_STAT)}\];', dot)
        for node in (f"gmean{l}", f"gvar{l}"):
            assert re.search(rf'  {node} \[label="[^"]*\\n\(2\)", {re.escape(_STAT_BACK)}\];', dot)
        for node in (f"W{l}", f"gamma{l}", f"beta{l}"):
            assert re.search(rf"  {node} \[label=[^\]]*, {re.escape(_PARAM)}\];", dot)
        forward = [
            ("u", "mean"), ("u", "var"), ("mean", "var"), ("u", "xhat"), ("mean", "xhat"),
            ("var", "xhat"), ("xhat", "z"), ("gamma", "z"), ("beta", "z"), ("z", "a"),
        ]  # fmt: skip
        for src, dst in forward:
            assert f'  {src}{l} -> {dst}{l} [color="#4a78a8"];' in dot
        assert f"b{l} [" not in dot  # batch norm replaces the bias
        assert f"∂C/∂γ{s} = mean(δ{s} ⊙ X̂{s})" in dot and f"∂C/∂β{s} = mean(δ{s})" in dot
        assert f"∂C/∂W{s} = (1/m) δu{s} (A{p})ᵀ + ∂P{s}/∂W{s}" in dot
    assert "∂C/∂W³ = (1/m) δ³ (A²)ᵀ + ∂P³/∂W³" in dot and "∂C/∂b³ = mean(δ³)" in dot


def test_the_three_paths_to_u_are_the_only_ways_into_the_error_at_u() -> None:
    spec = NETS["1-2-1"]
    labels = _layer_labels(build_graph(spec, "layer").dot)
    dot = build_graph(spec, "layer").dot
    into = {s for s, d in labels if d == "du1"}
    assert into == {"gx1", "gmean1", "gvar1"}
    assert {s for s, d in labels if d == "gmean1"} == {"gx1", "gvar1"}
    assert {s for s, d in labels if d == "gvar1"} == {"gx1"}
    assert re.search(r"gx1 -> du1 \[.*label=\"path 1, direct\\n", dot)
    for src, dst in (("gx1", "gmean1"), ("gmean1", "du1")):
        assert re.search(rf"{src} -> {dst} \[.*label=\"path 2, through the mean\\n", dot)
    for src, dst in (("gx1", "gvar1"), ("gvar1", "du1")):
        assert re.search(rf"{src} -> {dst} \[.*label=\"path 3, through the variance\\n", dot)
    # the legend: the statistics' partials once per batch, one per unit of the layer
    assert labels[("gvar1", "gmean1")][1] == spec.sizes[1]
    assert "computed once per batch; δu sums the three" in dot
    assert "paths from X̂ to U: direct, through the mean, through the variance" in dot


def test_the_labels_formulas_are_autograd_s() -> None:
    """delta = m dC/dZ; dC/dX̂ = gamma ⊙ dC/dZ; the three-term delta_u = m dC/dU;
    dC/dgamma = mean(delta ⊙ X̂), dC/dbeta = mean(delta), dC/dW = (1/m) delta_u A^T."""
    torch.manual_seed(0)
    n0, n, m = 3, 4, 5
    a = torch.randn(n0, m, dtype=torch.float64)
    w = torch.randn(n, n0, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(n, 1, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(n, 1, dtype=torch.float64, requires_grad=True)
    u = w @ a
    u.retain_grad()
    mean = u.mean(1, keepdim=True)
    var = ((u - mean) ** 2).mean(1, keepdim=True)
    xhat = (u - mean) / torch.sqrt(var + float(batch_norm.EPS))
    xhat.retain_grad()
    z = gamma * xhat + beta
    z.retain_grad()
    cost = (torch.tanh(z) ** 2 * torch.arange(1, n + 1).reshape(n, 1)).sum(0).mean()
    cost.backward()
    delta = m * z.grad
    assert torch.allclose(xhat.grad, gamma * z.grad)
    three = gamma / torch.sqrt(var + float(batch_norm.EPS))
    du = three * (delta - delta.mean(1, keepdim=True) - xhat * (delta * xhat).mean(1, keepdim=True))
    assert torch.allclose(du, m * u.grad)
    assert torch.allclose(gamma.grad, (delta * xhat).mean(1, keepdim=True))
    assert torch.allclose(beta.grad, delta.mean(1, keepdim=True))
    assert torch.allclose(w.grad, du @ a.T / m)
    dot = build_graph(NETS["1-2-1"], "layer").dot
    assert "= γ¹/√(var¹ + ε) ⊙ (δ¹ − mean(δ¹)\\n− X̂¹ ⊙ mean(δ¹ ⊙ X̂¹))" in dot
    assert "∂C/∂X̂¹\\n= γ¹ ⊙ ∂C/∂Z¹" in dot


def test_light_dashed_edges_are_the_values_a_backward_step_multiplies_by() -> None:
    spec = NETS["residual normalized to normalized l2"]
    dot = build_graph(spec, "layer").dot
    light = set(re.findall(r"^  (\w+) -> (\w+) \[style=dashed, color=\"#9bb7d4\"", dot, re.M))
    want = {("a0", "dC_dW1"), ("a1", "dC_dW2"), ("a2", "dC_dW3")}
    want |= {(f"xhat{k}", f"dC_dgamma{k}") for k in (1, 2)} | {
        (f"gamma{k}", f"gx{k}") for k in (1, 2)
    }
    want |= {("W2", "g1"), ("W3", "g2")}  # BP2's (W^(l+1))^T, into the stored dC/da^l
    assert light == want
    assert "light dashed: the forward value a backward step multiplies by" in dot


def test_the_layer_graph_draws_a_skip_into_and_out_of_normalized_layers() -> None:
    dot = build_graph(NETS["residual normalized to normalized l2"], "layer").dot
    assert 'a1 -> a2 [color="#4a78a8", style=dashed, label="skip"];' in dot
    assert 'a2 [label="A² = tanh(Z²) + A¹\\n(2 × m)"' in dot
    for l in (1, 2):  # noqa: E741
        assert f'g{l} [label="∂C/∂A{"¹²"[l - 1]}\\n(2 × m)"' in dot
    labels = _layer_labels(dot)
    assert {("C", "delta3"), ("delta3", "g2"), ("g2", "delta2"), ("g2", "g1")} <= set(labels)
    assert ("du2", "g1") in labels and ("g1", "delta1") in labels
    into = build_graph(NETS["skip from the input into a normalized layer"], "layer").dot
    assert 'a0 -> a1 [color="#4a78a8", style=dashed, label="skip"];' in into
    assert not re.search(r"^  g1 -> \w+0 ", into, re.M)  # nothing needs dC/dx


def test_the_scalar_graph_draws_a_skip_per_example() -> None:
    spec = NETS["residual normalized to normalized l2"]
    dot = build_graph(spec, batch=3).dot
    for j in range(2):
        for i in range(3):
            assert (
                f'  a1_{j}_e{i} -> a2_{j}_e{i} [color="#4a78a8", style=dashed, xlabel="skip"];'
                in dot
            )
            assert re.search(rf"^  g2_{j}_e{i} -> g1_{j}_e{i} \[", dot, re.M)
            for l in (1, 2):  # noqa: E741
                assert f'  g{l}_{j}_e{i} [label="∂C/∂a{"¹²"[l - 1]}{"₀₁"[j]},{"₀₁₂"[i]}"' in dot
    into = build_graph(NETS["skip from the input into a normalized layer"]).dot
    assert '  x_1_e0 -> a1_1_e0 [color="#4a78a8", style=dashed, xlabel="skip"];' in into


def test_auto_takes_the_scalar_graph_while_it_is_readable_then_the_layer_graph() -> None:
    edge = Spec(52, (Layer(7, "tanh", batch_norm=True), Layer(1, "linear")), "quadratic")
    assert 2 * sum(edge.sizes) == MAX_BATCH_UNITS and 52 * 7 + 7 <= 400
    assert build_graph(edge).level == "scalar"
    assert build_graph(edge, batch=3).level == "layer"  # 180 unit nodes
    with pytest.raises(SpecError) as info:
        build_graph(edge, "scalar", 3)
    assert info.value.field == "network" and "--level layer" in str(info.value)
    heavy = Spec(20, (Layer(20, "tanh", batch_norm=True), Layer(1, "linear")), "quadratic")
    assert 2 * sum(heavy.sizes) < MAX_BATCH_UNITS  # 420 weights, over 400
    assert build_graph(heavy).level == "layer"
    assert build_graph(NETS["1-2-1"], "layer").level == "layer"  # forced


@pytest.mark.slow
def test_the_benchmark_network_falls_back_to_the_layer_graph() -> None:
    graph = build_graph(BENCHMARK)
    assert graph.level == "layer" and "batch of 2 examples, layer graph" in graph.dot
    listed_free = graph_batch_norm_layer.walk_counts(BENCHMARK, 2)
    # the scalar graph is too big to draw, but its unit edges can still be listed: merged
    # by kind they are the layer graph's edges
    assert _merged(graph_batch_norm.walk_counts(BENCHMARK, 2)) == listed_free
    assert graph.backprop_walks == _backprop_edges(BENCHMARK, 2)
    assert graph.naive_walks == sum(c[0] for c in listed_free.values())


def test_a_network_without_batch_norm_still_refuses_a_batch() -> None:
    plain = Spec(2, (Layer(2, "tanh"), Layer(1, "linear")), "quadratic")
    with pytest.raises(SpecError) as info:
        build_graph(plain, "layer", 2)
    assert info.value.field == "batch"
    assert "mean" not in build_graph(plain, "layer").dot


SKIP_TOML = """\
input = 2
cost = "quadratic"
[[layers]]
size = 2
activation = "tanh"
batch_norm = true
[[layers]]
size = 2
activation = "tanh"
skip_from = 1
[[layers]]
size = 1
activation = "linear"
"""


@pytest.mark.parametrize("level", ["scalar", "layer"])
def test_cli_draws_batch_norm_with_a_skip(tmp_path: Path, capsys, level: str) -> None:
    path = tmp_path / "bn.toml"
    path.write_text(SKIP_TOML, encoding="utf-8")
    out = tmp_path / "bn.dot"
    assert main(["graph", str(path), "--level", level, "--batch", "3", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} ({level} graph")
    dot = out.read_text(encoding="utf-8")
    assert f"batch of 3 examples, {level} graph" in dot and "skip" in dot


def test_the_layer_graph_labels_dropout_and_an_expression_activation() -> None:
    dot = build_graph(NETS["1-1-1 penalty dropout"], "layer").dot
    assert 'a2 [label="A² = D² ⊙ tanh(Z²)\\n(1 × m)"' in dot
    assert 'delta2 [label="δ²: error at Z² (×D²)\\n(1 × m)"' in dot
    assert "(×D¹)" not in dot and "D¹ ⊙" not in dot
    spec = Spec(1, (Layer(2, "x*sigmoid(x)", batch_norm=True), Layer(1, "linear")), "quadratic")
    assert 'a1 [label="A¹ = f(Z¹), f(x) = x*sigmoid(x)\\n(2 × m)"' in build_graph(spec, "layer").dot


def test_help_says_the_layer_graph_draws_the_batch_s_matrices(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    assert "per matrix of the batch with batch norm" in " ".join(capsys.readouterr().out.split())
    dot = build_graph(NETS["1-2-1"], "layer").dot
    assert 'a0 [label="X = A⁰\\n(1 × m)"' in dot and 'a2 [label="A² = linear(Z²)\\n(1 × m)"' in dot


def test_readme_passage_is_true() -> None:
    root = Path(__file__).parents[1]
    text = " ".join((root / "README.md").read_text("utf-8").split())
    assert (
        f"`--level auto` draws it at scalar level while it has at most {MAX_BATCH_UNITS} unit "
        f"nodes (units times m) and at most {SCALAR_HARD_MAX_WEIGHTS} weights, and at layer "
        "level otherwise" in text
    )  # the boundaries: test_auto_takes_the_scalar_graph_while_it_is_readable_...
    assert "batch over a batch" not in text and "(`--batch M`, default 2)." in text
    assert "batch of 2 examples" in build_graph(NETS["1-2-1"], "layer").dot
    benchmark = (root / "benchmarks" / "batch_norm.py").read_text("utf-8")
    assert "(784, 256, 256, 10)" in benchmark and "batch_norm" in benchmark
    assert "[784, 256, 256, 10] network of `benchmarks/batch_norm.py` gets the layer graph" in text
    assert build_graph(BENCHMARK).level == "layer"
    assert (
        "the edges of the three paths from X̂^l to U^l are labelled path 1 (direct), path 2 "
        "(through the mean) and path 3 (through the variance)" in text
    )  # test_the_three_paths_to_u_are_the_only_ways_into_the_error_at_u
    g, s = build_graph(NETS["1-2-1"], "layer"), build_graph(NETS["1-2-1"])
    assert (g.naive_walks, g.backprop_walks) == (s.naive_walks, s.backprop_walks)
    assert "the layer graph merges the scalar graph's unit edges, so its counts are the same" in (
        text
    )  # edge by edge: test_walk_counts_at_both_levels_equal_the_paths_listed_by_brute_force
    assert "node ∂C/∂a^l for each layer a skip touches" in text
    skip = build_graph(NETS["residual normalized to normalized l2"], batch=2).dot
    assert "g1_0_e0 [" in skip and "g2_0_e0 [" in skip and "g3_0_e0" not in skip


@pytest.mark.slow
@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("name", ["residual normalized to normalized l2", "benchmark"])
def test_svg_renders_the_layer_graph(name: str) -> None:
    spec = BENCHMARK if name == "benchmark" else NETS[name]
    svg = build_graph(spec, "layer").render("svg").decode("utf-8")
    assert svg.lstrip().startswith("<?xml") and "δu" in svg and "∂C/∂mean" in svg
