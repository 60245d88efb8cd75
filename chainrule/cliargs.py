"""What the subcommands share: the argument parser class, the spec options, number types.

Every ``cmd_*`` module builds its arguments from here, so none of them imports
:mod:`chainrule.cli` back. Nothing here imports SymPy at module level: the top-level
``chainrule --help`` and ``--version`` load this module and must start fast.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from chainrule.derive.spec import Spec

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

#: Longest piece of user text quoted back in an error, so every error stays one short line.
MAX_QUOTED = 40
#: Most decimal digits read from a whole-number option (Python refuses int() beyond 4,300).
MAX_DIGITS = 30
_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)


def quoted(text: str) -> str:
    """``repr(text)`` cut to :data:`MAX_QUOTED` characters.

    Examples
    --------
    >>> quoted("7" * 100)
    "'77777777777777777777777777777777777...'"
    """
    shown = repr(text)
    return shown if len(shown) <= MAX_QUOTED else shown[: MAX_QUOTED - 4] + "...'"


class Parser(argparse.ArgumentParser):
    """argparse with one short error line and exit status 2 (a ``SpecError``)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        from chainrule.derive.errors import SpecError

        if len(message) > 200:  # argparse quotes the whole value, however long
            message = message[:197] + "..."
        raise SpecError("arguments", message, f"see '{self.prog} --help'")

    def _print_message(self, message: str, file: Any = None) -> None:
        # argparse drops an OSError here, so --help or --version into a full or closed
        # output exited 0 with nothing written; let main report it instead.
        if message:
            (file or sys.stderr).write(message)


