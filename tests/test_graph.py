"""``chainrule graph``: DOT for every preset, walk counts, and SVG/PNG through Graphviz."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec, preset, preset_names

from chainrule.cli import main
from chainrule.cmd_graph import written_by_chainrule
from chainrule.graph import build_graph, path_counts

HAS_DOT = shutil.which("dot") is not None


def _brute_force_walks(sizes: tuple[int, ...], bias: bool) -> int:
    """Edge traversals of the expanded chain rule, by listing every path from C to a parameter."""
    depth = len(sizes) - 1
    total = 0
    # A parameter of layer l at unit j: paths from C to z^l_j go through one unit of every
    # layer above; each path walks one edge per layer crossed, plus the edge C -> z^L.
    for layer in range(1, depth + 1):
        params_per_unit = sizes[layer - 1] + (1 if bias else 0)
        for _unit in range(sizes[layer]):
            paths = 1
            for above in range(layer + 1, depth + 1):
                paths *= sizes[above]
            edges_per_path = depth - layer + 1
            total += params_per_unit * paths * edges_per_path
    return total


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_has_a_dot_graph(name: str) -> None:
    spec = preset(name)
    graph = build_graph(spec)
    assert graph.dot.startswith("digraph chainrule {") and graph.dot.endswith("}\n")
    assert graph.dot.count("{") == graph.dot.count("}")
    if graph.level == "layer":
        assert "cluster_forward" in graph.dot and "cluster_backward" in graph.dot
    assert "cluster_legend" in graph.dot and "forward value" in graph.dot
    assert "δ" in graph.dot and "#f9b46b" in graph.dot  # the shared terms, highlighted
    bias = spec.layers[0].bias
    assert graph.naive_walks == _brute_force_walks(spec.sizes, bias)
    expected_level = "layer" if name in ("nielsen", "deep-relu-sigmoid") else "scalar"
    assert graph.level == expected_level
    edges = sum(a * b for a, b in zip(spec.sizes[1:], spec.sizes[2:], strict=False))
    assert graph.backprop_walks == spec.sizes[-1] + edges


def test_chain_counts_match_the_hand_count() -> None:
    # 1-1-1-1 with biases: w3,b3 walk C->z3 once each; w2,b2 walk C->z3->z2; w1,b1 all three.
    graph = build_graph(preset("3b1b-chain"))
    assert path_counts(preset("3b1b-chain")) == ([1, 1, 1, 1], [0, 2, 4, 6])
    assert (graph.naive_walks, graph.backprop_walks) == (12, 3)
    assert 'C -> delta3_0 [color="#d62728"' in graph.dot and 'xlabel="×6"' in graph.dot
    assert "delta2_0 -> delta1_0" in graph.dot and 'xlabel="×2"' in graph.dot


def test_scalar_and_layer_levels_can_be_forced() -> None:
    spec = preset("two-layer-nobias")
    scalar = build_graph(spec, "scalar")
    layer = build_graph(spec, "layer")
    assert "z1_4" in scalar.dot and "delta1_4" in scalar.dot
    assert "z1_4" not in layer.dot and "dC_dW1" in layer.dot
    assert scalar.naive_walks == layer.naive_walks == 135
    with pytest.raises(SpecError, match="unreadable"):
        build_graph(preset("nielsen"), "scalar")


def test_user_name_cannot_break_the_dot_text() -> None:
    spec = Spec.from_sizes([2, 2], ["sigmoid"], "quadratic", name='evil"; x -> y; "\\')
    dot = build_graph(spec).dot
    assert 'evil\\"; x -> y; \\"\\\\' in dot
    assert "\n  x -> y" not in dot


def test_cli_writes_dot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "chain.dot"
    assert main(["graph", "--preset", "3b1b-chain", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == build_graph(preset("3b1b-chain")).dot
    assert "naive chain rule walks the backward edges 12 times" in capsys.readouterr().out


def test_cli_prints_dot_without_output(capsys) -> None:
    assert main(["graph", "--preset", "nielsen"]) == 0
    assert capsys.readouterr().out == build_graph(preset("nielsen")).dot


def test_cli_rejects_unknown_picture_type(tmp_path: Path, capsys) -> None:
    assert main(["graph", "--preset", "nielsen", "-o", str(tmp_path / "x.jpg")]) == 2
    assert "'.jpg'" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()


def test_cli_without_dot_writes_dot_and_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", "--preset", "3b1b-chain", "-o", str(tmp_path / "c.svg")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install graphviz" in err
    assert (tmp_path / "c.dot").read_text(encoding="utf-8").startswith("digraph")
    assert not (tmp_path / "c.svg").exists()


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("name", preset_names())
def test_svg_renders_for_every_preset(name: str) -> None:
    svg = build_graph(preset(name)).render("svg").decode("utf-8")
    assert "<svg" in svg and "</svg>" in svg
    assert "δ" in svg and "forward value" in svg


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_cli_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "nielsen.png"
    assert main(["graph", "--preset", "nielsen", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_written_file_has_ordinary_permissions(tmp_path: Path) -> None:
    import os

    out = tmp_path / "g.dot"
    assert main(["graph", "--preset", "cheatsheet-relu", "-o", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_graph_of_an_imported_keras_model(tmp_path: Path, capsys) -> None:
    import json

    model = {
        "class_name": "Sequential",
        "config": {
            "name": "imported",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 2]}},
                {"class_name": "Dense", "config": {"units": 2, "activation": "tanh"}},
                {"class_name": "Dense", "config": {"units": 1, "activation": "sigmoid"}},
            ],
        },
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model), encoding="utf-8")
    argv = ["graph", "--from-keras", str(path), "--cost", "binary-cross-entropy"]
    assert main(argv) == 0
    dot = capsys.readouterr().out
    assert "imported: 2-2-1, binary-cross-entropy (scalar graph)" in dot
    assert "delta1_1" in dot


@pytest.mark.parametrize("suffix", [".dot", ".svg", ".png"])
def test_cli_keeps_a_file_it_did_not_write_unless_forced(
    tmp_path: Path, capsys, suffix: str
) -> None:
    if suffix != ".dot" and not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    out = tmp_path / f"mine{suffix}"
    out.write_bytes(b"a picture of my own\n")
    assert main(["graph", "--preset", "3b1b-chain", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err, err
    assert out.read_bytes() == b"a picture of my own\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # nothing half-written
    assert main(["graph", "--preset", "3b1b-chain", "-o", str(out), "--force"]) == 0
    assert out.read_bytes() != b"a picture of my own\n"


@pytest.mark.parametrize("suffix", [".dot", ".svg", ".png"])
def test_cli_replaces_a_graph_it_wrote(tmp_path: Path, suffix: str) -> None:
    if suffix != ".dot" and not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    out = tmp_path / f"g{suffix}"
    assert main(["graph", "--preset", "3b1b-chain", "-o", str(out)]) == 0
    assert written_by_chainrule(out)
    assert main(["graph", "--preset", "nielsen", "-o", str(out)]) == 0
    assert written_by_chainrule(out)


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_png_mark_is_a_well_formed_text_chunk(tmp_path: Path) -> None:
    import struct
    import zlib

    out = tmp_path / "g.png"
    assert main(["graph", "--preset", "two-layer-nobias", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    assert [k for k, _ in chunks][:2] == [b"IHDR", b"tEXt"] and chunks[-1][0] == b"IEND"
    assert chunks[1][1] == b"Software\x00chainrule"


# ----------------------------------------------------------------------------- layout


def _svg_nodes(svg: str) -> dict[str, tuple[float, float]]:
    """Each node's title -> (x, y) of its first text line in the SVG (y grows downwards)."""
    import re

    pattern = re.compile(
        r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>.*?'
        r'<text text-anchor="middle" x="([-\d.]+)" y="([-\d.]+)"',
        re.DOTALL,
    )
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in pattern.finditer(svg)}


