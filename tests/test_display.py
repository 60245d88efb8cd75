"""Jupyter displays: Markdown for specs and derivations, SVG for graphs."""

from __future__ import annotations

import shutil

import pytest
from chainrule.derive.spec import Spec

import chainrule


def test_spec_displays_its_layer_table() -> None:
    text = chainrule.preset("cheatsheet-relu")._repr_markdown_()
    assert text.splitlines()[0] == (
        "**cheatsheet-relu**: layers 1-1-1, cost `quadratic`, rows layout, float64, 2 parameters"
    )
    assert "| 1 | 1 | `relu` | no | (1, 1) |  |" in text
    assert "$z^{l} = a^{l-1} W^{l}$" in text  # rows layout: Z = XW


def test_user_text_cannot_break_the_markdown() -> None:
    spec = Spec.from_sizes([2, 2], ["tanh"], "quadratic")
    spec = spec.replace(name="**bold** `code`")
    first = spec._repr_markdown_().splitlines()[0]
    assert first.startswith("**bold `code`**")


def test_derivation_displays_sympy_results() -> None:
    text = chainrule.derive_network(chainrule.preset("deep-relu-sigmoid"))._repr_markdown_()
    assert r"$\delta^{4} = a - y$" in text  # sigmoid + binary cross-entropy, simplified
    assert r"computed from the cached output as $a \left(1 - a\right)$" in text


def test_graph_prefers_svg_when_dot_is_installed(monkeypatch) -> None:
    graph = chainrule.build_graph(chainrule.preset("3b1b-chain"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert graph._repr_svg_() is None
    markdown = graph._repr_markdown_()
    assert "12 times" in markdown and "```dot\ndigraph" in markdown


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_svg_in_jupyter() -> None:
    graph = chainrule.build_graph(chainrule.preset("3b1b-chain"))
    assert graph._repr_markdown_() is None
    assert "<svg" in graph._repr_svg_()


def test_comparison_displays_its_table() -> None:
    from chainrule.comparison import compare_spec, render_comparison

    result = compare_spec(chainrule.preset("3b1b-chain"))
    text = result._repr_markdown_()
    assert text == render_comparison(result)
    assert text.startswith("network 1-1-1-1 (sigmoid, sigmoid, sigmoid; squared-error cost)")
