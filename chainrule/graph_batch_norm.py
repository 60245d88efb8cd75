"""The computation graph of a network with batch norm, over a batch of m examples, as DOT.

Batch norm couples the examples of a batch, so its graph draws m examples (m = 2 by
default, ``--batch``): per example i, the inputs x_k,i and each unit's z, a and delta; for
a batch-normalized layer l, per unit j, u^l_j,i = (W^l a^(l-1))_j and xhat^l_j,i per example
and one mean^l_j and one var^l_j shared by all m examples, with
z^l_j,i = gamma^l_j xhat^l_j,i + beta^l_j. Forward, u_j,i feeds mean_j, var_j and xhat_j,i;
mean_j feeds var_j and every xhat_j,i; var_j every xhat_j,i.

Backward, each forward dependency is walked once in reverse by backpropagation:
delta_j,i -> dC/dxhat_j,i -> (dC/du_j,i, dC/dmean_j, dC/dvar_j), dC/dvar_j -> dC/dmean_j and
every dC/du_j,i', dC/dmean_j -> every dC/du_j,i'. The three-term form is these partials
summed at u (computed once each). The naive chain rule walks an edge once per path from C
to a parameter that uses it: (paths from C to its top) * (paths from its bottom to the
parameters), as in :mod:`chainrule.graph`; the last step to the parameter is not counted.
A parameter's node hands on to: delta^l_j,i of a plain layer its weights and bias, delta
at z of a normalized layer gamma^l_j and beta^l_j, dC/du^l_j,i the weights of unit j.

A residual connection (``skip_from`` = k, a^l = f(z^l) + a^k) is drawn per example, as in
:mod:`chainrule.graph_residual`: forward a^k_j,i -> a^l_j,i; backward a node dC/da^l_j,i
for each layer a skip touches, with the skip's edge dC/da^l_j,i -> dC/da^k_j,i (none from
the input). :mod:`chainrule.graph_batch_norm_layer` draws the same graph one node per
matrix, for networks too big for this one.
"""

from __future__ import annotations

import re

from chainrule.comparison_batch import check_batch
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.graph import (
    _COST,
    _DELTA,
    _FORWARD,
    _GRAD,
    _INPUT,
    SCALAR_HARD_MAX_WEIGHTS,
    Graph,
    _edge_style,
    _header,
    _quote,
    _sub,
    _sup,
    dropped,
    legend,
    mask_label,
    penalty_part,
)
from chainrule.graph_residual import touched

#: Largest number of unit nodes (units of every layer times m) a batch graph draws.
MAX_BATCH_UNITS = 120
#: Batch-norm statistics: forward (shared by the batch) and backward (computed once).
_STAT = 'shape=hexagon, style=filled, fillcolor="#c9e7c9", color="#3f7f3f"'
_STAT_BACK = 'shape=hexagon, style="filled,bold", fillcolor="#f9b46b", color="#c0561b"'


def fits(spec: Spec, m: int) -> bool:
    """True when the batch scalar graph of ``spec`` over m examples is small enough to read:
    at most :data:`~chainrule.graph.SCALAR_HARD_MAX_WEIGHTS` weights and
    :data:`MAX_BATCH_UNITS` unit nodes (units of every layer times m)."""
    weights = sum(a * b for a, b in zip(spec.sizes, spec.sizes[1:], strict=False))
    return weights <= SCALAR_HARD_MAX_WEIGHTS and m * sum(spec.sizes) <= MAX_BATCH_UNITS


def _check(spec: Spec, m: int) -> None:
    """Refuse a batch graph too large to read (:func:`fits`)."""
    if not fits(spec, m):
        weights = sum(a * b for a, b in zip(spec.sizes, spec.sizes[1:], strict=False))
        raise SpecError(
            "network",
            f"a batch graph of {weights} weights and {m * sum(spec.sizes)} unit nodes "
            f"(m = {m}) would be unreadable",
            f"use --level layer, or a smaller network or batch (at most {MAX_BATCH_UNITS} "
            "unit nodes)",
        )


def _name(base: str, layer: int, j: int, i: int | None = None) -> str:
    return f"{base}{layer}_{j}" + ("" if i is None else f"_e{i}")


def _label(text: str, layer: int, j: int, i: int | None = None) -> str:
    """``z¹₀,₁`` (unit 0, example 1) or ``mean¹₀`` (one per unit)."""
    return f"{text}{_sup(layer)}{_sub(j) if i is None else _sub(j, i)}"


