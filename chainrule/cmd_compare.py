"""``chainrule compare``: print (and time) the operation counts of every gradient strategy.

The counts come from :func:`chainrule.comparison.compare_spec`. With ``--time`` this
command also times the gradient of each unrolled module on the same batch, saying
which strategies could not be unrolled. ``--sweep`` runs a family of networks and
prints (and with ``--plot`` draws) how each count grows; the picture is written through
the one atomic writer, replacing only a picture chainrule drew unless ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chainrule.cliargs import (
    add_spec_arguments,
    count_type,
    positive_count,
    spec_from_args,
)
from chainrule.comparison import _num, _table, compare_spec, render_comparison
from chainrule.comparison_batch import add_batch_argument, check_batch
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.scalar import DEFAULT_BUDGET, ENGINES, estimate_naive_ops
from chainrule.derive.spec import Spec
from chainrule.outfiles import plot_format, refuse_foreign_picture, save_figure

#: Unrolled modules are timed only up to this many parameters.
TIME_MAX_PARAMETERS = 200


# --------------------------------------------------------------------------- sweep


def parse_sweep(text: str) -> tuple[str, list[int]]:
    """``depth=1:8`` or ``width=1:6`` -> (axis, values)."""
    axis, _, span = text.partition("=")
    axis = axis.strip()
    if axis not in ("depth", "width") or ":" not in span:
        raise SpecError(
            "sweep", f"cannot read {text!r}", "write --sweep depth=1:8 or --sweep width=1:6"
        )
    lo_text, _, hi_text = span.partition(":")
    # int() reads Unicode digits ("\u0661:\u0663") and 4,300-digit numbers: bounds are
    # at most 3 ASCII digits (the range ends at 16 anyway).
    if not all(
        re.fullmatch(r"[0-9]{1,3}", bound.strip(), re.ASCII) for bound in (lo_text, hi_text)
    ):
        raise SpecError(
            "sweep", f"bounds of {text!r} are not whole numbers 1-16", "write e.g. depth=1:8"
        )
    lo, hi = int(lo_text), int(hi_text)
    if not 1 <= lo <= hi <= 16:
        raise SpecError("sweep", f"range {lo}:{hi}", "give 1 <= start <= end <= 16")
    return axis, list(range(lo, hi + 1))


def sweep_specs(
    axis: str, values: list[int], width: int, depth: int, activation: str, cost: str
) -> list[Spec]:
    """The family: ``depth`` layers of ``width`` units on ``width`` inputs."""
    out = []
    for v in values:
        w, d = (width, v) if axis == "depth" else (v, depth)
        out.append(Spec.from_sizes([w] * (d + 1), [activation] * d, cost, name=f"{axis}-{v}"))
    return out


def run_sweep(
    axis: str, specs: list[Spec], values: list[int], engine: str, budget: int | None
) -> list[dict[str, Any]]:
    """One row of counts per network of the family."""
    rows = []
    for value, spec in zip(values, specs, strict=True):
        c = compare_spec(spec, engine=engine, budget=budget, with_temporaries=False)
        rows.append(
            {
                axis: value,
                "network": c.network,
                "parameters": c.parameters,
                "forward_ops": c.forward_ops,
                "naive_ops": c.naive_ops,
                "naive_estimate": c.naive_estimate,
                "cse_ops": c.cse_ops,
                "backprop_ops": c.backprop_ops,
                "finite_difference_ops": c.finite_difference_ops,
            }
        )
    return rows


def render_sweep(axis: str, rows: list[dict[str, Any]], title: str) -> str:
    """The growth table of a sweep, in Markdown."""
    header = [axis, "network", "params", "naive", "cse", "backprop", "finite diff", "forward"]
    body = []
    for r in rows:
        naive = (
            _num(r["naive_ops"])
            if r["naive_ops"] is not None
            else (f"~{r['naive_estimate']:.2g} (refused)")
        )
        body.append(
            [
                str(r[axis]),
                r["network"],
                _num(r["parameters"]),
                naive,
                _num(r["cse_ops"]),
                _num(r["backprop_ops"]),
                _num(r["finite_difference_ops"]),
                _num(r["forward_ops"]),
            ]
        )
    return "\n".join([title, "", *_table(header, body, left=2)])


def plot_sweep(
    axis: str, rows: list[dict[str, Any]], path: str, title: str, *, force: bool = False
) -> None:
    """Draw ops against ``axis`` on a log scale, one line per strategy (needs matplotlib).

    The picture replaces only a picture chainrule drew, unless ``force``.
    """
    plot_format(path, "--plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpecError(
            "plot",
            "matplotlib is not installed",
            "pip install 'chainrule[plot]' (or matplotlib), or leave out --plot",
        ) from None
    xs = [r[axis] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [
        ("naive_ops", "naive (expanded chain rule)", "o-"),
        ("cse_ops", "cse (shared subexpressions)", "s-"),
        ("backprop_ops", "backprop (delta recursion)", "^-"),
        ("finite_difference_ops", "finite differences (2P+1 passes)", "v--"),
        ("forward_ops", "forward pass", "k:"),
    ]
    for key, label, style in series:
        pts = [(x, r[key]) for x, r in zip(xs, rows, strict=True) if r[key] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=label)
    refused = [
        (x, r["naive_estimate"]) for x, r in zip(xs, rows, strict=True) if r["naive_ops"] is None
    ]
    if refused:
        ax.plot(
            *zip(*refused, strict=True),
            "o",
            mfc="none",
            color="C0",
            label="naive (estimate, refused)",
        )
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("operations per example")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path, force=force, flag="--plot")
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- timing


def time_strategies(spec: Spec, engine: str, budget: int | None) -> dict[str, float]:
    """Best-of-5 seconds of one ``loss_and_grad`` call of each unrolled module (and the
    vectorized one) on the same 32-example batch."""
    import tempfile

    import numpy as np

    from chainrule.check import load_module, random_batch
    from chainrule.codegen.render import generate_module
    from chainrule.codegen.unrolled import generate_unrolled

    if spec.parameter_count > TIME_MAX_PARAMETERS:
        raise SpecError(
            "time",
            f"{spec.parameter_count} parameters is too many to time unrolled modules",
            f"use --time with at most {TIME_MAX_PARAMETERS} parameters",
        )
    sources = {}
    for strategy in ("naive", "cse", "backprop"):
        try:
            sources[strategy] = generate_unrolled(spec, strategy, engine=engine, budget=budget)
        except ChainruleError as exc:  # too large to unroll: not timed, and say why
            print(f"chainrule: {strategy} is not timed: {exc}", file=sys.stderr)
    sources["vectorized"] = generate_module(spec)
    times = {}
    rng = np.random.default_rng(0)
    batch = None
    with tempfile.TemporaryDirectory(prefix="chainrule-time-") as folder:
        for name, source in sources.items():
            path = Path(folder) / f"timed_{name}.py"
            path.write_text(source, encoding="utf-8")
            module = load_module(path)
            if batch is None:
                batch = random_batch(module, 32, rng)
            params = module.init_params(0)
            module.loss_and_grad(params, *batch)
            best = float("inf")
            reps = 20
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(reps):
                    module.loss_and_grad(params, *batch)
                best = min(best, (time.perf_counter() - start) / reps)
            times[name] = best
            sys.modules.pop(module.__name__, None)
    return times


# --------------------------------------------------------------------------- command


def _sweep(args: argparse.Namespace, budget: int) -> int:
    axis, values = parse_sweep(args.sweep)
    activation = args.activation or "sigmoid"
    cost = args.cost or "quadratic"
    if args.spec or args.preset or args.sizes:
        raise SpecError(
            "sweep", "a sweep builds its own networks", "leave out the spec with --sweep"
        )
    # Options that would change the networks' counts, which the sweep's networks lack.
    for flag in ("dropout", "l2", "l1", "no_bias", "from_keras", "from_torch", "batch"):
        if getattr(args, flag, None):
            option = "--" + flag.replace("_", "-")
            raise SpecError(
                option, "a sweep builds its own networks without it", f"leave out {option}"
            )
    if args.plot:
        plot_format(args.plot, "--plot")  # refuse a bad name or a user's file before the work
        refuse_foreign_picture(args.plot, force=args.force)
    specs = sweep_specs(axis, values, args.width, args.depth, activation, cost)
    _warn_long(specs, budget)
    rows = run_sweep(axis, specs, values, args.engine, budget)
    fixed = f"width {args.width}" if axis == "depth" else f"depth {args.depth}"
    title = f"ops per example against {axis} ({fixed}, {activation}, {cost} cost)"
    if args.json:
        print(json.dumps({"sweep": axis, "rows": rows}, indent=2))
    else:
        print(render_sweep(axis, rows, title))
    if args.plot:
        plot_sweep(axis, rows, args.plot, title, force=args.force)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


#: A naive expansion estimated above this many operations runs for minutes: say so first.
SLOW_ESTIMATE = DEFAULT_BUDGET


def _warn_long(specs: list[Spec], budget: int) -> None:
    """One line on stderr when a naive expansion within ``budget`` will still take long."""
    largest = max(estimate_naive_ops(spec) for spec in specs)
    if SLOW_ESTIMATE < largest <= budget:
        print(
            f"chainrule: the naive expansion is estimated at {largest:.2g} operations "
            f"(above {SLOW_ESTIMATE:.2g}); it can take many minutes (Ctrl-C stops it, "
            "a smaller --budget refuses it)",
            file=sys.stderr,
        )


#: A batch expansion (batch norm) runs at about 25 us per estimated operation: from
#: this estimate on it takes more than about half a minute.
SLOW_BATCH_ESTIMATE = 1_000_000


#: Seconds of symbolic expansion after which ``compare`` says that it is taking long.
SLOW_EXPANSION_SECONDS = 5.0


@contextlib.contextmanager
def _notice_if_slow(line: str, seconds: float | None = None) -> Iterator[None]:
    """Print ``line`` on stderr once if the body is still running after ``seconds``
    (:data:`SLOW_EXPANSION_SECONDS`): a long expansion is never silent."""
    timer = threading.Timer(SLOW_EXPANSION_SECONDS if seconds is None else seconds, _say, (line,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _warn_long_batch(spec: Spec, m: int, budget: int) -> None:
    """One line on stderr when the naive expansion over a batch of ``m`` will take long."""
    from chainrule.derive.scalar_batch_program import estimate_batch_naive_ops
    from chainrule.derive.scalar_network import batch_scalar_network

    with _notice_if_slow(
        f"chainrule: expanding the {'-'.join(map(str, spec.sizes))} network over a batch of "
        f"{m} symbolically is taking long (it can take minutes past a few hundred "
        "parameters; Ctrl-C stops it, a smaller network or --batch 2 is faster)"
    ):
        estimate = estimate_batch_naive_ops(batch_scalar_network(spec, m))
    if SLOW_BATCH_ESTIMATE < estimate <= budget:
        print(
            f"chainrule: the naive expansion over a batch of {m} is estimated at "
            f"{estimate:.2g} operations; it can take minutes (Ctrl-C stops it, a smaller "
            "--budget refuses it)",
            file=sys.stderr,
        )


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison of one network, or of a sweep of networks."""
    budget = args.budget
    if args.sweep:
        return _sweep(args, budget)
    if args.plot:
        # A sweep refuses a named network, so the fix must say to leave it out.
        named = args.spec or args.preset or args.sizes
        fix = "add --sweep depth=1:8 (or width=1:6)"
        raise SpecError(
            "plot",
            "--plot draws a sweep of networks",
            f"leave out the network and {fix}" if named else fix,
        )
    if args.activation is not None:
        raise SpecError(
            "activation", "--activation goes with --sweep", "use --activations for a one-liner"
        )
    spec = spec_from_args(args)
    from chainrule.progress import stage_printer

    m = check_batch(spec, args.batch, "--batch")  # refused, naming the flag, without batch norm
    if m > 1:
        _warn_long_batch(spec, m, budget)
    else:
        _warn_long([spec], budget)
    result = compare_spec(
        spec, engine=args.engine, budget=budget, progress=stage_printer(), batch=args.batch
    )
    if args.time:
        result.times = time_strategies(spec, args.engine, budget)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_comparison(result))
    return 0


