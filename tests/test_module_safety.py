"""A generated module keeps its promises under hostile use.

Concurrent calls from several threads give the single-thread gradient; the work-buffer
cache stays bounded whatever batch sizes come; every entry point refuses a wrong shape or
dtype, naming the argument; ``check_gradient`` never scores NaN or inf as a pass; and
``load_params`` refuses what is not a plain archive of this network's arrays, reading
each array's header before its data.
"""

from __future__ import annotations

import io
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive.spec import Spec, preset

#: 784-30-10, sigmoid, quadratic, columns layout: big enough that BLAS releases the GIL.
NIELSEN = preset("nielsen")


def _batch(net: ModuleType, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n0, n_out = net.LAYER_SIZES[0], net.LAYER_SIZES[-1]
    x, y = rng.standard_normal((n0, m)), rng.uniform(0.1, 0.9, (n_out, m))
    return (x.T.copy(), y.T.copy()) if net.LAYOUT == "rows" else (x, y)


@pytest.mark.slow
def test_concurrent_calls_give_the_single_thread_gradient(
    build: Callable[[Spec], ModuleType],
) -> None:
    net = build(NIELSEN)
    params = net.init_params(seed=1)
    batches = [_batch(net, 64, seed) for seed in range(4)]
    expected = [net.loss_and_grad(params, x, y) for x, y in batches]
    barrier = threading.Barrier(4)
    wrong: list[str] = []

    def work(index: int) -> None:
        x, y = batches[index]
        cost, grads = expected[index]
        barrier.wait()
        for call in range(40):
            got_cost, got = net.loss_and_grad(params, x, y)
            if got_cost != cost or any(not np.array_equal(got[k], grads[k]) for k in grads):
                wrong.append(f"thread {index}, call {call}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not wrong, f"{len(wrong)} of 160 concurrent calls gave another batch's result"


@pytest.mark.slow
def test_work_buffers_stay_bounded_over_many_batch_sizes(
    load_source: Callable[[str], ModuleType],
) -> None:
    from chainrule.codegen.render import generate_module

    net = load_source(generate_module(NIELSEN))  # a fresh module: no buffers yet
    params = net.init_params()
    x, y = _batch(net, 400, 0)
    net.loss(params, x[:, :400], y[:, :400])
    tracemalloc.start()
    try:
        for m in range(1, 401):
            net.loss(params, x[:, :m], y[:, :m])
            net.loss_and_grad(params, x[:, :m], y[:, :m])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One full set of buffers for m = 400 is about 0.5 MB; keeping all 400 sizes is ~100 MB.
    assert held < 5_000_000, f"{held / 1e6:.1f} MB still held after 400 batch sizes"


@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_entry_points_refuse_wrong_shapes(build: Callable[[Spec], ModuleType], layout: str) -> None:
    spec = Spec.from_sizes([3, 4, 2], ["sigmoid", "sigmoid"], "quadratic").replace(layout=layout)
    net = build(spec)
    params = net.init_params()
    x, y = _batch(net, 5, 0)
    rows = layout == "rows"
    bad_y = [y[:, 0] if rows else y[0], y[:, :1].T if rows else y[:1], np.float64(0.5), y.T]
    bad_y += [np.ones((5, 2) if rows else (2, 5), complex), y.astype(object), y.astype(str)]
    expected_y = r"\(5, 2\)" if rows else r"\(2, 5\)"
    calls = {
        "loss": lambda p, a, b: net.loss(p, a, b),
        "loss_and_grad": lambda p, a, b: net.loss_and_grad(p, a, b),
        "sgd_step": lambda p, a, b: net.sgd_step(p, a, b, 0.1),
        "train": lambda p, a, b: net.train(p, a, b, epochs=1, batch_size=5, lr=0.1),
        "check_gradient": lambda p, a, b: net.check_gradient(p, a, b),
    }
    for name, call in calls.items():
        for value in bad_y:
            with pytest.raises(ValueError, match=rf"^y: expected .*{expected_y}; got") as info:
                call(params, x, value)
            assert "got" in str(info.value), name
        wide_bias = dict(params, b1=np.zeros((5, 4) if rows else (4, 5)))
        with pytest.raises(ValueError, match=r"params\['b1'\]: expected .* \(.*; got shape"):
            call(wide_bias, x, y)
        with pytest.raises(ValueError, match=r"^x: expected"):
            call(params, x.T, y)
    with pytest.raises(ValueError, match=r"^x: expected .*; got shape \(3,\)"):
        net.forward(params, x[0] if rows else x[:, 0])
    with pytest.raises(ValueError, match=r"^x: expected"):
        net.forward(params, x.astype(complex))


def test_unrolled_module_refuses_wrong_shapes(load_source: Callable[[str], ModuleType]) -> None:
    net = load_source(generate_unrolled(preset("3b1b-chain"), "cse"))
    params = net.init_params()
    x, y = np.ones((1, 4)), np.ones((1, 4))
    assert np.isfinite(net.loss(params, x, y))
    for bad in (np.ones(4), np.ones((1, 3)), np.ones((4, 1))):
        with pytest.raises(ValueError, match="^y: expected"):
            net.loss_and_grad(params, x, bad)
    with pytest.raises(ValueError, match=r"params\['b1'\]"):
        net.loss(dict(params, b1=np.ones((1, 4))), x, y)


@pytest.mark.parametrize("module", ["vectorized", "unrolled"])
def test_check_gradient_fails_on_nan_and_inf(
    load_source: Callable[[str], ModuleType], build: Callable[[Spec], ModuleType], module: str
) -> None:
    if module == "unrolled":
        net = load_source(generate_unrolled(preset("3b1b-chain"), "cse"))
    else:
        net = build(Spec.from_sizes([3, 4, 2], ["sigmoid", "sigmoid"], "quadratic"))
    params = net.init_params()
    x, y = _batch(net, 3, 0)
    assert net.check_gradient(params, x, y) < 1e-5
    x_nan = x.copy()
    x_nan[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"x\[0, 1\] is nan"):
        net.check_gradient(params, x_nan, y)
    y_inf = y.copy()
    y_inf[0, 2] = np.inf
    with pytest.raises(ValueError, match=r"y\[0, 2\] is inf"):
        net.check_gradient(params, x, y_inf)
    w_nan = dict(params, W1=params["W1"].copy())
    w_nan["W1"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"W1\[0, 0\] is nan"):
        net.check_gradient(w_nan, x, y)
    # Finite but huge inputs: the loss overflows (quadratic cost of a 1e200 output).
    with (
        pytest.raises(ValueError, match=r"check_gradient: .* is (inf|nan)"),
        np.errstate(over="ignore"),
    ):
        net.check_gradient(params, x, y * 1e200)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The header of a version 1.0 ``.npy`` file of float64 ``shape``, data to follow."""
    text = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 63 - (10 + len(text)) % 64
    return (
        b"\x93NUMPY\x01\x00"
        + (len(text) + pad + 1).to_bytes(2, "little")
        + text
        + b" " * pad
        + b"\n"
    )


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def test_load_params_refuses_what_is_not_plain_numbers(
    build: Callable[[Spec], ModuleType], tmp_path: Path
) -> None:
    net = build(preset("3b1b-chain"))  # W1..W3, b1..b3, each (1, 1)
    good = net.init_params()
    cases = {
        "object": np.array([[None]], dtype=object),
        "string": np.array([["1.0"]]),
        "complex": np.array([[1 + 2j]]),
        "structured": np.zeros((1, 1), dtype=[("a", "f8")]),
    }
    for kind, array in cases.items():
        path = tmp_path / f"{kind}.npz"
        np.savez(path, **dict(good, W2=array))
        with pytest.raises(ValueError, match=r"W2(: | has dtype)") as info:
            net.load_params(path)
        assert str(path) in str(info.value), kind
    np.save(tmp_path / "one.npy", good["W1"])
    with pytest.raises(ValueError, match=r"\.npy file"):
        net.load_params(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("W1 = 1\n")
    with pytest.raises(ValueError, match="not a .npz archive"):
        net.load_params(tmp_path / "text.npz")


@pytest.mark.slow
def test_load_params_checks_headers_before_reading(
    build: Callable[[Spec], ModuleType], tmp_path: Path
) -> None:
    net = build(preset("two-layer-nobias"))
    params = net.init_params()
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in params.items():
            if key != "W1":
                archive.writestr(f"{key}.npy", _npy(value))
        # W1 claims 2**46 float64 entries (512 TiB) and holds 64 bytes.
        archive.writestr("W1.npy", _npy_header((2**23, 2**23)) + bytes(64))
    assert huge.stat().st_size < 4096
    with pytest.raises(ValueError, match=r"W1 has shape \(8388608, 8388608\), expected"):
        net.load_params(huge)

    # A small file holding an unused 128 MiB array: refused without reading it.
    padded = tmp_path / "padded.npz"
    np.savez_compressed(padded, **params)
    with zipfile.ZipFile(padded, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("unused.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((2**24,)))
            for _ in range(128):
                member.write(bytes(2**20))
    assert padded.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="keys"):
            net.load_params(padded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak / 1e6:.0f} MB while refusing"
