"""``chainrule graph`` of a regularized network: the L2/L1 penalty's nodes and edges, and
naive walk counts checked edge by edge and against paths listed on the forward graph."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from chainrule.derive import penalty
from chainrule.derive.spec import Layer, Spec, preset

from chainrule import graph_penalty
from chainrule.cli import main
from chainrule.graph import build_graph

HAS_DOT = shutil.which("dot") is not None
PENALTIES = {"l2": (0.01, 0.0), "l1": (0.0, 0.02), "both": (0.05, 0.003)}
#: (sizes, activations, skips, bias): plain, chain, no-bias and residual networks.
NETS = {
    "1-1-1": ((1, 1, 1), ("sigmoid", "sigmoid"), {}, True),
    "4-5-3-nobias": ((4, 5, 3), ("tanh", "sigmoid"), {}, False),
    "2-3-2-2": ((2, 3, 2, 2), ("tanh", "relu", "linear"), {}, True),
    "skips-2222": ((2, 2, 2, 2), ("tanh", "tanh", "linear"), {2: 1, 3: 0}, True),
    "skips-chain": ((1, 1, 1, 1), ("tanh", "sigmoid", "linear"), {2: 1}, True),
}


def _spec(net: str, l2: float, l1: float) -> Spec:
    sizes, acts, skips, bias = NETS[net]
    layers = tuple(
        Layer(n, a, bias, skips.get(i))
        for i, (n, a) in enumerate(zip(sizes[1:], acts, strict=True), start=1)
    )
    return Spec(sizes[0], layers, "quadratic", l2=l2, l1=l1, name=net)


def _forward_paths(spec: Spec) -> list[int]:
    """Every path from C down to a parameter of the forward unit graph (C -> a^L_j ->
    z^L_j -> ..., a skip a^l_j -> a^k_j, and C -> P^l -> w^l_jk), listed one by one by a
    walk without memo; each entry is the path's number of edges above its parameter."""
    n, skips = spec.sizes, spec.skips
    paths: list[int] = []

    def from_a(layer: int, j: int, walked: int) -> None:  # at a^layer_j, `walked` edges so far
        if layer == 0:
            return  # x: no parameter below
        own = n[layer - 1] + spec.layers[layer - 1].bias  # w^layer_j. and b^layer_j
        paths.extend([walked] * own)  # z^layer_j -> each of its parameters
        for k in range(n[layer - 1]):
            from_a(layer - 1, k, walked + 1)  # z^layer_j -> a^(layer-1)_k
        if layer in skips:
            from_a(skips[layer], j, walked)  # the skip joins a^layer_j to a^k_j

    for j in range(n[-1]):
        from_a(spec.depth, j, 1)  # C -> a^L_j
    for layer in range(1, spec.depth + 1):
        if spec.regularized:  # C -> P^l, then P^l -> each weight of layer l
            paths.extend([1] * (n[layer] * n[layer - 1]))
    return paths


def _drawn_backward(dot: str) -> dict[tuple[str, str], int]:
    """The counted backward edges of a scalar graph's DOT text, with their naive walks."""
    found = re.findall(r"^  (\w+) -> (\w+) \[.*?xlabel=\"×([\d,]+)\"", dot, re.M)
    return {(src, dst): int(count.replace(",", "")) for src, dst, count in found}


def _leaves(spec: Spec, node: str) -> int:
    """The parameters whose gradient a drawn backward node hands on to: delta^l_j has
    w^l_j. and b^l_j, dP^l every weight of W^l."""
    n = spec.sizes
    if node.startswith("delta"):
        layer = int(node[5:].split("_")[0])
        return n[layer - 1] + spec.layers[layer - 1].bias
    if node.startswith("dP"):
        layer = int(node[2:])
        return n[layer] * n[layer - 1]
    return 0


