"""The backprop strategy over a batch of m examples, for a network with batch norm.

Batch norm couples the examples of a batch, so its memoized program runs on m symbolic
examples at once. It is the per-example program of
:func:`~chainrule.derive.scalar_batch_norm.batch_norm_program` (where batch norm is
spliced in) expanded mechanically: each per-example symbol becomes m copies
(x_k -> x_k_i, z^l_j -> z^l_j_i, ..., named by :func:`example_symbol`), the parameters
and the per-unit statistics (mean, var, rstd, dC/dgamma, dC/dbeta) stay shared, and each
mean over the examples is written (1/m) sum_i of its m copies. The statements between
two shared ones are written example after example.

The cost is the batch mean (1/m) sum_i C_i (plus the L2/L1 penalty once), so every
gradient is the mean of its per-example terms plus its shared ones:
dC/dw^l_jk = mean_i(delta^l_j_i a^(l-1)_k_i) + the penalty's slope (deltau for a
batch-normalized layer) and dC/db^l_j = mean_i(delta^l_j_i).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import sympy as sp
from chainrule.derive import batch_norm, naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.opcount import tree_ops
from chainrule.derive.scalar_batch_norm import ExampleMean, batch_norm_program
from chainrule.derive.scalar_network import ScalarNetwork, _sym
from chainrule.derive.scalar_program import Assignment, _cost_statement
from chainrule.derive.spec import Spec


def example_symbol(s: sp.Symbol, i: int) -> sp.Symbol:
    """The symbol of example i of a per-example symbol (``x_0`` -> ``x_0_1``), with the
    same assumptions, as :func:`~chainrule.derive.batch_network.scalar_batch` names it."""
    return sp.Symbol(f"{s.name}_{i}", **s.assumptions0)


def _outside_means(expr: sp.Basic) -> set[sp.Basic]:
    """The symbols of ``expr`` outside its :class:`ExampleMean` terms."""
    if isinstance(expr, ExampleMean):
        return set()
    if isinstance(expr, sp.Symbol):
        return {expr}
    return set().union(*(_outside_means(a) for a in expr.args))


@dataclass(frozen=True)
class Examples:
    """The expansion of a per-example program over ``m`` examples.

    ``local`` holds the per-example symbols: x_k, y_j, the dropout masks D^l_j and the
    target of every statement that reads one outside a mean; the others (parameters,
    statistics) are shared.
    """

    m: int
    local: frozenset[sp.Symbol]

    @classmethod
    def of(cls, spec: Spec, program: tuple[Assignment, ...], m: int) -> Examples:
        """The expansion of ``program`` (per-example symbols of ``spec``'s network): a
        statement is per example when it reads a per-example symbol outside a mean."""
        local = {_sym(naming.input_entry(k)) for k in range(spec.sizes[0])}
        local |= {_sym(naming.target_entry(j)) for j in range(spec.sizes[-1])}
        local |= {
            _sym(naming.dropout_mask_entry(layer, j))
            for layer in spec.dropout_layers
            for j in range(spec.sizes[layer])
        }
        for s in program:
            if _outside_means(s.expr) & local:
                local.add(s.target)
        return cls(m, frozenset(local))

    @cached_property
    def names(self) -> tuple[dict[sp.Symbol, sp.Symbol], ...]:
        """For each example i, every per-example symbol to its example-i copy."""
        return tuple({s: example_symbol(s, i) for s in self.local} for i in range(self.m))

    def mean(self, expr: sp.Expr) -> sp.Expr:
        """(1/m) sum_i of ``expr`` at example i (:func:`batch_norm.batch_mean`)."""
        return batch_norm.batch_mean([expr.xreplace(names) for names in self.names])

    def means_written(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with each :class:`ExampleMean` written as :meth:`mean`."""
        return expr.xreplace({e: self.mean(e.args[0]) for e in expr.atoms(ExampleMean)})

    def copies(self, run: list[Assignment]) -> list[Assignment]:
        """The per-example statements ``run`` at example 0, then at example 1, ..., each
        note ending (example i)."""
        return [
            replace(
                s,
                target=names[s.target],
                expr=self.means_written(s.expr).xreplace(names),
                note=f"{s.note} (example {i})",
            )
            for i, names in enumerate(self.names)
            for s in run
        ]

    def program(self, program: tuple[Assignment, ...]) -> list[Assignment]:
        """``program`` over the m examples: a shared statement once, its means written
        out; each run of per-example statements between two shared ones as :meth:`copies`."""
        out: list[Assignment] = []
        run: list[Assignment] = []
        for s in program:
            if s.target in self.local:
                run.append(s)
                continue
            out += self.copies(run)
            out.append(replace(s, expr=self.means_written(s.expr)))
            run = []
        return out + self.copies(run)

    def batch_mean(self, s: Assignment) -> Assignment:
        """A cost or gradient statement over the batch: the mean of its per-example terms
        plus its shared ones (a mean of a constant is the constant: the penalty)."""
        terms = sp.Add.make_args(s.expr)
        own = [t for t in terms if _outside_means(t) & self.local]
        if not own:
            return s
        shared = [t for t in terms if not _outside_means(t) & self.local]
        return replace(s, expr=self.mean(sp.Add(*own)) + sp.Add(*shared))


def batch_program(spec: Spec, m: int) -> tuple[tuple[Assignment, ...], tuple[Assignment, ...]]:
    """The memoized program over ``m`` examples and its gradient statements.

    Returns ``(program, grads)`` as :func:`~chainrule.derive.scalar_program.backprop_program`
    does, one gradient per parameter of
    :func:`~chainrule.derive.scalar_network.batch_scalar_network` in its order.

    Examples
    --------
    >>> from chainrule.derive.spec import Layer, Spec
    >>> spec = Spec(1, (Layer(1, "linear", batch_norm=True), Layer(1, "linear")), "quadratic")
    >>> program, grads = batch_program(spec, 2)
    >>> [s.target.name for s in program if s.note.startswith("mean^")]
    ['mean1_0']
    >>> [g.target.name for g in grads]
    ['dC_dw1_0_0', 'dC_dgamma1_0', 'dC_dbeta1_0', 'dC_dw2_0_0', 'dC_db2_0']
    >>> str(grads[0].expr)
    'deltau1_0_0*x_0_0/2 + deltau1_0_1*x_0_1/2'
    """
    program, grads = batch_norm_program(spec)
    examples = Examples.of(spec, program, m)
    return tuple(examples.program(program)), tuple(examples.batch_mean(g) for g in grads)


def batch_cost_statement(spec: Spec, m: int) -> Assignment:
    """C = (1/m) sum_i C_i (each the one-example cost of example i) plus the penalty once."""
    examples = Examples.of(spec, batch_norm_program(spec)[0], m)
    return examples.batch_mean(_cost_statement(spec))


#: The batch of a scalar expansion with batch norm: 2 examples by default, at most 4.
DEFAULT_BATCH = 2
MAX_BATCH = 4
#: Naive gradients measured at most this many times (cost tree) x (parameters) in size
#: (about 3-3.8 on the networks of tests/test_compare_batch_norm.py).
NAIVE_PER_COST_OPS = 4


def estimate_batch_naive_ops(net: ScalarNetwork) -> int:
    """Estimated tree operations of all naive gradients of a batch network: 4 times the
    cost's tree size times the number of parameters (cheap: the cost is built shared)."""
    return NAIVE_PER_COST_OPS * tree_ops(net.cost) * len(net.params)


def check_batch_budget(net: ScalarNetwork, budget: int | None) -> int:
    """Refuse a naive expansion of a batch network estimated over ``budget``; return
    the estimate (see :func:`estimate_batch_naive_ops`)."""
    estimate = estimate_batch_naive_ops(net)
    if budget is not None and estimate > budget:
        raise DerivationError(
            "strategy",
            f"the naive (fully expanded) gradient of the {'-'.join(map(str, net.spec.sizes))} "
            f"network over a batch of {net.m} would take about {estimate:.2g} operations, "
            f"over the budget of {budget:.2g}",
            "use a smaller network"
            + (" or batch (--batch 2)" if net.m > 2 else "")
            + ", or raise the budget (--budget)",
        )
    return estimate


__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH",
    "batch_cost_statement",
    "batch_program",
    "check_batch_budget",
    "estimate_batch_naive_ops",
    "example_symbol",
]
