"""Time ``loss_and_grad`` of chainrule's generated modules against the matmul floor.

For each case (network, batch size, dtype) this script times, in one process:

* ``generated``: ``loss_and_grad`` of the module chainrule generates for the network
  (in memory), returning new gradient arrays;
* ``generated_out``: the same call with ``out=`` arrays reused from call to call, as
  ``sgd_step`` and ``train`` use it (the floor, too, writes into preallocated arrays);
* ``floor``: only the matrix products of one forward and backward pass, with the
  same shapes and preallocated outputs (W a per layer; delta a^T per layer;
  W^T delta for every layer but the first): the practical limit of a dense backprop;
* ``numpy``: a plainly written hand-vectorized NumPy backprop (below);
* ``loop``: a per-example loop, one column at a time, in the style of Nielsen's
  ``network.py`` (fewer rounds: it is slow);
* ``jax``: ``jax.jit(jax.value_and_grad(loss))`` on CPU, when JAX is installed;
* ``torch``: PyTorch eager autograd on CPU, when PyTorch is installed.

Calls are interleaved round by round (floor, generated, numpy, loop, then again), so
that a load change hits every implementation alike (JAX and PyTorch run afterwards in
rounds of their own: their thread pools keep spinning after a call and would slow the
next BLAS call); each reported time is the
median over rounds, and each ratio is that median over the floor's median. Then it
trains a [64, 32, 10] ReLU + softmax network on scikit-learn's digits with the
module's own ``train()`` and compares seconds per epoch with scikit-learn's
``MLPClassifier(solver="sgd")`` of the same sizes.

Run ``python benchmarks/gradient.py`` (``--json`` for machine-readable output,
``--quick`` for a short run, ``--threads N`` to set the BLAS threads). On machines
where ``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` is set (it can slow a current
NumPy's OpenBLAS), run with both unset::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gradient.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# PyTorch's OpenMP threads spin after each operation unless told to wait passively.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chainrule.codegen.emit import lint_module  # noqa: E402
from chainrule.codegen.render import generate_module  # noqa: E402
from chainrule.derive.spec import Spec  # noqa: E402

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Case:
    """One benchmark network: sizes, activations and cost of a chainrule spec."""

    label: str
    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    cost: str


CASES = (
    Case("784-100-10 sigmoid quadratic", (784, 100, 10), ("sigmoid", "sigmoid"), "quadratic"),
    Case(
        "784-256-256-10 relu softmax-CE",
        (784, 256, 256, 10),
        ("relu", "relu", "softmax"),
        "cross-entropy",
    ),
)
BATCHES = (64, 1024)
DTYPES = ("float64", "float32")


# --- A plainly written hand-vectorized NumPy backprop (columns: x is (n0, m)) ----------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_loss_and_grad(case: Case, params: Params, x: np.ndarray, y: np.ndarray):
    """Forward, cost and backward written out by hand for sigmoid/relu + quadratic/softmax-CE."""
    m = x.shape[1]
    depth = len(case.sizes) - 1
    zs, activations = [], [x]
    for layer in range(1, depth + 1):
        z = params[f"W{layer}"] @ activations[-1] + params[f"b{layer}"]
        zs.append(z)
        act = case.activations[layer - 1]
        if act == "sigmoid":
            activations.append(_sigmoid(z))
        elif act == "relu":
            activations.append(np.maximum(z, 0))
        else:  # softmax
            e = np.exp(z - z.max(axis=0, keepdims=True))
            activations.append(e / e.sum(axis=0, keepdims=True))
    out = activations[-1]
    if case.cost == "quadratic":
        cost = 0.5 * np.sum((out - y) ** 2) / m
        delta = (out - y) * out * (1 - out)
    else:
        cost = -np.sum(y * np.log(out)) / m
        delta = out - y
    grads = {}
    for layer in range(depth, 0, -1):
        grads[f"W{layer}"] = delta @ activations[layer - 1].T / m
        grads[f"b{layer}"] = delta.sum(axis=1, keepdims=True) / m
        if layer > 1:
            back = params[f"W{layer}"].T @ delta
            a = activations[layer - 1]
            if case.activations[layer - 2] == "sigmoid":
                delta = back * a * (1 - a)
            else:
                delta = back * (zs[layer - 2] > 0)
    return cost, grads


def loop_loss_and_grad(case: Case, params: Params, x: np.ndarray, y: np.ndarray):
    """The same backprop one example (one column) at a time, summing the gradients."""
    m = x.shape[1]
    grads = {key: np.zeros_like(value) for key, value in params.items()}
    cost = 0.0
    for i in range(m):
        c, g = numpy_loss_and_grad(case, params, x[:, i : i + 1], y[:, i : i + 1])
        cost += c
        for key in grads:
            grads[key] += g[key]
    for key in grads:
        grads[key] /= m
    return cost / m, grads


# --- The floor: only the matrix products, preallocated ---------------------------------


def make_floor(case: Case, params: Params, x: np.ndarray) -> Callable[[], None]:
    """The matmuls of one forward and backward pass, with outputs allocated once."""
    depth = len(case.sizes) - 1
    m = x.shape[1]
    weights = [params[f"W{layer}"] for layer in range(1, depth + 1)]
    outs = [np.empty((n, m), x.dtype) for n in case.sizes[1:]]
    backs = [np.empty((n, m), x.dtype) for n in case.sizes[1:-1]]
    grads = [np.empty_like(w) for w in weights]

    def floor() -> None:
        a = x
        for w, out in zip(weights, outs, strict=True):
            np.matmul(w, a, out=out)
            a = out
        for layer in range(depth - 1, -1, -1):
            prev = x if layer == 0 else outs[layer - 1]
            np.matmul(outs[layer], prev.T, out=grads[layer])
            if layer > 0:
                np.matmul(weights[layer].T, outs[layer], out=backs[layer - 1])

    return floor


# --- Optional frameworks ---------------------------------------------------------------


def make_jax(case: Case, params: Params, x: np.ndarray, y: np.ndarray):
    """jit(value_and_grad) of the same loss, or None when JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    depth = len(case.sizes) - 1

    def loss(p, xb, yb):
        a = xb
        for layer in range(1, depth + 1):
            z = p[f"W{layer}"] @ a + p[f"b{layer}"]
            act = case.activations[layer - 1]
            if act == "sigmoid":
                a = jax.nn.sigmoid(z)
            elif act == "relu":
                a = jax.nn.relu(z)
            else:
                logp = jax.nn.log_softmax(z, axis=0)
                return -jnp.sum(yb * logp) / xb.shape[1]
        return 0.5 * jnp.sum((a - yb) ** 2) / xb.shape[1]

    step = jax.jit(jax.value_and_grad(loss))
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    jx, jy = jnp.asarray(x), jnp.asarray(y)

    def run():
        value, grads = step(jp, jx, jy)
        jax.block_until_ready(grads)
        return value, grads

    return run


