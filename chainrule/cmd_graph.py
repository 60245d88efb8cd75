"""``chainrule graph``: draw a network's computation graph (DOT, SVG or PNG) to a file.

The graph itself is built by :mod:`chainrule.graph`; this module writes it, through the
one atomic writer, replacing only files chainrule wrote unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from chainrule.cliargs import add_spec_arguments, spec_from_args
from chainrule.codegen.emit import write_file
from chainrule.comparison_batch import add_batch_argument, check_batch
from chainrule.derive.errors import SpecError
from chainrule.graph import FORMATS, build_graph
from chainrule.outfiles import PNG_MARK, PNG_SIGNATURE, mark_png


def written_by_chainrule(path: Path) -> bool:
    """True when ``path`` is a DOT, SVG or PNG file that ``chainrule graph`` wrote."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return (
        head.startswith(b"digraph chainrule {")
        or b"<!-- Title: chainrule " in head
        or (head.startswith(PNG_SIGNATURE) and PNG_MARK in head[:200])
    )


def _write_atomic(path: Path, data: bytes, force: bool) -> None:
    # A file chainrule did not write (no mark) is replaced only with --force.
    write_file(path, data, force=force, ours=written_by_chainrule)


def cmd_graph(args: argparse.Namespace) -> int:
    """Write the graph as DOT, SVG or PNG (DOT text on standard output without -o)."""
    spec = spec_from_args(args)
    check_batch(spec, args.batch, "--batch")  # refused, naming the flag, without batch norm
    graph = build_graph(spec, args.level, args.batch)
    if args.output is None:
        sys.stdout.write(graph.dot)
        return 0
    path = Path(args.output)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise SpecError(
            "output", f"unknown picture type {path.suffix!r}", "end -o with .dot, .svg or .png"
        )
    if not path.parent.is_dir():
        raise SpecError("output", f"folder {str(path.parent)!r} does not exist", "create it first")
    summary = (
        f"{graph.level} graph; naive chain rule walks the backward edges "
        f"{graph.naive_walks:,} times, backpropagation {graph.backprop_walks:,}"
    )
    if fmt != "dot" and shutil.which("dot") is None:
        fallback = path.with_suffix(".dot")
        _write_atomic(fallback, graph.dot.encode("utf-8"), args.force)
        print(
            f"chainrule: Graphviz 'dot' is not installed, so wrote {fallback} instead of {path}; "
            f"install it (apt-get install graphviz) and run: dot -T{fmt} {fallback} -o {path}",
            file=sys.stderr,
        )
        return 0
    data = graph.dot.encode("utf-8") if fmt == "dot" else graph.render(fmt)
    if fmt == "png":
        data = mark_png(data)
    _write_atomic(path, data, args.force)
    print(f"wrote {path} ({summary})")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule graph``."""
    parser.description = (
        "Draw a network's computation graph: forward nodes, backward nodes, the "
        "shared terms delta highlighted, and on each backward edge how many times the naive "
        "chain rule walks it (red when more than once) against once for backpropagation."
    )
    parser.epilog = (
        "examples:\n"
        "  chainrule graph --preset 3b1b-chain -o chain.svg\n"
        "  chainrule graph --preset nielsen -o nielsen.png\n"
        "  chainrule graph net.toml --level layer > net.dot\n\n"
        "SVG and PNG need Graphviz's 'dot' (apt-get install graphviz); without it the DOT\n"
        "file is written instead, with a message saying how to render it."
    )
    add_spec_arguments(parser)
    add_batch_argument(parser)
    parser.add_argument("-o", "--output", help="FILE.dot, FILE.svg or FILE.png (default: DOT text)")
    parser.add_argument(
        "--level",
        choices=("auto", "scalar", "layer"),
        default="auto",
        help="scalar: one node per unit; layer: one node per vector, or per matrix of the "
        "batch with batch norm (default: by size)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing file not written by chainrule"
    )
    parser.set_defaults(func=cmd_graph)