def _nodes(spec: Spec, m: int) -> list[str]:
    """Forward nodes (x, u, mean, var, xhat, z, a, C), backward ones (with dC/da^l of each
    layer a skip touches) and gradients."""
    n, body, stored = spec.sizes, [], touched(spec)
    for i in range(m):
        body += [f'  x_{k}_e{i} [label="x{_sub(k, i)}", {_INPUT}];' for k in range(n[0])]
    for l in range(1, spec.depth + 1):  # noqa: E741
        norm = spec.layers[l - 1].batch_norm
        for j in range(n[l]):
            if norm:
                for base, text, style in (("mean", "mean", _STAT), ("var", "var", _STAT)):
                    body.append(f'  {_name(base, l, j)} [label="{_label(text, l, j)}", {style}];')
                for base, text in (("gmean", "∂C/∂mean"), ("gvar", "∂C/∂var")):
                    body.append(
                        f'  {_name(base, l, j)} [label="{_label(text, l, j)}", {_STAT_BACK}];'
                    )
            for i in range(m):
                fwd = (
                    (("u", "u"), ("xhat", "x̂"), ("z", "z"), ("a", "a"))
                    if norm
                    else (("z", "z"), ("a", "a"))
                )
                for base, text in fwd:
                    body.append(
                        f'  {_name(base, l, j, i)} [label="{_label(text, l, j, i)}", {_FORWARD}];'
                    )
                back = (
                    (("delta", "δ"), ("gx", "∂C/∂x̂"), ("du", "δu")) if norm else (("delta", "δ"),)
                )
                for base, text in back:
                    body.append(
                        f'  {_name(base, l, j, i)} [label="{_label(text, l, j, i)}", {_DELTA}];'
                    )
            if l in stored:  # dC/da^l_j,i: the sum over the paths through a skip's end
                body += [
                    f'  {_name("g", l, j, i)} [label="{_label("∂C/∂a", l, j, i)}", {_DELTA}];'
                    for i in range(m)
                ]
            body.append(f"  grad{l}_{j} [label={_quote(*_grad_lines(spec, l, j))}, {_GRAD}];")
    body.append(f'  C [label="C = (1/m) Σᵢ Cᵢ", {_COST}];')
    return body


def _grad_lines(spec: Spec, l: int, j: int) -> list[str]:  # noqa: E741
    """The gradient box of unit j of layer l: each a mean over the examples."""
    unit = f"{_sup(l)}{_sub(j)}"
    if spec.layers[l - 1].batch_norm:
        return [
            f"∂C/∂w{unit}· = mean(δu{unit} a{_sup(l - 1)})",
            f"∂C/∂γ{unit} = mean(δ{unit} x̂{unit}), ∂C/∂β{unit} = mean(δ{unit})",
        ]
    lines = [f"∂C/∂w{unit}· = mean(δ{unit} a{_sup(l - 1)})"]
    return lines + ([f"∂C/∂b{unit} = mean(δ{unit})"] if spec.layers[l - 1].bias else [])


def _forward_edges(spec: Spec, m: int) -> list[str]:
    n, out, blue = spec.sizes, [], '[color="#4a78a8"]'
    for l in range(1, spec.depth + 1):  # noqa: E741
        norm = spec.layers[l - 1].batch_norm
        for j in range(n[l]):
            for i in range(m):
                first = _name("u" if norm else "z", l, j, i)
                for k in range(n[l - 1]):
                    src = f"x_{k}_e{i}" if l == 1 else _name("a", l - 1, k, i)
                    out.append(f"  {src} -> {first} {blue};")
                if norm:
                    u, xhat = _name("u", l, j, i), _name("xhat", l, j, i)
                    mean, var = _name("mean", l, j), _name("var", l, j)
                    out += [f"  {u} -> {mean} {blue};", f"  {u} -> {var} {blue};"]
                    out += [f"  {src} -> {xhat} {blue};" for src in (u, mean, var)]
                    out.append(f"  {xhat} -> {_name('z', l, j, i)} {blue};")
                mask = f', xlabel="{mask_label(l, j)}"' if dropped(spec, l) else ""
                out.append(
                    f'  {_name("z", l, j, i)} -> {_name("a", l, j, i)} [color="#4a78a8"{mask}];'
                )
            if norm:
                out.append(f"  {_name('mean', l, j)} -> {_name('var', l, j)} {blue};")
            if l in spec.skips:  # a^l_j,i = f(z^l_j,i) + a^k_j,i, example by example
                k = spec.skips[l]
                for i in range(m):
                    src = f"x_{j}_e{i}" if k == 0 else _name("a", k, j, i)
                    dst = _name("a", l, j, i)
                    out.append(f'  {src} -> {dst} [color="#4a78a8", style=dashed, xlabel="skip"];')
    out += [
        f"  {_name('a', spec.depth, j, i)} -> C {blue};" for j in range(n[-1]) for i in range(m)
    ]
    return out


