"""Load a generated module file as a Python module: one call, no importlib boilerplate.

:func:`load_module` runs a file only when it is chainrule's: it must begin with the
marker line that chainrule writes first, and pass the same lint as a module that is
written (imports only NumPy, no evaluators, no private attributes, ...), before a line
of it runs. Each call gives a fresh module object under a name of its own, so two files
with the same name, or one file loaded twice, never share state.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from types import ModuleType

from chainrule.cliargs import quoted
from chainrule.codegen.emit import lint_module
from chainrule.codegen.render import MARKER
from chainrule.derive.errors import CodegenError

#: A generated module larger than this is not one chainrule wrote; refused before reading.
MAX_MODULE_BYTES = 50_000_000

_COUNTER = itertools.count(1)
_FIX = "give a module written by chainrule generate (or chainrule.write_module)"


def _read_source(path: Path) -> str:
    """The UTF-8 text of ``path``; one-line errors for a missing, odd or unreadable file."""
    where = quoted(str(path))
    if not path.exists():
        raise CodegenError("load_module", f"{where} does not exist", "check the path")
    if not path.is_file():
        raise CodegenError("load_module", f"{where} is not a regular file", _FIX)
    try:
        if path.stat().st_size > MAX_MODULE_BYTES:
            raise CodegenError("load_module", f"{where} is too large to be a module", _FIX)
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CodegenError("load_module", f"{where} is not UTF-8 text", _FIX) from None
    except OSError as exc:
        raise CodegenError(
            "load_module", f"cannot read {where}: {exc.strerror}", "check its permissions"
        ) from None


def load_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import the generated module at ``path`` and return it.

    Parameters
    ----------
    path : str or path-like
        A ``.py`` file written by ``chainrule generate`` or :func:`chainrule.write_module`.

    Returns
    -------
    module
        A new module object (not entered in ``sys.modules``) with the module's API:
        ``init_params(seed)`` -> dict of arrays (``W1`` (n_1, n_0), ``b1`` (n_1, 1), ...
        in the columns layout; transposed in the rows layout), ``forward(params, x)``
        with ``x`` (n_0, m) -> a^L (n_L, m), ``loss_and_grad(params, x, y)`` with ``y``
        (n_L, m) -> (float, dict of the shapes of ``params``), ``train``,
        ``check_gradient``, ``save_params``, ``load_params``.

    Raises
    ------
    CodegenError
        One line naming the file: it does not exist, is not a regular UTF-8 file, does
        not begin with chainrule's marker line, or fails the lint. Nothing of it has run.

    Examples
    --------
    >>> import tempfile, chainrule
    >>> spec = chainrule.Spec.from_sizes([2, 3, 1], ["tanh", "sigmoid"], "quadratic")
    >>> folder = tempfile.mkdtemp()
    >>> net = load_module(chainrule.write_module(chainrule.generate(spec), f"{folder}/net.py"))
    >>> net.LAYER_SIZES, net.init_params(seed=0)["W1"].shape
    ((2, 3, 1), (3, 2))
    """
    file = Path(path)
    source = _read_source(file)
    if not source.startswith(MARKER + "\n"):
        raise CodegenError(
            "load_module",
            f"{quoted(str(file))} does not begin with chainrule's marker line, so it is "
            "not a generated module and is not run",
            _FIX,
        )
    try:
        lint_module(source)  # before anything runs
    except CodegenError as error:
        # The lint's own fix ("report this as a chainrule bug") is for chainrule's output;
        # a file that fails it here was most likely edited after it was written.
        raise CodegenError(
            "load_module",
            f"{quoted(str(file))} fails the check of generated modules ({error.message}), "
            "so it is not run",
            f"{_FIX}; an edited copy is regenerated with: chainrule regenerate FILE",
        ) from None
    stem = re.sub(r"\W", "_", file.stem, flags=re.ASCII) or "module"
    module = ModuleType(f"chainrule_loaded_{next(_COUNTER)}_{stem}")
    module.__file__ = str(file)
    exec(compile(source, str(file), "exec"), module.__dict__)  # linted chainrule output
    return module
