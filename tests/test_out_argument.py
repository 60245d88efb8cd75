"""``loss_and_grad(..., out=...)``: every form checks ``out`` before it computes anything.

A missing key, a wrong shape, dtype or memory order, a read-only array or a non-dict
is one ValueError naming the entry; nothing is written into ``out`` then.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
from chainrule.codegen.render import generate_module
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive.spec import Spec

import chainrule

SPEC = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic")


def _source(form: str) -> str:
    if form == "vectorized":
        return generate_module(SPEC)
    if form == "plain":
        return chainrule.generate(SPEC, form="plain")
    return generate_unrolled(SPEC, "cse")


@pytest.fixture(scope="module", params=["vectorized", "plain", "unrolled"])
def net(request: pytest.FixtureRequest, load_source: Callable[[str], ModuleType]) -> ModuleType:
    return load_source(_source(request.param))


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((3, 5)), rng.random((2, 5))


def _zeros(params: dict) -> dict:
    return {key: np.zeros_like(value) for key, value in params.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda out: out.pop("W2"),
            r"^out\['W2'\]: expected a writeable C-contiguous float64 array of shape \(2, 4\); "
            r"got <class 'NoneType'>",
        ),
        (
            lambda out: out.__setitem__("b1", np.zeros((4, 2))),
            r"^out\['b1'\]: .* of shape \(4, 1\); got shape \(4, 2\), dtype float64",
        ),
        (
            lambda out: out.__setitem__("W1", np.zeros((4, 3), np.float32)),
            r"^out\['W1'\]: .*float64.*; got shape \(4, 3\), dtype float32",
        ),
        (
            lambda out: out.__setitem__("W1", np.zeros((4, 3), order="F")),
            r"^out\['W1'\]: expected a writeable C-contiguous",
        ),
        (
            lambda out: out["b2"].setflags(write=False),
            r"^out\['b2'\]: expected a writeable C-contiguous",
        ),
        (lambda out: out.__setitem__("W2", [[0.0] * 4] * 2), r"^out\['W2'\]: .*got <class 'list'>"),
    ],
    ids=["missing", "shape", "dtype", "fortran", "read-only", "list"],
)
def test_a_bad_out_entry_is_named_and_nothing_is_written(
    net: ModuleType, spoil: Callable[[dict], object], message: str
) -> None:
    params = net.init_params(0)
    x, y = _batch()
    out = _zeros(params)
    for value in out.values():
        value.fill(7.0)
    kept = dict(out)
    spoil(out)
    with pytest.raises(ValueError, match=message):
        net.loss_and_grad(params, x, y, out=out)
    untouched = [key for key, value in kept.items() if out.get(key) is value]
    assert len(untouched) >= len(params) - 1
    for key in untouched:
        assert np.all(out[key] == 7.0), f"out[{key!r}] was written before the check"


@pytest.mark.parametrize("out", [[], (), "W1", 0], ids=["list", "tuple", "str", "int"])
def test_out_that_is_not_a_dict_is_named(net: ModuleType, out: object) -> None:
    params = net.init_params(0)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"^out: expected a dict like new_gradient"):
        net.loss_and_grad(params, x, y, out=out)


def test_a_good_out_is_filled_and_returned(net: ModuleType) -> None:
    params = net.init_params(0)
    x, y = _batch()
    out = net.new_gradient()
    cost, grads = net.loss_and_grad(params, x, y, out=out)
    fresh_cost, fresh = net.loss_and_grad(params, x, y)
    assert cost == pytest.approx(fresh_cost, rel=1e-14)
    for key in params:
        assert grads[key] is out[key]
        np.testing.assert_allclose(out[key], fresh[key], rtol=1e-12, atol=1e-15)
