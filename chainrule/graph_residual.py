"""The computation graph of a network with residual connections, as Graphviz DOT text.

A layer with ``skip_from`` = k computes a^l = f(z^l) + a^k: the forward graph gets an
edge a^k_j -> a^l_j, and the backward graph a node dC/da^l_j (the sum over the paths
through it, computed once) for each layer a skip touches, with the skip's backward edge
dC/da^l_j -> dC/da^k_j (none from the input: nothing needs dC/dx).

Counting, as in :mod:`chainrule.graph`: the naive chain rule walks an edge once per path
from C to a parameter that uses it, ``(paths from C to its top) * (paths from its bottom
to the parameters)``. With skips, ``up[l]`` (paths from C to a^l_j) is
``n_(l+1) up[l+1]`` plus ``up[d]`` for each layer d that skips from l, and
``below[l]`` (paths from a^l_j to the parameters) is ``down[l]`` (through z^l_j) plus
``below[k]`` when l skips from k.
"""

from __future__ import annotations

from chainrule.derive.spec import Spec
from chainrule.graph import (
    _DELTA,
    Graph,
    _column,
    _edge_style,
    _header,
    _quote,
    _scalar_nodes,
    _sub,
    _sup,
    activation_label,
    dropped,
    forward_edges,
    legend,
    mask_label,
    penalty_part,
)


def residual_path_counts(spec: Spec) -> tuple[list[int], list[int], list[int]]:
    """``up[l]``, ``down[l]`` (from z^l_j) and ``below[l]`` (from a^l_j) for l = 0..L.

    Examples
    --------
    >>> from chainrule.derive.spec import Layer
    >>> spec = Spec(1, (Layer(1, "tanh"), Layer(1, "tanh", skip_from=1)), "quadratic")
    >>> residual_path_counts(spec)
    ([2, 2, 1], [0, 2, 4], [0, 2, 6])
    """
    n, depth, skips = spec.sizes, spec.depth, spec.skips
    down, below = [0] * (depth + 1), [0] * (depth + 1)
    for l in range(1, depth + 1):  # noqa: E741
        own = n[l - 1] + (1 if spec.layers[l - 1].bias else 0)
        down[l] = own + n[l - 1] * below[l - 1]
        below[l] = down[l] + (below[skips[l]] if l in skips else 0)
    up = [0] * (depth + 1)
    up[depth] = 1
    for l in range(depth - 1, -1, -1):  # noqa: E741
        up[l] = n[l + 1] * up[l + 1] + sum(up[d] for d, k in skips.items() if k == l)
    return up, down, below


def touched(spec: Spec) -> set[int]:
    """The layers 1..L whose dC/da^l is stored: a skip's destinations and sources."""
    return {*spec.skips, *(k for k in spec.skips.values() if k > 0)}


def _g(l: int, j: int) -> str:  # noqa: E741
    return f"g{l}_{j}"


def residual_scalar_graph(spec: Spec) -> Graph:
    """The scalar graph (see :func:`chainrule.graph.scalar_graph`) with the skip edges
    forward and, backward, the stored dC/da^l_j of each layer a skip touches."""
    n, depth, skips = spec.sizes, spec.depth, spec.skips
    up, down, below = residual_path_counts(spec)
    stored = touched(spec)
    body = _scalar_nodes(spec)
    for l in sorted(stored):  # noqa: E741
        for j in range(n[l]):
            label = f"∂C/∂a{_sup(l)}{_sub(j)}"
            body.append(f'  {_g(l, j)} [label="{label}", {_DELTA}];')
        body.append(_column([_g(l, j) for j in range(n[l])]))
    body += forward_edges(spec)
    for l, k in sorted(skips.items()):  # noqa: E741
        for j in range(n[l]):
            src = f"x_{j}" if k == 0 else f"a{k}_{j}"
            body.append(f'  {src} -> a{l}_{j} [color="#4a78a8", style=dashed, xlabel="skip"];')
    body += [f'  a{depth}_{j} -> C [color="#4a78a8"];' for j in range(n[depth])]
    edges: list[tuple[str, str, int]] = []
    for j in range(n[depth]):
        if depth in stored:
            edges += [
                ("C", _g(depth, j), below[depth]),
                (_g(depth, j), f"delta{depth}_{j}", down[depth]),
            ]
        else:
            edges.append(("C", f"delta{depth}_{j}", down[depth]))
    for l in range(depth - 1, 0, -1):  # noqa: E741
        for i in range(n[l + 1]):
            for j in range(n[l]):
                target = _g(l, j) if l in stored else f"delta{l}_{j}"
                edges.append(
                    (
                        f"delta{l + 1}_{i}",
                        target,
                        up[l + 1] * (below[l] if l in stored else down[l]),
                    )
                )
        if l in stored:
            edges += [(_g(l, j), f"delta{l}_{j}", up[l] * down[l]) for j in range(n[l])]
    for l, k in sorted(skips.items()):  # noqa: E741
        if k > 0:
            edges += [(_g(l, j), _g(k, j), up[l] * below[k]) for j in range(n[l])]
    for src, dst, count in edges:
        body.append(f"  {src} -> {dst} [{_edge_style(count)}];")
    for l in range(1, depth + 1):  # noqa: E741
        body += [f'  delta{l}_{j} -> grad{l}_{j} [color="#c0561b"];' for j in range(n[l])]
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=True)
    naive, backprop = sum(c for *_, c in edges) + pen_naive, len(edges) + pen_backprop
    body = [b for b in body + extra if b]
    lines = _header(spec, "scalar", naive, backprop) + body + legend(spec) + ["}"]
    return Graph("\n".join(lines) + "\n", "scalar", spec.name, naive, backprop)


