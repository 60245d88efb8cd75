"""The fast form of generated modules, pinned without timing anything.

``loss_and_grad`` writes forward values and deltas into work buffers kept per batch
size (reused, never copied), keeps float32 in float32, applies the cost's 1/m once
(to delta^L), sums over examples with one product, keeps ReLU's derivative as a
boolean mask, and returns new gradient arrays that agree with the hand-written oracle,
or writes the gradient into arrays the caller gives (``out=``; ``sgd_step`` reuses its
own). Timing lives in ``benchmarks/gradient.py``.
"""

from __future__ import annotations

import inspect

import numpy as np
import oracle
import pytest
from chainrule.codegen.program import build_program
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Spec, preset

SIGMOID = Spec.from_sizes([7, 5, 3], ["sigmoid", "sigmoid"], "quadratic", name="sig")
RELU = Spec.from_sizes(
    [6, 5, 4, 3], ["relu", "relu", "softmax"], "cross-entropy", name="relu-softmax"
)
ROWS = Spec.from_sizes(
    [5, 4, 3], ["tanh", "softmax"], "cross-entropy", layout="rows", name="tanh-rows"
)
SPECS = {"sigmoid": SIGMOID, "relu": RELU, "rows": ROWS}


def _batch(module, m: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = module.LAYER_SIZES
    x = rng.standard_normal((sizes[0], m)).astype(dtype)
    y = np.zeros((sizes[-1], m), dtype)
    y[rng.integers(0, sizes[-1], m), np.arange(m)] = 1
    if module.LAYOUT == "rows":
        return np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    return x, y


@pytest.mark.parametrize("name", sorted(SPECS))
def test_float32_stays_float32_end_to_end(build, name):
    module = build(SPECS[name].replace(dtype="float32"))
    params = module.init_params(0)
    x, y = _batch(module, 16, "float32")
    cost, grads = module.loss_and_grad(params, x, y)
    assert all(g.dtype == np.float32 for g in grads.values())
    ws = module._workspace(16, np.dtype(np.float32))
    assert all(buf.dtype in (np.float32, np.bool_) for buf in ws.values())
    assert all(v.dtype == np.float32 for v in module._forward(params, x, ws))
    assert module.forward(params, x).dtype == np.float32
    assert np.isfinite(cost)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_values_live_in_the_work_buffers_and_x_is_not_copied(build, name):
    module = build(SPECS[name])
    params = module.init_params(1)
    x, _ = _batch(module, 8, "float64")
    ws = module._workspace(8, np.dtype(np.float64))
    values = dict(zip(module.FORWARD_VALUES, module._forward(params, x, ws), strict=True))
    for key, value in values.items():
        assert np.shares_memory(value, ws[key]), key
    # dC/dW^1 is computed from a^0, which must be x itself (a transposed view, no copy).
    source = inspect.getsource(module._loss_and_grad)  # loss_and_grad checks, then calls it
    assert "a0 = x" in source
    assert ".copy()" not in source and "ascontiguousarray" not in source


@pytest.mark.parametrize("name", sorted(SPECS))
def test_buffers_are_reused_for_the_same_batch_size(build, name):
    module = build(SPECS[name])
    params = module.init_params(2)
    x, y = _batch(module, 12, "float64")
    module.loss_and_grad(params, x, y)
    ws = module._workspace(12, np.dtype(np.float64))
    pointers = {k: v.ctypes.data for k, v in ws.items()}
    module.loss_and_grad(params, x, y)
    module.loss(params, x, y)
    assert module._workspace(12, np.dtype(np.float64)) is ws
    assert {k: v.ctypes.data for k, v in ws.items()} == pointers
    x2, y2 = _batch(module, 5, "float64")
    module.loss_and_grad(params, x2, y2)
    assert module._workspace(5, np.dtype(np.float64)) is not ws


@pytest.mark.parametrize("name", sorted(SPECS))
def test_returned_gradients_are_fresh_and_survive_the_next_call(build, name):
    module = build(SPECS[name])
    params = module.init_params(3)
    x, y = _batch(module, 10, "float64", seed=1)
    x2, y2 = _batch(module, 10, "float64", seed=2)
    _, grads = module.loss_and_grad(params, x, y)
    kept = {k: v.copy() for k, v in grads.items()}
    _, grads2 = module.loss_and_grad(params, x2, y2)
    ws = module._workspace(10, np.dtype(np.float64))
    for key, grad in grads.items():
        np.testing.assert_array_equal(grad, kept[key])
        assert not np.shares_memory(grad, grads2[key])
        assert not np.shares_memory(grad, params[key])
        assert not any(np.shares_memory(grad, buf) for buf in ws.values())
    assert not np.shares_memory(module.forward(params, x), module.forward(params, x))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gradient_goes_into_the_out_arrays_when_given(build, name):
    module = build(SPECS[name])
    params = module.init_params(6)
    x, y = _batch(module, 7, "float64", seed=4)
    cost, fresh = module.loss_and_grad(params, x, y)
    out = module.new_gradient(np.float64)
    assert sorted(out) == sorted(params)
    assert all(out[k].shape == params[k].shape for k in params)
    pointers = {k: v.ctypes.data for k, v in out.items()}
    cost2, grads = module.loss_and_grad(params, x, y, out=out)
    assert cost2 == cost
    for key, grad in grads.items():
        assert grad is out[key]
        np.testing.assert_array_equal(grad, fresh[key])
    x2, y2 = _batch(module, 7, "float64", seed=5)
    _, again = module.loss_and_grad(params, x2, y2, out=out)
    assert {k: v.ctypes.data for k, v in again.items()} == pointers
    _, fresh2 = module.loss_and_grad(params, x2, y2)
    for key in fresh2:
        np.testing.assert_array_equal(out[key], fresh2[key])


def test_sgd_step_reuses_its_own_gradient_arrays(build):
    module = build(SIGMOID)
    params = module.init_params(7)
    x, y = _batch(module, 6, "float64")
    module.sgd_step(params, x, y, 0.1)
    ws = module._workspace(6, np.dtype(np.float64))
    own = {key: ws[key] for key in params}  # the work buffers under the parameters' names
    assert all(own[k].shape == params[k].shape for k in params)
    pointers = {k: v.ctypes.data for k, v in own.items()}
    before = {k: v.copy() for k, v in own.items()}
    _, grads = module.loss_and_grad(params, x, y)
    for key in params:  # loss_and_grad without out does not touch them
        np.testing.assert_array_equal(own[key], before[key])
    expected = {k: v - 0.1 * grads[k] for k, v in params.items()}
    module.sgd_step(params, x, y, 0.1)
    assert {k: ws[k].ctypes.data for k in params} == pointers
    for key, value in expected.items():
        np.testing.assert_allclose(params[key], value, rtol=0, atol=1e-15)
    # Another batch size gets arrays of its own, as it gets work buffers of its own.
    x3, y3 = _batch(module, 3, "float64")
    module.sgd_step(params, x3, y3, 0.1)
    other = module._workspace(3, np.dtype(np.float64))
    assert all(not np.shares_memory(other[k], own[k]) for k in own)
    for key, grad in grads.items():  # what a caller got earlier is untouched
        assert not np.shares_memory(grad, own[key])
        assert not np.shares_memory(params[key], own[key])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_results_equal_the_independent_oracle(build, name):
    module = build(SPECS[name])
    params = module.init_params(4)
    x, y = _batch(module, 9, "float64", seed=3)
    cost, grads = module.loss_and_grad(params, x, y)
    want_cost, want = oracle.loss_and_grad(module.SPEC, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-12)
    assert module.loss(params, x, y) == pytest.approx(cost, rel=1e-13)
    for key, value in want.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-10, atol=1e-14)


