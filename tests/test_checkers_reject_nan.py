"""Every finite-difference checker fails on a NaN or inf, wherever it appears.

A comparison with NaN is False, so a test written ``err > tol`` passes a NaN, and
Python's ``max(worst, nan)`` keeps ``worst``. Each checker of the suite (the oracle's
``fd_failures`` and ``directional_failures``, its ``assert_agrees``, the random
battery's FD ratio and oracle error) and ``chainrule check`` is fed a NaN or inf in the
gradient, the loss and the numeric estimate here, and must fail every time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import oracle
import pytest
import test_random_architectures as battery
from chainrule.derive.spec import Spec
from conftest import import_path

from chainrule.check import check_module

BAD = [float("nan"), float("inf"), float("-inf")]
Params = dict[str, np.ndarray]


def _problem() -> tuple[Callable[[Params], float], Params, Params, float]:
    """C(W) = sum(W^2) / 2 at W = [[1, -2], [0.5, 3]]: gradient W, exactly."""
    params = {"W1": np.array([[1.0, -2.0], [0.5, 3.0]])}

    def loss_fn(p: Params) -> float:
        return float(0.5 * np.sum(np.asarray(p["W1"]) ** 2))

    return loss_fn, params, {"W1": params["W1"].copy()}, loss_fn(params)


def _poisoned_gradient(value: float) -> Params:
    _, params, grads, _ = _problem()
    grads["W1"][1, 0] = value
    return grads


def _poisoned_loss_fn(value: float) -> Callable[[Params], float]:
    """The loss, except that it returns ``value`` once the entry W1[0, 1] moves up."""
    loss_fn, params, _, _ = _problem()
    at = params["W1"][0, 1]
    return lambda p: value if p["W1"][0, 1] > at else loss_fn(p)


def test_the_problem_itself_passes_every_checker() -> None:
    loss_fn, params, grads, cost = _problem()
    assert oracle.fd_failures(loss_fn, params, grads, cost) == []
    rng = np.random.default_rng(0)
    assert oracle.directional_failures(loss_fn, params, grads, cost, rng) == []


@pytest.mark.parametrize("value", BAD)
def test_fd_failures_fails_a_non_finite_gradient(value: float) -> None:
    loss_fn, params, _, cost = _problem()
    failures = oracle.fd_failures(loss_fn, params, _poisoned_gradient(value), cost)
    assert [(k, i) for k, i, _, _ in failures] == [("W1", 2)]


@pytest.mark.parametrize("value", BAD)
def test_fd_failures_fails_a_non_finite_loss(value: float) -> None:
    loss_fn, params, grads, _ = _problem()
    failures = oracle.fd_failures(loss_fn, params, grads, value)
    assert failures and failures[0][0] == "loss"


@pytest.mark.parametrize("value", BAD)
def test_fd_failures_fails_a_non_finite_numeric_estimate(value: float) -> None:
    _, params, grads, cost = _problem()
    failures = oracle.fd_failures(_poisoned_loss_fn(value), params, grads, cost)
    assert ("W1", 1) in [(k, i) for k, i, _, _ in failures]


@pytest.mark.parametrize("value", BAD)
def test_directional_failures_fails_non_finite_values(value: float) -> None:
    loss_fn, params, grads, cost = _problem()
    rng = np.random.default_rng(1)
    assert oracle.directional_failures(loss_fn, params, _poisoned_gradient(value), cost, rng)
    assert oracle.directional_failures(loss_fn, params, grads, value, rng)
    # Every direction moves W1[0, 1] up or down; count enough that some move it up.
    assert oracle.directional_failures(_poisoned_loss_fn(value), params, grads, cost, rng, 8)


@pytest.mark.parametrize("value", BAD)
def test_assert_agrees_fails_non_finite_values_even_on_both_sides(value: float) -> None:
    _, _, grads, cost = _problem()
    bad = _poisoned_gradient(value)
    for got, want in [
        ((cost, bad), (cost, grads)),
        ((cost, bad), (cost, bad)),  # assert_allclose alone calls NaN == NaN equal
        ((value, grads), (value, grads)),
    ]:
        with pytest.raises(AssertionError):
            oracle.assert_agrees(got, want)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("where", ["loss", "gradient", "numeric", "ref_loss", "reference"])
def test_battery_measure_fails_non_finite_values(value: float, where: str) -> None:
    _, _, grads, cost = _problem()
    parts = {
        "loss": cost,
        "gradient": grads,
        "numeric": {k: v.copy() for k, v in grads.items()},
        "ref_loss": cost,
        "reference": {k: v.copy() for k, v in grads.items()},
    }
    case = battery.Case(Spec.from_sizes([2, 2], ["linear"], "quadratic", name="battery"), 1, 0)
    battery.check_outcome(case, battery.measure(*parts.values()))  # the clean one passes
    if where in ("loss", "ref_loss"):
        parts[where] = value
    else:
        parts[where] = _poisoned_gradient(value)
    outcome = battery.measure(*parts.values())
    with pytest.raises(AssertionError):
        battery.check_outcome(case, outcome)


def test_battery_worst_does_not_drop_a_nan() -> None:
    assert battery.worst(np.array([0.5, np.nan, 0.2])) == float("inf")
    assert battery.worst(np.array([0.5, 0.2])) == 0.5
    # The reduction the battery used before: Python's max keeps the first argument.
    assert max(0.0, float("nan")) == 0.0


def _fake_module(
    grad_value: float | None = None, loss_value: float | None = None, at_loss: bool = False
) -> SimpleNamespace:
    """A stand-in for a generated module, C = sum(W1^2) / 2 with data ignored, with a NaN
    or inf planted in the gradient, in the loss (from loss_and_grad) or in ``loss``."""

    def init_params(seed: int) -> Params:
        return {"W1": np.random.default_rng(seed).standard_normal((2, 2))}

    checked_at: list[float] = []  # W1[0, 1] where the gradient was last taken

    def loss(params: Params, x: np.ndarray, y: np.ndarray) -> float:
        if at_loss and checked_at and params["W1"][0, 1] > checked_at[-1]:
            return float("nan")  # the step up of entry W1[0, 1]
        return float(0.5 * np.sum(params["W1"] ** 2))

    def loss_and_grad(params: Params, x: np.ndarray, y: np.ndarray) -> tuple:
        grad = params["W1"].copy()
        if grad_value is not None:
            grad[1, 1] = grad_value
        checked_at.append(float(params["W1"][0, 1]))
        cost = float(0.5 * np.sum(params["W1"] ** 2)) if loss_value is None else loss_value
        return cost, {"W1": grad}

    return SimpleNamespace(
        init_params=init_params,
        loss=loss,
        loss_and_grad=loss_and_grad,
        LAYER_SIZES=(2, 2),
        LAYOUT="columns",
        COST="quadratic",
    )


def test_chainrule_check_passes_the_clean_stand_in() -> None:
    assert check_module(_fake_module()).passed


@pytest.mark.parametrize("value", BAD)
def test_chainrule_check_fails_a_non_finite_gradient(value: float) -> None:
    report = check_module(_fake_module(grad_value=value))
    assert not report.passed
    assert report.worst[0][0] == "W1" and report.worst[0][2] == float("inf")


@pytest.mark.parametrize("value", BAD)
def test_chainrule_check_fails_a_non_finite_loss(value: float) -> None:
    assert not check_module(_fake_module(loss_value=value)).passed


def test_chainrule_check_fails_a_non_finite_numeric_estimate() -> None:
    assert not check_module(_fake_module(at_loss=True)).passed


@pytest.mark.slow
def test_chainrule_check_command_fails_a_module_with_a_nan_gradient(
    tmp_path: Path, run_cli: Callable
) -> None:
    """The case reported from use: ``W1 worst |g - n| = 0.000e+00 ... ok``, exit 0."""
    path = tmp_path / "nan_module.py"
    done = run_cli("generate", "--preset", "3b1b-chain", "-o", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    clean = run_cli("check", str(path), cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # Wrap loss_and_grad so that one entry of dC/dW1 is NaN.
    source = path.read_text(encoding="utf-8")
    path.write_text(
        source
        + "\n\n_real_loss_and_grad = loss_and_grad\n\n\n"
        + "def loss_and_grad(params, x, y):\n"
        + "    cost, grads = _real_loss_and_grad(params, x, y)\n"
        + "    grads = dict(grads)\n"
        + "    grads['W1'] = grads['W1'] * np.array(float('nan'))\n"
        + "    return cost, grads\n",
        encoding="utf-8",
    )
    assert np.isnan(import_path(path).loss_and_grad(*_inputs_for(path))[1]["W1"]).all()
    done = run_cli("check", str(path), cwd=tmp_path)
    assert done.returncode != 0, done.stdout
    w1 = [line for line in done.stdout.splitlines() if line.strip().startswith("W1 ")]
    assert w1 and "FAIL" in w1[0], done.stdout
    assert "gradient check: FAILED" in done.stdout


def _inputs_for(path: Path) -> tuple:
    module = import_path(path)
    params = module.init_params(0)
    x = np.ones((module.LAYER_SIZES[0], 2))
    y = np.full((module.LAYER_SIZES[-1], 2), 0.5)
    return params, x, y
