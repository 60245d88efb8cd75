"""A network's computation graph and what backpropagation shares, as Graphviz DOT text.

The graph is built from the spec alone (pure, no SymPy) as Graphviz DOT text:
forward nodes (x, z, a, C), backward nodes (the shared terms delta, highlighted, and
the gradients built from them), and on each backward edge the number of times the
naive, fully expanded chain rule walks it, against once for backpropagation. An edge
walked more than once is drawn in red: that is the work the delta recursion saves.

Counting: in the expanded chain rule, dC/dp is a sum over every path from C down to
the parameter p. The edge from z^(l+1)_i down to z^l_j lies on
``up(l+1) * down(l)`` of those paths, where ``up(l) = n_(l+1) ... n_L`` counts the
paths from C to one unit of layer l and ``down(l)`` counts the paths from one unit
of layer l to the parameters at or below it.

A regularized spec (``l2``, ``l1``) adds each layer's penalty term, drawn and counted by
:mod:`chainrule.graph_penalty`: one more path per weight, C -> P^l -> w.

A layer with dropout multiplies each unit's output by its mask entry D^l_j = r/(1 - p), a
constant of the training step: a^l_j = D^l_j f(z^l_j). The edge z^l_j -> a^l_j is
labelled ``×D^l_j`` and delta^l_j carries the same factor (BP2). The mask adds a factor
to the paths through the unit, not a path, so the walk counts are those without dropout.

Small networks get the scalar graph (one node per unit); larger ones the layer graph
(one node per vector). DOT is always written; SVG and PNG come from Graphviz's ``dot``
program when it is installed (``apt-get install graphviz``). ``chainrule graph``
(:mod:`chainrule.cmd_graph`) writes them to files.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from chainrule import graph_penalty
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec, require_spec

#: Networks at most this big (weights, units) get the scalar graph under ``--level auto``.
SCALAR_MAX_WEIGHTS = 60
SCALAR_MAX_UNITS = 30
#: Beyond this many weights even ``--level scalar`` refuses: the picture would be a blur.
SCALAR_HARD_MAX_WEIGHTS = 400
FORMATS = ("dot", "svg", "png")
DOT_TIMEOUT = 120

_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")

# Colours: forward blue, backward grey, shared delta orange, repeated walks red.
_FORWARD = 'shape=ellipse, style=filled, fillcolor="#dbe9f6", color="#4a78a8"'
_INPUT = 'shape=box, style="rounded,filled", fillcolor="#eeeeee", color="#777777"'
_COST = 'shape=doublecircle, style=filled, fillcolor="#f6e0a4", color="#a07c1c"'
_DELTA = 'shape=ellipse, style="filled,bold", fillcolor="#f9b46b", color="#c0561b", penwidth=2'
_GRAD = 'shape=box, style=filled, fillcolor="#f3f3f3", color="#999999"'
_PARAM = 'shape=box, style=filled, fillcolor="#ffffff", color="#4a78a8"'
_MASK = 'shape=note, style=filled, fillcolor="#ffffff", color="#4a78a8", fontcolor="#4a78a8"'


@dataclass(frozen=True)
class Graph:
    """A drawn computation graph: DOT text and the walk counts it shows.

    ``naive_walks`` is the number of edge traversals of the expanded chain rule over
    every parameter; ``backprop_walks`` is the number of backward edges, each walked
    once by backpropagation.
    """

    dot: str
    level: str
    name: str
    naive_walks: int
    backprop_walks: int

    def __str__(self) -> str:
        return self.dot

    def summary(self) -> str:
        """One line: the level and the walk counts."""
        return (
            f"{self.level} graph of {self.name!r}: the naive chain rule walks the backward "
            f"edges {self.naive_walks:,} times, backpropagation {self.backprop_walks:,}"
        )

    def render(self, fmt: str = "svg") -> bytes:
        """The picture in ``fmt`` (svg or png) from Graphviz's ``dot``."""
        return render_dot(self.dot, fmt)

    def _repr_svg_(self) -> str | None:
        """Jupyter: the SVG, or None (plain text shown) when ``dot`` is missing."""
        if shutil.which("dot") is None:
            return None
        return self.render("svg").decode("utf-8")

    def _repr_markdown_(self) -> str | None:
        """Jupyter without ``dot``: the counts and the DOT text (None when SVG is shown)."""
        if shutil.which("dot") is not None:
            return None
        saved = self.naive_walks / max(1, self.backprop_walks)
        return (
            f"**{self.level} graph of {self.name!r}**: the naive chain rule walks the "
            f"backward edges {self.naive_walks:,} times, backpropagation "
            f"{self.backprop_walks:,} times ({saved:,.1f}x fewer).\n\n"
            f"```dot\n{self.dot}```\n"
        )


