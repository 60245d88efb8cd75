"""``--dropout P1,P2,...``: each layer's drop probability from the command line.

The flag gives one number per layer (the output layer's must be 0), like
``--activations``, and applies to any spec (a file, ``--preset``, the one-liner or an
import), replacing each layer's ``dropout``. The spec checks the values; an error
names the flag and the item.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

from chainrule.cliargs import _ascii_float, _Once, split_top_level
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec

_FIX = "give one drop probability in [0, 1) per layer, e.g. --dropout 0.2,0"


def add_dropout_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--dropout`` to a command that takes a spec."""
    parser.add_argument(
        "--dropout",
        action=_Once,
        metavar="P1,P2,...",
        help="inverted dropout p per layer in training, 0 for none (the output's must be 0)",
    )


def with_dropout(spec: Spec, text: str | None) -> Spec:
    """``spec`` with the layers' dropout from ``--dropout`` text (unchanged when None).

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> with_dropout(preset("nielsen"), "0.5,0").dropout_layers
    {1: 0.5}
    """
    if text is None:
        return spec
    items = split_top_level(text)
    if len(items) != spec.depth:
        raise SpecError("--dropout", f"{len(items)} value(s) for {spec.depth} layer(s)", _FIX)
    rates = [
        _ascii_float(item, f"--dropout item {i}", _FIX, signed=True)
        for i, item in enumerate(items, start=1)
    ]
    layers = tuple(
        dataclasses.replace(layer, dropout=p) for layer, p in zip(spec.layers, rates, strict=True)
    )
    try:
        return spec.replace(layers=layers)
    except SpecError as exc:
        found = re.fullmatch(r"layers\[(\d+)\]\.dropout", exc.field)
        if found is None:
            raise
        raise SpecError(f"--dropout item {int(found.group(1)) + 1}", exc.message, exc.fix) from None