def make_torch(case: Case, params: Params, x: np.ndarray, y: np.ndarray, threads: int):
    """Eager PyTorch autograd of the same loss, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    depth = len(case.sizes) - 1
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def run():
        for value in tp.values():
            value.grad = None
        a = tx
        loss = None
        for layer in range(1, depth + 1):
            z = tp[f"W{layer}"] @ a + tp[f"b{layer}"]
            act = case.activations[layer - 1]
            if act == "sigmoid":
                a = torch.sigmoid(z)
            elif act == "relu":
                a = torch.relu(z)
            else:
                loss = -(ty * torch.log_softmax(z, dim=0)).sum() / tx.shape[1]
        if loss is None:
            loss = 0.5 * ((a - ty) ** 2).sum() / tx.shape[1]
        loss.backward()
        return loss

    return run


# --- Timing ----------------------------------------------------------------------------


def module_for(spec: Spec) -> types.ModuleType:
    """chainrule's generated module for ``spec``, linted and loaded in memory."""
    source = generate_module(spec)
    lint_module(source)
    module = types.ModuleType(f"bench_{spec.name}")
    exec(compile(source, f"<chainrule {spec.name}>", "exec"), module.__dict__)  # noqa: S102
    return module


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, slow: dict[str, int]
) -> dict[str, list[float]]:
    """Seconds of every call, per implementation, from interleaved rounds.

    Every round calls each implementation once, in turn, so a change of machine load
    hits all of them alike; the turn order rotates by one place each round, so that no
    implementation always runs right after the same other one (which leaves the caches
    in its own state). ``slow`` maps a name to a smaller number of rounds (it runs only
    in the first ones).
    """
    for fn in fns.values():
        fn()  # warm up: buffers, JIT compilation, caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for r in range(rounds):
        shift = r % len(order)
        for name, fn in order[shift:] + order[:shift]:
            if r >= slow.get(name, rounds):
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], stat: str) -> dict[str, dict[str, float]]:
    """Seconds (the median, or the minimum: the least disturbed call) and ratio to the floor."""
    pick = np.median if stat == "median" else np.min
    seconds = {name: float(pick(values)) for name, values in times.items()}
    return {
        "seconds": seconds,
        "ratio_to_floor": {name: t / seconds["floor"] for name, t in seconds.items()},
    }


