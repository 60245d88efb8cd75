"""chainrule: derive backpropagation with SymPy and generate checked NumPy code.

The public face of the two packages underneath: :mod:`derive` (SymPy side) and
:mod:`codegen` (Jinja side).

Examples
--------
>>> import chainrule
>>> spec = chainrule.preset("nielsen")
>>> source = chainrule.generate(spec)
>>> "def loss_and_grad(params, x, y, out=None):" in source
True
"""

from __future__ import annotations

from chainrule.cmd_graph import Graph, build_graph
from chainrule.display import install as _install_display
from chainrule.importers import from_keras, from_torch, params_from_keras, params_from_torch
from codegen.emit import lint_module, write_module
from codegen.render import generate_module
from derive.document import Derivation, derivation
from derive.errors import ChainruleError, CodegenError, DerivationError, SpecError
from derive.layers import derive_network
from derive.spec import Layer, Spec, load_spec, preset, preset_names

__version__ = "0.1.0"

_install_display()


def generate(spec: Spec) -> str:
    """Return the source of the NumPy module computing ``spec``'s gradient."""
    return generate_module(spec)


__all__ = [
    "ChainruleError",
    "CodegenError",
    "DerivationError",
    "Layer",
    "Spec",
    "SpecError",
    "Graph",
    "build_graph",
    "Derivation",
    "derivation",
    "derive_network",
    "from_keras",
    "from_torch",
    "params_from_keras",
    "params_from_torch",
    "generate",
    "lint_module",
    "load_spec",
    "preset",
    "preset_names",
    "write_module",
]
