"""Temporaries of different statements get different names and correctly shaped buffers."""

from __future__ import annotations

import pytest
from chainrule.codegen.program import build_program
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Spec

SPECS = [
    Spec.from_sizes([3, 5, 2], ["x*sigmoid(x)", "elu"], "huber", layout=layout)
    for layout in ("columns", "rows")
] + [Spec.from_sizes([3, 5, 4, 2], ["x*sigmoid(x)", "x*tanh(x)", "selu"], "huber")]


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{'-'.join(s.activations)}-{s.layout}")
def test_each_temporary_is_issued_once(spec: Spec) -> None:
    program = build_program(derive_network(spec))
    statements = [*program.forward, program.cost, *program.backward]
    temps = [s.target for s in statements if s.source is None]
    assert len(temps) >= 2
    assert len(temps) == len(set(temps)), temps
    names = [name for name, *_ in program.buffers]
    assert len(names) == len(set(names)), names
