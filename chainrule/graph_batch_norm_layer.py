"""The layer graph of a network with batch norm, over a batch of m examples, as DOT.

One node per matrix or vector of the mini-batch (columns are the m examples): the input
X = A^0 (n_0 x m); per layer W^l, and for a batch-normalized layer U^l = W^l A^(l-1), the
batch mean and variance of each unit (vectors of n_l, shared by the m examples),
X̂^l = (U^l - mean^l) / sqrt(var^l + eps), Z^l = gamma^l ⊙ X̂^l + beta^l, A^l = f(Z^l); a
plain layer has Z^l = W^l A^(l-1) + b^l. Backward: delta^l at Z^l, dC/dX̂^l, dC/dmean^l,
dC/dvar^l and delta_u^l, the three-term error at U^l, reached from X̂^l along three paths
(direct, through the mean, through the variance, and the variance's own path through
the mean); a layer a skip touches gets dC/dA^l, as in :mod:`chainrule.graph_residual`.

It is the batch scalar graph (:mod:`chainrule.graph_batch_norm`) with the nodes of one
kind and layer merged: by symmetry every unit node of a kind has the same number of paths
from C above it (``up``) and to the parameters below it (``down``), so each layer edge
carries ``units`` unit edges (backpropagation walks each once) and the naive chain rule
walks it ``units * up(src) * down(dst)`` times, the sum over its unit edges. ``up`` and
``down`` are computed on the merged graph, each edge knowing how many unit edges leave
one unit of its source (``fanout``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chainrule import graph_penalty
from chainrule.comparison_batch import check_batch
from chainrule.derive.spec import Spec
from chainrule.graph import (
    _COST,
    _DELTA,
    _FORWARD,
    _GRAD,
    _INPUT,
    _PARAM,
    Graph,
    _edge_style,
    _header,
    _quote,
    _sup,
    dropped,
    legend,
    penalty_part,
)
from chainrule.graph_batch_norm import _STAT, _STAT_BACK
from chainrule.graph_residual import touched

#: The tags of a batch-normalized layer's backward edges: the three paths to U.
PATHS = {
    ("gx", "du"): "path 1, direct",
    ("gx", "gmean"): "path 2, through the mean",
    ("gmean", "du"): "path 2, through the mean",
    ("gx", "gvar"): "path 3, through the variance",
    ("gvar", "du"): "path 3, through the variance",
    ("gvar", "gmean"): "path 3 via the mean (var uses mean)",
}


@dataclass(frozen=True)
class Edge:
    """A backward layer edge: ``fanout`` unit edges leave each unit of ``src``."""

    src: str
    dst: str
    fanout: int


def _kind(node: str) -> tuple[str, int]:
    """``("du", 2)`` of ``du2``; ``("C", 0)`` of C."""
    found = re.fullmatch(r"([A-Za-z]+?)(\d+)", node)
    return (node, 0) if found is None else (found.group(1), int(found.group(2)))


def units(spec: Spec, m: int, node: str) -> int:
    """The unit nodes a layer node stands for: n_l per mean or variance, n_l m otherwise."""
    kind, layer = _kind(node)
    if kind == "C":
        return 1
    return spec.sizes[layer] * (1 if kind in ("gmean", "gvar") else m)


def leaves(spec: Spec, node: str) -> int:
    """Parameters one unit of ``node`` hands its gradient on to (as the scalar graph's):
    delta of a plain layer its weights and bias, delta of a normalized one gamma and beta,
    delta_u the weights of its unit."""
    kind, layer = _kind(node)
    if kind == "delta":
        own = spec.layers[layer - 1]
        return 2 if own.batch_norm else spec.sizes[layer - 1] + own.bias
    return spec.sizes[layer - 1] if kind == "du" else 0


def backward_edges(spec: Spec, m: int) -> list[Edge]:
    """The layer graph's backward edges, the scalar graph's merged (same order of kinds)."""
    n, depth, stored = spec.sizes, spec.depth, touched(spec)

    def entry(l: int) -> str:  # noqa: E741
        return f"{'g' if l in stored else 'delta'}{l}"

    edges = [Edge("C", entry(depth), n[depth] * m)]
    for l in range(depth, 0, -1):  # noqa: E741
        if l in stored:
            edges.append(Edge(f"g{l}", f"delta{l}", 1))
        if spec.skips.get(l, 0) > 0:
            edges.append(Edge(f"g{l}", f"g{spec.skips[l]}", 1))
        norm = spec.layers[l - 1].batch_norm
        if norm:
            edges += [Edge(f"delta{l}", f"gx{l}", 1)]
            edges += [Edge(f"gx{l}", f"{d}{l}", 1) for d in ("du", "gmean", "gvar")]
            edges += [Edge(f"gvar{l}", f"gmean{l}", 1)]
            edges += [Edge(f"{s}{l}", f"du{l}", m) for s in ("gvar", "gmean")]
        if l > 1:
            edges.append(Edge(f"{'du' if norm else 'delta'}{l}", entry(l - 1), n[l - 1]))
    return edges


def walk_counts(spec: Spec, m: int) -> dict[tuple[str, str], tuple[int, int]]:
    """(naive walks, unit edges) of each backward layer edge (see the module docstring)."""
    edges = backward_edges(spec, m)
    up: dict[str, int] = {"C": 1}
    down: dict[str, int] = {}
    for e in edges:  # sources come before their edges' targets (edges run down the net)
        fanin = units(spec, m, e.src) * e.fanout // units(spec, m, e.dst)
        up[e.dst] = up.get(e.dst, 0) + up[e.src] * fanin
    for e in reversed(edges):
        down.setdefault(e.dst, leaves(spec, e.dst))
        down[e.src] = down.get(e.src, leaves(spec, e.src)) + e.fanout * down[e.dst]
    out = {}
    for e in edges:
        count = units(spec, m, e.src) * e.fanout
        out[(e.src, e.dst)] = (count * up[e.src] * down[e.dst], count)
    return out


def _shape(spec: Spec, layer: int, vector: bool = False) -> str:
    return f"({spec.sizes[layer]})" if vector else f"({spec.sizes[layer]} × m)"


def _activation(spec: Spec, l: int) -> str:  # noqa: E741
    """``A¹ = D¹ ⊙ tanh(Z¹) + A⁰``: the activation of the batch, mask and skip included."""
    own, s = spec.layers[l - 1], _sup(l)
    mask = f"D{s} ⊙ " if dropped(spec, l) else ""
    act = "f" if own.is_custom else own.activation
    plus = f" + A{_sup(spec.skips[l])}" if l in spec.skips else ""
    where = f", f(x) = {own.activation}" if own.is_custom else ""
    return f"A{s} = {mask}{act}(Z{s}){plus}{where}"


def _forward_nodes(spec: Spec, l: int) -> list[str]:  # noqa: E741
    """Layer l's forward nodes: W, U, mean, var, X̂, γ, β, Z, A (W, b, Z, A when plain)."""
    n, s, p = spec.sizes, _sup(l), _sup(l - 1)
    out = [f'    W{l} [label="W{s}\\n({n[l]}×{n[l - 1]})", {_PARAM}];']
    if spec.layers[l - 1].batch_norm:
        labels = {
            "u": (f"U{s} = W{s} A{p}", _shape(spec, l), _FORWARD),
            "mean": (f"mean{s}: each unit's", "mean over the batch", _shape(spec, l, True), _STAT),
            "var": (f"var{s}: each unit's", "biased variance", _shape(spec, l, True), _STAT),
            "xhat": (f"X̂{s} = (U{s} − mean{s}) / √(var{s} + ε)", _shape(spec, l), _FORWARD),
            "gamma": (f"γ{s}", _shape(spec, l, True), _PARAM),
            "beta": (f"β{s}", _shape(spec, l, True), _PARAM),
            "z": (f"Z{s} = γ{s} ⊙ X̂{s} + β{s}", _shape(spec, l), _FORWARD),
        }
    else:
        bias = f" + b{s}" if spec.layers[l - 1].bias else ""
        labels = {"z": (f"Z{s} = W{s} A{p}{bias}", _shape(spec, l), _FORWARD)}
        if bias:
            labels["b"] = (f"b{s}", _shape(spec, l, True), _PARAM)
    labels["a"] = (_activation(spec, l), _shape(spec, l), _FORWARD)
    return out + [f"    {k}{l} [label={_quote(*t[:-1])}, {t[-1]}];" for k, t in labels.items()]


def _forward_edges(spec: Spec) -> list[str]:
    """The forward edges; a skip dashed, as in the residual layer graph."""
    out, blue = [], '[color="#4a78a8"]'
    for l in range(1, spec.depth + 1):  # noqa: E741
        if spec.layers[l - 1].batch_norm:
            pairs = [("a", l - 1, "u"), ("W", l, "u"), ("u", l, "mean"), ("u", l, "var")]
            pairs += [("mean", l, "var"), ("u", l, "xhat"), ("mean", l, "xhat")]
            pairs += [("var", l, "xhat"), ("xhat", l, "z"), ("gamma", l, "z"), ("beta", l, "z")]
        else:
            pairs = [("a", l - 1, "z"), ("W", l, "z")]
            pairs += [("b", l, "z")] if spec.layers[l - 1].bias else []
        pairs.append(("z", l, "a"))
        out += [f"  {src}{k} -> {dst}{l} {blue};" for src, k, dst in pairs]
        if l in spec.skips:
            k = spec.skips[l]
            out.append(f'  a{k} -> a{l} [color="#4a78a8", style=dashed, label="skip"];')
    return out + [f"  a{spec.depth} -> C {blue};"]


def _backward_nodes(spec: Spec, l: int) -> list[str]:  # noqa: E741
    """Layer l's backward nodes and gradients: dC/dA (a skip's end), delta, and for a
    normalized layer dC/dX̂, dC/dmean, dC/dvar and the three-term error delta_u."""
    s, p, out = _sup(l), _sup(l - 1), []
    nodes = {}
    if l in touched(spec):
        nodes["g"] = ([f"∂C/∂A{s}", _shape(spec, l)], _DELTA)
    mask = f" (×D{s})" if dropped(spec, l) else ""
    nodes["delta"] = ([f"δ{s}: error at Z{s}{mask}", _shape(spec, l)], _DELTA)
    pen = f" + ∂P{s}/∂W{s}" if spec.regularized else ""
    if spec.layers[l - 1].batch_norm:
        nodes["gx"] = ([f"∂C/∂X̂{s}", f"= γ{s} ⊙ ∂C/∂Z{s}", _shape(spec, l)], _DELTA)
        nodes["gmean"] = ([f"∂C/∂mean{s}", _shape(spec, l, True)], _STAT_BACK)
        nodes["gvar"] = ([f"∂C/∂var{s}", _shape(spec, l, True)], _STAT_BACK)
        three = [f"= γ{s}/√(var{s} + ε) ⊙ (δ{s} − mean(δ{s})", f"− X̂{s} ⊙ mean(δ{s} ⊙ X̂{s}))"]
        text = [f"δu{s}: error at U{s},", "the three paths summed", *three, _shape(spec, l)]
        nodes["du"] = (text, _DELTA)
        nodes["dC_dW"] = ([f"∂C/∂W{s} = (1/m) δu{s} (A{p})ᵀ{pen}"], _GRAD)
        nodes["dC_dgamma"] = ([f"∂C/∂γ{s} = mean(δ{s} ⊙ X̂{s})"], _GRAD)
        nodes["dC_dbeta"] = ([f"∂C/∂β{s} = mean(δ{s})"], _GRAD)
    else:
        nodes["dC_dW"] = ([f"∂C/∂W{s} = (1/m) δ{s} (A{p})ᵀ{pen}"], _GRAD)
        if spec.layers[l - 1].bias:
            nodes["dC_db"] = ([f"∂C/∂b{s} = mean(δ{s})"], _GRAD)
    for key, (text, style) in nodes.items():
        out.append(f"    {key}{l} [label={_quote(*text)}, {style}];")
    return out


def _gradient_edges(spec: Spec) -> list[str]:
    """Uncounted edges: each error to its gradients (orange), and dashed the forward value
    a backward step multiplies by (A^(l-1), X̂^l, gamma^l, W^(l+1))."""
    out, orange = [], '[color="#c0561b"]'
    dashed = '[style=dashed, color="#9bb7d4", constraint=false]'
    stored = touched(spec)
    for l in range(1, spec.depth + 1):  # noqa: E741
        norm = spec.layers[l - 1].batch_norm
        pairs = [("du" if norm else "delta", "dC_dW"), ("a", "dC_dW")]
        if norm:
            pairs += [("delta", "dC_dgamma"), ("delta", "dC_dbeta"), ("xhat", "dC_dgamma")]
            pairs.append(("gamma", "gx"))
        elif spec.layers[l - 1].bias:
            pairs.append(("delta", "dC_db"))
        for src, dst in pairs:
            if src == "a":
                out.append(f"  a{l - 1} -> {dst}{l} {dashed};")
            else:
                style = dashed if src in ("xhat", "gamma") else orange
                out.append(f"  {src}{l} -> {dst}{l} {style};")
        if l > 1:
            below = f"{'g' if l - 1 in stored else 'delta'}{l - 1}"
            out.append(f"  W{l} -> {below} {dashed};")
    return out


def _legend_entries() -> list[str]:
    """The legend's batch-norm entries, placed inside its cluster."""
    stat = _quote("mean, var: one value per unit (vectors),", "shared by the m examples")
    back = _quote(
        "∂C/∂mean, ∂C/∂var: computed once per batch; δu sums the three",
        "paths from X̂ to U: direct, through the mean, through the variance",
    )
    note = _quote(
        "columns of a matrix: the m examples; mean(·): over the m examples",
        "edge label: naive = the naive chain rule's walks of its unit edges,",
        "backprop = its unit edges, each walked once",
        "light dashed: the forward value a backward step multiplies by",
    )
    return [
        f'    legend_param [label="parameter", {_PARAM}];',
        f"    legend_stat [label={stat}, {_STAT}];",
        f"    legend_stat_back [label={back}, {_STAT_BACK}];",
        f'    legend_note [label={note}, shape=note, color="#999999"];',
        "    { rank=same; legend_fwd -> legend_param -> legend_stat [style=invis]; }",
        "    { rank=same; legend_stat_back -> legend_note [style=invis]; }",
    ]


def batch_norm_layer_graph(spec: Spec, batch: int | None = None) -> Graph:
    """The layer graph of a network with batch norm over a batch of m examples."""
    m, depth = check_batch(spec, batch), spec.depth
    counts = walk_counts(spec, m)
    forward_pen, backward_pen = (
        graph_penalty.nodes(spec, weights=False, indent="    ") if spec.regularized else ([], [])
    )
    body = ['  subgraph cluster_forward { label="forward pass"; color="#4a78a8";']
    body.append(f'    a0 [label="X = A⁰\\n({spec.sizes[0]} × m)", {_INPUT}];')
    for l in range(1, depth + 1):  # noqa: E741
        body += _forward_nodes(spec, l)
    body += [f'    C [label="C = (1/m) Σᵢ Cᵢ\\n{spec.cost}", {_COST}];', *forward_pen, "  }"]
    body += _forward_edges(spec)
    body.append('  subgraph cluster_backward { label="backward pass"; color="#c0561b";')
    for l in range(depth, 0, -1):  # noqa: E741
        body += _backward_nodes(spec, l)
    body += [*backward_pen, "  }"]
    for (src, dst), (naive, count) in counts.items():
        tag = PATHS.get((_kind(src)[0], _kind(dst)[0]))
        text = ((tag,) if tag else ()) + (f"naive {naive:,}, backprop {count:,}",)
        again = naive if naive > count else 1  # red: some unit edge is walked again
        style = _edge_style(again, text, key="label")
        body.append(f"  {src} -> {dst} [{style}];")
    body += _gradient_edges(spec)
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=False, nodes=False)
    naive = sum(c[0] for c in counts.values()) + pen_naive
    backprop = sum(c[1] for c in counts.values()) + pen_backprop
    header = _header(spec, f"batch of {m} examples, layer", naive, backprop)
    lines = header + body + extra + legend(spec) + ["}"]
    lines = lines[:-2] + _legend_entries() + lines[-2:]
    return Graph("\n".join(lines) + "\n", "layer", spec.name, naive, backprop)


__all__ = ["PATHS", "backward_edges", "batch_norm_layer_graph", "leaves", "units", "walk_counts"]
