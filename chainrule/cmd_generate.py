"""``chainrule generate``, ``check`` and ``presets``: write a module, check one, list networks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from chainrule.check import CheckReport
from chainrule.cliargs import EXIT_FAILED, EXIT_OK, add_spec_arguments, seed_type, spec_from_args
from chainrule.codegen.emit import lint_module, write_module
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import preset, preset_description, preset_names, preset_source


def print_report(report: CheckReport, out: Callable[[str], None]) -> None:
    """The check's tolerance, then one line per parameter with its verdict."""
    from chainrule.check import ABS_TOL, REL_TOL

    out(
        f"loss {report.loss:.6g}; {report.entries} entries checked; pass when "
        f"|g - n| <= {ABS_TOL:g} * max(1, |loss|) + {REL_TOL:g} * |n|"
    )
    if not report.worst:
        out("  the module has no parameters, so there is no gradient to check")
    for name, err, ratio in report.worst:
        verdict = "ok" if ratio <= 1 else "FAIL"
        out(f"  {name:<8} worst |g - n| = {err:.3e}  ({ratio:.3f} of tolerance)  {verdict}")
    for where in report.nonfinite:
        out(f"  not finite: {where}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _check_source(source: str) -> CheckReport:
    """Check a module that exists only as text, through a private temporary file."""
    import tempfile
    from pathlib import Path

    from chainrule.check import check_file

    with tempfile.TemporaryDirectory(prefix="chainrule-check-") as folder:
        path = Path(folder) / "checked_module.py"
        path.write_text(source, encoding="utf-8")
        return check_file(path)


def cmd_generate(args: argparse.Namespace) -> int:
    """Write (or print) the module of the named network, then check it with ``--check``."""
    spec = spec_from_args(args)
    if args.check:  # refuse a check that cannot fit in memory before writing anything
        from chainrule.limits import require_memory

        require_memory(spec.sizes, 4, "the gradient check")
    if args.form == "unrolled":
        from chainrule.codegen.unrolled import generate_unrolled

        source = generate_unrolled(spec, args.strategy or "backprop")
    elif args.strategy not in (None, "backprop"):
        raise SpecError(
            "strategy", f"{args.strategy} needs scalar code", "add --form unrolled (small networks)"
        )
    elif args.form == "plain":
        from chainrule.codegen.plain import generate_plain

        source = generate_plain(spec)
    else:
        source = generate_module(spec)
    if args.output is None:
        lint_module(source)
        if args.check:  # standard output carries the module; the verdict goes to stderr
            report = _check_source(source)
            print_report(report, _stderr)
            _stderr("gradient check: " + ("passed" if report.passed else "FAILED"))
        sys.stdout.write(source)
        return EXIT_OK if not args.check or report.passed else EXIT_FAILED
    path = write_module(source, args.output, force=args.force)
    print(
        f"wrote {path} ({spec.parameter_count} parameters, layers "
        f"{'-'.join(map(str, spec.sizes))}, {spec.cost} cost, {spec.layout} layout)"
    )
    if args.check:
        from chainrule.check import check_file

        report = check_file(path)
        print_report(report, print)
        print("gradient check: " + ("passed" if report.passed else "FAILED"))
        return EXIT_OK if report.passed else EXIT_FAILED
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Check a module file's gradient by central finite differences."""
    from chainrule.check import check_file

    report = check_file(args.module, seed=args.seed)
    print(f"{args.module}:")
    print_report(report, print)
    print("gradient check: " + ("passed" if report.passed else "FAILED"))
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_presets(args: argparse.Namespace) -> int:
    """Two lines per built-in network: name, sizes and network; then the text it reproduces."""
    for name in preset_names():
        spec = preset(name)
        print(f"{name:<18} {'-'.join(map(str, spec.sizes)):<14} {preset_description(name)}")
        print(f"{'':<18} reproduces: {preset_source(name)}")
    return EXIT_OK


def configure_generate(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule generate``."""
    parser.description = "Generate the NumPy module of a network."
    parser.epilog = (
        "examples:\n"
        "  chainrule generate --preset nielsen -o nielsen.py --check\n"
        "  chainrule generate net.toml -o net.py\n"
        "  chainrule generate --sizes 784,30,10 --activations "
        "sigmoid,sigmoid --cost quadratic -o net.py"
    )
    add_spec_arguments(parser)
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    parser.add_argument(
        "--form",
        choices=("vectorized", "plain", "unrolled"),
        default="vectorized",
        help="vectorized: fast matrix code (default); plain: one readable NumPy statement per "
        "equation; unrolled: one scalar per weight (small nets)",
    )
    parser.add_argument(
        "--strategy",
        choices=("naive", "cse", "backprop"),
        help="gradient of an unrolled module: naive (expanded), cse (shared), backprop (default)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing file not generated by chainrule"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the gradient against finite differences (without -o the verdict goes "
        "to standard error)",
    )
    parser.set_defaults(func=cmd_generate)


def configure_check(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule check``."""
    parser.description = "Central finite differences against loss_and_grad."
    parser.epilog = (
        "examples:\n  chainrule check nielsen.py\n  chainrule check net.py --seed 3\n\n"
        "exit status: 0 passed, 1 the check failed, 2 bad input"
    )
    parser.add_argument("module", help="a generated .py file")
    parser.add_argument(
        "--seed", type=seed_type, default=0, help="random seed of data and parameters (0 or more)"
    )
    parser.set_defaults(func=cmd_check)


def configure_presets(parser: argparse.ArgumentParser) -> None:
    """``chainrule presets`` takes no arguments."""
    parser.epilog = "examples:\n  chainrule presets\n  chainrule generate --preset 3b1b-chain"
    parser.set_defaults(func=cmd_presets)
