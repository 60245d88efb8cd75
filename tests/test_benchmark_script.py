"""benchmarks/gradient.py runs end to end on a tiny case; nothing here is timed.

The script's figures come from a run on a quiet machine; this only keeps the script
working: the hand-written NumPy backprop it compares with agrees with the module, every
column is measured, and the report and target lines come out for both generated
variants (new arrays, and out= arrays reused).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gradient.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("chainrule_bench_gradient", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_tiny_case_reports_every_column_and_target(bench, dtype, capsys):
    case = bench.Case("6-5-3 relu softmax-CE", (6, 5, 3), ("relu", "softmax"), "cross-entropy")
    result = bench.run_case(case, 4, dtype, rounds=2, threads=1, skip={"jax", "torch"})
    assert result["agreement"] <= (1e-9 if dtype == "float64" else 1e-3)
    seconds = result["median"]["seconds"]
    assert set(seconds) == {"floor", "generated", "generated_out", "numpy", "loop"}
    assert all(value > 0 for value in seconds.values())
    assert result["median"]["ratio_to_floor"]["floor"] == 1.0

    bench.print_table([result], "median")
    table = capsys.readouterr().out
    assert "| 6-5-3 relu softmax-CE | 4 | " + dtype in table
    assert "generated, out= ms (x floor)" in table
    lines = bench.targets_met([result], "min")
    assert len(lines) == 2 * 3  # floor ratio, numpy, loop; for out= and for new arrays
    assert sum("out=:" in line for line in lines) == 3
    assert all(line.startswith(("MET     ", "NOT MET ")) for line in lines)


def test_the_hand_written_backprop_matches_the_generated_module(bench):
    case = bench.Case("5-4-2 sigmoid quadratic", (5, 4, 2), ("sigmoid", "sigmoid"), "quadratic")
    spec = bench.Spec.from_sizes(list(case.sizes), list(case.activations), case.cost)
    module = bench.module_for(spec)
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), rng.random((2, 3))
    cost, grads = module.loss_and_grad(params, x, y)
    want_cost, want = bench.numpy_loss_and_grad(case, params, x, y)
    loop_cost, loop = bench.loop_loss_and_grad(case, params, x, y)
    assert cost == pytest.approx(want_cost, rel=1e-13)
    assert loop_cost == pytest.approx(want_cost, rel=1e-13)
    for key in params:
        np.testing.assert_allclose(grads[key], want[key], rtol=1e-12)
        np.testing.assert_allclose(loop[key], want[key], rtol=1e-12)


def test_interleaved_rounds_rotate_the_turn_order(bench):
    """Each round calls every implementation once; the order rotates by one place per
    round, so that each runs first (and right after each other one) equally often."""
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = bench.interleaved(fns, 6, {})
    assert {name: len(t) for name, t in times.items()} == {"a": 6, "b": 6, "c": 6}
    rounds = [calls[6 + 3 * r : 9 + 3 * r] for r in range(6)]  # after 2 warm-up calls each
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    # "slow" implementations run only in the first rounds, still in rotation
    calls.clear()
    times = bench.interleaved(fns, 4, {"c": 2})
    assert len(times["c"]) == 2 and len(times["a"]) == 4