def _sup(n: int) -> str:
    return str(n).translate(_SUP)


def _sub(*indices: int) -> str:
    return ",".join(str(i) for i in indices).translate(_SUB)


def _quote(*lines: str) -> str:
    """A DOT string literal of centred lines; user text is escaped and cannot close it."""
    clean = ["".join(ch if ch.isprintable() else " " for ch in line) for line in lines]
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in clean]
    return '"' + "\\n".join(escaped) + '"'


def path_counts(spec: Spec) -> tuple[list[int], list[int]]:
    """``up[l]`` and ``down[l]`` for l = 0..L (see the module docstring).

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> path_counts(preset("3b1b-chain"))
    ([1, 1, 1, 1], [0, 2, 4, 6])
    """
    n, depth = spec.sizes, spec.depth
    up = [math.prod(n[l + 1 :]) for l in range(depth + 1)]  # noqa: E741
    down = [0] * (depth + 1)
    for l in range(1, depth + 1):  # noqa: E741
        own = n[l - 1] + (1 if spec.layers[l - 1].bias else 0)
        down[l] = own + n[l - 1] * down[l - 1]
    return up, down


def _walks_label(count: int) -> str:
    return f"×{count:,}" if count < 10**7 else f"×{count:.2e}"


def _edge_style(
    count: int,
    label: str | tuple[str, ...] | None = None,
    *,
    constraint: bool = True,
    key: str = "xlabel",
) -> str:
    """Red with the naive walk count when the naive chain rule walks the edge again.

    The scalar graph gives the count as an ``xlabel``, placed after the layout: a
    ``label`` makes Graphviz double every rank gap to fit it, and the picture wider. The
    layer graph keeps ``label`` (``key``): its long BP labels would overlap the nodes.
    """
    text = _walks_label(count) if label is None else label
    quoted = _quote(*text) if isinstance(text, tuple) else _quote(text)  # a tuple: lines
    free = "" if constraint else ", constraint=false"
    if count > 1:
        return f'color="#d62728", fontcolor="#d62728", penwidth=1.6, {key}={quoted}{free}'
    return f'color="#555555", {key}={quoted}{free}'


def _column(ids: list[str]) -> str:
    """Keep one column of nodes in index order, top to bottom.

    It must sit at the top level of the graph: inside a cluster Graphviz's crossing
    reduction reorders the column anyway (units 0, 4, 3, 2, 1 of a 5-unit layer).
    """
    if len(ids) < 2:
        return ""
    return f"  {{ rank=same; {' -> '.join(ids)} [style=invis]; }}"


def dropped(spec: Spec, layer: int) -> bool:
    """True when ``layer`` (1..L) has dropout."""
    return bool(spec.layers[layer - 1].dropout)


def mask_label(layer: int, *units: int) -> str:
    """The mask factor ``×D¹₀`` of unit j of a layer (``×D¹`` for the whole layer)."""
    return f"×D{_sup(layer)}{_sub(*units) if units else ''}"


def _dropout_title(spec: Spec) -> str:
    """`` + dropout p = 0.2 (layer 1)`` for the title (empty without dropout)."""
    # p as written (its shortest repr): 0.9999999 must not read as 1
    parts = [f"p = {ly.dropout!r} (layer {i})" for i, ly in enumerate(spec.layers, 1) if ly.dropout]
    return f" + dropout {', '.join(parts)}" if parts else ""


def _header(spec: Spec, level: str, naive: int, backprop: int) -> list[str]:
    title = _quote(
        f"{spec.name}: {'-'.join(map(str, spec.sizes))}, {spec.cost}"
        f"{graph_penalty.title(spec)}{_dropout_title(spec)} ({level} graph)",
        f"backward edge walks: naive chain rule {naive:,}, backpropagation {backprop:,} "
        "(red: walked again by the naive chain rule)",
    )
    return [
        "digraph chainrule {",
        "  rankdir=LR;",
        '  graph [fontname="Helvetica", fontsize=12, labelloc=t, '
        f"label={title}, nodesep=0.25, ranksep=0.4];",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];',
    ]