def whole_number(text: str, flag: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """``text`` as a whole number of ASCII digits (one leading minus), at least ``minimum``
    and, when given, at most ``maximum`` (a value outside is refused naming the range).

    Raises
    ------
    SpecError
        Naming ``flag`` for signs, Unicode digits (``²``), more than :data:`MAX_DIGITS`
        digits, or a value below ``minimum``.

    Examples
    --------
    >>> whole_number("42", "--seed")
    42
    """
    from chainrule.derive.errors import SpecError

    item = text.strip()
    if not _WHOLE.fullmatch(item):
        raise SpecError(flag, f"{quoted(item)} is not a whole number", "write digits 0-9 only")
    if len(item.lstrip("-")) > MAX_DIGITS:
        raise SpecError(flag, f"{len(item)} digits is too long", "give a smaller number")
    value = int(item)
    if maximum is not None and not minimum <= value <= maximum:
        raise SpecError(
            flag, f"{value} is outside {minimum} to {maximum}", f"give {minimum} to {maximum}"
        )
    if value < minimum:
        raise SpecError(flag, f"{value} is below {minimum}", f"give {minimum} or more")
    return value


def seed_type(text: str) -> int:
    """argparse type of ``--seed``: a whole number 0 or more (NumPy refuses negative seeds)."""
    return whole_number(text, "--seed")


def count_type(flag: str, minimum: int = 1) -> Any:
    """argparse type of a whole-number option such as ``--epochs`` (at least ``minimum``)."""
    return lambda text: whole_number(text, flag, minimum=minimum)


def _ascii_float(text: str, flag: str, fix: str, signed: bool) -> float:
    """``text`` as a float when written in ASCII digits (and ``. e E +``, ``-`` if
    ``signed``), at most ``MAX_DIGITS`` long; else one error line naming ``flag``."""
    from chainrule.derive.errors import SpecError

    item = text.strip()
    allowed = r"[0-9.eE+-]+" if signed else r"[0-9.eE+]+"
    if len(item) > MAX_DIGITS or not re.fullmatch(allowed, item, re.ASCII):
        raise SpecError(flag, f"{quoted(item)} is not a number in digits 0-9", fix)
    try:
        return float(item)
    except ValueError:
        raise SpecError(flag, f"{quoted(item)} is not a number", fix) from None


def positive_count(text: str, flag: str) -> int:
    """A positive count written as digits or in float form (``2e7``, ``20000000``).

    Examples
    --------
    >>> positive_count("2e7", "--budget")
    20000000
    """
    from chainrule.derive.errors import SpecError

    fix = "give a positive whole number such as 2e7 or 20000000"
    value = _ascii_float(text, flag, fix, signed=False)
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise SpecError(flag, f"{quoted(text.strip())} is not a positive whole number", fix)
    return int(value)


def positive_number(text: str, flag: str, example: str = "0.3") -> float:
    """A finite number above 0 written in ASCII (``0.3``, ``3e-1``), else one error line.

    Python's ``float`` reads Unicode digits (``"\uff11"`` is 1.0), ``nan`` and ``inf``;
    none of them is a learning rate a user meant to type.

    Examples
    --------
    >>> positive_number("3e-1", "--lr")
    0.3
    """
    from chainrule.derive.errors import SpecError

    fix = f"give a positive number such as {example}"
    value = _ascii_float(text, flag, fix, signed=True)
    if not (math.isfinite(value) and value > 0):
        raise SpecError(flag, f"{quoted(text.strip())} is not a finite number above 0", fix)
    return value


def preset_filename(name: str) -> str:
    """File name of a preset's module in ``generated/``: an importable identifier.

    Examples
    --------
    >>> preset_filename("3b1b-chain")
    'net_3b1b_chain.py'
    """
    stem = name.replace("-", "_")
    return f"net_{stem}.py" if stem[0].isdigit() else f"{stem}.py"


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


def parse_sizes(text: str) -> list[int]:
    """``--sizes 784,30,10`` -> ``[784, 30, 10]``; errors name the item as typed.

    Examples
    --------
    >>> parse_sizes("4, 8,3")
    [4, 8, 3]
    """
    return [
        whole_number(item, f"--sizes item {position}", minimum=-(10**MAX_DIGITS))
        for position, item in enumerate(text.split(","), start=1)
    ]


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The three ways to name a network: a spec file, a preset, or a one-liner."""
    from chainrule.derive.spec import preset_names

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
    for key, what in (("l2", "(l2/2) sum ||W||^2"), ("l1", "l1 sum |W|")):
        parser.add_argument(
            f"--{key}",
            action=_Once,
            metavar="X",
            help=f"regularization: the cost adds {what} over the weights (default 0)",
        )
    from chainrule.dropout_args import add_dropout_argument

    add_dropout_argument(parser)
    parser.add_argument(
        "--from-keras", metavar="MODEL.json", help="import a Keras Sequential (model.to_json())"
    )
    parser.add_argument(
        "--from-torch",
        metavar="FILE.py:NAME",
        help="import the nn.Sequential NAME from FILE.py (runs that file: your own code)",
    )


class _Once(argparse.Action):
    """Store an option's text, refusing the option given twice (which value was meant?)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        from chainrule.derive.errors import SpecError

        if getattr(namespace, self.dest, None) is not None:
            raise SpecError(str(option), "given twice", f"give {option} once")
        setattr(namespace, self.dest, values)


def penalty_number(text: str, flag: str) -> float:
    """The value of ``--l2`` or ``--l1``: a finite number >= 0 in ASCII digits.

    Examples
    --------
    >>> penalty_number("1e-4", "--l2")
    0.0001
    """
    fix = f"give a number >= 0 such as {flag} 0.01"
    return _ascii_float(text, flag, fix, signed=True)


def _with_penalty(spec: Spec, args: argparse.Namespace) -> Spec:
    """``spec`` with ``--l2`` / ``--l1`` when given (the spec checks the range, named by flag)."""
    from chainrule.derive.errors import SpecError

    changes = {}
    for key in ("l2", "l1"):
        text = getattr(args, key, None)
        if text is not None:
            changes[key] = penalty_number(text, f"--{key}")
    try:
        return spec.replace(**changes) if changes else spec
    except SpecError as exc:
        if exc.field in changes:
            raise SpecError(f"--{exc.field}", exc.message, exc.fix) from None
        raise


_LAYER_FIELD = re.compile(r"layers\[(\d+)\]\.(size|activation)|input")


def _one_liner(args: argparse.Namespace) -> Spec:
    """The spec of ``--sizes`` with ``--activations`` and ``--cost``.

    A spec error about ``layers[i]`` is renamed to the flag and the item the user
    typed: layer i's size is item i + 2 of ``--sizes`` (the input comes first), its
    activation item i + 1 of ``--activations``.
    """
    from chainrule.derive.errors import SpecError
    from chainrule.derive.spec import Spec

    if args.activations is None or args.cost is None:
        raise SpecError(
            "activations" if args.activations is None else "cost",
            "missing with --sizes",
            "give --activations and --cost with --sizes",
        )
    sizes = parse_sizes(args.sizes)
    try:
        return Spec.from_sizes(
            sizes,
            split_top_level(args.activations),
            args.cost,
            bias=not args.no_bias,
            layout=args.layout or "columns",
            dtype=args.dtype or "float64",
            name=args.name or "network",
            source="one-liner",
        )
    except SpecError as exc:
        found = _LAYER_FIELD.fullmatch(exc.field)
        if found is None:
            raise
        if exc.field == "input":
            flag = "--sizes item 1"
        elif found.group(2) == "size":
            flag = f"--sizes item {int(found.group(1)) + 2}"
        else:
            flag = f"--activations item {int(found.group(1)) + 1}"
        raise SpecError(flag, exc.message, exc.fix) from None


def spec_from_args(args: argparse.Namespace) -> Spec:
    """Build the spec named by a file, ``--preset``, the one-liner options or an import,
    with ``--l2`` / ``--l1`` and ``--dropout`` when given."""
    from chainrule.dropout_args import with_dropout

    return with_dropout(_with_penalty(_named_spec(args), args), getattr(args, "dropout", None))


def _named_spec(args: argparse.Namespace) -> Spec:
    """The spec named by a file, ``--preset``, the one-liner options or an import."""
    from chainrule.derive.errors import SpecError
    from chainrule.derive.spec import load_spec, preset

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
    if args.sizes is not None:
        return _one_liner(args)
    spec = load_spec(args.spec) if args.spec else preset(args.preset)
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
