"""The L2/L1 weight penalty in the computation graph, as Graphviz DOT lines.

With ``l2`` or ``l1`` set, the cost is C = C0 + sum over layers of P^l, with
P^l = (l2/2) ||W^l||^2 + l1 sum |W^l| (see :mod:`chainrule.derive.penalty`). Each layer
gets one penalty node: forward, W^l -> P^l -> C; backward, C -> dP^l, the term
dP^l/dW^l = l2 W^l + l1 sign(W^l) that BP4 adds to delta^l (a^(l-1))^T, and from it an
edge to each gradient of layer l's weights.

Counting, as in :mod:`chainrule.graph`: the expanded chain rule gives each weight of
layer l one more path, C -> P^l -> w, so the backward edge C -> dP^l is walked once per
weight of the layer, ``n_l n_(l-1)`` times, and once by backpropagation (dC/dP^l = 1,
computed once). The last step, dP^l/dw, is the local derivative at the parameter, not
counted, as the last step a^(l-1) of delta^l a^(l-1) is not.
"""

from __future__ import annotations

from chainrule.derive import penalty
from chainrule.derive.spec import Spec

#: A penalty term: forward value P^l and its derivative (green: not a shared delta).
_PENALTY = 'shape=box, style="rounded,filled", fillcolor="#dff0d8", color="#4d8a3a"'
_PARAM = 'shape=box, style=filled, fillcolor="#ffffff", color="#4a78a8"'
_FORWARD = 'shape=ellipse, style=filled, fillcolor="#dbe9f6", color="#4a78a8"'
_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sup(n: int) -> str:
    return str(n).translate(_SUP)


def title(spec: Spec) -> str:
    """The penalty's coefficients for the graph's title, e.g. `` + penalty l2 = 0.01``
    (empty without a penalty): :func:`chainrule.derive.penalty.title`."""
    return penalty.title(spec.l2, spec.l1)


def forward_label(spec: Spec, layer: int) -> str:
    """P^l's label: ``P¹ = (l2/2)‖W¹‖² + l1 Σ|W¹|`` without the terms whose coefficient is 0."""
    w = f"W{_sup(layer)}"
    terms = ([f"(l2/2)‖{w}‖²"] if spec.l2 else []) + ([f"l1 Σ|{w}|"] if spec.l1 else [])
    return f"P{_sup(layer)} = " + " + ".join(terms)


def derivative_terms(spec: Spec, weight: str) -> list[str]:
    """The terms of dP/dw for ``weight``: ``l2 w`` and ``l1 sign(w)``, those present."""
    return ([f"l2 {weight}"] if spec.l2 else []) + ([f"l1 sign({weight})"] if spec.l1 else [])


def backward_label(spec: Spec, layer: int) -> str:
    """dP^l's label: ``∂P¹/∂W¹ = l2 W¹ + l1 sign(W¹)`` (BP4's extra term)."""
    w = f"W{_sup(layer)}"
    return f"∂P{_sup(layer)}/∂{w} = " + " + ".join(derivative_terms(spec, w))


def _two_lines(label: str) -> str:
    """``name = value`` as two DOT lines, ``name =`` over ``value``: a narrower box."""
    return label.replace(" = ", " =\\n", 1)


def nodes(spec: Spec, *, weights: bool, indent: str = "  ") -> tuple[list[str], list[str]]:
    """The forward node lines (W^l when ``weights``, P^l) and the backward ones (dP^l)."""
    n = spec.sizes
    forward, backward = [], []
    for l in range(1, spec.depth + 1):  # noqa: E741
        if weights:
            shape = f"({n[l]}×{n[l - 1]})"
            forward.append(f'{indent}W{l} [label="W{_sup(l)}\\n{shape}", {_PARAM}];')
        value, term = _two_lines(forward_label(spec, l)), _two_lines(backward_label(spec, l))
        forward.append(f'{indent}P{l} [label="{value}", {_FORWARD}];')
        backward.append(f'{indent}dP{l} [label="{term}", {_PENALTY}];')
    return forward, backward


def forward_edges(spec: Spec, *, rank_by_weights: bool = True) -> list[str]:
    """W^l -> P^l -> C for every layer (blue, as the other forward edges).

    Without ``rank_by_weights`` the edge W^l -> P^l sets no rank: in the layer graph W^l
    already sits by z^l, and P^l there would widen that column; so every P^l stands in
    one column, just before C.
    """
    free = "" if rank_by_weights else ", constraint=false"
    lines = []
    for l in range(1, spec.depth + 1):  # noqa: E741
        lines += [f'  W{l} -> P{l} [color="#4a78a8"{free}];', f'  P{l} -> C [color="#4a78a8"];']
    return lines


def backward_edges(spec: Spec) -> list[tuple[str, str, int]]:
    """(from, to, naive walks) of the counted backward edges C -> dP^l."""
    n = spec.sizes
    return [("C", f"dP{l}", n[l] * n[l - 1]) for l in range(1, spec.depth + 1)]  # noqa: E741


def to_gradients(spec: Spec, scalar: bool) -> list[str]:
    """dP^l -> the gradients of layer l's weights: one edge per unit (scalar) or per layer."""
    lines = []
    for l in range(1, spec.depth + 1):  # noqa: E741
        if scalar:
            lines += [f'  dP{l} -> grad{l}_{j} [color="#4d8a3a"];' for j in range(spec.sizes[l])]
        else:
            lines.append(f'  dP{l} -> dC_dW{l} [color="#4d8a3a", label="BP4"];')
    return lines


def legend() -> list[str]:
    """The legend's extra entry, placed under the other three."""
    return [
        f'    legend_pen [label="penalty term (BP4 adds it)", {_PENALTY}];',
        "    { rank=same; legend_fwd -> legend_pen [style=invis]; }",
    ]


__all__ = [
    "backward_edges",
    "backward_label",
    "derivative_terms",
    "forward_edges",
    "forward_label",
    "legend",
    "nodes",
    "title",
    "to_gradients",
]
