"""Library entry points that are not a stage's own function."""

from __future__ import annotations

from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec, require_spec


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
    require_spec(spec)
    if form == "plain":
        from chainrule.codegen.plain import generate_plain

        return generate_plain(spec)
    if form != "vectorized":
        from chainrule.derive.errors import CodegenError

        raise CodegenError("form", f"unknown form {form!r}", 'use "vectorized" or "plain"')
    return generate_module(spec)


# The worked derivation below keeps its own imports with it, so that it stays one addition.
import dataclasses  # noqa: E402
from typing import Any  # noqa: E402

from chainrule.derive.document.render import Derivation  # noqa: E402


def derivation(spec: Spec, notation: str = "nielsen", at: Any = None) -> Derivation:
    """The step-by-step derivation of ``spec``'s backpropagation, worked out at ``at``.

    Parameters
    ----------
    spec : Spec
        The network.
    notation : str
        ``nielsen`` (default), ``3b1b``, ``cheatsheet`` or ``course``.
    at : mapping or None
        A point, as in a ``--at`` values file: ``x`` (one example as a flat list, or a
        list of examples, one per row), ``y`` likewise, optional ``lr``, and ``params``
        mapping W1, b1, ... to nested lists in the generated module's shapes (a flat
        list for a bias), and ``seed`` when the network has dropout (the masks are the
        module's ``dropout_masks(m, seed)``). With it, every equation is followed by its
        value and a last section works the numbers out unit by unit; every number is
        checked against the generated module's ``loss_and_grad`` first.

    Raises
    ------
    SpecError
        When ``at`` does not fit the network (one line naming the field).
    DerivationError
        When a worked number and the generated module disagree.

    Examples
    --------
    >>> from chainrule.derive.spec import Spec
    >>> s = Spec.from_sizes([1, 1], ["sigmoid"], "quadratic")
    >>> doc = derivation(s, at={"x": [1.0], "y": [0.0], "params": {"W1": [[0.0]], "b1": [0.0]}})
    >>> "a² = 0.5" in doc.to_text()
    True
    """
    from chainrule.derive.document import derivation as symbolic

    require_spec(spec)
    if at is None:
        return symbolic(spec, notation)
    from chainrule.cmd_train import module_from_spec
    from chainrule.derive.document.worked import worked
    from chainrule.derive.values import read_point
    from chainrule.worked_check import check_against_module, with_masks

    point = read_point(spec, at)  # a bad point is refused before any derivation work
    module = module_from_spec(spec)
    point = with_masks(point, module)  # the module's own dropout masks for the seed
    doc = symbolic(spec, notation)
    values = worked(spec, notation, point, doc.sections)
    check_against_module(values, module)
    return dataclasses.replace(doc, worked=dataclasses.replace(values, checked=True))
