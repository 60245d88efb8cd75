"""A module's KINK_LAYERS come from the activation rows' kinks, not from a guess."""

from __future__ import annotations

import pytest
from chainrule.codegen.program import build_program
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS


@pytest.mark.parametrize("name", [n for n, row in ACTIVATIONS.items() if row.expr is not None])
def test_kink_layers_follow_the_row(name: str) -> None:
    program = build_program(
        derive_network(Spec.from_sizes([2, 3, 2], [name, "linear"], "quadratic"))
    )
    assert (1 in program.kink_layers) == bool(ACTIVATIONS[name].kinks)


def test_elu_is_smooth_where_relu_is_not() -> None:
    # elu (alpha 1) has a continuous derivative; its SymPy derivative is still piecewise.
    program = build_program(
        derive_network(Spec.from_sizes([2, 3, 2], ["elu", "relu"], "quadratic"))
    )
    assert program.kink_layers == (2,)


def test_an_expression_activation_with_max_is_taken_as_kinked() -> None:
    spec = Spec.from_sizes([2, 3, 2], ["max(x, 0) + x/2", "linear"], "quadratic")
    assert build_program(derive_network(spec)).kink_layers == (1,)
