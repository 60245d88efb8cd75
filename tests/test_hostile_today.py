"""Hostile checks of the latest changes: loss_and_grad's ``out`` argument against arrays
and dicts that misreport themselves, and the batch-norm derivation's letters."""

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


@pytest.fixture(scope="module", params=["vectorized", "plain", "unrolled"])
def net(request: pytest.FixtureRequest, load_source: Callable[[str], ModuleType]) -> ModuleType:
    if request.param == "vectorized":
        source = generate_module(SPEC)
    elif request.param == "plain":
        source = chainrule.generate(SPEC, form="plain")
    else:
        source = generate_unrolled(SPEC, "cse")
    return load_source(source)


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.standard_normal((3, 5)), rng.random((2, 5))


class _NoBase(np.ndarray):
    """A view whose ``base`` says None, as an array that owns its memory would."""

    @property
    def base(self) -> None:  # type: ignore[override]
        return None


def test_a_view_of_a_parameter_that_hides_its_base_is_refused(net: ModuleType) -> None:
    """out['W1'] a view of params['W1'] whose class reports base None: trusting base, the
    check skipped the bounds test, and the gradient was written over the weights it
    still read (a wrong gradient, the parameters overwritten)."""
    params = net.init_params(0)
    before = {key: value.copy() for key, value in params.items()}
    x, y = _batch()
    out = {key: np.zeros_like(value) for key, value in params.items()}
    out["W1"] = params["W1"].view(_NoBase)
    assert out["W1"].base is None
    with pytest.raises(ValueError, match=r"^out\['W1'\]: shares memory with a parameter"):
        net.loss_and_grad(params, x, y, out=out)
    assert all(np.array_equal(params[key], before[key]) for key in params)


def test_an_x_that_hides_its_base_is_still_bounds_tested(net: ModuleType) -> None:
    """x a view of out['W2']'s memory whose class reports base None: the check compared
    an owning out array only with the arrays that said they were views."""
    params = net.init_params(0)
    _, y = _batch()
    out = net.new_gradient()
    x = np.lib.stride_tricks.as_strided(out["W2"], (3, 5), (8, 8)).view(_NoBase)
    with pytest.raises(ValueError, match=r"^out\['W2'\]: shares memory with a parameter"):
        net.loss_and_grad(params, x, y, out=out)


class _Dodgy(dict):
    """A dict whose [] gives the parameters while get gives the arrays of its own."""

    def __init__(self, params: dict, own: dict) -> None:
        super().__init__(own)
        self.params = params

    def __getitem__(self, key: str) -> np.ndarray:
        return self.params[key]


def test_the_arrays_checked_are_the_arrays_written(net: ModuleType) -> None:
    """A dict subclass whose get and [] disagree: the check read get (fresh arrays) and
    the gradient was written through [] (the parameters). The arrays written and returned
    are the ones the check passed."""
    params = net.init_params(0)
    before = {key: value.copy() for key, value in params.items()}
    x, y = _batch()
    expected = net.loss_and_grad(params, x, y)[1]
    own = {key: np.zeros_like(value) for key, value in params.items()}
    _, grads = net.loss_and_grad(params, x, y, out=_Dodgy(params, own))
    assert all(np.array_equal(params[key], before[key]) for key in params)
    for key in params:
        assert grads[key] is own[key]
        np.testing.assert_allclose(own[key], expected[key], rtol=1e-12, atol=1e-15)
