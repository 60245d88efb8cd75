"""Jinja side of chainrule: derived expressions -> program -> printed NumPy module.

:mod:`derive` hands over frozen SymPy data; this package orders it into a program
of statements, prints each statement with :class:`chainrule.codegen.printer.ChainrulePrinter`
and renders the module through one Jinja environment.
"""

from chainrule.codegen.render import generate_module

__all__ = ["generate_module"]
