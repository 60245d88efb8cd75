"""sgd_step and train refuse a learning rate, epoch count or batch size that is not one.

Before, sgd_step(lr=nan) filled the parameters with NaN, train(epochs=-3) returned [],
batch_size=True was taken as 1 and a NumPy integer batch size was refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive.spec import Spec, preset


@pytest.fixture(scope="module")
def modules(build, load_source):
    return {
        "vectorized": build(Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic")),
        "unrolled": load_source(generate_unrolled(preset("3b1b-chain"), "backprop")),
    }


def _batch(module, rng):
    params = module.init_params(rng)
    n_in, n_out = module.LAYER_SIZES[0], module.LAYER_SIZES[-1]
    return params, rng.random((n_in, 4)), rng.random((n_out, 4))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "unrolled"])
@pytest.mark.parametrize("lr", [float("nan"), float("inf"), np.ones(3), True, "0.1", None])
def test_sgd_step_refuses_a_learning_rate_that_is_not_one_number(modules, form, lr):
    module = modules[form]
    params, x, y = _batch(module, np.random.default_rng(0))
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ValueError, match="^lr: expected a finite real number"):
        module.sgd_step(params, x, y, lr)
    assert all(np.array_equal(before[k], params[k]) for k in params)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "unrolled"])
@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("epochs", {"epochs": -3}),
        ("epochs", {"epochs": 1.5}),
        ("batch_size", {"batch_size": True}),
        ("batch_size", {"batch_size": 0}),
        ("batch_size", {"batch_size": 2.0}),
        ("lr", {"lr": float("nan")}),
    ],
)
def test_train_refuses_bad_counts(modules, form, field, kwargs):
    module = modules[form]
    params, x, y = _batch(module, np.random.default_rng(1))
    args = {"epochs": 1, "batch_size": 2, "lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        module.train(params, x, y, **args)


@pytest.mark.parametrize("form", ["vectorized", "unrolled"])
def test_train_takes_numpy_numbers(modules, form):
    module = modules[form]
    params, x, y = _batch(module, np.random.default_rng(2))
    history = module.train(
        params, x, y, epochs=np.int64(2), batch_size=np.int32(2), lr=np.float32(0.1)
    )
    assert len(history) == 2 and all(np.isfinite(history))
