"""Library entry points that are not a stage's own function."""

from __future__ import annotations

from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec


def generate(spec: Spec) -> str:
    """Return the source of the NumPy module computing ``spec``'s gradient.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> "def loss_and_grad(" in generate(preset("3b1b-chain"))
    True
    """
    return generate_module(spec)
