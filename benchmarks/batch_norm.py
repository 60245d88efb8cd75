"""Time ``loss_and_grad`` of a batch-normalized network against its matrix-product floor.

The network is [784, 256, 256, 10]: two ReLU layers, each with ``batch_norm = true``,
and a softmax output under cross-entropy, in float64. The floor is the matrix products
of one forward and backward pass with the same shapes, outputs preallocated (W a per
layer, delta a^T per layer, W^T delta for every layer but the first), as in
``gradient.py``; batch normalization adds no product of that size (its sums over the
examples are products with a column of ones, counted in the generated time only).

Calls are interleaved round by round; the figure is the median over rounds and its
ratio to the floor's median. ``--threads 1`` (the default) limits the BLAS to one
thread (threadpoolctl when installed, else the environment variables, set before
NumPy loads).

    python benchmarks/batch_norm.py               # batches 64 and 1024, 200 rounds
    python benchmarks/batch_norm.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # one BLAS thread unless told otherwise, before NumPy loads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chainrule.derive.spec import Layer, Spec  # noqa: E402
from gradient import Case, interleaved, make_floor, module_for, summarize  # noqa: E402

CASE = Case(
    "784-256-256-10 relu+BN softmax-CE",
    (784, 256, 256, 10),
    ("relu", "relu", "softmax"),
    "cross-entropy",
)


def batch_norm_spec(case: Case) -> Spec:
    """The case with every hidden layer batch-normalized (no biases there)."""
    pairs = zip(case.sizes[1:-1], case.activations[:-1], strict=True)
    hidden = [Layer(n, a, batch_norm=True) for n, a in pairs]
    out = Layer(case.sizes[-1], case.activations[-1])
    return Spec(case.sizes[0], (*hidden, out), case.cost, name="bench_batch_norm")


def run(case: Case, batch: int, rounds: int) -> dict[str, object]:
    """Median seconds of the floor, of loss_and_grad (with reused ``out``) and of the same
    network without batch norm (biases instead), for comparison."""
    module = module_for(batch_norm_spec(case))
    plain = module_for(Spec.from_sizes(case.sizes, case.activations, case.cost, name="plain"))
    rng = np.random.default_rng(0)
    params, plain_params = module.init_params(0), plain.init_params(0)
    x = rng.standard_normal((case.sizes[0], batch))
    y = np.eye(case.sizes[-1])[:, rng.integers(0, case.sizes[-1], batch)]
    out, plain_out = module.new_gradient(), plain.new_gradient()
    fns = {
        "floor": make_floor(case, params, x),
        "generated_out": lambda: module.loss_and_grad(params, x, y, out=out),
        "no_batch_norm": lambda: plain.loss_and_grad(plain_params, x, y, out=plain_out),
    }
    summary = summarize(interleaved(fns, rounds, {}), "median")
    return {"case": case.label, "batch": batch, **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
    except ImportError:
        pass
    print("| network | batch | floor ms | generated out= ms | ratio | without batch norm: ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in (64, 1024):
        result = run(CASE, batch, args.rounds)
        seconds, ratio = result["seconds"], result["ratio_to_floor"]
        print(
            f"| {CASE.label} | {batch} | {seconds['floor'] * 1e3:.3f} | "
            f"{seconds['generated_out'] * 1e3:.3f} | {ratio['generated_out']:.2f} | "
            f"{ratio['no_batch_norm']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
