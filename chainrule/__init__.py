"""chainrule: derive backpropagation with SymPy and generate checked NumPy code.

The public face of the two packages underneath: :mod:`chainrule.derive` (SymPy side)
and :mod:`chainrule.codegen` (Jinja side). Names are imported on first use, so that
``chainrule --version`` and ``--help`` start without loading SymPy.

Examples
--------
>>> import chainrule
>>> spec = chainrule.preset("nielsen")
>>> source = chainrule.generate(spec)
>>> "def loss_and_grad(params, x, y, out=None, seed=None):" in source
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC: dict[str, str] = {
    "ChainruleError": "chainrule.derive.errors",
    "CodegenError": "chainrule.derive.errors",
    "DerivationError": "chainrule.derive.errors",
    "SpecError": "chainrule.derive.errors",
    "Layer": "chainrule.derive.spec",
    "Spec": "chainrule.derive.spec",
    "load_spec": "chainrule.derive.spec",
    "preset": "chainrule.derive.spec",
    "preset_names": "chainrule.derive.spec",
    "derive_network": "chainrule.derive.layers",
    "Derivation": "chainrule.derive.document",
    "derivation": "chainrule.api",
    "Graph": "chainrule.graph",
    "build_graph": "chainrule.graph",
    "Comparison": "chainrule.comparison",
    "compare_spec": "chainrule.comparison",
    "from_keras": "chainrule.importers",
    "from_torch": "chainrule.importers",
    "params_from_keras": "chainrule.importers",
    "params_from_torch": "chainrule.importers",
    "lint_module": "chainrule.codegen.emit",
    "write_module": "chainrule.codegen.emit",
    "load_module": "chainrule.loader",
    "generate": "chainrule.api",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    """Import a public name on first use (and attach the Jupyter displays once)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'chainrule' has no attribute {name!r}")
    from chainrule.display import install

    install()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API only."""
    return [*__all__, "__version__"]