def _mask_legend() -> list[str]:
    """The legend's dropout entry: what the ×D labels are."""
    text = _quote(
        "×D: dropout mask D = r/(1 − p), r ~ Bernoulli(1 − p),",
        "fixed for the step: a = D·f(z), and BP2 gives δ the same factor",
    )
    return [
        f"    legend_mask [label={text}, {_MASK}];",
        "    { rank=same; legend_fwd -> legend_mask [style=invis]; }",
    ]


def _legend(penalty: bool = False, dropout: bool = False) -> list[str]:
    """The legend cluster; with ``penalty`` also the penalty term's box, with ``dropout``
    the mask's note."""
    extra = (graph_penalty.legend() if penalty else []) + (_mask_legend() if dropout else [])
    return [
        "  subgraph cluster_legend {",
        '    label="legend"; fontsize=10; color="#bbbbbb";',
        f'    legend_fwd [label="forward value", {_FORWARD}];',
        f'    legend_delta [label="shared term δ (computed once)", {_DELTA}];',
        f'    legend_grad [label="gradient", {_GRAD}];',
        # One rank, stacked: spread over three ranks it would widen three columns.
        "    { rank=same; legend_grad -> legend_delta -> legend_fwd [style=invis]; }",
        *extra,
        "  }",
    ]


def penalty_part(
    spec: Spec, *, scalar: bool, nodes: bool = True, gradients: bool = True, constraint: bool = True
) -> tuple[list[str], int, int]:
    """The penalty's lines (:mod:`chainrule.graph_penalty`) and its naive and
    backpropagation walks; nothing without a penalty. ``nodes``: the W^l, P^l and dP^l
    nodes (a layer graph that has W^l places P^l and dP^l in its clusters itself);
    ``gradients``: the edges dP^l -> the weights' gradients."""
    if not spec.regularized:
        return [], 0, 0
    lines: list[str] = []
    if nodes:  # the W^l and the P^l each in one column, layer 1 on top
        forward, backward = graph_penalty.nodes(spec, weights=True)
        layers = range(1, spec.depth + 1)
        columns = [_column([f"{p}{l}" for l in layers]) for p in ("W", "P")]  # noqa: E741
        lines += forward + backward + [c for c in columns if c]
    lines += graph_penalty.forward_edges(spec, rank_by_weights=nodes)
    edges = graph_penalty.backward_edges(spec)
    for src, dst, count in edges:
        text = None if scalar else f"penalty: naive {count:,}, backprop 1"
        style = _edge_style(count, text, constraint=constraint, key="xlabel" if scalar else "label")
        lines.append(f"  {src} -> {dst} [{style}];")
    if gradients:
        lines += graph_penalty.to_gradients(spec, scalar=scalar)
    return lines, sum(c for *_, c in edges), len(edges)


def _scalar_nodes(spec: Spec) -> list[str]:
    """The node lines of the scalar graph, then its columns in index order."""
    n, depth = spec.sizes, spec.depth
    body = [f'  x_{k} [label="x{_sub(k)}", {_INPUT}];' for k in range(n[0])]
    for l in range(1, depth + 1):  # noqa: E741
        bias = spec.layers[l - 1].bias
        for j in range(n[l]):
            plus_b = f" + b{_sup(l)}{_sub(j)}" if bias else ""
            body.append(f'  z{l}_{j} [label="z{_sup(l)}{_sub(j)}{plus_b}", {_FORWARD}];')
            body.append(f'  a{l}_{j} [label="a{_sup(l)}{_sub(j)}", {_FORWARD}];')
    body.append(f'  C [label="C", {_COST}];')
    for l in range(depth, 0, -1):  # noqa: E741
        for j in range(n[l]):
            mask = f"\\n({mask_label(l, j)})" if dropped(spec, l) else ""
            body.append(f'  delta{l}_{j} [label="δ{_sup(l)}{_sub(j)}{mask}", {_DELTA}];')
            label = f"∂C/∂w{_sup(l)}{_sub(j)}· = δ{_sup(l)}{_sub(j)} a{_sup(l - 1)}"
            if spec.regularized:  # BP4's penalty term
                label += f" + ∂P{_sup(l)}/∂w{_sup(l)}{_sub(j)}·"
            if spec.layers[l - 1].bias:
                bias = f"∂C/∂b{_sup(l)}{_sub(j)} = δ{_sup(l)}{_sub(j)}"
                body.append(f"  grad{l}_{j} [label={_quote(label, bias)}, {_GRAD}];")
            else:
                body.append(f"  grad{l}_{j} [label={_quote(label)}, {_GRAD}];")
    return body + _scalar_columns(spec)


