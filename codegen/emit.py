"""Lint and write generated modules: the one place that writes files.

Before a module reaches the disk it is parsed, checked against a whitelist
(imports only ``numpy``; attributes only on known objects; no calls to
evaluators) and compiled. Writes are atomic (temporary file, then rename), and a
file that chainrule did not generate is never overwritten unless forced.
"""

from __future__ import annotations

import ast
import functools
import math
import os
import re
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from chainrule.codegen.render import MARKER
from chainrule.derive.errors import CodegenError

_FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "__import__",
        "__builtins__",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "input",
        "breakpoint",
        "print",
        "help",
        "exit",
        "quit",
    }
)

#: Builtins a generated module may use without defining them.
BUILTINS = frozenset(
    {
        "abs",
        "bool",
        "dict",
        "enumerate",
        "float",
        "id",
        "int",
        "isinstance",
        "len",
        "list",
        "max",
        "min",
        "range",
        "reversed",
        "round",
        "sorted",
        "str",
        "sum",
        "tuple",
        "zip",
        "iter",
        "next",
        "type",
        "AttributeError",
        "ValueError",
        "TypeError",
        "KeyError",
    }
)

#: ``np.<name>`` calls and constants allowed besides NumPy's ufuncs (pure elementwise math).
NUMPY_NAMES = frozenset(
    {
        "all",
        "allclose",
        "amax",
        "amin",
        "any",
        "argmax",
        "array",
        "asarray",
        "ascontiguousarray",
        "broadcast_to",
        "clip",
        "concatenate",
        "copyto",
        "diag",
        "dot",
        "e",
        "empty",
        "empty_like",
        "errstate",
        "einsum",
        "eye",
        "finfo",
        "float32",
        "float64",
        "full",
        "full_like",
        "integer",
        "lib.format.read_array_header_1_0",
        "lib.format.read_array_header_2_0",
        "lib.format.read_magic",
        "load",
        "max",
        "may_share_memory",
        "mean",
        "min",
        "ndarray",
        "newaxis",
        "ones",
        "ones_like",
        "outer",
        "pi",
        "prod",
        "put_along_axis",
        "random.Generator",
        "random.default_rng",
        "savez",
        "select",
        "shape",
        "shares_memory",
        "squeeze",
        "stack",
        "sum",
        "take_along_axis",
        "transpose",
        "unravel_index",
        "vecdot",
        "where",
        "zeros",
        "zeros_like",
    }
)

#: Attributes allowed on any other object: arrays, dicts, lists, generators, finfo, a
#: thread-local holder (``workspaces``), an array's ``flags`` (read to check ``out=``)
#: and an ``.npz`` archive (``zip``, ``files``, ``open``, ``close``: load_params reads
#: each array's header before its data).
OBJECT_ATTRIBUTES = frozenset(
    {
        "T",
        "append",
        "astype",
        "base",
        "bit_generator",  # with "state": plain/unrolled modules copy a generator into a twin
        "c_contiguous",
        "close",
        "copy",
        "dtype",
        "eps",
        "files",
        "flags",
        "get",
        "items",
        "keys",
        "kind",
        "min",
        "ndim",
        "normal",
        "open",
        "permutation",
        "pop",
        "random",
        "ravel",
        "reshape",
        "shape",
        "shares_memory",
        "size",
        "standard_normal",
        "state",
        "sum",
        "tiny",
        "uniform",
        "values",
        "workspaces",
        "writeable",
        "zip",
    }
)

#: Standard-library modules a generated module may import besides numpy, with the one
#: attribute it may use: ``threading.local`` gives each thread its own work buffers.
STDLIB_IMPORTS = {"threading": "local"}

#: Statements and expressions a generated module never needs.
_FORBIDDEN_NODES = (
    ast.ClassDef,
    ast.AsyncFunctionDef,
    ast.AsyncFor,
    ast.AsyncWith,
    ast.Await,
    ast.Global,
    ast.Nonlocal,
    ast.Delete,
    ast.With,
    ast.Yield,
    ast.YieldFrom,
    ast.NamedExpr,
)

