"""The ``chainrule`` command line: generate, check, presets, regenerate.

Exit statuses: 0 success, 1 a check failed (or generated files are stale),
2 bad input (one line on stderr naming the field and the fix, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from chainrule.codegen.emit import lint_module, write_module
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.spec import Spec, load_spec, preset, preset_description, preset_names

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SpecError("arguments", message, f"see '{self.prog} --help'")


def split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses: ``"x*max(x,0),softmax"`` -> two items."""
    items, depth, current = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        current.append(ch)
    items.append("".join(current).strip())
    return items


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The three ways to name a network: a spec file, a preset, or a one-liner."""
    parser.add_argument("spec", nargs="?", help="a .toml or .json spec file")
    parser.add_argument("--preset", help=f"a built-in network: {', '.join(preset_names())}")
    parser.add_argument("--sizes", help="one-liner: layer sizes, input first, e.g. 784,30,10")
    parser.add_argument(
        "--activations",
        help="one-liner: one activation per layer, e.g. sigmoid,sigmoid "
        "or an expression in x such as 'x*sigmoid(x),softmax'",
    )
    parser.add_argument(
        "--cost", help="quadratic, squared-error, binary-cross-entropy or cross-entropy"
    )
    parser.add_argument("--no-bias", action="store_true", help="layers without biases")
    parser.add_argument(
        "--layout", choices=("columns", "rows"), help="columns: x is (n0, m); rows: x is (m, n0)"
    )
    parser.add_argument("--dtype", choices=("float64", "float32"))
    parser.add_argument("--name", help="a name for the network (kept as a string literal)")
    parser.add_argument(
        "--from-keras", metavar="MODEL.json", help="import a Keras Sequential (model.to_json())"
    )
    parser.add_argument(
        "--from-torch",
        metavar="FILE.py:NAME",
        help="import the nn.Sequential NAME from FILE.py (runs that file: your own code)",
    )


def _parse_sizes(text: str) -> list[int]:
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if not item.lstrip("-").isdigit():
            raise SpecError("sizes", f"{item!r} is not a whole number", "give sizes like 784,30,10")
        sizes.append(int(item))
    return sizes


def spec_from_args(args: argparse.Namespace) -> Spec:
    """Build the spec named by a file, ``--preset`` or the one-liner options."""
    if getattr(args, "from_keras", None) or getattr(args, "from_torch", None):
        from chainrule.importers import spec_from_import_args

        return spec_from_import_args(args)
    chosen = [bool(args.spec), bool(args.preset), args.sizes is not None]
    if sum(chosen) != 1:
        raise SpecError(
            "spec",
            "name exactly one network",
            "give a spec file, --preset NAME, or --sizes with --activations and --cost",
        )
    if args.spec:
        spec = load_spec(args.spec)
    elif args.preset:
        spec = preset(args.preset)
    else:
        if args.activations is None or args.cost is None:
            raise SpecError(
                "activations" if args.activations is None else "cost",
                "missing with --sizes",
                "give --activations and --cost with --sizes",
            )
        return Spec.from_sizes(
            _parse_sizes(args.sizes),
            split_top_level(args.activations),
            args.cost,
            bias=not args.no_bias,
            layout=args.layout or "columns",
            dtype=args.dtype or "float64",
            name=args.name or "network",
            source="one-liner",
        )
    if args.activations is not None or args.cost is not None or args.no_bias:
        raise SpecError(
            "arguments",
            "--activations, --cost and --no-bias go with --sizes",
            "edit the spec file, or use the one-liner form",
        )
    changes = {
        k: v
        for k, v in (("layout", args.layout), ("dtype", args.dtype), ("name", args.name))
        if v is not None
    }
    return spec.replace(**changes) if changes else spec


def _print_report(report: object, out: Callable[[str], None]) -> None:
    from chainrule.check import ABS_TOL, REL_TOL

    out(
        f"loss {report.loss:.6g}; {report.entries} entries checked; pass when "
        f"|g - n| <= {ABS_TOL:g} * max(1, |loss|) + {REL_TOL:g} * |n|"
    )
    for name, err, ratio in report.worst:
        verdict = "ok" if ratio <= 1 else "FAIL"
        out(f"  {name:<8} worst |g - n| = {err:.3e}  ({ratio:.3f} of tolerance)  {verdict}")


def cmd_generate(args: argparse.Namespace) -> int:
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
    else:
        source = generate_module(spec)
    if args.output is None:
        lint_module(source)
        sys.stdout.write(source)
        return EXIT_OK
    path = write_module(source, args.output, force=args.force)
    print(
        f"wrote {path} ({spec.parameter_count} parameters, layers "
        f"{'-'.join(map(str, spec.sizes))}, {spec.cost} cost, {spec.layout} layout)"
    )
    if args.check:
        from chainrule.check import check_file

        report = check_file(path)
        _print_report(report, print)
        print("gradient check: " + ("passed" if report.passed else "FAILED"))
        return EXIT_OK if report.passed else EXIT_FAILED
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from chainrule.check import check_file

    report = check_file(args.module, seed=args.seed)
    print(f"{args.module}:")
    _print_report(report, print)
    print("gradient check: " + ("passed" if report.passed else "FAILED"))
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        spec = preset(name)
        print(f"{name:<18} {'-'.join(map(str, spec.sizes)):<14} {preset_description(name)}")
    return EXIT_OK


def preset_filename(name: str) -> str:
    """File name of a preset's module in ``generated/``: an importable identifier."""
    stem = name.replace("-", "_")
    return f"net_{stem}.py" if stem[0].isdigit() else f"{stem}.py"