def test_sgd_step_subtracts_lr_times_the_gradient_exactly(build):
    module = build(SIGMOID)
    params = module.init_params(5)
    x, y = _batch(module, 6, "float64")
    _, grads = module.loss_and_grad(params, x, y)
    expected = {k: v - 0.5 * grads[k] for k, v in params.items()}
    module.sgd_step(params, x, y, 0.5)
    for key, value in expected.items():
        np.testing.assert_allclose(params[key], value, rtol=0, atol=1e-15)


def test_one_over_m_is_applied_once_to_delta_L_and_nowhere_else():
    program = build_program(derive_network(preset("deep-relu-sigmoid")))
    codes = {s.target: s.code for s in program.backward}
    assert codes["delta4"] == 'np.divide(a4 - y, m, out=ws["delta4"])'
    for target, code in codes.items():
        if target.startswith("dC_d"):
            assert "/ m" not in code and "/m" not in code, target
    assert codes["dC_db1"] == 'np.matmul(delta1, ws["ones"], out=out["b1"])'
    assert codes["dC_dW1"] == 'np.matmul(delta1, a0.T, out=out["W1"])'


def test_relu_derivative_is_a_boolean_mask_and_products_write_in_place():
    program = build_program(derive_network(RELU))
    by_target = {s.target: s for s in program.backward}
    assert by_target["sp2"].code == 'np.greater(z2, 0, out=ws["sp2"])'
    assert by_target["delta2"].updates == ("delta2 *= sp2",)
    assert "np.matmul(W3.T, delta3, out=" in by_target["delta2"].code
    forward = {s.target: s for s in program.forward}
    # ReLU against a zeros buffer (NumPy's maximum with a scalar 0 is not vectorized),
    # one per layer width, shared by the layers of that width and never written.
    assert forward["a1"].code == 'np.maximum(z1, ws["zeros5"], out=ws["a1"])'
    assert forward["z1"].updates == ("z1 += b1",)
    assert forward["a2"].code == 'np.maximum(z2, ws["zeros4"], out=ws["a2"])'
    zeros = [b for b in program.buffers if b[0].startswith("zeros")]
    assert zeros == [("zeros5", "(5, m)", "zeros", "dtype"), ("zeros4", "(4, m)", "zeros", "dtype")]
    for s in (*program.forward, *program.backward):
        writes = [s.code, *s.updates]
        assert not (s.buffer or "").startswith("zeros"), s
        assert not any('out=ws["zeros' in w for w in writes), s


def test_generated_sigmoid_needs_no_where_and_is_stable(build):
    module = build(SIGMOID)
    z = np.array([-800.0, -40.0, -1.0, 0.0, 3.0, 800.0])
    with np.errstate(all="raise"):
        got = module._sigmoid(z)
    want = np.array([0.0, 4.248354255291589e-18, 0.2689414213699951, 0.5, 0.9525741268224334, 1.0])
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    out = np.empty_like(z)
    assert module._sigmoid(z, out=out) is out
    assert "np.where" not in inspect.getsource(module._sigmoid)
