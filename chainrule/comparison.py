"""Naive chain rule against memoized backpropagation, in numbers: :class:`Comparison`.

For one network, :func:`compare_spec` counts, per layer and in total, the operations
(as defined in :mod:`chainrule.derive.opcount`) of the four ways to get the gradient:
``naive`` (diff of the fully expanded cost), ``cse`` (the same after
common-subexpression elimination), ``backprop`` (the delta recursion) and finite
differences (2P + 1 forward passes), next to ``forward`` (one forward pass and the
cost). :func:`render_comparison` prints it as a Markdown table.

Networks too large for a scalar expansion (such as ``nielsen``, 784-30-10) get the
forward and backprop counts at layer level, which are exact at any width; naive and
cse are then reported as refused, with the estimated naive size.

A layer with dropout is counted with its mask entries D^l_j as symbols, constants of the
training step: a^l_j = D^l_j f(z^l_j), so every strategy pays for the mask where its
expressions hold it (one product per unit forward, one factor per unit in BP2 for
backprop; one factor per occurrence in the naive trees).

A network with batch norm is counted on a symbolic batch of m examples (m = 2 by
default, ``batch``), every count per batch (:mod:`chainrule.comparison_batch`): batch
norm couples the examples, so one example cannot show it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chainrule.comparison_batch import batch_counts, check_batch
from chainrule.derive import penalty
from chainrule.derive.errors import DerivationError
from chainrule.derive.scalar import (
    DEFAULT_BUDGET,
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
from chainrule.derive.spec import Spec, require_spec


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
    """Everything ``compare`` reports for one network (plain data, JSON-ready).

    ``dropout`` is each layer's drop probability p (0 without dropout); ``batch`` the
    number of symbolic examples counted together (1, but m for a network with batch
    norm: then every count is per batch of m examples)."""

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
    dropout: tuple[float, ...] = ()
    batch: int = 1
    l2: float = 0.0
    l1: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data (``batch`` only when it is not 1, ``l2`` and
        ``l1`` only when the cost has a penalty)."""
        data = asdict(self)
        data["layers"] = [asdict(row) for row in self.layers]
        if self.batch == 1:
            del data["batch"]
        if not (self.l2 or self.l1):
            del data["l2"], data["l1"]
        return data