def residual_layer_graph(spec: Spec) -> Graph:
    """One node per vector, with the skip edges and the stored dC/da^l; each backward edge
    is labelled with the naive walks of all its unit edges against backpropagation's."""
    n, depth, skips = spec.sizes, spec.depth, spec.skips
    up, down, below = residual_path_counts(spec)
    stored = touched(spec)
    body = [f'  a0 [label="x = a⁰\\n({n[0]})", shape=box];', '  C [label="C"];']
    for l in range(1, depth + 1):  # noqa: E741
        plus = f" + a{_sup(skips[l])}" if l in skips else ""
        body.append(f'  z{l} [label="z{_sup(l)}\\n({n[l]})"];')
        body.append(f"  a{l} [label={_quote(activation_label(spec, l, plus))}];")
        mask = f" ({mask_label(l)})" if dropped(spec, l) else ""
        body.append(f'  delta{l} [label="δ{_sup(l)}{mask}\\n({n[l]})", {_DELTA}];')
        body += [f'  a{l - 1} -> z{l} [color="#4a78a8"];', f'  z{l} -> a{l} [color="#4a78a8"];']
        if l in stored:
            body.append(f'  g{l} [label="∂C/∂a{_sup(l)}\\n({n[l]})", {_DELTA}];')
    body += [
        f'  a{k} -> a{dest} [color="#4a78a8", style=dashed, label="skip"];'
        for dest, k in skips.items()
    ]
    body.append(f'  a{depth} -> C [color="#4a78a8"];')
    edges: list[tuple[str, str, int, int]] = []  # (from, to, naive walks, unit edges)
    if depth in stored:
        edges += [("C", f"g{depth}", n[depth] * below[depth], n[depth])]
        edges += [(f"g{depth}", f"delta{depth}", n[depth] * down[depth], n[depth])]
    else:
        edges.append(("C", f"delta{depth}", n[depth] * down[depth], n[depth]))
    for l in range(depth - 1, 0, -1):  # noqa: E741
        pairs = n[l + 1] * n[l]
        if l in stored:
            edges.append((f"delta{l + 1}", f"g{l}", pairs * up[l + 1] * below[l], pairs))
            edges.append((f"g{l}", f"delta{l}", n[l] * up[l] * down[l], n[l]))
        else:
            edges.append((f"delta{l + 1}", f"delta{l}", pairs * up[l + 1] * down[l], pairs))
    for l, k in sorted(skips.items()):  # noqa: E741
        if k > 0:
            edges.append((f"g{l}", f"g{k}", n[l] * up[l] * below[k], n[l]))
    for src, dst, count, units in edges:
        text = f"naive {count:,}, backprop {units:,}"
        body.append(f"  {src} -> {dst} [{_edge_style(count, text, key='label')}];")
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=False, gradients=False)
    naive = sum(e[2] for e in edges) + pen_naive
    backprop = sum(e[3] for e in edges) + pen_backprop
    lines = _header(spec, "layer", naive, backprop) + body + extra + legend(spec)
    lines.append("}")
    return Graph("\n".join(lines) + "\n", "layer", spec.name, naive, backprop)


__all__ = ["residual_layer_graph", "residual_path_counts", "residual_scalar_graph", "touched"]