#: Identifiers with layer (and unit) indices, as :mod:`chainrule.derive.naming` issues them:
#: ``W2``, ``dC_db1``, ``w2_1_0``, ``_t0``, the scalar inputs and targets ``x_0``, ``y_1``,
#: and ``log1ma2`` (log(1 - a^2) of a softmax).
_INDEXED_NAME = re.compile(r"(?:_?[A-Za-z]+(?:_[A-Za-z]+)*_?|log1ma)\d+(?:_\d+)*")


@functools.lru_cache(maxsize=1)
def template_vocabulary() -> frozenset[str]:
    """Identifiers written in the templates: the generator's own fixed names."""
    words: set[str] = set()
    folder = resources.files("chainrule.codegen") / "templates"
    for entry in folder.iterdir():
        if entry.name.endswith(".j2"):
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", entry.read_text(encoding="utf-8")))
    return frozenset(words)


def _fail(what: str, fix: str) -> CodegenError:
    return CodegenError("module", what, fix)


def _dotted(node: ast.Attribute) -> tuple[ast.expr, str]:
    """The root expression and dotted path of an attribute chain: (Name np, 'random.x')."""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    return value, ".".join(reversed(parts))


def _numpy_allowed(path: str) -> bool:
    if path in NUMPY_NAMES:
        return True
    return "." not in path and isinstance(getattr(np, path, None), np.ufunc)


