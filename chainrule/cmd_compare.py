"""``chainrule compare``: naive chain rule against memoized backpropagation, in numbers.

For one network it prints, per layer and in total, the operations (as defined in
:mod:`chainrule.derive.opcount`) of the four ways to get the gradient: ``naive`` (diff of the
fully expanded cost), ``cse`` (the same after common-subexpression elimination),
``backprop`` (the delta recursion) and finite differences (2P + 1 forward passes),
next to ``forward`` (one forward pass and the cost). With ``--time`` it also times
the gradient of each unrolled module on the same batch. ``--sweep`` runs a family
of networks and prints (and with ``--plot`` draws) how each count grows.

Networks too large for a scalar expansion (such as ``nielsen``, 784-30-10) get the
forward and backprop counts at layer level, which are exact at any width; naive and
cse are then reported as refused, with the estimated naive size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from chainrule.derive.errors import ChainruleError, DerivationError, SpecError
from chainrule.derive.scalar import (
    DEFAULT_BUDGET,
    ENGINES,
    MAX_SCALAR_PARAMETERS,
    count_strategy,
    estimate_naive_ops,
    finite_difference_ops,
    gradients,
    is_backward_label,
    label_temporaries,
    layer_counts,
    resolve_engine,
)
from chainrule.derive.spec import Spec

#: Unrolled modules are timed only up to this many parameters.
TIME_MAX_PARAMETERS = 200


@dataclass
class LayerRow:
    """Counts of one layer (or of the whole network when ``layer`` is 0)."""

    layer: int
    parameters: int
    naive: int | None
    cse: int | None
    backprop: int
    finite_difference: int
    forward: int


@dataclass
class Comparison:
    """Everything ``compare`` reports for one network (plain data, JSON-ready)."""

    network: str
    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    cost: str
    engine: str
    parameters: int
    forward_ops: int
    naive_ops: int | None
    naive_estimate: int
    cse_ops: int | None
    backprop_ops: int
    finite_difference_ops: int
    finite_difference_one_sided_ops: int
    refused: str | None
    layers: list[LayerRow]
    per_parameter: list[dict[str, Any]] | None
    temporaries: dict[str, int] | None
    times: dict[str, float] | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data."""
        data = asdict(self)
        data["layers"] = [asdict(row) for row in self.layers]
        return data


