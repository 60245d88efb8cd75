"""Error types, one per pipeline stage, each carrying the field, the value and the fix.

The command line prints ``str(error)`` as a single line and exits with status 2,
so every message names what was wrong and how to put it right.
"""

from __future__ import annotations


class ChainruleError(Exception):
    """Base class of every error chainrule raises on purpose.

    Parameters
    ----------
    field : str
        The input field at fault, e.g. ``"layers[1].activation"``.
    message : str
        What is wrong with it, including the offending value.
    fix : str
        One sentence telling the user what to do instead.

    Examples
    --------
    >>> str(SpecError("cost", "unknown cost 'mse'", "use one of: quadratic"))
    "cost: unknown cost 'mse'; use one of: quadratic"
    """

    def __init__(self, field: str, message: str, fix: str = "") -> None:
        self.field = field
        self.message = message
        self.fix = fix
        text = f"{field}: {message}"
        if fix:
            text += f"; {fix}"
        super().__init__(" ".join(text.split()))


class SpecError(ChainruleError):
    """The architecture spec (file, preset or one-liner) is invalid."""


class DerivationError(ChainruleError):
    """SymPy could not derive what the spec asks for, or a budget was exceeded."""


class CodegenError(ChainruleError):
    """A module could not be rendered, linted or written."""