def _bound_names(tree: ast.Module) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef):
            bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.Import):
            bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def lint_module(source: str) -> None:
    """Parse, lint and compile a generated module; raise :class:`CodegenError` on a fault.

    The rules: imports only ``numpy`` (as ``np``) and :data:`STDLIB_IMPORTS`; attribute
    access only to NumPy's math (its ufuncs and :data:`NUMPY_NAMES`), to the one
    attribute :data:`STDLIB_IMPORTS` names, and to :data:`OBJECT_ATTRIBUTES` of other
    objects, never to a dunder; every name is bound in the module or one of
    :data:`BUILTINS`, and every bound name is generator-issued (written in a template, or
    an indexed name from :mod:`chainrule.derive.naming`); no evaluators, classes, globals,
    ``with``.

    Examples
    --------
    >>> from chainrule.derive.errors import CodegenError
    >>> try:
    ...     lint_module("import os")
    ... except CodegenError as error:
    ...     print(error)
    module: imports 'os'; a generated module may import only numpy and threading
    >>> lint_module("import numpy as np; W1 = np.exp(1.0)")
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _fail(
            f"generated code does not parse ({type(exc).__name__})",
            "report this as a chainrule bug",
        ) from None
    bound = _bound_names(tree)
    vocabulary = template_vocabulary()
    # The inner links of a chain such as np.random.default_rng are checked with the whole.
    inner = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                plain = alias.name in STDLIB_IMPORTS and alias.asname is None
                if not plain and (alias.name != "numpy" or alias.asname not in (None, "np")):
                    raise _fail(
                        f"imports {alias.name!r}",
                        "a generated module may import only numpy and threading",
                    )
        elif isinstance(node, ast.ImportFrom):
            raise _fail(
                f"imports from {node.module!r}",
                "a generated module may import only numpy and threading",
            )
        elif isinstance(node, _FORBIDDEN_NODES):
            raise _fail(
                f"contains a {type(node).__name__} node",
                "a generated module holds only functions, assignments and loops",
            )
        elif isinstance(node, ast.Name):
            _check_name(node, bound, vocabulary)
        elif isinstance(node, ast.Attribute):
            _check_attribute(node, chained=id(node) in inner)
        elif isinstance(node, ast.Constant):
            _check_constant(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            _check_numpy_load(node)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("float", "complex")
            and any(
                isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in node.args
            )
        ):
            raise _fail(
                f"builds a number from text with {node.func.id}()",
                "constants are emitted as finite number literals",
            )
    try:
        compile(tree, "<chainrule module>", "exec")
    except (SyntaxError, ValueError) as exc:
        raise _fail(
            f"generated code does not compile ({type(exc).__name__})",
            "report this as a chainrule bug",
        ) from None


def _check_name(node: ast.Name, bound: set[str], vocabulary: frozenset[str]) -> None:
    name = node.id
    if name in _FORBIDDEN_NAMES or (name.startswith("__") and name.endswith("__")):
        raise _fail(f"uses {name!r}", "a generated module may not call evaluators or open files")
    if isinstance(node.ctx, ast.Load) and name not in bound and name not in BUILTINS:
        raise _fail(f"uses the undefined name {name!r}", "report this as a chainrule bug")
    if (
        isinstance(node.ctx, ast.Store)
        and name not in vocabulary
        and not _INDEXED_NAME.fullmatch(name)
    ):
        raise _fail(
            f"binds {name!r}, a name chainrule does not issue", "report this as a chainrule bug"
        )


def _check_constant(node: ast.Constant) -> None:
    """Number literals are finite (``1e999`` parses to inf) and real."""
    value = node.value
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(
            f"has the constant {value!r}", "constants are emitted as finite number literals"
        )


def _check_numpy_load(node: ast.Call) -> None:
    """``np.load`` only with a literal ``allow_pickle=False``: a pickle can run code."""
    root, path = _dotted(node.func)
    if not (isinstance(root, ast.Name) and root.id == "np" and path == "load"):
        return
    for keyword in node.keywords:
        if (
            keyword.arg == "allow_pickle"
            and isinstance(keyword.value, ast.Constant)
            and keyword.value.value is False
        ):
            return
    raise _fail("calls np.load without allow_pickle=False", "report this as a chainrule bug")


def _check_attribute(node: ast.Attribute, *, chained: bool) -> None:
    if node.attr.startswith("_"):
        raise _fail(
            f"accesses attribute {node.attr!r}",
            "a generated module may not touch private attributes",
        )
    root, path = _dotted(node)
    if chained and isinstance(root, ast.Name) and root.id == "np":
        return
    if isinstance(root, ast.Name) and root.id in STDLIB_IMPORTS:
        if path != STDLIB_IMPORTS[root.id]:
            raise _fail(f"uses {root.id}.{path}", "a generated module may use only threading.local")
    elif isinstance(root, ast.Name) and root.id == "np":
        if not _numpy_allowed(path):
            raise _fail(f"uses np.{path}", "a generated module may use only NumPy's math")
    elif node.attr not in OBJECT_ATTRIBUTES:
        raise _fail(
            f"accesses attribute {node.attr!r}",
            "a generated module may use only array and dict attributes",
        )


def starts_with(path: Path, marker: bytes) -> bool:
    """True when the regular file at ``path`` begins with exactly ``marker``.

    Ownership is decided by this exact marker, the one chainrule writes first in each of
    its formats, never by the word "chainrule" somewhere near the top: a project's own
    README begins with its name.
    """
    try:
        with path.open("rb") as handle:
            return handle.read(len(marker)) == marker
    except OSError:
        return False


def is_generated(path: Path) -> bool:
    """True when ``path`` starts with chainrule's marker line."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == MARKER
    except (OSError, UnicodeDecodeError):
        return False


