"""SymPy side of chainrule: spec -> symbolic network -> chain-rule partials.

This package never imports :mod:`codegen`; it hands plain immutable data
(frozen dataclasses holding SymPy expressions) to whoever renders it.
"""

from chainrule.derive.errors import ChainruleError, DerivationError, SpecError
from chainrule.derive.spec import Layer, Spec, load_spec, preset, preset_names

__all__ = [
    "ChainruleError",
    "DerivationError",
    "Layer",
    "Spec",
    "SpecError",
    "load_spec",
    "preset",
    "preset_names",
]
