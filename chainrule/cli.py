"""The ``chainrule`` command line: the table of subcommands and ``main``.

Each subcommand is one row of :data:`COMMANDS`: its name, its one-line help and the
function that adds its arguments (importing its ``cmd_*`` module only then). A
subcommand's parser is filled in the first time it is used, so ``chainrule --help``
and ``--version`` import neither SymPy nor NumPy.

Exit statuses: 0 success, 1 a check failed (or generated files are stale),
2 bad input (one line on stderr naming the field and the fix, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chainrule.cliargs import EXIT_BAD_INPUT, Parser, preset_filename, quoted

__all__ = ["COMMANDS", "build_parser", "main", "preset_filename"]


def _generate(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_generate

    cmd_generate.configure_generate(parser)


def _check(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_generate

    cmd_generate.configure_check(parser)


def _presets(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_generate

    cmd_generate.configure_presets(parser)


def _regenerate(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_regenerate

    cmd_regenerate.configure(parser)


def _graph(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_graph

    cmd_graph.configure(parser)


def _compare(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_compare

    cmd_compare.configure(parser)


def _train(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_train

    cmd_train.configure(parser)


def _derive(parser: argparse.ArgumentParser) -> None:
    from chainrule import cmd_derive

    cmd_derive.configure(parser)


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments and ``func`` default."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]


#: Every subcommand, in the order ``chainrule --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("generate", "generate a NumPy backprop module", _generate),
    Command("check", "check a module's gradient by finite differences", _check),
    Command("presets", "list the built-in networks", _presets),
    Command(
        "regenerate",
        "re-render modules: the presets in generated/, or the files named",
        _regenerate,
    ),
    Command("graph", "draw the computation graph (DOT, SVG or PNG)", _graph),
    Command(
        "compare",
        "count (and time) naive, cse, backprop and finite-difference gradients",
        _compare,
    ),
    Command("train", "train a generated module on digits or an .npz file", _train),
    Command(
        "derive",
        "print the step-by-step chain-rule derivation (tex, md, text or pdf)",
        _derive,
    ),
)


class _CommandParser(Parser):
    """A subcommand's parser, filled in by its ``configure`` on first use."""

    def __init__(self, *args: Any, configure: Callable | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self._configure = configure

    def _fill(self) -> None:
        configure, self._configure = self._configure, None
        if configure is not None:
            configure(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._fill()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._fill()
        return super().format_help()

    def format_usage(self) -> str:
        self._fill()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (each filled in when it is used)."""
    from chainrule import __version__

    parser = Parser(
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for command in COMMANDS:
        sub.add_parser(command.name, help=command.help, configure=command.configure)
    return parser


def _chainrule_error(exc: BaseException) -> bool:
    """True for an error chainrule raised on purpose (its module is loaded only if so)."""
    errors = sys.modules.get("chainrule.derive.errors")
    return errors is not None and isinstance(exc, errors.ChainruleError)


def _stdout_failed(exc: OSError) -> int:
    """Report a closed or full standard output in one line; stop writing to it."""
    try:  # further writes (and the interpreter's own flush at exit) must not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    reason = "it was closed" if isinstance(exc, BrokenPipeError) else (exc.strerror or str(exc))
    print(f"chainrule: error: cannot write to standard output: {reason}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    if not getattr(args, "quiet", False):
        return _finish(int(args.func(args)))
    from chainrule import progress

    before = progress.quiet_now()
    progress.set_quiet(True)
    try:  # --quiet holds for this run only, also when main() is called in a process
        return _finish(int(args.func(args)))
    finally:
        progress.set_quiet(before)


def _finish(status: int) -> int:
    sys.stdout.flush()  # a full or closed standard output fails here, not at exit
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return _run(argv)
    except KeyboardInterrupt as interrupt:
        # An interrupted write says which file the output path holds now.
        detail = f": {interrupt}" if str(interrupt) else ""
        print(f"chainrule: interrupted{detail}", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code == 0:  # --help and --version: make sure their text got out
            try:
                sys.stdout.flush()
            except OSError as out:
                return _stdout_failed(out)
        raise
    except OSError as exc:
        if debug:
            traceback.print_exc()
        if exc.filename is None and _is_stdout_error(exc):
            return _stdout_failed(exc)
        where = f" {quoted(str(exc.filename))}" if exc.filename else ""
        print(f"chainrule: error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if not _chainrule_error(exc):
            raise
        if debug:
            traceback.print_exc()
        print(f"chainrule: error: {shorten_quotes(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT


def shorten_quotes(message: str, keep: int = 60) -> str:
    """``message`` with every quoted text longer than ``keep`` cut in its middle.

    A path can be 4,096 characters long, and each error quotes the one it names; the
    start and the end (the file's own name) are what the reader needs.

    Examples
    --------
    >>> shorten_quotes("output: '" + "d/" * 50 + "net.py' is a directory", keep=20)
    "output: 'd/d/d/d/...d/net.py' is a directory"
    """
    import re

    half = (keep - 3) // 2

    def cut(match: re.Match[str]) -> str:
        text = match.group(1)
        return f"'{text[:half]}...{text[-half:]}'"

    # A quote opens after a non-word character and closes before one: the apostrophe
    # of "file's" in a fix is neither, so the text around it is never taken for a quote.
    return re.sub("(?<!\\w)'([^'\\n]{" + str(keep + 1) + ",})'(?!\\w)", cut, message)


def _is_stdout_error(exc: OSError) -> bool:
    """True when writing standard output failed (closed pipe, full disk, bad descriptor)."""
    import errno

    return isinstance(exc, BrokenPipeError) or exc.errno in (errno.ENOSPC, errno.EBADF, errno.EIO)


def suggest_command(name: str) -> str:
    """Closest subcommand name, for messages."""
    close = difflib.get_close_matches(name, [c.name for c in COMMANDS], 1)
    return close[0] if close else ""
