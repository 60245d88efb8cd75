"""Is the plain dense stack any slower? Today's modules against an earlier commit's.

Loads a committed module of ``generated/`` twice: as it is in the working tree, and as
it was at ``--baseline`` (default 40063a8, the last commit before L2/L1, residual
connections, batch norm, dropout and the optimizers), read with ``git show``. Both get
the same parameters and batch; the gradients must agree to the last bit before
anything is timed. ``loss_and_grad`` is timed without ``out`` and with a reused
``out`` (that call also pays for the argument check of ``out``, added since), in
interleaved rounds on one BLAS thread; the figure is the median of each and the ratio
now / before. Needs git and the repository's history (a clone, not an sdist).

    python benchmarks/dense_ab.py                       # nielsen and deep_relu_sigmoid
    python benchmarks/dense_ab.py --rounds 100 --baseline 40063a8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

if __name__ == "__main__":  # one BLAS thread unless told otherwise, before NumPy loads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gradient import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "40063a8"
MODULES = ("nielsen", "deep_relu_sigmoid")
BATCHES = (10, 100, 1000)


def load(source: str, name: str) -> types.ModuleType:
    """A module object run from ``source`` (a generated module: NumPy only)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102
    return module


def baseline_source(rev: str, name: str) -> str:
    """``generated/NAME.py`` as committed at ``rev``."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:generated/{name}.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"--baseline: git show {rev}:generated/{name}.py failed: {done.stderr.strip()}"
        )
    return done.stdout


def problem(module: types.ModuleType, m: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters, a batch x (n_0, m) and one-hot-like targets y (n_L, m)."""
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    n_in, n_out = params["W1"].shape[1], params[f"W{len(module.LAYER_SIZES) - 1}"].shape[0]
    x = rng.standard_normal((n_in, m))
    y = np.eye(n_out)[:, rng.integers(0, n_out, m)]
    return params, x, y


def run(name: str, rev: str, m: int, rounds: int) -> dict[str, float]:
    """Median seconds of each call and the ratios now / before."""
    now = load((ROOT / "generated" / f"{name}.py").read_text(encoding="utf-8"), f"{name}_now")
    before = load(baseline_source(rev, name), f"{name}_before")
    params, x, y = problem(now, m)
    out_now, out_before = now.new_gradient(), before.new_gradient()
    cost_now, grads_now = now.loss_and_grad(params, x, y)
    cost_before, grads_before = before.loss_and_grad(params, x, y)
    same = cost_now == cost_before and all(
        np.array_equal(grads_now[k], grads_before[k]) for k in grads_before
    )
    if not same:
        raise SystemExit(f"{name}: the two modules' cost or gradient differ at batch {m}")
    fns = {
        "before": lambda: before.loss_and_grad(params, x, y),
        "now": lambda: now.loss_and_grad(params, x, y),
        "before_out": lambda: before.loss_and_grad(params, x, y, out=out_before),
        "now_out": lambda: now.loss_and_grad(params, x, y, out=out_now),
    }
    median = {k: float(np.median(v)) for k, v in interleaved(fns, rounds, {}).items()}
    return {
        **median,
        "ratio": median["now"] / median["before"],
        "ratio_out": median["now_out"] / median["before_out"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        pass
    print(
        "| module | batch | before ms | now ms | now / before | with out=: before ms "
        "| now ms | now / before |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in MODULES:
        for m in BATCHES:
            r = run(name, args.baseline, m, args.rounds if m < 1000 else max(args.rounds // 4, 5))
            print(
                f"| {name} | {m} | {r['before'] * 1e3:.4f} | {r['now'] * 1e3:.4f} | "
                f"{r['ratio']:.3f} | {r['before_out'] * 1e3:.4f} | {r['now_out'] * 1e3:.4f} | "
                f"{r['ratio_out']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
