"""Unrolled modules with dropout and batch norm, and the fast form's in-place batch-norm
buffers, used as a careless or hostile caller would.

Each test pins a defect that was found this way (it fails without its fix) or a
behaviour that held under attack and must keep holding: the unrolled module's gradient
comes back in the parameters' dtype, as the vectorized module's does; and the fast
module's reused work buffers give the oracle's gradient whatever was called before, in
whatever order, with whatever batch size, in several threads at once.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import battery_oracle
import numpy as np
import pytest
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive.spec import Layer, Spec, load_spec
from test_unrolled_dropout_bn import BATCH_NORM, BOTH, DROPOUT, problem

#: Batch norm next to skips and dropout, in both layouts: a skip out of the normalized
#: layer (rows), and a skip from a normalized layer into another normalized one.
SKIP_OUT = Spec(
    input_size=3,
    layers=(
        Layer(3, "tanh", batch_norm=True),
        Layer(3, "sigmoid", dropout=0.3),
        Layer(3, "tanh", skip_from=1),
        Layer(1, "linear"),
    ),
    cost="quadratic",
    layout="rows",
    l1=0.01,
)
NORM_INTO_NORM = Spec(
    input_size=2,
    layers=(
        Layer(2, "tanh", batch_norm=True),
        Layer(2, "sigmoid", batch_norm=True, skip_from=1),
        Layer(2, "linear", skip_from=2),
    ),
    cost="quadratic",
    l2=0.05,
)


def _copy(params: dict) -> dict:
    return {key: value.copy() for key, value in params.items()}


@pytest.mark.parametrize("spec", [BOTH, DROPOUT, BATCH_NORM], ids=["both", "dropout", "bn"])
@pytest.mark.slow
def test_unrolled_gradient_has_the_parameters_dtype_as_the_vectorized_one(spec, load_source):
    """A float32 module given float64 parameters: the vectorized module computes and
    returns the gradient in float64; the unrolled one returned it rounded to float32
    (its own dtype), so sgd_step moved float64 parameters by float32 steps."""
    spec = replace(spec, dtype="float32")
    module = load_source(generate_unrolled(spec, "backprop"))
    fast = load_source(generate_module(spec))
    params, x, y = problem(spec)
    cost, grads = module.loss_and_grad(params, x, y, seed=7)
    ref_cost, ref_grads = fast.loss_and_grad(params, x, y, seed=7)
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    for key, ref in ref_grads.items():
        assert grads[key].dtype == ref.dtype == np.float64, key
        np.testing.assert_allclose(grads[key], ref, rtol=1e-11, atol=1e-14, err_msg=key)
    stepped, ref_stepped = _copy(params), _copy(params)
    module.sgd_step(stepped, x, y, 0.5, seed=7)
    fast.sgd_step(ref_stepped, x, y, 0.5, seed=7)
    for key, ref in ref_stepped.items():
        np.testing.assert_allclose(stepped[key], ref, rtol=1e-11, atol=1e-14, err_msg=key)
    # and float32 parameters in a float64 module give a float32 gradient, in both
    spec64 = replace(spec, dtype="float64")
    small = {key: value.astype(np.float32) for key, value in params.items()}
    _, grads32 = load_source(generate_unrolled(spec64, "backprop")).loss_and_grad(small, x, y)
    assert {value.dtype for value in grads32.values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize(
    "spec", [DROPOUT, pytest.param(BATCH_NORM, marks=pytest.mark.slow)], ids=["dropout", "bn"]
)
def test_unrolled_forward_has_the_dtype_of_the_vectorized_one(spec, load_source):
    """forward of a float32 unrolled module returned float64 for an integer or float64 x
    (its scalar products promote), where the vectorized module returns the parameters'
    dtype: now both give the parameters' dtype, and values within float32 rounding."""
    spec = replace(spec, dtype="float32")
    module = load_source(generate_unrolled(spec, "backprop"))
    fast = load_source(generate_module(spec))
    params, x, _ = problem(spec)
    state = fast.init_state() if spec.batch_norm_layers else None
    for kind in (np.int64, np.float32, np.float64):
        xs = np.round(x * 3).astype(kind)
        for cast in (np.float32, np.float64):
            ps = {key: value.astype(cast) for key, value in params.items()}
            for st in (None, state):
                got, ref = module.forward(ps, xs, st), fast.forward(ps, xs, st)
                assert got.dtype == ref.dtype == cast, (kind, cast, st is None)
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def _oracle(spec: Spec, fast, params, x, y, seed: int):
    m = x.shape[0 if spec.layout == "rows" else 1]
    masks = fast.dropout_masks(m, seed) if spec.dropout_layers else None
    return battery_oracle.loss_and_grad(spec.to_dict(), params, x, y, masks)


