"""The naive-versus-memoized comparison of a network with batch norm, on a batch of m.

Batch norm couples the examples of a batch (the variance of one example is 0), so a
network with a batch-normalized layer is counted on m symbolic examples at once
(:func:`~chainrule.derive.scalar_network.batch_scalar_network`, m = 2 by default, at
most :data:`~chainrule.derive.scalar_batch_program.MAX_BATCH`): ``naive`` differentiates
the batch cost (1/m) sum_i C_i expanded, ``cse`` shares its subexpressions, and
``backprop`` is the memoized program over the batch
(:func:`~chainrule.derive.scalar_batch_program.batch_program`): the forward pass of each
example with the mean and variance of each unit once, then the deltas, the two batch
means of the three-term form and the error at u once per example. Every count is per
batch of m examples. :func:`check_batch` reads the batch size of ``compare --batch`` and
``graph --batch`` and of the Python API.
"""

from __future__ import annotations

import argparse
from typing import Any

from chainrule.derive.errors import DerivationError, SpecError
from chainrule.derive.opcount import program_ops
from chainrule.derive.scalar import count_strategy, gradients
from chainrule.derive.scalar_batch_program import (
    DEFAULT_BATCH,
    MAX_BATCH,
    batch_cost_statement,
    batch_program,
    estimate_batch_naive_ops,
)
from chainrule.derive.scalar_network import batch_scalar_network
from chainrule.derive.spec import Spec


def check_batch(spec: Spec, batch: int | None, flag: str = "batch") -> int:
    """The batch size m of ``spec``'s scalar expansion: ``batch`` (default 2) for a network
    with batch norm, 1 (one example) without; ``batch`` is refused when the network has no
    batch norm or it is not a whole number 2..:data:`MAX_BATCH`."""
    if not spec.batch_norm_layers:
        if batch is not None:
            raise SpecError(
                flag,
                "a batch applies to a network with batch_norm (without it the examples "
                "are independent and the counts are per example)",
                f"leave out {flag}",
            )
        return 1
    if batch is None:
        return DEFAULT_BATCH
    if isinstance(batch, bool) or not isinstance(batch, int) or not 2 <= batch <= MAX_BATCH:
        raise SpecError(
            flag, f"{batch!r} is not a batch size 2..{MAX_BATCH}", f"give 2 to {MAX_BATCH}"
        )
    return batch


def batch_type(text: str) -> int:
    """argparse type of ``--batch``: ASCII digits, 2..:data:`MAX_BATCH`."""
    from chainrule.cliargs import whole_number

    return whole_number(text, "--batch", minimum=2, maximum=MAX_BATCH)


def add_batch_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--batch M`` option of ``compare`` and ``graph``."""
    parser.add_argument(
        "--batch",
        type=batch_type,
        default=None,
        metavar="M",
        help=f"with batch norm: the number of symbolic examples, 2 to {MAX_BATCH} "
        f"(default {DEFAULT_BATCH}); refused for a network without batch norm",
    )


def forward_counts(spec: Spec, m: int) -> list[int]:
    """Operations of the forward pass and the batch cost over m examples, per layer."""
    program, _ = batch_program(spec, m)
    memo: dict = {}
    per_layer = [0] * spec.depth
    for s in program:
        if s.label == "forward":
            per_layer[s.stage - 1] += program_ops([(s.expr, 1)], memo)
    per_layer[-1] += program_ops([(batch_cost_statement(spec, m).expr, 1)], memo)
    return per_layer


def batch_counts(
    spec: Spec, m: int, engine: str, budget: int | None, with_temporaries: bool, progress: Any
) -> dict[str, Any]:
    """Every count of :class:`~chainrule.comparison.Comparison` for the batch of ``m``.

    Raises
    ------
    DerivationError
        When the network is too large for a scalar expansion over ``m`` examples.
    """
    from chainrule.comparison import _temporaries

    net = batch_scalar_network(spec, m)
    c_bp = count_strategy(gradients(net, "backprop"))
    out: dict[str, Any] = {
        "net": net,
        "backprop": c_bp,
        "forward": forward_counts(spec, m),
        "naive_estimate": estimate_batch_naive_ops(net),
    }
    try:
        g_naive = gradients(net, "naive", engine=engine, budget=budget, progress=progress)
        g_cse = gradients(net, "cse", engine=engine, budget=budget, progress=progress)
    except DerivationError as exc:
        return {**out, "refused": str(exc)}
    out["naive"], out["cse"] = count_strategy(g_naive), count_strategy(g_cse)
    out["temporaries"] = _temporaries(g_cse) if with_temporaries else None
    return out


__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH",
    "add_batch_argument",
    "batch_counts",
    "batch_type",
    "check_batch",
    "forward_counts",
]