def folded(spec: Spec) -> bool:
    """True when the scalar graph folds its backward pass under its forward pass.

    Only a chain (one unit in every layer) folds: there each delta^l sits under the
    forward pass, one rank right of a^l, and the picture is about as wide as the forward
    pass alone; with wider layers the folded backward edges would cross the forward ones.
    """
    return not spec.skips and all(size == 1 for size in spec.sizes[1:])


def _scalar_columns(spec: Spec) -> list[str]:
    """Each rank's nodes in index order, top to bottom (forward units above backward)."""
    n, depth = spec.sizes, spec.depth

    def units(prefix: str, l: int) -> list[str]:  # noqa: E741
        return [f"{prefix}{l}_{j}" for j in range(n[l])] if l >= 1 else []

    columns = [[f"x_{k}" for k in range(n[0])]]
    if folded(spec):  # delta^(l-1) shares the rank of z^l, its gradient that of a^l
        for l in range(1, depth + 1):  # noqa: E741
            columns += [units("z", l) + units("delta", l - 1), units("a", l) + units("grad", l - 1)]
        columns += [["C", *units("delta", depth)], units("grad", depth)]
    else:
        for l in range(1, depth + 1):  # noqa: E741
            columns += [units(prefix, l) for prefix in ("z", "a", "delta", "grad")]
    return [_column(ids) for ids in columns]


def forward_edges(spec: Spec) -> list[str]:
    """The scalar graph's forward edges a^(l-1)_k -> z^l_j (labelled with the weight when
    a layer has at most four) and z^l_j -> a^l_j (labelled ×D^l_j with dropout), in DOT."""
    n, lines = spec.sizes, []
    for l in range(1, spec.depth + 1):  # noqa: E741
        for j in range(n[l]):
            for k in range(n[l - 1]):
                src = f"x_{k}" if l == 1 else f"a{l - 1}_{k}"
                w = f", xlabel={_quote(f'w{_sup(l)}{_sub(j, k)}')}" if n[l] * n[l - 1] <= 4 else ""
                lines.append(f'  {src} -> z{l}_{j} [color="#4a78a8"{w}];')
            mask = f", xlabel={_quote(mask_label(l, j))}" if dropped(spec, l) else ""
            lines.append(f'  z{l}_{j} -> a{l}_{j} [color="#4a78a8"{mask}];')
    return lines


def scalar_graph(spec: Spec) -> Graph:
    """One node per unit: x_k, z^l_j, a^l_j, C; delta^l_j and the gradients below them.

    Units stand in index order, top to bottom. The backward pass follows the forward one
    to the right, except in a chain (:func:`folded`), where it runs back under it: delta^l
    sits one rank right of a^l (an invisible edge holds it there) and the backward edges
    set no ranks, so a 1-1-1-1 chain is as wide as its forward pass and one gradient box.
    Forward and backward are told apart by colour (and the legend), not by clusters:
    Graphviz drops a node from its cluster when a top-level column names it.
    """
    n, depth = spec.sizes, spec.depth
    up, down = path_counts(spec)
    naive = backprop = 0
    body = _scalar_nodes(spec)
    fold = folded(spec)
    if fold:
        body += [f"  a{i}_0 -> delta{i}_0 [style=invis];" for i in range(1, depth + 1)]
    body += forward_edges(spec)
    for j in range(n[depth]):
        body.append(f'  a{depth}_{j} -> C [color="#4a78a8"];')
    for j in range(n[depth]):
        count = up[depth] * down[depth]
        naive, backprop = naive + count, backprop + 1
        body.append(f"  C -> delta{depth}_{j} [{_edge_style(count, constraint=not fold)}];")
    for l in range(depth - 1, 0, -1):  # noqa: E741
        for i in range(n[l + 1]):
            for j in range(n[l]):
                count = up[l + 1] * down[l]
                naive, backprop = naive + count, backprop + 1
                style = _edge_style(count, constraint=not fold)
                body.append(f"  delta{l + 1}_{i} -> delta{l}_{j} [{style}];")
    for l in range(1, depth + 1):  # noqa: E741
        for j in range(n[l]):
            body.append(f'  delta{l}_{j} -> grad{l}_{j} [color="#c0561b"];')
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=True, constraint=not fold)
    naive, backprop = naive + pen_naive, backprop + pen_backprop
    body = [line for line in body + extra if line]
    lines = _header(spec, "scalar", naive, backprop) + body + legend(spec) + ["}"]
    return Graph("\n".join(lines) + "\n", "scalar", spec.name, naive, backprop)