def _file_mode(path: Path) -> int:
    """The existing file's permission bits, or 0666 less the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _check_target(path: Path, force: bool, ours: Callable[[Path], bool]) -> bool:
    """Raise :class:`CodegenError` unless ``path`` may be written; True when it exists."""
    if path.is_symlink():
        raise CodegenError(
            "output",
            f"{str(path)!r} is a symbolic link",
            "chainrule does not write through links: give the real file's path",
        )
    if path.is_dir():
        # The file name suggested keeps the extension the command asked for (--save .npz).
        inside = str(path / f"network{path.suffix or '.py'}")
        raise CodegenError(
            "output", f"{str(path)!r} is a directory", f"give a file's name, such as {inside!r}"
        )
    if path.exists() and not path.is_file():
        # A FIFO, socket or device: reading it to see whose it is could block forever.
        raise CodegenError(
            "output",
            f"{str(path)!r} is not a regular file",
            "give the path of a regular file, or a new name",
        )
    existed = path.exists()
    if existed and not force and not ours(path):
        raise CodegenError(
            "output",
            f"{str(path)!r} exists and was not generated by chainrule",
            "choose another file name, or pass --force to overwrite it",
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CodegenError(
            "output",
            f"folder {str(folder)!r} does not exist",
            "create it first or choose another path",
        )
    return existed


def check_target(path: str | Path, *, force: bool, ours: Callable[[Path], bool]) -> None:
    """Refuse now, before long work, a path that :func:`write_file` would refuse later.

    Raises
    ------
    CodegenError
        As :func:`write_file` does for a link, a directory, another non-regular file, a
        missing folder, or a file not chainrule's without ``force``.
    """
    _check_target(Path(path), force, ours)


class WriteInterrupted(KeyboardInterrupt):
    """Ctrl-C reached :func:`write_file`; the message says which file the path now holds."""


def write_file(
    path: str | Path, data: bytes, *, force: bool = False, ours: Callable[[Path], bool]
) -> Path:
    """The one place chainrule writes a file: atomically, with ordinary permissions.

    ``ours(path)`` says whether an existing file there was written by chainrule (by the
    exact marker of its format); any other file is replaced only with ``force``. A
    symbolic link at ``path`` is refused, forced or not: replacing the link would
    leave its target stale, and writing its target would reach outside the path the
    user named. Nothing is left behind on failure: the data goes to a temporary file
    in the same folder, renamed over ``path`` in one step, so ``path`` holds either the
    old file or the new one, never a part.

    Raises
    ------
    CodegenError
        When the path is a symbolic link, a directory or another non-regular file
        (FIFO, socket, device), its folder is missing or not writable, or an existing
        file there was not written by chainrule and ``force`` is false.
    WriteInterrupted
        On Ctrl-C (SIGINT) while writing, saying whether ``path`` holds the old file
        (or none) or the new one.
    """
    path = Path(path)
    existed = _check_target(path, force, ours)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".chainrule-", suffix=path.suffix, dir=folder)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp makes the file private (0600); give it the mode a plain write would.
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except OSError:
        if tmp is None:
            raise CodegenError(
                "output", f"cannot write in {str(folder)!r}", "choose a writable folder"
            ) from None
        Path(tmp).unlink(missing_ok=True)
        raise CodegenError(
            "output", f"cannot write {str(path)!r}", "choose a writable path"
        ) from None
    except KeyboardInterrupt:
        # The rename is atomic: the temporary file is still there exactly when it has
        # not happened, whenever between two steps the signal came.
        if tmp is None or os.path.exists(tmp):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            kept = "the old file is unchanged" if existed else "no file was written"
            raise WriteInterrupted(f"{path}: {kept}") from None
        raise WriteInterrupted(f"{path}: the new file is complete") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_module(source: str, path: str | Path, *, force: bool = False) -> Path:
    """Lint ``source`` and write it atomically to ``path`` (see :func:`write_file`).

    Raises
    ------
    CodegenError
        When the module fails the lint, the path is a directory or not writable, or
        an existing file there was not generated by chainrule and ``force`` is false.
    """
    if not source.startswith(MARKER + "\n"):
        raise CodegenError(
            "module",
            "source does not start with chainrule's marker line",
            "write only modules made by generate_module",
        )
    lint_module(source)
    return write_file(path, source.encode("utf-8"), force=force, ours=is_generated)
