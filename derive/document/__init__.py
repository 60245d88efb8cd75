"""The step-by-step derivation of a network's backpropagation, every line machine-checked.

:func:`derivation` turns a spec into a :class:`Derivation`: seven sections of
:class:`Step` objects (the network, the forward equations, the local partials SymPy
derived, the chain rule written out for one weight per layer and then with the
shared terms named, the source's own general forms (in the notation's source), the
summary for this network in vector form, and the mini-batch form that the
generated module executes line by line). Each step holds the LaTeX it displays and, in
``checks``, the SymPy expressions of every side of the equation it states, on a
*witness* network: the same depth, activations, cost, biases and layout, with each
layer cut to at most :data:`WITNESS_WIDTH` units and every weight, bias, input and
target its own symbol. The per-unit equations do not depend on the width, so the
witness checks them for every width; :func:`check_step` evaluates the sides at
random rational points (derivatives taken by ``sympy.diff`` of the full scalar cost).

A layer with dropout adds its mask D^l (:mod:`chainrule.derive.document.dropout`,
checked with ``sympy.stats``) to the forward equations, and the mask's factor, SymPy's
:func:`~chainrule.derive.layers.dropout_factor`, to that layer's BP2 in every section;
the witness then carries one mask symbol per unit and example, so the deltas that
check BP2 are derivatives of the masked cost.

A network with a batch-normalized layer has three sections: the network, batch norm's
backward pass (in place of the per-example sections, which do not hold when the
examples of a batch are coupled) and the mini-batch section, whose witness batch is
batch-normalized (its L2/L1 term, skips and dropout masks are checked as above).

The document renders to standalone LaTeX (amsmath and xcolor only), to Markdown with
``$$`` blocks, and to plain Unicode text. The network's user-given name never
appears in it; custom activations appear only as SymPy's LaTeX of the parsed
expression.
"""

from __future__ import annotations

import dataclasses
import functools

from chainrule.derive.document.base import SHARED_COLOR
from chainrule.derive.document.batch_norm import batch_norm_section
from chainrule.derive.document.chain import ChainSection
from chainrule.derive.document.dropout import DropoutPieces
from chainrule.derive.document.opening import NetworkSections
from chainrule.derive.document.render import Derivation
from chainrule.derive.document.source import SourceSection
from chainrule.derive.document.steps import Section, Step, check_step, sides_agree
from chainrule.derive.document.summary import SummarySection
from chainrule.derive.document.text import to_unicode
from chainrule.derive.document.vectorized import VectorizedSection
from chainrule.derive.document.witness import WITNESS_BATCH, WITNESS_WIDTH
from chainrule.derive.spec import Spec


class DerivationWriter(
    NetworkSections, ChainSection, SummarySection, SourceSection, VectorizedSection, DropoutPieces
):
    """Writes the seven sections of one derivation (one spec, one notation, one width)."""


@functools.lru_cache(maxsize=64)
def derivation(spec: Spec, notation: str = "nielsen") -> Derivation:
    """The step-by-step derivation of ``spec``'s backpropagation in a notation.

    Parameters
    ----------
    spec : Spec
        The network.
    notation : str
        ``nielsen`` (default), ``3b1b``, ``cheatsheet`` or ``course``.

    Returns
    -------
    Derivation
        Iterable over :class:`Step` objects, each with ``title``, ``latex`` and the
        SymPy ``equality`` (lhs, rhs) it states.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> doc = derivation(preset("3b1b-chain"), "3b1b")
    >>> [s.label for s in doc.vectorized][-2:]
    ['BP4', 'BP3']

    A network with a batch-normalized layer gets the sections that hold for it: the
    network, batch norm's backward pass derived on a batch of symbolic examples
    (:mod:`chainrule.derive.document.batch_norm`, in place of the per-example sections)
    and the mini-batch section, checked on a batch-normalized witness batch.
    """
    # The document is laid out on a one-unit witness (fast at any depth); the sides
    # of each step come from the full witness, built when a check first asks for them.
    sections = _sections(spec, notation, 1)
    lazy = []
    for number, section in enumerate(sections):
        steps = tuple(
            dataclasses.replace(
                step, source=functools.partial(_full_checks, spec, notation, number, index)
            )
            for index, step in enumerate(section.steps)
        )
        lazy.append(dataclasses.replace(section, steps=steps))
    return Derivation(spec, notation, tuple(lazy))


@functools.lru_cache(maxsize=16)
def _sections(spec: Spec, notation: str, width: int) -> tuple[Section, ...]:
    builder = DerivationWriter(spec, notation, width)
    if spec.batch_norm_layers:
        # One example's equations (BP1 to BP4 per example) do not hold when batch norm
        # couples the examples: the batch-norm section takes their place.
        return (builder.network(), batch_norm_section(builder.nota), builder.vectorized())
    return (
        builder.network(),
        builder.forward(),
        builder.local_partials(),
        builder.chain(),
        builder.source_forms(),
        builder.summary(),
        builder.vectorized(),
    )


def _full_checks(spec: Spec, notation: str, section: int, index: int) -> tuple:
    """The checks of one step, on the witness of width :data:`WITNESS_WIDTH`."""
    return _sections(spec, notation, WITNESS_WIDTH)[section].steps[index].checks


__all__ = [
    "SHARED_COLOR",
    "WITNESS_BATCH",
    "WITNESS_WIDTH",
    "Derivation",
    "Section",
    "Step",
    "check_step",
    "derivation",
    "sides_agree",
    "to_unicode",
]