def legend(spec: Spec) -> list[str]:
    """The legend cluster of ``spec``'s graph (penalty and dropout entries when it has them)."""
    return _legend(spec.regularized, any(layer.dropout for layer in spec.layers))


def activation_label(spec: Spec, layer: int, plus: str = "") -> str:
    """The layer graph's a^l label: ``a¹ = tanh(z¹)``, ``a¹ = D¹ ⊙ tanh(z¹)`` with dropout,
    followed by ``plus`` (a skip's `` + aᵏ``); an expression in x is named f and given
    after it (``a¹ = f(z¹), f(x) = x*sigmoid(x)``), not applied to z as if it were a name."""
    own = spec.layers[layer - 1]
    mask = f"D{_sup(layer)} ⊙ " if dropped(spec, layer) else ""
    act = "f" if own.is_custom else own.activation
    where = f", f(x) = {own.activation}" if own.is_custom else ""
    return f"a{_sup(layer)} = {mask}{act}(z{_sup(layer)}){plus}{where}"


def layer_graph(spec: Spec) -> Graph:
    """One node per vector: x, W^l, b^l, z^l, a^l, C; delta^l and dC/dW^l, dC/db^l."""
    n, depth = spec.sizes, spec.depth
    up, down = path_counts(spec)
    naive = backprop = 0
    body = ['  subgraph cluster_forward { label="forward pass"; color="#4a78a8";']
    body.append(f'    a0 [label="x = a⁰\\n({n[0]})", {_INPUT}];')
    for l in range(1, depth + 1):  # noqa: E741
        body.append(f'    W{l} [label="W{_sup(l)}\\n({n[l]}×{n[l - 1]})", {_PARAM}];')
        if spec.layers[l - 1].bias:
            body.append(f'    b{l} [label="b{_sup(l)}\\n({n[l]})", {_PARAM}];')
        body.append(f'    z{l} [label="z{_sup(l)}\\n({n[l]})", {_FORWARD}];')
        body.append(f"    a{l} [label={_quote(activation_label(spec, l))}, {_FORWARD}];")
    body.append(f'    C [label="C\\n{spec.cost}", {_COST}];')
    forward_pen, backward_pen = (
        graph_penalty.nodes(spec, weights=False, indent="    ") if spec.regularized else ([], [])
    )
    body += [*forward_pen, "  }"]
    for l in range(1, depth + 1):  # noqa: E741
        body.append(f'  a{l - 1} -> z{l} [color="#4a78a8"];')
        body.append(f'  W{l} -> z{l} [color="#4a78a8"];')
        if spec.layers[l - 1].bias:
            body.append(f'  b{l} -> z{l} [color="#4a78a8"];')
        body.append(f'  z{l} -> a{l} [color="#4a78a8"];')
    body.append(f'  a{depth} -> C [color="#4a78a8"];')
    body.append('  subgraph cluster_backward { label="backward pass"; color="#c0561b";')
    for l in range(depth, 0, -1):  # noqa: E741
        mask = f" ({mask_label(l)})" if dropped(spec, l) else ""
        body.append(f'    delta{l} [label="δ{_sup(l)}{mask}\\n({n[l]})", {_DELTA}];')
        pen = f" + ∂P{_sup(l)}/∂W{_sup(l)}" if spec.regularized else ""
        body.append(
            f'    dC_dW{l} [label="∂C/∂W{_sup(l)} = δ{_sup(l)} (a{_sup(l - 1)})ᵀ{pen}", {_GRAD}];'
        )
        if spec.layers[l - 1].bias:
            body.append(f'    dC_db{l} [label="∂C/∂b{_sup(l)} = Σ δ{_sup(l)}", {_GRAD}];')
    body += [*backward_pen, "  }"]
    count = n[depth] * up[depth] * down[depth]
    naive, backprop = naive + count, backprop + n[depth]
    style = _edge_style(count, f"BP1: naive {count:,}, backprop {n[depth]:,}", key="label")
    body.append(f"  C -> delta{depth} [{style}];")
    for l in range(depth - 1, 0, -1):  # noqa: E741
        count = n[l + 1] * n[l] * up[l + 1] * down[l]
        naive, backprop = naive + count, backprop + n[l + 1] * n[l]
        text = f"BP2: naive {count:,}, backprop {n[l + 1] * n[l]:,}"
        style = _edge_style(count, text, key="label")
        body.append(f"  delta{l + 1} -> delta{l} [{style}];")
        body.append(f'  W{l + 1} -> delta{l} [style=dashed, color="#9bb7d4", constraint=false];')
    for l in range(1, depth + 1):  # noqa: E741
        body.append(f'  delta{l} -> dC_dW{l} [color="#c0561b", label="BP4"];')
        body.append(f'  a{l - 1} -> dC_dW{l} [style=dashed, color="#9bb7d4", constraint=false];')
        if spec.layers[l - 1].bias:
            body.append(f'  delta{l} -> dC_db{l} [color="#c0561b", label="BP3"];')
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=False, nodes=False)
    naive, backprop = naive + pen_naive, backprop + pen_backprop
    lines = _header(spec, "layer", naive, backprop) + body + extra + legend(spec)
    lines.append("}")
    return Graph("\n".join(lines) + "\n", "layer", spec.name, naive, backprop)


