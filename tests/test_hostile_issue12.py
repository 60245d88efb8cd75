"""Hostile input to the L2/L1 penalty, the optimizers and residual connections.

Each test here failed before its fix: a Keras regularizer read differently from Keras,
and optimizer state or counts that ``train`` took and then misused.
"""

from __future__ import annotations

import pytest
from chainrule.derive.errors import SpecError


def _keras_model(reg: object) -> dict:
    """A Keras 3 style Sequential 3-4-2 (relu, softmax), ``reg`` on both Dense layers."""
    dense = [
        {
            "class_name": "Dense",
            "config": {"name": f"d{i}", "units": u, "activation": a, "kernel_regularizer": reg},
        }
        for i, (u, a) in enumerate(((4, "relu"), (2, "softmax")))
    ]
    layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}}, *dense]
    return {"class_name": "Sequential", "config": {"name": "reg", "layers": layers}}


@pytest.mark.parametrize(
    "kind, l2, l1",
    [("L2", 0.02, 0.0), ("L1", 0.0, 0.01), ("L1L2", 0.0, 0.0)],
)
def test_keras_regularizer_without_coefficient_takes_keras_default(kind, l2, l1) -> None:
    """Keras reads ``L2()`` as l2 = 0.01 and ``L1()`` as l1 = 0.01 (L1L2's are 0):
    a config without the coefficient is that default, not no penalty."""
    from chainrule.importers import spec_from_keras

    spec = spec_from_keras(_keras_model({"class_name": kind, "config": {}}), "cross-entropy")
    assert (spec.l2, spec.l1) == (l2, l1)


@pytest.mark.parametrize(
    "config, field, words",
    [
        ({"l1": 0.5}, "kernel_regularizer.config", "no setting 'l1'"),  # L2 has no l1
        ({"l2": 0.01, "extra": 5}, "kernel_regularizer.config", "no setting 'extra'"),
        ({"l2": -0.01}, "kernel_regularizer.l2", "-0.01 is out of range"),
        ({"l2": 600000}, "kernel_regularizer.l2", "600000 is out of range"),
        ({"l2": float("nan")}, "kernel_regularizer.l2", "nan is out of range"),
        ({"l2": 10**400}, "kernel_regularizer.l2", "out of range"),
    ],
)
def test_keras_regularizer_bad_settings_name_the_keras_field(config, field, words) -> None:
    """Keras refuses a setting its class lacks and a negative coefficient; the error
    names the Keras field and the value as written (not chainrule's doubled l2)."""
    from chainrule.importers import spec_from_keras

    with pytest.raises(SpecError) as caught:
        spec_from_keras(_keras_model({"class_name": "L2", "config": config}), "cross-entropy")
    text = str(caught.value)
    assert field in text and words in text
    assert "(0.01" not in text and "\n" not in text


def test_keras_regularizer_largest_coefficient_is_accepted() -> None:
    """The top of the range the error gives (Keras l2 500000, chainrule's 1e6) works."""
    from chainrule.importers import spec_from_keras

    model = _keras_model({"class_name": "L2", "config": {"l2": 500000}})
    assert spec_from_keras(model, "cross-entropy").l2 == 1e6