def _assert_oracle(spec: Spec, fast, params, x, y, seed: int, cost, grads) -> None:
    ref_cost, ref_grads = _oracle(spec, fast, params, x, y, seed)
    assert cost == pytest.approx(ref_cost, rel=1e-10)
    for key, ref in ref_grads.items():
        np.testing.assert_allclose(grads[key], ref, rtol=1e-8, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("spec", [SKIP_OUT, NORM_INTO_NORM], ids=["skip-out-rows", "bn-into-bn"])
def test_fast_in_place_buffers_survive_any_call_order_and_batch_size(spec, load_source):
    """x̂'s buffer holds u, then x̂, then the mean terms of the backward pass, and delta's
    holds dC/du: calls in any order, with other batch sizes in between, with out= and
    through sgd_step with running statistics, still give the oracle's gradient."""
    fast = load_source(generate_module(spec))
    params, x, y = problem(spec, m=5, seed=1)
    other = problem(spec, m=2, seed=2)
    _assert_oracle(spec, fast, params, x, y, 3, *fast.loss_and_grad(params, x, y, seed=3))
    state = fast.init_state()
    for _ in range(2):
        fast.forward(params, x)
        fast.loss_and_grad(*other, seed=4)
        fast.sgd_step(_copy(other[0]), *other[1:], 0.1, seed=4, state=state)
        fast.forward(params, x, state)
        fast.loss(params, x, y, seed=5)
        assert fast.check_gradient(params, x, y, seed=3) < 1e-5
        out = fast.new_gradient()
        cost, grads = fast.loss_and_grad(params, x, y, out=out, seed=3)
        assert all(grads[key] is out[key] for key in out)
        _assert_oracle(spec, fast, params, x, y, 3, cost, grads)


@pytest.mark.slow
def test_fast_in_place_buffers_are_per_thread(load_source):
    """Four threads, each alternating two batch sizes on the same module: each gets the
    oracle's gradient every time (every thread has its own work buffers)."""
    spec = SKIP_OUT
    fast = load_source(generate_module(spec))
    failures: list[str] = []

    def work(i: int) -> None:
        mine = problem(spec, m=4 + i % 2, seed=i)
        shared = problem(spec, m=6, seed=9)
        try:
            for _ in range(30):
                _assert_oracle(spec, fast, *mine, 3, *fast.loss_and_grad(*mine, seed=3))
                _assert_oracle(spec, fast, *shared, 3, *fast.loss_and_grad(*shared, seed=3))
        except AssertionError as error:
            failures.append(f"thread {i}: {error}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.slow
def test_unrolled_batch_norm_module_of_64_inputs_is_generated_in_seconds(
    run_cli, tmp_path, load_source
):
    """A 64-2-3-10 network (181 parameters, under the unrolled limit of 200) with batch
    norm: building the substituted forward values asked SymPy's assumptions about every
    nested exp and sqrt, and generation ran for more than 11 minutes (16 inputs: about 3);
    now seconds (run_cli gives up after 300 s). The module equals the vectorized one."""
    toml = (
        'input = 64\ncost = "cross-entropy"\n'
        '[[layers]]\nsize = 2\nactivation = "relu"\nbatch_norm = true\n'
        '[[layers]]\nsize = 3\nactivation = "tanh"\ndropout = 0.2\n'
        '[[layers]]\nsize = 10\nactivation = "softmax"\n'
    )
    (tmp_path / "net.toml").write_text(toml, encoding="utf-8")
    done = run_cli("generate", "net.toml", "--form", "unrolled", "-o", "u.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module = load_source((tmp_path / "u.py").read_text(encoding="utf-8"))
    spec = load_spec(tmp_path / "net.toml")
    fast = load_source(generate_module(spec))
    params, x, y = problem(spec, m=5, seed=4)
    cost, grads = module.loss_and_grad(params, x, y, seed=2)
    ref_cost, ref_grads = fast.loss_and_grad(params, x, y, seed=2)
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    for key, ref in ref_grads.items():
        np.testing.assert_allclose(grads[key], ref, rtol=1e-9, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("form", ["vectorized", "unrolled"])
def test_train_refuses_batch_size_1_with_batch_norm_in_one_line(form, load_source):
    """batch_size = 1 leaves every batch with 1 example; _check_batches tests only
    n % batch_size == 1 (0 here), so train fails inside the first step with the forward
    pass's message, and ``chainrule train spec.toml --batch-size 1`` prints a traceback
    (exit 1). Now refused: ``if n < 2 or batch_size < 2 or n % batch_size == 1``."""
    source = generate_module(BATCH_NORM) if form == "vectorized" else None
    module = load_source(source or generate_unrolled(BATCH_NORM, "backprop"))
    params, x, y = problem(BATCH_NORM)
    with pytest.raises(ValueError) as refused:
        module.train(params, x, y, epochs=1, batch_size=1, lr=0.1)
    assert str(refused.value).startswith("batch_size: 1 leaves")


def test_fast_loss_and_grad_refuses_out_sharing_memory_with_params(load_source):
    """out={key: params[key][...]} (views, not the arrays themselves) passes _check_out's
    identity test; the fast module then writes dC/dW^L over W^L and reads the clobbered
    W^L for the next layer's error, so the gradient is silently wrong (the unrolled module
    copies at the end and stays right). Now refused: np.may_share_memory."""
    fast = load_source(generate_module(BATCH_NORM))
    params, x, y = problem(BATCH_NORM)
    _, ref = fast.loss_and_grad(_copy(params), x, y)
    mine = _copy(params)
    with pytest.raises(ValueError, match=r"^out\['W1'\]: shares memory with a parameter"):
        fast.loss_and_grad(mine, x, y, out={k: v[...] for k, v in mine.items()})
    for key, value in params.items():  # nothing was written
        np.testing.assert_array_equal(mine[key], value)
    _, grads = fast.loss_and_grad(mine, x, y, out={k: np.zeros_like(v) for k, v in mine.items()})
    for key, value in ref.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["unrolled", "plain"])
def test_a_step_with_state_never_rewinds_a_shared_generator(load_source, form):
    """Two threads step with running statistics, drawing their masks from one shared
    np.random.Generator. _statistics_before drew the masks and put the generator's state
    back, undoing the other thread's draws in between (two steps then share masks); now
    it draws from a twin, and the generator advances by exactly one draw per step, as
    the vectorized module's does."""
    source = generate_unrolled(BOTH, "backprop") if form == "unrolled" else generate_plain(BOTH)
    module = load_source(source)
    params, x, y = problem(BOTH, m=4)
    shared = np.random.default_rng(0)
    steps = 300

    def work() -> None:
        mine, state = _copy(params), module.init_state()
        for _ in range(steps):
            module.sgd_step(mine, x, y, 0.0, seed=shared, state=state)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = np.random.default_rng(0)
    for _ in range(2 * steps):
        module.dropout_masks(4, expected)
    assert shared.bit_generator.state == expected.bit_generator.state


@pytest.mark.parametrize("form", ["plain", "unrolled"])
def test_a_nan_through_relu_stays_nan_as_in_the_vectorized_module(load_source, form):
    """ReLU was printed np.where(z > 0, z, 0), which turns a NaN z into 0: a NaN example
    gave a finite loss (with batch norm, a NaN mean for every example but a finite
    cost). It is np.maximum(z, 0) now, which keeps the NaN, as the vectorized module's
    np.maximum(z, zeros) does."""
    spec = Spec(3, (Layer(4, "relu"), Layer(2, "sigmoid")), "quadratic", name="relu_nan")
    source = generate_unrolled(spec, "backprop") if form == "unrolled" else generate_plain(spec)
    module, fast = load_source(source), load_source(generate_module(spec))
    assert "np.where(z1_0 > 0" not in source and "np.where(z1 > 0, z1" not in source
    params = fast.init_params(0)
    x = np.random.default_rng(0).normal(size=(3, 4))
    x[1, 2] = np.nan
    y = np.full((2, 4), 0.5)
    with np.errstate(invalid="ignore"):
        assert np.isnan(fast.loss(params, x, y))
        assert np.isnan(module.loss(params, x, y))
        assert np.isnan(module.forward(params, x)[:, 2]).all()