def _ratio(a: int | float | None, b: int | float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass(frozen=True)
class _ScalarCounts:
    """The scalar-level counts of naive and cse, or why they were refused."""

    naive: int | None = None
    cse: int | None = None
    naive_layers: tuple[int | None, ...] = ()
    cse_layers: tuple[int | None, ...] = ()
    per_parameter: list[dict[str, Any]] | None = None
    temporaries: dict[str, int] | None = None
    refused: str | None = None


def _temporaries(g_cse: Any) -> dict[str, int]:
    """How many cse temporaries are deltas, other backward terms, forward values."""
    labels = label_temporaries(g_cse)
    delta = sum(1 for v in labels.values() if v.lstrip("-").startswith("delta"))
    backward = sum(1 for v in labels.values() if is_backward_label(v))
    return {
        "total": len(labels),
        "delta": delta,
        "other_backward": backward - delta,
        "forward": len(labels) - backward,
    }


def _scalar_counts(
    spec: Spec, engine: str, budget: int | None, with_temporaries: bool, progress: Any
) -> _ScalarCounts:
    """Expand naive and cse at scalar level (refused beyond the size and budget limits)."""
    none = (None,) * spec.depth
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
        return _ScalarCounts(naive_layers=none, cse_layers=none, refused=str(exc))
    c_naive, c_cse = count_strategy(g_naive), count_strategy(g_cse)
    c_bp = count_strategy(gradients(spec, "backprop"))
    per_parameter = [
        {"name": info.symbol.name, "layer": info.layer, "naive": n, "cse": c, "backprop": b}
        for info, n, c, b in zip(
            g_naive.network.info,
            c_naive.per_parameter,
            c_cse.per_parameter,
            c_bp.per_parameter,
            strict=True,
        )
    ]
    return _ScalarCounts(
        naive=c_naive.total,
        cse=c_cse.total,
        naive_layers=tuple(c_naive.per_layer),
        cse_layers=tuple(c_cse.per_layer),
        per_parameter=per_parameter,
        temporaries=_temporaries(g_cse) if with_temporaries else None,
    )


def _layer_rows(spec: Spec, scalar: _ScalarCounts, lc: Any, fd: int) -> list[LayerRow]:
    """One row per layer, then the total (layer 0)."""
    sizes = spec.sizes
    rows = []
    for index in range(1, spec.depth + 1):
        bias = sizes[index] if spec.layers[index - 1].bias else 0
        p = sizes[index] * sizes[index - 1] + bias
        rows.append(
            LayerRow(
                layer=index,
                parameters=p,
                naive=scalar.naive_layers[index - 1],
                cse=scalar.cse_layers[index - 1],
                backprop=lc.backprop_per_layer[index - 1],
                finite_difference=2 * p * lc.forward_ops,
                forward=lc.forward_per_layer[index - 1],
            )
        )
    rows.append(
        LayerRow(
            0, spec.parameter_count, scalar.naive, scalar.cse, lc.backprop_ops, fd, lc.forward_ops
        )
    )
    return rows


def compare_spec(
    spec: Spec,
    *,
    engine: str = "auto",
    budget: int | None = DEFAULT_BUDGET,
    with_temporaries: bool = True,
    progress: Any = None,
    batch: int | None = None,
) -> Comparison:
    """Count the operations of every strategy for ``spec``.

    A network with batch norm is counted on ``batch`` symbolic examples (default 2, at
    most 4); ``batch`` is refused for a network without batch norm.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> c = compare_spec(preset("3b1b-chain"), engine="sympy")
    >>> c.naive_ops > c.cse_ops and c.backprop_ops / c.forward_ops <= 4
    True
    """
    require_spec(spec)
    m = check_batch(spec, batch)
    if m > 1:
        return _batch_comparison(spec, m, engine, budget, with_temporaries, progress)
    lc = layer_counts(spec)
    fd = finite_difference_ops(spec, lc.forward_ops)
    used_engine = resolve_engine(engine, spec)
    scalar = _scalar_counts(spec, engine, budget, with_temporaries, progress)
    result = Comparison(
        network="-".join(map(str, spec.sizes)),
        sizes=tuple(spec.sizes),
        activations=spec.activations,
        cost=spec.cost,
        engine=used_engine,
        parameters=spec.parameter_count,
        forward_ops=lc.forward_ops,
        naive_ops=scalar.naive,
        naive_estimate=estimate_naive_ops(spec),
        cse_ops=scalar.cse,
        backprop_ops=lc.backprop_ops,
        finite_difference_ops=fd,
        finite_difference_one_sided_ops=finite_difference_ops(spec, lc.forward_ops, central=False),
        refused=scalar.refused,
        layers=_layer_rows(spec, scalar, lc, fd),
        per_parameter=scalar.per_parameter,
        temporaries=scalar.temporaries,
        dropout=tuple(float(layer.dropout) for layer in spec.layers),
        l2=spec.l2,
        l1=spec.l1,
    )
    result.ratios = {
        "backprop_over_forward": _ratio(lc.backprop_ops, lc.forward_ops),
        "naive_over_backprop": _ratio(scalar.naive, lc.backprop_ops),
        "cse_over_backprop": _ratio(scalar.cse, lc.backprop_ops),
        "finite_difference_over_backprop": _ratio(fd, lc.backprop_ops),
    }
    return result


def _batch_comparison(
    spec: Spec, m: int, engine: str, budget: int | None, with_temporaries: bool, progress: Any
) -> Comparison:
    """:func:`compare_spec` of a network with batch norm, on a batch of ``m`` examples."""
    c = batch_counts(spec, m, engine, budget, with_temporaries, progress)
    naive, cse, bp, forward = c.get("naive"), c.get("cse"), c["backprop"], c["forward"]
    fwd = sum(forward)
    fd = finite_difference_ops(spec, fwd)
    rows = []
    for index in range(1, spec.depth + 1):
        p = sum(1 for info in c["net"].info if info.layer == index)
        rows.append(
            LayerRow(
                index,
                p,
                naive.per_layer[index - 1] if naive else None,
                cse.per_layer[index - 1] if cse else None,
                bp.per_layer[index - 1],
                2 * p * fwd,
                forward[index - 1],
            )
        )
    totals = (naive.total if naive else None), (cse.total if cse else None)
    rows.append(LayerRow(0, spec.parameter_count, *totals, bp.total, fd, fwd))
    result = Comparison(
        network="-".join(map(str, spec.sizes)),
        sizes=tuple(spec.sizes),
        activations=spec.activations,
        cost=spec.cost,
        engine=resolve_engine(engine, spec),
        parameters=spec.parameter_count,
        forward_ops=fwd,
        naive_ops=totals[0],
        naive_estimate=c["naive_estimate"],
        cse_ops=totals[1],
        backprop_ops=bp.total,
        finite_difference_ops=fd,
        finite_difference_one_sided_ops=finite_difference_ops(spec, fwd, central=False),
        refused=c.get("refused"),
        layers=rows,
        per_parameter=_per_parameter(c) if naive else None,
        temporaries=c.get("temporaries"),
        dropout=tuple(float(layer.dropout) for layer in spec.layers),
        batch=m,
        l2=spec.l2,
        l1=spec.l1,
    )
    result.ratios = {
        "backprop_over_forward": _ratio(bp.total, fwd),
        "naive_over_backprop": _ratio(totals[0], bp.total),
        "cse_over_backprop": _ratio(totals[1], bp.total),
        "finite_difference_over_backprop": _ratio(fd, bp.total),
    }
    return result


def _per_parameter(c: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per parameter: its name, layer and the three strategies' counts."""
    return [
        {"name": info.symbol.name, "layer": info.layer, "naive": n, "cse": s, "backprop": b}
        for info, n, s, b in zip(
            c["net"].info,
            c["naive"].per_parameter,
            c["cse"].per_parameter,
            c["backprop"].per_parameter,
            strict=True,
        )
    ]


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


def _dropout_lines(c: Comparison) -> list[str]:
    """One line on the dropout masks when a layer has dropout (none otherwise)."""
    # p as written (its shortest repr): 0.9999999 must not read as 1, nor 0.30000000000000004 as 0.3
    layers = [f"layer {i} p = {p!r}" for i, p in enumerate(c.dropout, start=1) if p]
    if not layers:
        return []
    return [
        f"dropout: {', '.join(layers)}; each mask entry D^l_j = r/(1 - p) is a constant of "
        "the step: a^l_j = D^l_j f(z^l_j), and BP2 multiplies delta^l_j by D^l_j"
    ]


def _penalty_lines(c: Comparison) -> list[str]:
    """One line on the L2/L1 weight penalty when the cost has one (none otherwise)."""
    if not (c.l2 or c.l1):
        return []
    value = (["(l2/2) sum_l ||W^l||^2"] if c.l2 else []) + (["l1 sum_l sum |W^l|"] if c.l1 else [])
    slope = (["l2 W^l"] if c.l2 else []) + (["l1 sign(W^l)"] if c.l1 else [])
    where = "each example's cost C_x" if c.batch == 1 else "the batch cost, once"
    return [
        f"penalty: {' + '.join(value)} (weights, not biases) is part of {where}, and its "
        f"gradient {' + '.join(slope)} part of BP4: every count includes both"
    ]


def _batch_lines(c: Comparison) -> list[str]:
    """One line on the batch of a network with batch norm (none for one example)."""
    if c.batch == 1:
        return []
    return [
        f"batch norm couples the examples of a batch, so the counts are of a symbolic batch "
        f"of m = {c.batch} examples: the batch cost (1/m) sum_i C_i, the mean and biased "
        "variance of each unit once per batch, and backprop's three-term error through them"
    ]


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
        f"network {c.network} ({', '.join(c.activations)}; {c.cost} cost"
        f"{penalty.title(c.l2, c.l1)}), "
        f"{c.parameters:,} parameters; operations per "
        + ("example" if c.batch == 1 else f"batch of {c.batch} examples")
        + f" (engine: {c.engine})",
        "",
        *_table(header, rows),
        "",
        *_batch_lines(c),
        *_penalty_lines(c),
        *_dropout_lines(c),
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
