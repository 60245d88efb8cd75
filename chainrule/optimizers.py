"""The optimizer options of ``chainrule train``: read them, check that they go together.

``--optimizer`` names the update rule of the generated module's ``train`` (``sgd``,
``momentum``, ``nesterov`` or ``adam``, as torch.optim writes them); ``--momentum``,
``--betas`` and ``--eps`` are its hyperparameters. Each number is read as the other
number options are (ASCII digits only, no NaN or infinity), and an option given to an
optimizer that does not use it is refused in one line naming the flag.

Examples
--------
>>> betas_type("0.9,0.999")
(0.9, 0.999)
"""

from __future__ import annotations

import argparse
import math

from chainrule.cliargs import _ascii_float, positive_number, quoted

#: The update rules, in the order ``--help`` lists them.
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
#: ``--lr`` when none is given: plain and momentum SGD's, and Adam's (PyTorch's default).
DEFAULT_LR = {"sgd": 0.3, "momentum": 0.3, "nesterov": 0.3, "adam": 0.001}
#: ``--momentum`` when none is given with ``--optimizer momentum`` or ``nesterov``.
DEFAULT_MOMENTUM = 0.9
#: Adam's defaults, PyTorch's.
DEFAULT_BETAS, DEFAULT_EPS = (0.9, 0.999), 1e-8


def fraction(text: str, flag: str, *, above_zero: bool = False) -> float:
    """A number in [0, 1) (in (0, 1) when ``above_zero``) written in ASCII, else one error line.

    Examples
    --------
    >>> fraction("0.9", "--momentum", above_zero=True)
    0.9
    """
    from chainrule.derive.errors import SpecError

    low = "(0" if above_zero else "[0"
    fix = f"give a number in {low}, 1) such as 0.9"
    value = _ascii_float(text, flag, fix, signed=True)
    inside = math.isfinite(value) and 0 <= value < 1 and (value > 0 or not above_zero)
    if not inside:
        raise SpecError(flag, f"{quoted(text.strip())} is not in {low}, 1)", fix)
    return value


def momentum_type(text: str) -> float:
    """argparse type of ``--momentum``: a number in (0, 1)."""
    return fraction(text, "--momentum", above_zero=True)


def betas_type(text: str) -> tuple[float, float]:
    """argparse type of ``--betas B1,B2``: two numbers in [0, 1), comma-separated."""
    from chainrule.derive.errors import SpecError

    items = text.split(",")
    if len(items) != 2:
        raise SpecError(
            "--betas", f"{quoted(text)} is not two numbers", "give B1,B2 such as 0.9,0.999"
        )
    return (fraction(items[0], "--betas item 1"), fraction(items[1], "--betas item 2"))


def eps_type(text: str) -> float:
    """argparse type of ``--eps``: a finite number above 0."""
    return positive_number(text, "--eps", example="1e-8")


def check_eps_dtype(options: dict, dtype: str) -> None:
    """Refuse an ``--eps`` that rounds to 0 in the module's dtype (1e-50 in float32),
    before training: the module's ``train`` would raise on it.

    Examples
    --------
    >>> check_eps_dtype({"optimizer": "adam", "eps": 1e-50}, "float64")
    """
    import numpy as np

    from chainrule.derive.errors import SpecError

    eps = options.get("eps")
    if eps is not None and np.array(eps, dtype=dtype) == 0:
        raise SpecError("--eps", f"{eps:g} is 0 in {dtype}", "give a larger eps such as 1e-8")


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--optimizer``, ``--momentum``, ``--betas`` and ``--eps`` (all default to None)."""
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="the update rule of train(), as torch.optim's (sgd)",
    )
    parser.add_argument(
        "--momentum",
        metavar="MU",
        type=momentum_type,
        help=f"momentum and nesterov's mu, in (0, 1) ({DEFAULT_MOMENTUM})",
    )
    parser.add_argument(
        "--betas",
        metavar="B1,B2",
        type=betas_type,
        help="adam's decay rates, each in [0, 1) (0.9,0.999)",
    )
    parser.add_argument("--eps", metavar="E", type=eps_type, help="adam's eps, above 0 (1e-8)")


def optimizer_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of the module's ``train`` for the optimizer options given.

    Plain SGD gives ``{}``, so that a module generated before the optimizers trains as
    it did. Sets ``args.lr`` to the optimizer's default when none was given.

    Raises
    ------
    SpecError
        When ``--momentum`` comes without ``momentum`` or ``nesterov``, or ``--betas``
        or ``--eps`` without ``adam``.

    Examples
    --------
    >>> args = argparse.Namespace(optimizer="adam", momentum=None, betas=None, eps=None, lr=None)
    >>> optimizer_options(args), args.lr
    ({'optimizer': 'adam', 'betas': (0.9, 0.999), 'eps': 1e-08}, 0.001)
    """
    from chainrule.derive.errors import SpecError

    name = args.optimizer or "sgd"
    if args.lr is None:
        args.lr = DEFAULT_LR[name]
    if args.momentum is not None and name not in ("momentum", "nesterov"):
        raise SpecError(
            "--momentum", f"{name} takes no momentum", "add --optimizer momentum (or nesterov)"
        )
    for flag, value in (("--betas", args.betas), ("--eps", args.eps)):
        if value is not None and name != "adam":
            raise SpecError(flag, f"{name} does not use it", "add --optimizer adam, or drop it")
    if name == "sgd":
        return {}
    if name == "adam":
        betas = DEFAULT_BETAS if args.betas is None else args.betas
        return {"optimizer": name, "betas": betas, "eps": args.eps or DEFAULT_EPS}
    mu = DEFAULT_MOMENTUM if args.momentum is None else args.momentum
    return {"optimizer": name, "momentum": mu}
