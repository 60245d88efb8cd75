"""Dropout and batch normalization in one network, on different layers.

The gradient is checked by central differences of ``loss`` with a fixed seed and against
PyTorch autograd (float64) on the module's own masks (``dropout_masks``); the running
statistics the vectorized sgd_step keeps are checked against the masked network computed
in NumPy (the plain form refuses ``state`` with dropout).
Dropout on a batch-normalized layer is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
from chainrule.codegen.emit import lint_module
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec

SEED = 5
M = 6


def _spec(layout: str) -> Spec:
    """Dropout before and after a batch-normalized layer."""
    layers = (
        Layer(5, "tanh", dropout=0.3),
        Layer(4, "sigmoid", batch_norm=True),
        Layer(4, "tanh", dropout=0.25),
        Layer(3, "softmax"),
    )
    return Spec(3, layers, "cross-entropy", layout=layout)


@pytest.fixture(scope="module")
def make(load_source: Callable[[str], ModuleType]) -> Callable[[str, str], ModuleType]:
    cache: dict[tuple[str, str], ModuleType] = {}

    def get(form: str, layout: str) -> ModuleType:
        if (form, layout) not in cache:
            spec = _spec(layout)
            source = generate_plain(spec) if form == "plain" else generate_module(spec)
            lint_module(source)
            cache[form, layout] = load_source(source)
        return cache[form, layout]

    return get


def _problem(module: ModuleType) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters with gamma and beta off 1 and 0, x and one-hot y in the layout."""
    rng = np.random.default_rng(2)
    params = module.init_params(3)
    params["gamma2"] = params["gamma2"] + 0.5 * rng.standard_normal(params["gamma2"].shape)
    params["beta2"] = params["beta2"] + 0.5 * rng.standard_normal(params["beta2"].shape)
    x = rng.standard_normal((M, 3))
    y = np.eye(3)[rng.integers(0, 3, M)]
    if module.LAYOUT == "columns":
        return params, x.T.copy(), y.T.copy()
    return params, x, y


def _rows(module: ModuleType, value: np.ndarray) -> np.ndarray:
    """A per-example array or a per-unit vector with the examples (if any) on axis 0."""
    return value if module.LAYOUT == "rows" else value.T


def _numpy_forward(module: ModuleType, params: dict, x: np.ndarray, masks: dict) -> dict:
    """The masked network in NumPy, examples on axis 0: u2 of the normalized layer and
    the output's logits z4."""
    w = {k: _rows(module, v) for k, v in params.items()}  # W as (n_in, n_out) in rows
    a1 = np.tanh(_rows(module, x) @ w["W1"] + w["b1"]) * _rows(module, masks["D1"])
    u2 = a1 @ w["W2"]
    xhat = (u2 - u2.mean(0)) / np.sqrt(u2.var(0) + 1e-5)
    a2 = 1 / (1 + np.exp(-(w["gamma2"] * xhat + w["beta2"])))
    a3 = np.tanh(a2 @ w["W3"] + w["b3"]) * _rows(module, masks["D3"])
    return {"u2": u2, "z4": a3 @ w["W4"] + w["b4"]}


def _torch_loss_and_grad(module: ModuleType, params: dict, x, y, masks: dict) -> tuple:
    torch = pytest.importorskip("torch")
    t = {k: torch.tensor(_rows(module, v), requires_grad=True) for k, v in params.items()}
    d1, d3 = (torch.tensor(_rows(module, masks[k])) for k in ("D1", "D3"))
    a1 = torch.tanh(torch.tensor(_rows(module, x)) @ t["W1"] + t["b1"]) * d1
    z2 = torch.nn.functional.batch_norm(
        a1 @ t["W2"], None, None, t["gamma2"].reshape(-1), t["beta2"].reshape(-1), True, 0.0, 1e-5
    )
    a3 = torch.tanh(torch.sigmoid(z2) @ t["W3"] + t["b3"]) * d3
    logp = torch.log_softmax(a3 @ t["W4"] + t["b4"], dim=1)
    cost = -(torch.tensor(_rows(module, y)) * logp).sum() / M
    cost.backward()
    return float(cost.detach()), {k: _rows(module, v.grad.numpy()) for k, v in t.items()}


CASES = [
    ("vectorized", "columns"),
    ("plain", "rows"),
    pytest.param("vectorized", "rows", marks=pytest.mark.slow),
    pytest.param("plain", "columns", marks=pytest.mark.slow),
]


