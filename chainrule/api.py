"""Library entry points that are not a stage's own function."""

from __future__ import annotations

from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec


def generate(spec: Spec, form: str = "vectorized") -> str:
    """Return the source of the NumPy module computing ``spec``'s gradient.

    ``form`` is ``"vectorized"`` (work buffers, the default) or ``"plain"`` (one readable
    NumPy statement per equation); both have the same functions and checks.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> "def loss_and_grad(" in generate(preset("3b1b-chain"))
    True
    >>> "z1 = W1 @ a0 + b1" in generate(preset("nielsen"), form="plain")
    True
    """
    if form == "plain":
        from chainrule.codegen.plain import generate_plain

        return generate_plain(spec)
    if form != "vectorized":
        from chainrule.derive.errors import CodegenError

        raise CodegenError("form", f"unknown form {form!r}", 'use "vectorized" or "plain"')
    return generate_module(spec)
