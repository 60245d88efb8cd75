"""Rich display in Jupyter: specs and derivations as Markdown with LaTeX, graphs as SVG.

:mod:`derive` stays free of display code (and never imports :mod:`codegen` or this
package): :func:`install`, called when :mod:`chainrule` is imported, attaches
``_repr_markdown_`` to :class:`~chainrule.derive.spec.Spec` and
:class:`~chainrule.derive.layers.NetworkDerivation` (and
:class:`chainrule.comparison.Comparison`) unless they already define one. Graph objects
(:class:`chainrule.graph.Graph`) carry their own ``_repr_svg_``.

Examples
--------
>>> from chainrule.derive.spec import preset
>>> print(spec_markdown(preset("3b1b-chain")).splitlines()[0])
**3b1b-chain**: layers 1-1-1-1, cost `squared-error`, columns layout, float64, 6 parameters
"""

from __future__ import annotations

from typing import Any

import sympy as sp

from chainrule.derive import naming
from chainrule.derive.layers import NetworkDerivation, derive_network
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS, COSTS
from chainrule.graph import Graph, build_graph


def _code(text: str) -> str:
    """Inline code that user text cannot break out of (backticks are swapped)."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def _shapes(spec: Spec, layer: int) -> tuple[str, str]:
    n = spec.sizes
    if spec.layout == "columns":
        return f"({n[layer]}, {n[layer - 1]})", f"({n[layer]}, 1)"
    return f"({n[layer - 1]}, {n[layer]})", f"(1, {n[layer]})"


def spec_markdown(spec: Spec) -> str:
    """A spec as Markdown: one line of facts, the layer table and the forward equations."""
    lines = [
        f"**{spec.name.replace('*', '')}**: layers {'-'.join(map(str, spec.sizes))}, cost "
        f"{_code(spec.cost)}, {spec.layout} layout, {spec.dtype}, "
        f"{spec.parameter_count:,} parameters",
        "",
        "| layer | units | activation | bias | W shape | b shape |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| 0 (input x) | {spec.input_size} | | | | |",
    ]
    for layer_number, layer in enumerate(spec.layers, start=1):
        w_shape, b_shape = _shapes(spec, layer_number)
        lines.append(
            f"| {layer_number} | {layer.size} | {_code(layer.activation)} | "
            f"{'yes' if layer.bias else 'no'} | {w_shape} | {b_shape if layer.bias else ''} |"
        )
    z = "W^{l} a^{l-1}" if spec.layout == "columns" else "a^{l-1} W^{l}"
    bias = " + b^{l}" if any(layer.bias for layer in spec.layers) else ""
    cost = COSTS[spec.cost].latex
    lines += [
        "",
        f"$z^{{l}} = {z}{bias}$, $a^{{l}} = \\sigma^{{l}}(z^{{l}})$ for $l = 1..{spec.depth}$, "
        f"$a^{{0}} = x$; per-example cost $\\sum_j {cost}$ with $a = a^{{{spec.depth}}}$, "
        "averaged over the batch.",
    ]
    return "\n".join(lines) + "\n"


def _activation_latex(name: str) -> str:
    row = ACTIVATIONS.get(name)
    return row.latex if row is not None else sp.latex(sp.Symbol(name))


def derivation_markdown(derivation: NetworkDerivation) -> str:
    """What SymPy derived: sigma'(z^l) per layer, and BP1 for the output layer."""
    spec = derivation.spec
    lines = [f"**Derivation of {spec.name.replace('*', '')}** (SymPy)", ""]
    for layer_number, act in enumerate(derivation.activations, start=1):
        name = spec.layers[layer_number - 1].activation
        if act is None:
            lines.append(f"- layer {layer_number}: softmax, handled in BP1")
            continue
        label = naming.latex(naming.sigma_prime(layer_number))
        known = f"${_activation_latex(name)}$" if name in ACTIVATIONS else _code(name)
        line = f"- layer {layer_number}: {known}; ${label} = {sp.latex(act.derivative)}$"
        if act.cached != act.derivative:
            line += f", computed from the cached output as ${sp.latex(act.cached)}$"
        lines.append(line)
    out = derivation.output
    delta = naming.latex(naming.delta(spec.depth))
    if out.delta is not None:
        lines.append(f"- BP1: ${delta} = {sp.latex(out.delta)}$")
    else:
        lines.append(f"- BP1: ${delta}$ is the softmax Jacobian-vector product")
    for assumption in derivation.assumptions:
        lines.append(f"- assumption: {assumption}")
    return "\n".join(lines) + "\n"


def show_graph(spec: Spec, level: str = "auto") -> Graph:
    """The computation graph of ``spec``; in Jupyter it displays as SVG (Graphviz's dot)."""
    return build_graph(spec, level)


def derivation(spec: Spec) -> NetworkDerivation:
    """``derive_network(spec)``, which displays as Markdown in Jupyter."""
    return derive_network(spec)


def install() -> None:
    """Attach the Markdown displays to Spec and NetworkDerivation (never replacing one)."""
    from chainrule.comparison import Comparison, render_comparison

    pairs: tuple[tuple[type, Any], ...] = (
        (Spec, spec_markdown),
        (NetworkDerivation, derivation_markdown),
        (Comparison, render_comparison),  # the table of ``chainrule compare``, in Markdown
    )
    for cls, function in pairs:
        if "_repr_markdown_" not in vars(cls):
            cls._repr_markdown_ = function  # type: ignore[attr-defined]