def _residual(level: str) -> Callable[[Spec], Graph]:
    """The drawer of a network with residual connections (:mod:`chainrule.graph_residual`)."""
    from chainrule import graph_residual

    return getattr(graph_residual, f"residual_{level}_graph")


def build_graph(spec: Spec, level: str = "auto", batch: int | None = None) -> Graph:
    """The scalar graph for small networks, the layer graph otherwise.

    A network with batch norm is drawn over a batch of ``batch`` examples (default 2): the
    scalar graph (:mod:`chainrule.graph_batch_norm`) when it is small enough to read, the
    layer graph (:mod:`chainrule.graph_batch_norm_layer`) otherwise; ``batch`` is refused
    for a network without batch norm.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> g = build_graph(preset("3b1b-chain"))
    >>> g.level, g.naive_walks, g.backprop_walks
    ('scalar', 12, 3)
    """
    require_spec(spec)
    if spec.batch_norm_layers or batch is not None:
        return _batch_norm_graph(spec, level, batch)
    weights = sum(a * b for a, b in zip(spec.sizes, spec.sizes[1:], strict=False))
    if level == "auto":
        small = weights <= SCALAR_MAX_WEIGHTS and sum(spec.sizes) <= SCALAR_MAX_UNITS
        level = "scalar" if small else "layer"
    if level == "scalar":
        if weights > SCALAR_HARD_MAX_WEIGHTS:
            raise SpecError(
                "level",
                f"a scalar graph of {weights} weights would be unreadable",
                f"use --level layer (scalar graphs go up to {SCALAR_HARD_MAX_WEIGHTS} weights)",
            )
        return (_residual("scalar") if spec.skips else scalar_graph)(spec)
    if level == "layer":
        return (_residual("layer") if spec.skips else layer_graph)(spec)
    raise SpecError("level", f"unknown level {level!r}", "use auto, scalar or layer")


def _batch_norm_graph(spec: Spec, level: str, batch: int | None) -> Graph:
    """The batch graph of a network with batch norm: scalar
    (:mod:`chainrule.graph_batch_norm`) or layer (:mod:`chainrule.graph_batch_norm_layer`);
    ``auto`` takes the scalar one when it is small enough to read."""
    from chainrule.comparison_batch import check_batch
    from chainrule.graph_batch_norm import batch_norm_graph, fits
    from chainrule.graph_batch_norm_layer import batch_norm_layer_graph

    if level not in ("auto", "scalar", "layer"):
        raise SpecError("level", f"unknown level {level!r}", "use auto, scalar or layer")
    m = check_batch(spec, batch)
    if level == "auto":
        level = "scalar" if fits(spec, m) else "layer"
    return (batch_norm_graph if level == "scalar" else batch_norm_layer_graph)(spec, batch)


def render_dot(dot: str, fmt: str) -> bytes:
    """Run Graphviz's ``dot -T<fmt>`` on DOT text."""
    exe = shutil.which("dot")
    if exe is None:
        raise SpecError(
            "output",
            f"drawing {fmt.upper()} needs Graphviz's 'dot' program, which is not installed",
            "install it (apt-get install graphviz) or write a .dot file",
        )
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True, timeout=DOT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SpecError("output", f"dot took over {DOT_TIMEOUT} s", "write a .dot file") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SpecError("output", f"dot failed: {message[:1]}", "write a .dot file instead")
    return done.stdout
