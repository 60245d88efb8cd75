"""Benchmark: naive diff + CSE of the [8, 8, 8, 4] network (180 parameters) per engine.

Prints the seconds each symbolic engine needs for the ``cse`` strategy of
:func:`chainrule.derive.scalar.gradients` (differentiate the fully expanded cost once per
parameter, then eliminate common subexpressions, then return SymPy expressions), the
ratio between the engines, and the time to refuse an oversized naive request.
Targets: SymEngine under 1 s and at least 20 times faster than plain SymPy.

Run: ``python benchmarks/symbolic.py [--repeat N] [--skip-sympy]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chainrule.derive.errors import DerivationError  # noqa: E402
from chainrule.derive.scalar import count_strategy, gradients, symengine_available  # noqa: E402
from chainrule.derive.spec import Spec  # noqa: E402

SIZES = [8, 8, 8, 4]


def network() -> Spec:
    """The benchmark network: 8-8-8-4, sigmoid layers, quadratic cost."""
    return Spec.from_sizes(SIZES, ["sigmoid"] * 3, "quadratic", name="bench")


def time_engine(engine: str, repeat: int) -> tuple[float, float, int, int]:
    """Best wall and CPU seconds of ``repeat`` runs; temporaries and cse op count."""
    spec = network()
    gradients(Spec.from_sizes([1, 1], ["sigmoid"], "quadratic"), "cse", engine=engine)  # warm up
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = gradients(spec, "cse", engine=engine, budget=None)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert result is not None
    return best_wall, best_cpu, len(result.program), count_strategy(result).total


def time_refusal() -> float:
    """Seconds to refuse the naive expansion of a 20-wide, 7-layer network."""
    spec = Spec.from_sizes([20] * 8, ["sigmoid"] * 7, "quadratic")
    start = time.perf_counter()
    try:
        gradients(spec, "naive")
    except DerivationError:
        return time.perf_counter() - start
    raise AssertionError("the oversized request was not refused")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine (best is kept)")
    parser.add_argument("--skip-sympy", action="store_true", help="time SymEngine only")
    args = parser.parse_args()
    spec = network()
    sizes = "-".join(map(str, SIZES))
    print(f"network {sizes}: {spec.parameter_count} parameters, sigmoid, quadratic cost")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall time suffers)")
    results = {}
    engines = ["symengine"] if symengine_available() else []
    if not args.skip_sympy:
        engines.append("sympy")
    for engine in engines:
        repeat = args.repeat if engine == "symengine" else 1
        wall, cpu, temps, ops = time_engine(engine, repeat)
        results[engine] = cpu
        print(
            f"  {engine:<10} naive diff + cse: {cpu:8.3f} s CPU, {wall:8.3f} s wall "
            f"({temps} temporaries, {ops:,} ops)"
        )
    if not symengine_available():
        print("  symengine  not installed (pip install 'chainrule[fast]')")
    if "symengine" in results and "sympy" in results:
        ratio = results["sympy"] / results["symengine"]
        print(f"  ratio sympy / symengine (CPU): {ratio:.1f}x (target >= 20x)")
    if "symengine" in results:
        verdict = "meets" if results["symengine"] < 1.0 else "misses"
        print(f"  symengine {verdict} the < 1 s target (CPU)")
    print(f"  refusing a 20-wide 7-layer naive request: {time_refusal():.3f} s (target < 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