@pytest.mark.parametrize("penalty_name", sorted(PENALTIES))
@pytest.mark.parametrize("net", sorted(NETS))
def test_every_edge_count_is_paths_above_times_paths_below(net: str, penalty_name: str) -> None:
    spec = _spec(net, *PENALTIES[penalty_name])
    graph = build_graph(spec, "scalar")
    edges = _drawn_backward(graph.dot)
    children: dict[str, list[str]] = {}
    for src, dst in edges:
        children.setdefault(src, []).append(dst)

    def down(node: str) -> int:
        return _leaves(spec, node) + sum(down(c) for c in children.get(node, []))

    def up(node: str) -> int:
        return 1 if node == "C" else sum(up(s) for (s, d) in edges if d == node)

    n = spec.sizes
    for layer in range(1, spec.depth + 1):  # the penalty's edge, one per layer
        assert edges[("C", f"dP{layer}")] == n[layer] * n[layer - 1]
        assert f"  W{layer} -> P{layer} [" in graph.dot and f"  P{layer} -> C [" in graph.dot
        for j in range(n[layer]):
            assert f"  dP{layer} -> grad{layer}_{j} [" in graph.dot
    for (src, dst), count in edges.items():
        assert count == up(src) * down(dst), (src, dst)
    listed = _forward_paths(spec)
    assert down("C") == len(listed)  # the drawn graph holds every path, the penalty's too
    assert graph.naive_walks == sum(edges.values()) and graph.backprop_walks == len(edges)
    if not spec.skips:  # the plain graph's backward edges are the forward ones reversed
        assert graph.naive_walks == sum(listed)
    layer = build_graph(spec, "layer")
    assert (layer.naive_walks, layer.backprop_walks) == (graph.naive_walks, graph.backprop_walks)


def test_the_penalty_adds_one_path_per_weight() -> None:
    plain = build_graph(preset("two-layer-nobias"))
    spec = preset("two-layer-nobias").replace(l2=0.1)
    graph = build_graph(spec)
    weights = 4 * 5 + 5 * 3
    assert graph.naive_walks == plain.naive_walks + weights == 170
    assert graph.backprop_walks == plain.backprop_walks + 2
    assert 'C -> dP1 [color="#d62728"' in graph.dot and 'xlabel="×20"' in graph.dot


@pytest.mark.parametrize("penalty_name", sorted(PENALTIES))
def test_layer_graph_labels_each_penalty_edge(penalty_name: str) -> None:
    spec = preset("nielsen").replace(l2=PENALTIES[penalty_name][0], l1=PENALTIES[penalty_name][1])
    graph = build_graph(spec)
    assert graph.level == "layer"
    plain = build_graph(preset("nielsen"))
    assert graph.naive_walks == plain.naive_walks + 784 * 30 + 30 * 10
    assert graph.backprop_walks == plain.backprop_walks + 2
    assert 'label="penalty: naive 23,520, backprop 1"' in graph.dot
    assert 'label="penalty: naive 300, backprop 1"' in graph.dot
    assert "  dP1 -> dC_dW1 [" in graph.dot and "∂C/∂W¹ = δ¹ (a⁰)ᵀ + ∂P¹/∂W¹" in graph.dot
    forward = graph.dot.split("subgraph cluster_forward", 1)[1].split("\n  }", 1)[0]
    backward = graph.dot.split("subgraph cluster_backward", 1)[1].split("\n  }", 1)[0]
    assert "    P1 [" in forward and "    dP1 [" in backward


@pytest.mark.parametrize("penalty_name", sorted(PENALTIES))
def test_labels_say_what_sympy_derives(penalty_name: str) -> None:
    l2, l1 = PENALTIES[penalty_name]
    spec = _spec("2-3-2-2", l2, l1)
    derived = penalty.penalty_derivative(penalty.penalty_element(l2, l1))
    drawn = graph_penalty.derivative_terms(spec, "w")
    as_sympy = {t.replace("l2 w", "l2*w").replace("l1 sign", "l1*sign") for t in drawn}
    assert as_sympy == {str(term) for term in derived.as_ordered_terms()}
    element = penalty.penalty_element(l2, l1)
    label = graph_penalty.forward_label(spec, 1)
    assert ("‖W¹‖²" in label) == element.has(penalty.WEIGHT**2) == bool(l2)
    assert ("Σ|W¹|" in label) == element.has(penalty.sp.Abs(penalty.WEIGHT)) == bool(l1)
    dot = build_graph(spec).dot
    values = ", ".join(f"{k} = {v!r}" for k, v in (("l2", l2), ("l1", l1)) if v)
    assert f"2-3-2-2: 2-3-2-2, quadratic + penalty {values} (scalar graph)" in dot
    name, term = graph_penalty.backward_label(spec, 1).split(" = ")
    assert f'dP1 [label="{name} =\\n{term}"' in dot  # two lines: a narrower box
    node = next(line for line in dot.splitlines() if line.startswith("  dP1 ["))
    assert 'color="#4d8a3a"' in node and "#f9b46b" not in node  # green, not a shared delta


def _without_penalty(dot: str) -> list[str]:
    """The DOT lines less the penalty's lines, its BP4 term and the title (with counts)."""
    drop = re.compile(r"^  (W\d+ |P\d+ |dP\d+ |C -> dP\d+ |\{ rank=same; [WP]1 )|legend_pen")
    lines = [re.sub(r' \+ ∂P[⁰¹²³⁴⁵⁶⁷⁸⁹]+/∂w[^\\"]*', "", line) for line in dot.splitlines()]
    return [line for line in lines if not drop.search(line) and "labelloc=t" not in line]