def _budget(text: str) -> int:
    return positive_count(text, "--budget")


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule compare``."""
    parser.description = "Operations per example of every way to compute the gradient."
    parser.epilog = (
        "examples:\n"
        "  chainrule compare --preset 3b1b-chain\n"
        "  chainrule compare --preset cheatsheet-relu --json\n"
        "  chainrule compare --sizes 2,3,3,1 --activations tanh,tanh,sigmoid "
        "--cost binary-cross-entropy --time\n"
        "  chainrule compare --sweep depth=1:8 --width 3 --plot growth.png\n"
        "  chainrule compare --sweep width=1:6 --depth 3"
    )
    add_spec_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_batch_argument(parser)
    parser.add_argument(
        "--time", action="store_true", help="also time each unrolled module's gradient"
    )
    parser.add_argument("--sweep", help="a family of networks: depth=1:8 or width=1:6")
    parser.add_argument(
        "--width", type=count_type("--width"), default=3, help="width of a depth sweep (3)"
    )
    parser.add_argument(
        "--depth", type=count_type("--depth"), default=3, help="depth of a width sweep (3)"
    )
    parser.add_argument(
        "--activation", help="activation of every layer of a sweep (default sigmoid)"
    )
    parser.add_argument("--plot", help="with --sweep: draw the growth to FILE.png or FILE.svg")
    parser.add_argument(
        "--force", action="store_true", help="let --plot replace a file chainrule did not draw"
    )
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto", help="symbolic engine for naive and cse"
    )
    parser.add_argument(
        "--budget",
        type=_budget,
        default=DEFAULT_BUDGET,
        help=f"refuse naive expansions estimated above this many operations "
        f"(a positive number such as 2e7 or 20000000; default {DEFAULT_BUDGET:,})",
    )
    parser.set_defaults(func=cmd_compare)