def backward_edges(spec: Spec, m: int) -> list[tuple[str, str]]:
    """The backward edges (from, to), each the reverse of one forward dependency; a layer a
    skip touches goes through its dC/da^l_j,i (as in :mod:`chainrule.graph_residual`)."""
    n, depth, edges, stored = spec.sizes, spec.depth, [], touched(spec)

    def entry(l: int, j: int, i: int) -> str:  # noqa: E741
        return _name("g" if l in stored else "delta", l, j, i)

    edges += [("C", entry(depth, j, i)) for j in range(n[depth]) for i in range(m)]
    for l in range(depth, 0, -1):  # noqa: E741
        norm = spec.layers[l - 1].batch_norm
        for j in range(n[l]):
            if l in stored:
                edges += [(_name("g", l, j, i), _name("delta", l, j, i)) for i in range(m)]
            if spec.skips.get(l, 0) > 0:
                k = spec.skips[l]
                edges += [(_name("g", l, j, i), _name("g", k, j, i)) for i in range(m)]
            if norm:
                gmean, gvar = _name("gmean", l, j), _name("gvar", l, j)
                for i in range(m):
                    gx = _name("gx", l, j, i)
                    edges.append((_name("delta", l, j, i), gx))
                    edges += [(gx, _name("du", l, j, i)), (gx, gmean), (gx, gvar)]
                edges.append((gvar, gmean))
                edges += [(src, _name("du", l, j, i)) for src in (gvar, gmean) for i in range(m)]
            if l > 1:
                top = "du" if norm else "delta"
                edges += [
                    (_name(top, l, j, i), entry(l - 1, k, i))
                    for i in range(m)
                    for k in range(n[l - 1])
                ]
    return edges


def _leaves(spec: Spec, node: str) -> int:
    """Parameters a backward node hands its gradient on to (see the module docstring)."""
    found = re.match(r"([a-z]+)(\d+)_", node)
    if found is None:
        return 0
    base, layer = found.group(1), int(found.group(2))
    if base == "delta":
        if spec.layers[layer - 1].batch_norm:
            return 2
        return spec.sizes[layer - 1] + spec.layers[layer - 1].bias
    return spec.sizes[layer - 1] if base == "du" else 0


def walk_counts(spec: Spec, m: int) -> dict[tuple[str, str], int]:
    """The naive chain rule's walks of each backward edge: paths above times paths below."""
    edges = backward_edges(spec, m)
    children: dict[str, list[str]] = {}
    parents: dict[str, list[str]] = {}
    for src, dst in edges:
        children.setdefault(src, []).append(dst)
        parents.setdefault(dst, []).append(src)
    up: dict[str, int] = {"C": 1}
    down: dict[str, int] = {}

    def above(node: str) -> int:
        if node not in up:
            up[node] = sum(above(p) for p in parents[node])
        return up[node]

    def below(node: str) -> int:
        if node not in down:
            down[node] = _leaves(spec, node) + sum(below(c) for c in children.get(node, []))
        return down[node]

    return {(src, dst): above(src) * below(dst) for src, dst in edges}


def batch_norm_graph(spec: Spec, batch: int | None = None) -> Graph:
    """The scalar graph of a network with batch norm over a batch of m examples."""
    m = check_batch(spec, batch)
    _check(spec, m)
    counts = walk_counts(spec, m)
    body = _nodes(spec, m) + _forward_edges(spec, m)
    body += [f"  {src} -> {dst} [{_edge_style(count)}];" for (src, dst), count in counts.items()]
    for l in range(1, spec.depth + 1):  # noqa: E741
        top = "du" if spec.layers[l - 1].batch_norm else "delta"
        for j in range(spec.sizes[l]):
            sources = [_name(top, l, j, i) for i in range(m)]
            if top == "du":
                sources += [_name("delta", l, j, i) for i in range(m)]
            body += [f'  {src} -> grad{l}_{j} [color="#c0561b"];' for src in sources]
    extra, pen_naive, pen_backprop = penalty_part(spec, scalar=True)
    naive = sum(counts.values()) + pen_naive
    backprop = len(counts) + pen_backprop
    header = _header(spec, f"batch of {m} examples, scalar", naive, backprop)
    lines = header + body + extra + legend(spec) + ["}"]
    lines = lines[:-2] + _legend_entries() + lines[-2:]
    return Graph("\n".join(lines) + "\n", "scalar", spec.name, naive, backprop)


def _legend_entries() -> list[str]:
    """The legend's batch-norm entries, placed inside its cluster."""
    fwd = _quote("mean, var: batch statistics of one unit,", "shared by the m examples")
    back = _quote(
        "∂C/∂mean, ∂C/∂var: computed once per batch;", "δu sums the paths at u (three terms)"
    )
    return [
        f"    legend_stat [label={fwd}, {_STAT}];",
        f"    legend_stat_back [label={back}, {_STAT_BACK}];",
        "    { rank=same; legend_fwd -> legend_stat -> legend_stat_back [style=invis]; }",
    ]


__all__ = ["MAX_BATCH_UNITS", "backward_edges", "batch_norm_graph", "fits", "walk_counts"]