def _ratio(a: int | float | None, b: int | float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compare_spec(
    spec: Spec,
    *,
    engine: str = "auto",
    budget: int | None = DEFAULT_BUDGET,
    with_temporaries: bool = True,
    progress: Any = None,
) -> Comparison:
    """Count the operations of every strategy for ``spec``.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> c = compare_spec(preset("3b1b-chain"), engine="sympy")
    >>> c.naive_ops > c.cse_ops and c.backprop_ops / c.forward_ops <= 4
    True
    """
    depth = spec.depth
    sizes = spec.sizes
    lc = layer_counts(spec)
    estimate = estimate_naive_ops(spec)
    fd = finite_difference_ops(spec, lc.forward_ops)
    fd1 = finite_difference_ops(spec, lc.forward_ops, central=False)
    naive = cse = None
    naive_layers: tuple[int | None, ...] = (None,) * depth
    cse_layers: tuple[int | None, ...] = (None,) * depth
    per_parameter = None
    temporaries = None
    refused = None
    used_engine = resolve_engine(engine, spec)
    try:
        if spec.parameter_count > MAX_SCALAR_PARAMETERS:
            raise DerivationError(
                "strategy",
                f"{spec.parameter_count} parameters is too many for a scalar-level expansion",
                "naive and cse are counted only for small networks",
            )
        g_naive = gradients(spec, "naive", engine=engine, budget=budget, progress=progress)
        g_cse = gradients(spec, "cse", engine=engine, budget=budget, progress=progress)
    except DerivationError as exc:
        refused = str(exc)
    else:
        c_naive, c_cse = count_strategy(g_naive), count_strategy(g_cse)
        g_bp = gradients(spec, "backprop")
        c_bp = count_strategy(g_bp)
        naive, cse = c_naive.total, c_cse.total
        naive_layers, cse_layers = c_naive.per_layer, c_cse.per_layer
        per_parameter = [
            {
                "name": info.symbol.name,
                "layer": info.layer,
                "naive": n,
                "cse": c,
                "backprop": b,
            }
            for info, n, c, b in zip(
                g_naive.network.info,
                c_naive.per_parameter,
                c_cse.per_parameter,
                c_bp.per_parameter,
                strict=True,
            )
        ]
        if with_temporaries:
            labels = label_temporaries(g_cse)
            delta = sum(1 for v in labels.values() if v.lstrip("-").startswith("delta"))
            backward = sum(1 for v in labels.values() if is_backward_label(v))
            temporaries = {
                "total": len(labels),
                "delta": delta,
                "other_backward": backward - delta,
                "forward": len(labels) - backward,
            }
    layers = []
    for index in range(1, depth + 1):
        bias = sizes[index] if spec.layers[index - 1].bias else 0
        p = sizes[index] * sizes[index - 1] + bias
        layers.append(
            LayerRow(
                layer=index,
                parameters=p,
                naive=naive_layers[index - 1],
                cse=cse_layers[index - 1],
                backprop=lc.backprop_per_layer[index - 1],
                finite_difference=2 * p * lc.forward_ops,
                forward=lc.forward_per_layer[index - 1],
            )
        )
    layers.append(
        LayerRow(0, spec.parameter_count, naive, cse, lc.backprop_ops, fd, lc.forward_ops)
    )
    result = Comparison(
        network="-".join(map(str, sizes)),
        sizes=tuple(sizes),
        activations=spec.activations,
        cost=spec.cost,
        engine=used_engine,
        parameters=spec.parameter_count,
        forward_ops=lc.forward_ops,
        naive_ops=naive,
        naive_estimate=estimate,
        cse_ops=cse,
        backprop_ops=lc.backprop_ops,
        finite_difference_ops=fd,
        finite_difference_one_sided_ops=fd1,
        refused=refused,
        layers=layers,
        per_parameter=per_parameter,
        temporaries=temporaries,
    )
    result.ratios = {
        "backprop_over_forward": _ratio(lc.backprop_ops, lc.forward_ops),
        "naive_over_backprop": _ratio(naive, lc.backprop_ops),
        "cse_over_backprop": _ratio(cse, lc.backprop_ops),
        "finite_difference_over_backprop": _ratio(fd, lc.backprop_ops),
    }
    return result


# --------------------------------------------------------------------------- output


def _num(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return f"{value:,}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table; the first ``left`` columns are text, the rest numbers."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(out) + " |"

    rules = ["-" * w if i < left else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return [line(header), "| " + " | ".join(rules) + " |", *(line(r) for r in rows)]


def render_comparison(c: Comparison) -> str:
    """The comparison as a Markdown table with the ratios below it."""
    header = ["layer", "params", "naive", "cse", "backprop", "finite diff", "forward"]
    rows = []
    for row in c.layers:
        name = "total" if row.layer == 0 else str(row.layer)
        rows.append(
            [
                name,
                _num(row.parameters),
                _num(row.naive),
                _num(row.cse),
                _num(row.backprop),
                _num(row.finite_difference),
                _num(row.forward),
            ]
        )
    lines = [
        f"network {c.network} ({', '.join(c.activations)}; {c.cost} cost), "
        f"{c.parameters:,} parameters; operations per example (engine: {c.engine})",
        "",
        *_table(header, rows),
        "",
    ]
    r = c.ratios
    lines.append(
        f"backprop / forward = {_num(r['backprop_over_forward'])} "
        "(a gradient costs a small constant times the function)"
    )
    if c.naive_ops is not None:
        lines.append(f"naive / backprop = {_num(r['naive_over_backprop'])}")
        lines.append(f"cse / backprop = {_num(r['cse_over_backprop'])}")
    else:
        lines.append(f"naive: refused ({c.refused})")
        lines.append(f"naive estimate: about {c.naive_estimate:.3g} operations")
    lines.append(
        f"finite differences / backprop = {_num(r['finite_difference_over_backprop'])} "
        f"(central: 2P + 1 = {2 * c.parameters + 1:,} forward passes; "
        f"one-sided: {_num(c.finite_difference_one_sided_ops)} operations)"
    )
    if c.temporaries:
        t = c.temporaries
        lines.append(
            f"cse temporaries: {t['total']}, of which {t['delta']} are deltas delta^l_j, "
            f"{t['other_backward']} other backward terms, {t['forward']} forward values"
        )
    if c.times:
        parts = [f"{k} {v * 1e6:,.1f} us" for k, v in c.times.items()]
        lines.append("time of one gradient (best of 5): " + ", ".join(parts))
    return "\n".join(lines)


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
    try:
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise SpecError(
            "sweep", f"bounds of {text!r} are not whole numbers", "write e.g. depth=1:8"
        ) from None
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


def plot_sweep(axis: str, rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Draw ops against ``axis`` on a log scale, one line per strategy (needs matplotlib)."""
    if not path.lower().endswith((".png", ".svg")):
        raise SpecError("plot", f"{path!r} is neither .png nor .svg", "name the file FILE.png")
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
        fig.savefig(path, metadata={"Date": None} if path.lower().endswith(".svg") else None)
    except OSError as exc:
        raise SpecError(
            "plot", f"cannot write {path!r} ({exc.strerror})", "choose a writable path"
        ) from None
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- timing


def time_strategies(spec: Spec, engine: str, budget: int | None) -> dict[str, float]:
    """Best-of-5 seconds of one ``loss_and_grad`` call of each unrolled module (and the
    vectorized one) on the same 32-example batch."""
    import tempfile
    from pathlib import Path

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
        except ChainruleError:
            continue  # too large to unroll: not timed
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


def cmd_compare(args: argparse.Namespace) -> int:
    from chainrule.cli import spec_from_args

    budget = None if args.budget == 0 else args.budget
    if args.sweep:
        axis, values = parse_sweep(args.sweep)
        activation = args.activation or "sigmoid"
        cost = args.cost or "quadratic"
        if args.spec or args.preset or args.sizes:
            raise SpecError(
                "sweep", "a sweep builds its own networks", "leave out the spec with --sweep"
            )
        specs = sweep_specs(axis, values, args.width, args.depth, activation, cost)
        rows = run_sweep(axis, specs, values, args.engine, budget)
        fixed = f"width {args.width}" if axis == "depth" else f"depth {args.depth}"
        title = f"ops per example against {axis} ({fixed}, {activation}, {cost} cost)"
        if args.json:
            print(json.dumps({"sweep": axis, "rows": rows}, indent=2))
        else:
            print(render_sweep(axis, rows, title))
        if args.plot:
            plot_sweep(axis, rows, args.plot, title)
            if not args.json:
                print(f"wrote {args.plot}")
        return 0
    if args.plot:
        raise SpecError("plot", "--plot draws a sweep", "add --sweep depth=1:8 (or width=1:6)")
    if args.activation is not None:
        raise SpecError(
            "activation", "--activation goes with --sweep", "use --activations for a one-liner"
        )
    spec = spec_from_args(args)
    from chainrule.progress import stage_printer

    result = compare_spec(spec, engine=args.engine, budget=budget, progress=stage_printer())
    if args.time:
        result.times = time_strategies(spec, args.engine, budget)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_comparison(result))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``compare`` subcommand."""
    from chainrule.cli import add_spec_arguments

    parser = subparsers.add_parser(
        "compare",
        help="count (and time) naive, cse, backprop and finite-difference gradients",
        description="Operations per example of every way to compute the gradient.",
        epilog="examples:\n"
        "  chainrule compare --preset 3b1b-chain\n"
        "  chainrule compare --preset cheatsheet-relu --json\n"
        "  chainrule compare --sizes 2,3,3,1 --activations tanh,tanh,sigmoid "
        "--cost binary-cross-entropy --time\n"
        "  chainrule compare --sweep depth=1:8 --width 3 --plot growth.png\n"
        "  chainrule compare --sweep width=1:6 --depth 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--time", action="store_true", help="also time each unrolled module's gradient"
    )
    parser.add_argument("--sweep", help="a family of networks: depth=1:8 or width=1:6")
    parser.add_argument("--width", type=int, default=3, help="width of a depth sweep (3)")
    parser.add_argument("--depth", type=int, default=3, help="depth of a width sweep (3)")
    parser.add_argument(
        "--activation", help="activation of every layer of a sweep (default sigmoid)"
    )
    parser.add_argument("--plot", help="with --sweep: draw the growth to FILE.png or FILE.svg")
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto", help="symbolic engine for naive and cse"
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_BUDGET,
        help=f"refuse naive expansions estimated above this many operations "
        f"(default {DEFAULT_BUDGET:,}; 0 means no limit)",
    )
    parser.set_defaults(func=cmd_compare)