def cmd_regenerate(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    stale = []
    for name in preset_names():
        path = folder / preset_filename(name)
        source = generate_module(preset(name))
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == source:
            continue
        stale.append(path)
        if not args.check:
            write_module(source, path)
            print(f"wrote {path}")
    if args.check:
        for path in stale:
            print(f"stale: {path} (run: chainrule regenerate)")
        if not stale:
            print(f"{folder}: all {len(preset_names())} modules are up to date")
        return EXIT_FAILED if stale else EXIT_OK
    if not stale:
        print(f"{folder}: all {len(preset_names())} modules were already up to date")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from chainrule import __version__

    parser = _Parser(
        prog="chainrule",
        description="Derive backpropagation with SymPy and generate checked NumPy code.",
        epilog="examples:\n"
        "  chainrule presets\n"
        "  chainrule generate --preset nielsen -o nielsen.py --check\n"
        "  chainrule generate --sizes 4,8,3 --activations tanh,softmax "
        "--cost cross-entropy -o net.py\n"
        "  chainrule check nielsen.py\n\n"
        "exit status: 0 ok, 1 check failed, 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, even on a terminal"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    gen = sub.add_parser(
        "generate",
        help="generate a NumPy backprop module",
        description="Generate the NumPy module of a network.",
        epilog="examples:\n"
        "  chainrule generate --preset nielsen -o nielsen.py --check\n"
        "  chainrule generate net.toml -o net.py\n"
        "  chainrule generate --sizes 784,30,10 --activations "
        "sigmoid,sigmoid --cost quadratic -o net.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_arguments(gen)
    gen.add_argument("-o", "--output", help="file to write (default: standard output)")
    gen.add_argument(
        "--form",
        choices=("vectorized", "unrolled"),
        default="vectorized",
        help="vectorized: matrix code (default); unrolled: one scalar per weight (small nets)",
    )
    gen.add_argument(
        "--strategy",
        choices=("naive", "cse", "backprop"),
        help="gradient of an unrolled module: naive (expanded), cse (shared), backprop (default)",
    )
    gen.add_argument(
        "--force", action="store_true", help="overwrite an existing file not generated by chainrule"
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="after writing, check the gradient against finite differences",
    )
    gen.set_defaults(func=cmd_generate)

    chk = sub.add_parser(
        "check",
        help="check a module's gradient by finite differences",
        description="Central finite differences against loss_and_grad.",
        epilog="examples:\n  chainrule check nielsen.py\n  chainrule check net.py --seed 3\n\n"
        "exit status: 0 passed, 1 the check failed, 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chk.add_argument("module", help="a generated .py file")
    chk.add_argument("--seed", type=int, default=0, help="random seed of data and parameters")
    chk.set_defaults(func=cmd_check)

    pre = sub.add_parser(
        "presets",
        help="list the built-in networks",
        epilog="examples:\n  chainrule presets\n  chainrule generate --preset 3b1b-chain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pre.set_defaults(func=cmd_presets)

    reg = sub.add_parser(
        "regenerate",
        help="rewrite the preset modules in generated/",
        epilog="examples:\n  chainrule regenerate\n  chainrule regenerate --check\n\n"
        "exit status: 0 up to date (or rewritten), 1 stale with --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reg.add_argument("--dir", default="generated", help="folder (default: generated)")
    reg.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when any module is stale"
    )
    reg.set_defaults(func=cmd_regenerate)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


#: Modules that add subcommands; each defines ``register(subparsers)``, which adds its
#: parser(s) with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit status.
COMMAND_MODULES: tuple[str, ...] = (
    "chainrule.cmd_graph",
    "chainrule.cmd_compare",
    "chainrule.cmd_train",
    "chainrule.cmd_derive",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "quiet", False):
            from chainrule.progress import set_quiet

            set_quiet(True)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        return int(args.func(args))
    except ChainruleError as exc:
        if debug:
            traceback.print_exc()
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:
        # A write interrupted says which file the output path holds now.
        detail = f": {interrupt}" if str(interrupt) else ""
        print(f"chainrule: interrupted{detail}", file=sys.stderr)
        return 130


def suggest_command(name: str) -> str:
    """Closest subcommand name, for messages."""
    close = difflib.get_close_matches(name, ["generate", "check", "presets", "regenerate"], 1)
    return close[0] if close else ""