@pytest.mark.parametrize("net", sorted(NETS))
def test_the_penalty_only_adds_to_the_scalar_graph(net: str) -> None:
    plain = build_graph(_spec(net, 0.0, 0.0), "scalar").dot
    regular = build_graph(_spec(net, 0.01, 0.02), "scalar").dot
    assert regular != plain and _without_penalty(regular) == _without_penalty(plain)
    assert "penalty" not in plain and "dP1" not in plain


def test_cli_draws_a_regularized_spec(tmp_path: Path, capsys) -> None:
    out = tmp_path / "g.dot"
    argv = ["graph", "--sizes", "2,3,1", "--activations", "sigmoid,sigmoid", "--cost", "quadratic"]
    assert main([*argv, "--l1", "0.1", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    plain = Spec.from_sizes([2, 3, 1], ["sigmoid"] * 2, "quadratic")
    graph = build_graph(plain.replace(l1=0.1))
    assert out.read_text(encoding="utf-8") == graph.dot
    assert f"walks the backward edges {graph.naive_walks:,} times" in said
    assert graph.naive_walks == build_graph(plain).naive_walks + 2 * 3 + 3 * 1


def test_a_six_wide_network_draws_at_both_levels() -> None:
    spec = Spec.from_sizes([6] * 4, ["tanh", "tanh", "linear"], "quadratic", l2=0.01, l1=0.01)
    assert build_graph(spec).level == "layer"  # 108 weights: above the scalar level's 60
    scalar = build_graph(spec, "scalar")
    assert scalar.naive_walks == sum(_forward_paths(spec))
    assert scalar.backprop_walks == 6 + 2 * 36 + 3
    assert build_graph(spec, "layer").naive_walks == scalar.naive_walks


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("level", ["scalar", "layer"])
def test_svg_shows_the_penalty(level: str) -> None:
    spec = _spec("skips-2222", 0.01, 0.02)
    svg = build_graph(spec, level).render("svg").decode("utf-8")
    assert "<svg" in svg and "penalty term" in svg
    assert ">∂P¹/∂W¹ =</text>" in svg and ">l2 W¹ + l1 sign(W¹)</text>" in svg
    assert ">P³ =</text>" in svg and ">(l2/2)‖W³‖² + l1 Σ|W³|</text>" in svg
    pattern = re.compile(
        r'<g id="node\d+" class="node">\s*<title>(P\d)</title>.*?<text [^>]*y="([-\d.]+)"', re.S
    )
    ys = [float(y) for _, y in sorted(pattern.findall(svg))]
    assert len(ys) == 3 and (ys == sorted(ys) or level == "layer")  # scalar: P¹ on top


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("name", ["nielsen", "deep-relu-sigmoid"])
def test_layer_graph_stands_the_penalties_in_one_column_before_c(name: str) -> None:
    """W^l -> P^l sets no rank in the layer graph: each P^l would otherwise widen the
    column of z^l (the 6-6-6-6 layer graph would be 2,870 pt wide that way, 2,371 pt now)."""
    spec = preset(name).replace(l2=0.1)
    svg = build_graph(spec, "layer").render("svg").decode("utf-8")
    pattern = re.compile(
        r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>.*?'
        r'<text text-anchor="middle" x="([-\d.]+)"',
        re.DOTALL,
    )
    x = {m.group(1): float(m.group(2)) for m in pattern.finditer(svg)}
    columns = {x[f"P{layer}"] for layer in range(1, spec.depth + 1)}
    assert columns == {x[f"a{spec.depth}"]} and x["C"] > x[f"a{spec.depth}"]


def _graphviz_version(text: str) -> str | None:
    found = re.search(r"graphviz version ([\d.]+)", text)
    return found.group(1) if found else None


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("name", ["3b1b-chain", "two-layer-nobias", "nielsen"])
def test_the_readme_pictures_without_a_penalty_are_unchanged(name: str) -> None:
    """The README's pictures (no penalty) render byte for byte as committed, when this
    Graphviz is the one that made them."""
    import subprocess

    committed = (Path(__file__).resolve().parents[1] / f"docs/graph-{name}.svg").read_text("utf-8")
    here = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr
    if _graphviz_version(here) != _graphviz_version(committed):
        pytest.skip("another Graphviz version lays out differently")
    assert build_graph(preset(name)).render("svg").decode("utf-8") == committed