def check_agreement(module_grads: Params, reference: Params, dtype: str) -> float:
    """Worst relative difference between two gradients (a sanity check before timing)."""
    worst = 0.0
    for key, value in reference.items():
        diff = np.max(np.abs(np.asarray(module_grads[key], np.float64) - value))
        worst = max(worst, float(diff / (np.max(np.abs(value)) + 1e-30)))
    limit = 1e-9 if dtype == "float64" else 1e-3
    if worst > limit:
        raise SystemExit(f"generated gradient differs from the NumPy backprop: {worst:.2e}")
    return worst


def run_case(
    case: Case, m: int, dtype: str, rounds: int, threads: int, skip: set[str]
) -> dict[str, object]:
    """Time every implementation on one (network, batch, dtype)."""
    spec = Spec.from_sizes(list(case.sizes), list(case.activations), case.cost, dtype=dtype)
    module = module_for(spec)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    x = rng.standard_normal((case.sizes[0], m)).astype(dtype)
    y = np.zeros((case.sizes[-1], m), dtype)
    y[rng.integers(0, case.sizes[-1], m), np.arange(m)] = 1
    _, grads = module.loss_and_grad(params, x, y)
    _, reference = numpy_loss_and_grad(case, params, x, y)
    agreement = check_agreement(grads, reference, dtype)
    out = module.new_gradient(np.dtype(dtype))
    check_agreement(module.loss_and_grad(params, x, y, out=out)[1], reference, dtype)
    fns: dict[str, Callable[[], object]] = {
        "floor": make_floor(case, params, x),
        "generated": lambda: module.loss_and_grad(params, x, y),
        "generated_out": lambda: module.loss_and_grad(params, x, y, out=out),
        "numpy": lambda: numpy_loss_and_grad(case, params, x, y),
        "loop": lambda: loop_loss_and_grad(case, params, x, y),
    }
    times = interleaved(fns, rounds, slow={"loop": max(3, rounds // 10)})
    # The frameworks run after, in their own interleaved rounds: their thread pools keep
    # spinning for a while after each call and would slow whatever BLAS call came next.
    frameworks: dict[str, Callable[[], object]] = {}
    if "jax" not in skip:
        jax_run = make_jax(case, params, x, y)
        if jax_run is not None:
            frameworks["jax"] = jax_run
    if "torch" not in skip:
        torch_run = make_torch(case, params, x, y, threads)
        if torch_run is not None:
            frameworks["torch"] = torch_run
    if frameworks:
        times.update(interleaved(frameworks, rounds, slow={}))
    return {
        "case": case.label,
        "batch": m,
        "dtype": dtype,
        "agreement": agreement,
        "median": summarize(times, "median"),
        "min": summarize(times, "min"),
    }


def digits_comparison(epochs: int, batch_size: int, lr: float) -> dict[str, object] | None:
    """Seconds per epoch and accuracy: the generated module's train() against MLPClassifier."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    import warnings

    from chainrule.cmd_train import digits_dataset, fit, module_from_spec, split

    spec = Spec.from_sizes([64, 32, 10], ["relu", "softmax"], "cross-entropy", name="digits")
    module = module_from_spec(spec)
    data = digits_dataset()
    ours = fit(module, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=0)
    train_idx, test_idx = split(data.x.shape[0], 0)
    clf = MLPClassifier(
        hidden_layer_sizes=(32,),
        activation="relu",
        solver="sgd",
        batch_size=batch_size,
        learning_rate_init=lr,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        tol=0.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(data.x[train_idx], data.y[train_idx])
        sk_seconds = (time.perf_counter() - start) / clf.n_iter_
    sk_accuracy = float(clf.score(data.x[test_idx], data.y[test_idx]))
    return {
        "network": "64-32-10 relu softmax-CE",
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "chainrule": {
            "test_accuracy": ours.test_accuracy,
            "seconds_per_epoch": ours.seconds_per_epoch,
        },
        "sklearn": {"test_accuracy": sk_accuracy, "seconds_per_epoch": sk_seconds},
        "speedup": sk_seconds / ours.seconds_per_epoch,
    }


def pin_to_cpus(count: int) -> None:
    """Keep this process (and every thread it starts later) on ``count`` CPUs.

    BLAS, PyTorch and JAX each size their thread pools differently, and XLA's CPU
    runtime does not honour every thread flag; pinning the whole process is what makes
    a ``--threads 1`` run one core for every column alike.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))[:count]
    # On Linux the mask is per thread: set it on every thread that exists now (OpenBLAS
    # started its pool when NumPy was imported); threads started later inherit it.
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def machine_info(threads: int | None) -> dict[str, object]:
    """CPU, Python, NumPy, BLAS (threadpoolctl) and the OpenBLAS environment variables."""
    info: dict[str, object] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cpu_affinity": (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import threadpoolctl
    except ImportError:
        info["blas"] = "unknown (pip install threadpoolctl to see it)"
        return info
    pools = threadpoolctl.threadpool_info()
    info["blas"] = [
        {k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for pool in pools
        if pool.get("user_api") == "blas"
    ]
    return info


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def print_table(results: list[dict[str, object]], stat: str) -> None:
    """Markdown table: ms (median or min) and ratio to the floor of every implementation."""
    names = [
        n
        for n in ("generated_out", "generated", "numpy", "loop", "jax", "torch")
        if n in results[0][stat]["seconds"]
    ]
    titles = {"generated_out": "generated, out= ms (x floor)"}
    head = "| case | batch | dtype | floor ms | " + " | ".join(
        titles.get(n, f"{n} ms (x floor)") for n in names
    )
    print(head + " | generated vs numpy | generated vs loop |")
    print("|" + " --- |" * (4 + len(names) + 2))
    for r in results:
        sec, ratio = r[stat]["seconds"], r[stat]["ratio_to_floor"]
        cells = [f"{_ms(sec[n])} ({ratio[n]:.2f})" for n in names]
        best = _variant(ratio)
        faster_numpy = ratio["numpy"] / ratio[best]
        faster_loop = ratio["loop"] / ratio[best]
        print(
            f"| {r['case']} | {r['batch']} | {r['dtype']} | {_ms(sec['floor'])} | "
            + " | ".join(cells)
            + f" | {faster_numpy:.2f}x | {faster_loop:.0f}x |"
        )


def _variant(ratio: dict[str, float]) -> str:
    """The generated column the comparisons use: out= where the run has it (older runs
    saved with --json have only ``generated``)."""
    return "generated_out" if "generated_out" in ratio else "generated"


def targets_met(results: list[dict[str, object]], stat: str) -> list[str]:
    """One line per target of the issue and generated variant: met or not, with the figure."""
    lines = []
    for r in results:
        ratio = r[stat]["ratio_to_floor"]
        limit = 1.10 if r["batch"] >= 1024 else 1.25
        variants = [v for v in ("generated_out", "generated") if v in ratio]
        for variant in variants:
            g = ratio[variant]
            label = "out=" if variant == "generated_out" else "new arrays"
            where = f"{r['case']}, batch {r['batch']}, {r['dtype']}, {label}"
            checks = [(f"floor ratio {g:.2f} <= {limit}", g <= limit)]
            checks.append((f"beats numpy ({ratio['numpy']:.2f})", g < ratio["numpy"]))
            if "jax" in ratio:
                checks.append((f"beats jax ({ratio['jax']:.2f})", g < ratio["jax"]))
            speedup = ratio["loop"] / g
            checks.append((f"{speedup:.0f}x faster than the loop (>= 15)", speedup >= 15))
            for text, ok in checks:
                lines.append(f"{'MET    ' if ok else 'NOT MET'} {where}: {text}")
    return lines


def report(data: dict[str, object], stat: str) -> None:
    """Print the machine, the table, the targets and the digits comparison of one run."""
    info = data["machine"]
    print(
        f"machine: {info.get('cpu', info['machine'])}, {info['cpus']} CPUs "
        f"(this run on CPUs {info.get('cpu_affinity')}), "
        f"load average {info['load_average']} at the start, {info['load_average_end']} at the end"
    )
    print(f"python {info['python']}, numpy {info['numpy']}, BLAS {info['blas']}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if info[var] is not None:
            print(
                f"warning: {var}={info[var]} is set; it can slow OpenBLAS. Rerun with "
                "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
            )
    print(
        f"{data['rounds']} interleaved rounds per case; {stat} times; ratio = time / floor time\n"
    )
    print_table(data["results"], stat)
    print()
    for line in targets_met(data["results"], stat):
        print(line)
    digits = data.get("digits")
    if digits:
        c, s = digits["chainrule"], digits["sklearn"]
        print(
            f"\ndigits {digits['network']}, {digits['epochs']} epochs, batch "
            f"{digits['batch_size']}, lr {digits['lr']}:\n"
            f"  chainrule train(): {c['seconds_per_epoch'] * 1e3:.2f} ms/epoch, test accuracy "
            f"{c['test_accuracy']:.4f}\n"
            f"  sklearn MLPClassifier(sgd): {s['seconds_per_epoch'] * 1e3:.2f} ms/epoch, test "
            f"accuracy {s['test_accuracy']:.4f}\n"
            f"  chainrule is {digits['speedup']:.2f}x faster per epoch"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a report (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per case (60)")
    parser.add_argument("--quick", action="store_true", help="10 rounds, no digits training")
    parser.add_argument("--threads", type=int, help="BLAS threads (default: the library's)")
    parser.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="time of a case in the table: median (default) or min, the least disturbed "
        "call (use it on a machine shared with other work)",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated: jax,torch,digits (leave these out)"
    )
    parser.add_argument("--report", metavar="RUN.json", help="print the report of a saved run")
    args = parser.parse_args(argv)
    if args.report:
        report(json.loads(Path(args.report).read_text(encoding="utf-8")), args.stat)
        return 0
    rounds = 10 if args.quick else args.rounds
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    limiter = None
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            raise SystemExit("--threads needs threadpoolctl: pip install threadpoolctl") from None
        limiter = threadpool_limits(args.threads, user_api="blas")
        if args.threads == 1:  # JAX (imported later) gets one thread too
            os.environ.setdefault(
                "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            )
        pin_to_cpus(args.threads)
    info = machine_info(args.threads)
    blas = info.get("blas")
    threads = args.threads or (blas[0]["num_threads"] if isinstance(blas, list) and blas else 1)
    results = []
    for case in CASES:
        for dtype in DTYPES:
            for m in BATCHES:
                results.append(run_case(case, m, dtype, rounds, threads, skip))
                r = results[-1]
                ratio = r[args.stat]["ratio_to_floor"]
                print(
                    f"  done: {case.label}, batch {m}, {dtype}: generated "
                    f"{ratio['generated_out']:.2f}x floor with out=, "
                    f"{ratio['generated']:.2f}x with new arrays",
                    file=sys.stderr,
                )
    digits = None
    if not args.quick and "digits" not in skip:
        digits = digits_comparison(epochs=60, batch_size=32, lr=0.3)
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if limiter is not None:
        limiter.restore_original_limits()
    data = {"machine": info, "rounds": rounds, "results": results, "digits": digits}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        report(data, args.stat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