def _svg_width_px(svg: str) -> float:
    import re

    points = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
    return points * 96 / 72  # CSS pixels: 96 per inch, 72 points per inch


def test_every_column_of_units_is_a_top_level_chain_in_index_order() -> None:
    dot = build_graph(preset("two-layer-nobias")).dot
    columns = [line for line in dot.splitlines() if "rank=same" in line and "legend" not in line]
    assert all(line.startswith("  { rank=same;") for line in columns)  # not inside a cluster
    assert "  { rank=same; z1_0 -> z1_1 -> z1_2 -> z1_3 -> z1_4 [style=invis]; }" in columns
    assert "  { rank=same; delta1_0 -> delta1_1 -> delta1_2 -> delta1_3 -> delta1_4" in dot
    assert "cluster_forward" not in dot  # a column inside a cluster is reordered by dot


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("name", ["two-layer-nobias", "3b1b-chain"])
def test_units_are_drawn_in_index_order_top_to_bottom(name: str) -> None:
    spec = preset(name)
    nodes = _svg_nodes(build_graph(spec).render("svg").decode("utf-8"))
    for layer in range(1, spec.depth + 1):
        for prefix in ("z", "a", "delta", "grad"):
            ys = [nodes[f"{prefix}{layer}_{j}"][1] for j in range(spec.sizes[layer])]
            assert ys == sorted(ys) and len(set(ys)) == len(ys), (prefix, layer, ys)
    ys = [nodes[f"x_{k}"][1] for k in range(spec.sizes[0])]
    assert ys == sorted(ys)


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_a_chain_folds_its_backward_pass_and_stays_narrow() -> None:
    """1-1-1-1 was 2,620 px wide (backward pass after the forward one); folded, about 1,540."""
    svg = build_graph(preset("3b1b-chain")).render("svg").decode("utf-8")
    assert _svg_width_px(svg) < 1800
    nodes = _svg_nodes(svg)
    for layer in (1, 2, 3):  # delta^l under the forward pass, right of a^l, left of C
        assert nodes[f"delta{layer}_0"][1] > nodes[f"a{layer}_0"][1]
        assert nodes[f"a{layer}_0"][0] < nodes[f"delta{layer}_0"][0] <= nodes["C"][0]
    wide = build_graph(preset("two-layer-nobias")).render("svg").decode("utf-8")
    assert _svg_width_px(wide) < 1500
