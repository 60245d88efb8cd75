"""Dropout layers in an imported model: each sets the drop probability of the layer before.

A Keras ``Dropout(rate)`` or a PyTorch ``nn.Dropout(p)`` placed after a Dense (Linear)
layer and its activation becomes that layer's ``dropout``. Anything chainrule would
compute differently is refused with one line naming the layer: a Dropout before any
Dense layer, two in a row, one after the output layer, an activation after a Dropout
(chainrule masks the activation's output), a batch normalization after a Dropout,
and a rate outside [0, 1). A Dropout on a batch-normalized layer is refused by the spec.
"""

from __future__ import annotations

import math
from typing import Any

from chainrule.derive.errors import SpecError


class DropoutSlots:
    """The drop probability of each imported layer, filled as the model's layers are read."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.last_dropout = ""  # where the last layer's Dropout was read, if it has one

    def layer(self) -> None:
        """A Dense (Linear) layer starts: no dropout yet."""
        self.rates.append(0.0)
        self.last_dropout = ""

    def dropout(self, rate: Any, where: str, field: str) -> None:
        """A Dropout layer read at ``where`` with drop probability ``rate`` (key ``field``)."""
        if not self.rates:
            raise SpecError(where, "a Dropout before any Dense layer", "start with a Dense layer")
        if self.last_dropout:
            raise SpecError(
                where, f"a second Dropout after {self.last_dropout}", "keep one Dropout per layer"
            )
        number = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not (number and math.isfinite(rate) and 0 <= rate < 1):
            raise SpecError(
                f"{where}.{field}", f"expected a number in [0, 1), got {rate!r}", "give 0.2, say"
            )
        self.rates[-1] = float(rate)
        self.last_dropout = where

    def activation(self, where: str) -> None:
        """An activation layer: refused right after a Dropout."""
        if self.last_dropout:
            raise SpecError(
                where,
                f"an activation after {self.last_dropout}",
                "put the Dropout after the activation (chainrule drops the activation's output)",
            )

    def normalization(self, where: str) -> None:
        """A batch-normalization layer: refused right after a Dropout."""
        if self.last_dropout:
            raise SpecError(
                where,
                f"a batch normalization after {self.last_dropout}",
                "put the Dropout after the layer's activation, or remove it",
            )

    def finish(self) -> list[float]:
        """The rates, one per layer; a Dropout after the output layer is refused."""
        if self.last_dropout:
            raise SpecError(
                self.last_dropout,
                "a Dropout after the output layer",
                "remove it: dropout applies to hidden layers only",
            )
        return self.rates