@pytest.mark.slow
@pytest.mark.parametrize(("form", "layout"), CASES)
def test_gradient_by_central_differences_and_torch_with_the_masks(make, form, layout) -> None:
    module = make(form, layout)
    params, x, y = _problem(module)
    cost, grads = module.loss_and_grad(params, x, y, seed=SEED)
    assert module.loss(params, x, y, seed=SEED) == cost
    # central differences of loss with the same seed, on every entry
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            h = 1e-5
            value[index] = old + h
            up = module.loss(params, x, y, seed=SEED)
            value[index] = old - h
            down = module.loss(params, x, y, seed=SEED)
            value[index] = old
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)
    masks = module.dropout_masks(M, SEED)
    assert set(masks) == {"D1", "D3"}
    assert 0 < np.mean(masks["D1"] == 0) < 1
    torch_cost, torch_grads = _torch_loss_and_grad(module, params, x, y, masks)
    assert abs(cost - torch_cost) <= 1e-12 * abs(torch_cost)
    for key, grad in torch_grads.items():
        np.testing.assert_allclose(grads[key], grad, rtol=1e-9, atol=1e-13, err_msg=key)
    # another seed is another network
    assert module.loss(params, x, y, seed=SEED + 1) != cost


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_running_statistics_are_those_of_the_masked_step(make, layout) -> None:
    module = make("vectorized", layout)
    params, x, y = _problem(module)
    u2 = _numpy_forward(module, params, x, module.dropout_masks(M, SEED))["u2"]
    unmasked = _numpy_forward(module, params, x, {"D1": np.ones(1), "D3": np.ones(1)})["u2"]
    assert not np.allclose(u2.mean(0), unmasked.mean(0))
    state = module.init_state()
    module.sgd_step(params, x, y, 0.1, seed=SEED, state=state)
    np.testing.assert_allclose(_rows(module, state["running_mean2"])[0], 0.1 * u2.mean(0))
    expected_var = 0.9 + 0.1 * u2.var(0, ddof=1)
    np.testing.assert_allclose(_rows(module, state["running_var2"])[0], expected_var)


@pytest.mark.parametrize("seed", [SEED, "generator", None], ids=["int", "generator", "none"])
def test_plain_form_keeps_the_running_statistics_of_the_masked_step(make, seed) -> None:
    """The plain form's statistics pass and its step draw the same masks (the generator's
    state is put back in between): the state, the parameters, the cost and what is left
    of a given generator equal the vectorized module's. With seed=None the two forms
    draw different masks, so the plain step is checked against its own masks instead."""
    plain, fast = make("plain", "columns"), make("vectorized", "columns")
    params, x, y = _problem(plain)
    runs = []
    for module in (plain, fast):
        p = {k: v.copy() for k, v in params.items()}
        state = module.init_state()
        rng = np.random.default_rng(SEED) if seed == "generator" else None
        given = rng if seed == "generator" else seed
        cost = module.sgd_step(p, x, y, 0.1, seed=given, state=state)
        runs.append((cost, p, state, None if rng is None else rng.random()))
    if seed is None:
        (cost, p, state, _), _ = runs
        assert np.isfinite(cost) and not np.array_equal(state["running_mean2"], 0)
        return
    (cost, p, state, after), (fast_cost, fast_p, fast_state, fast_after) = runs
    assert cost == pytest.approx(fast_cost, rel=1e-13)
    assert after == fast_after  # the generator advanced by the same draws
    for key in fast_state:
        np.testing.assert_allclose(state[key], fast_state[key], rtol=1e-12, err_msg=key)
    for key in fast_p:
        np.testing.assert_allclose(p[key], fast_p[key], rtol=1e-12, atol=1e-15, err_msg=key)
    u2 = _numpy_forward(plain, params, x, plain.dropout_masks(M, SEED))["u2"]
    np.testing.assert_allclose(_rows(plain, state["running_mean2"])[0], 0.1 * u2.mean(0))


def test_plain_form_train_keeps_the_vectorized_forms_statistics(make) -> None:
    """train with state: the same masks, statistics and parameters in both forms."""
    runs = []
    for form in ("plain", "vectorized"):
        module = make(form, "rows")
        params, x, y = _problem(module)
        state = module.init_state()
        history = module.train(params, x, y, epochs=2, batch_size=3, lr=0.1, seed=4, state=state)
        runs.append((history, params, state))
    (history, params, state), (fast_history, fast_params, fast_state) = runs
    np.testing.assert_allclose(history, fast_history, rtol=1e-12)
    for key in fast_state:
        np.testing.assert_allclose(state[key], fast_state[key], rtol=1e-12, err_msg=key)
    for key in fast_params:
        np.testing.assert_allclose(params[key], fast_params[key], rtol=1e-11, err_msg=key)


def test_dropout_on_a_batch_normalized_layer_is_refused() -> None:
    layers = (Layer(4, "relu", batch_norm=True, dropout=0.2), Layer(2, "sigmoid"))
    with pytest.raises(SpecError) as caught:
        Spec(3, layers, "quadratic")
    message = str(caught.value)
    assert "layers[0].dropout" in message
    assert "\n" not in message
