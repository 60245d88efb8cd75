"""Hostile input to ``derive`` and ``derive --at`` on batch-normalized networks: points
where batch norm magnifies the module's float rounding (every example alike), points
where the module's batch variance overflows, and the text each notation shows."""

from __future__ import annotations

import pytest
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec

import chainrule

#: 1-2-1: a linear batch-normalized layer, a linear output, the quadratic cost.
BN = Spec(1, (Layer(2, "linear", batch_norm=True), Layer(1, "linear")), "quadratic")

PARAMS = {
    "W1": [[0.3], [-0.7]],
    "gamma1": [1.0, 0.5],
    "beta1": [0.0, 0.1],
    "W2": [[0.2, 0.4]],
    "b2": [0.05],
}


def _point(x: list[list[float]], **params: list) -> dict:
    return {
        "x": x,
        "y": [[0.1], [0.2], [0.3]][: len(x)],
        "lr": 0.1,
        "params": {**PARAMS, **params},
    }


def test_every_example_alike_is_worked_out_not_reported_as_a_disagreement() -> None:
    """Every example equal: the variance is 0 and x-hat is 0 exactly in the derivation;
    the module's u - mean rounds to about 1e-17, which 1/sqrt(0 + eps) magnifies 316
    times. That is float rounding, not a disagreement to report."""
    doc = chainrule.derivation(BN, at=_point([[0.5], [0.5], [0.5]]))
    text = doc.to_text()
    assert "unit 1: μ²₁ = 0.15, v²₁ = 0\n" in text
    assert "x̂²₁ = (u²₁ - μ²₁)/(√(v²₁ + ε)) = (0.15 - 0.15)/√(0 + 1e-5) = 0" in text


def test_a_batch_variance_that_overflows_is_named_as_an_overflow() -> None:
    """x of 1e300: the module's batch variance overflows to inf (x-hat then 0, the
    gradient finite but wrong); the error names the overflow and the fix, it does not
    ask to report a disagreement."""
    point = _point([[1e300], [1.5], [-1.0]])
    with pytest.raises(SpecError, match=r"^--at: .*var1\[0, 0\].*overflows.*give smaller"):
        chainrule.derivation(BN, at=point)
