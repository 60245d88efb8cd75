"""A negated term is written with a minus sign, never as '+ -', in every derivation."""

from __future__ import annotations

import pytest
from chainrule.derive.document import derivation
from chainrule.derive.spec import Spec


@pytest.mark.slow
@pytest.mark.parametrize("cost", ["cross-entropy", "binary-cross-entropy"])
@pytest.mark.parametrize("notation", ["nielsen", "3b1b", "cheatsheet"])
def test_softmax_derivation_has_no_plus_minus(cost: str, notation: str) -> None:
    doc = derivation(Spec.from_sizes([2, 3, 3], ["sigmoid", "softmax"], cost), notation)
    assert "+ -" not in doc.to_text()
    assert "+ -" not in doc.to_latex()
