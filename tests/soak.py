"""The long random-architecture battery: ``python -m tests.soak --examples 500``.

Runs the cases of :mod:`test_random_architectures` (finite differences and the
independent oracle on every parameter) without stopping at the first failure, then
prints a summary: how many networks of which kinds were checked, the worst
finite-difference ratio (<= 1 passes), the worst relative error against the oracle
(<= 1e-10 passes) and every failing network. Then the concurrency and hostile cases of
:mod:`soak_hostile` (``--hostile-rounds`` networks). Exit status 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_random_architectures import (  # noqa: E402
    ORACLE_RTOL,
    Case,
    Outcome,
    cases,
    run_case,
)


def soak(examples: int, random_seed: int) -> int:
    """Run ``examples`` random networks; print the summary; return the exit status."""
    results: list[tuple[Case, Outcome]] = []
    failures: list[str] = []
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="chainrule-soak-") as tmp:
        folder = Path(tmp)

        @seed(random_seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases())
        def one(case: Case) -> None:
            where = f"{case.spec.to_dict()} batch={case.batch} seed={case.seed}"
            try:
                outcome = run_case(case, folder)
            except Exception as exc:  # noqa: BLE001 - a soak records every failure
                failures.append(f"{type(exc).__name__}: {exc} for {where}")
                return
            results.append((case, outcome))
            if not outcome.fd_ratio <= 1.0:  # a NaN fails too
                failures.append(f"finite differences ratio {outcome.fd_ratio:.3g} for {where}")
            if not outcome.oracle_error <= ORACLE_RTOL:
                failures.append(f"oracle error {outcome.oracle_error:.3g} for {where}")

        one()
    elapsed = time.perf_counter() - started
    print(f"soak: {examples} examples, Hypothesis seed {random_seed}")
    _summary(results, failures, elapsed)
    return 1 if failures else 0


def _summary(results: list[tuple[Case, Outcome]], failures: list[str], elapsed: float) -> None:
    specs = [case.spec for case, _ in results]
    activations = Counter(layer.activation for spec in specs for layer in spec.layers)
    print(f"random architectures checked: {len(results)} (and {len(failures)} raised or failed)")
    print(f"failures: {len(failures)}")
    if results:
        outcomes = [outcome for _, outcome in results]
        print(f"time: {elapsed:.1f} s ({elapsed / len(results):.2f} s per network)")
        print(f"depth: {dict(sorted(Counter(s.depth for s in specs).items()))}")
        print(f"widest layer: {max(max(s.sizes) for s in specs)}")
        print(f"batch: {dict(sorted(Counter(c.batch for c, _ in results).items()))}")
        print(f"layout: {dict(sorted(Counter(s.layout for s in specs).items()))}")
        print(f"cost: {dict(sorted(Counter(s.cost for s in specs).items()))}")
        pairs = Counter(f"{s.layers[-1].activation} + {s.cost}" for s in specs)
        print(f"output + cost: {dict(sorted(pairs.items()))}")
        with_bias = sum(layer.bias for s in specs for layer in s.layers)
        print(f"layers with bias: {with_bias} of {sum(s.depth for s in specs)}")
        skips = [(k, to, s.depth) for s in specs for to, k in s.skips.items()]
        print(
            f"residual connections: {len(skips)} in {sum(bool(s.skips) for s in specs)} networks"
            f" ({sum(k == 0 for k, _, _ in skips)} from the input,"
            f" {sum(to == d for _, to, d in skips)} into the output)"
        )
        normalized = sum(len(s.batch_norm_layers) for s in specs)
        print(
            f"batch norm: {normalized} layers in"
            f" {sum(bool(s.batch_norm_layers) for s in specs)} networks"
        )
        dropped = sum(len(s.dropout_layers) for s in specs)
        print(f"dropout: {dropped} layers in {sum(bool(s.dropout_layers) for s in specs)} networks")
        print(
            f"penalties: l2 > 0 in {sum(s.l2 > 0 for s in specs)}, l1 > 0 in"
            f" {sum(s.l1 > 0 for s in specs)}, both in {sum(s.l2 > 0 < s.l1 for s in specs)}"
        )
        print(
            "activations (layers): " + ", ".join(f"{k} {v}" for k, v in sorted(activations.items()))
        )
        print(f"parameters checked: {sum(o.parameters for o in outcomes)}")
        print(f"kink resamples: {sum(o.resamples for o in outcomes)}")
        print(f"worst finite-difference ratio: {max(o.fd_ratio for o in outcomes):.3g} (pass <= 1)")
        print(
            f"worst oracle relative error: {max(o.oracle_error for o in outcomes):.3g} "
            f"(pass <= {ORACLE_RTOL:g})"
        )
    for line in failures:
        print(f"FAILED {line}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the soak."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--examples", type=int, default=500, help="networks to check")
    parser.add_argument("--seed", type=int, default=20260, help="Hypothesis seed")
    parser.add_argument("--hostile-rounds", type=int, default=50, help="hostile-case networks")
    args = parser.parse_args(argv)
    status = soak(args.examples, args.seed)
    return max(status, hostile(args.hostile_rounds, args.seed))


def hostile(rounds: int, random_seed: int) -> int:
    """Run :func:`soak_hostile.run`; print its failures; return the exit status."""
    import soak_hostile

    with tempfile.TemporaryDirectory(prefix="chainrule-hostile-") as tmp:
        failures = soak_hostile.run(rounds, random_seed, Path(tmp))
    print(
        f"hostile: {rounds} networks (threads, NaN check, header bomb), paths; seed {random_seed}"
    )
    specs = soak_hostile.networks(rounds, random_seed)
    normalized = [s.batch_norm_layers for s in specs]
    dropped = [s.dropout_layers for s in specs]
    print(
        f"hostile batch norm: {sum(map(len, normalized))} layers in"
        f" {sum(map(bool, normalized))} networks; dropout: {sum(map(len, dropped))} layers in"
        f" {sum(map(bool, dropped))} networks; both in"
        f" {sum(bool(n) and bool(d) for n, d in zip(normalized, dropped, strict=True))}"
    )
    print(f"hostile failures: {len(failures)}")
    for line in failures:
        print(f"FAILED {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
