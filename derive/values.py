"""A point at which to work a derivation out in numbers: inputs, targets, parameters, lr.

:func:`read_point` validates plain data (as read from a TOML or JSON values file, or
given in Python) against a spec and returns a :class:`Point`: ``x`` and ``y`` one
example or a list of examples (one per row), every parameter in the shape the
generated module uses (a flat list for a bias, gamma or beta), an optional learning
rate, and the seed of the dropout masks (required exactly when the network has
dropout: the masks are the module's ``dropout_masks(m, seed)``). Every
number must be a finite int or float; a wrong shape, a missing or unknown key or a
target outside the cost's range raises :class:`~chainrule.derive.errors.SpecError`
naming the field. :func:`load_values` reads such a file (TOML or JSON, at most
:data:`MAX_VALUES_BYTES` bytes).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

from chainrule.derive import naming
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS

#: Largest values file read (a 784-30-10 network's parameters take about 300 kB).
MAX_VALUES_BYTES = 64_000_000
#: Most examples a worked derivation takes.
MAX_EXAMPLES = 1_000
#: Most multiply-adds of one forward pass over the batch (examples times weights): the
#: numbers are worked out in 30-digit arithmetic, about 40 s per million.
MAX_WORK = 1_000_000
TOP_KEYS = ("x", "y", "lr", "seed", "params")
#: Largest dropout seed taken (the module's seeds are any whole number >= 0; a values file
#: keeps to a signed 64-bit integer, TOML's range).
MAX_SEED = 2**63 - 1

Rows = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Point:
    """Inputs, targets, parameters and an optional learning rate, checked against a spec.

    ``x`` is (m, n_0) and ``y`` (m, n_L), examples first whatever the layout; each
    parameter in ``params`` is a tuple of rows in the generated module's shape
    (``PARAM_SHAPES``: W^l is (n_l, n_(l-1)) and b^l (n_l, 1) for columns, transposed
    for rows).
    """

    x: Rows
    y: Rows
    params: tuple[tuple[str, Rows], ...]
    lr: float | None = None
    #: The seed of the dropout masks (given exactly when the network has dropout).
    seed: int | None = None
    #: The dropout masks the generated module draws on these m examples with ``seed``, by
    #: name (``D1``) as rows in the module's shape; empty until drawn (see
    #: :func:`chainrule.api.derivation`, which draws them with the module's
    #: ``dropout_masks``).
    masks: tuple[tuple[str, Rows], ...] = ()

    @property
    def m(self) -> int:
        """The number of examples."""
        return len(self.x)

    def param(self, name: str) -> Rows:
        """The rows of parameter ``name`` (e.g. ``W1``)."""
        return dict(self.params)[name]


def param_shapes(spec: Spec) -> dict[str, tuple[int, int]]:
    """Each parameter's shape in the generated module, in its order (W1, b1, W2, ...).

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> param_shapes(preset("nielsen"))["W1"]
    (30, 784)
    """
    n, rows = spec.sizes, spec.layout == "rows"
    shapes: dict[str, tuple[int, int]] = {}
    for layer in range(1, spec.depth + 1):
        w = (n[layer], n[layer - 1])
        shapes[naming.weight(layer)] = w[::-1] if rows else w
        vector = (1, n[layer]) if rows else (n[layer], 1)
        if spec.layers[layer - 1].bias:
            shapes[naming.bias(layer)] = vector
        if spec.layers[layer - 1].batch_norm:  # gamma and beta are shaped like a bias
            shapes[naming.scale(layer)] = shapes[naming.shift(layer)] = vector
    return shapes


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(where, f"expected a number, got {_short(value)}", "write a decimal number")
    try:
        number = float(value)
    except OverflowError:  # an int of more than 308 digits
        number = math.inf
    if not math.isfinite(number):
        raise SpecError(where, f"{_short(value)} is not a finite number", "write a finite number")
    return number


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit limit of int-to-text conversion
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


def _shape_of(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        lengths = sorted({len(row) for row in value})
        if len(lengths) > 1:
            return f"{len(value)} rows of different lengths ({lengths[0]} to {lengths[-1]})"
        if any(isinstance(v, list) for row in value for v in row):
            return "lists nested three or more deep"
        return f"({len(value)}, {len(value[0])})"
    if isinstance(value, list):
        return f"a flat list of {len(value)}"
    return type(value).__name__


def _matrix(value: Any, where: str, shape: tuple[int, int], flat_ok: bool) -> Rows:
    """``value`` as rows of ``shape``; a flat list is one row (or column) when ``flat_ok``."""
    if flat_ok and isinstance(value, list) and not any(isinstance(v, list) for v in value):
        if len(value) == shape[0] * shape[1] and 1 in shape:
            numbers = [_number(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple((v,) for v in numbers) if shape[1] == 1 else (tuple(numbers),)
    ok = (
        isinstance(value, list)
        and len(value) == shape[0]
        and all(isinstance(r, list) and len(r) == shape[1] for r in value)
    )
    if not ok:
        flat = " or a flat list" if flat_ok else ""
        raise SpecError(
            where,
            f"expected shape {shape}{flat}, got {_shape_of(value)}",
            f"give {shape[0]} row(s) of {shape[1]} number(s) each",
        )
    return tuple(
        tuple(_number(v, f"{where}[{i}][{j}]") for j, v in enumerate(row))
        for i, row in enumerate(value)
    )


def _examples(value: Any, where: str, width: int) -> Rows:
    """One example (a flat list of ``width`` numbers) or a list of examples, one per row."""
    if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        if len(value) > MAX_EXAMPLES:
            raise SpecError(
                where, f"{len(value)} examples", f"give at most {MAX_EXAMPLES} examples"
            )
        return _matrix(value, where, (len(value), width), flat_ok=False)
    if isinstance(value, list) and len(value) == width:
        return _matrix(value, where, (1, width), flat_ok=True)
    raise SpecError(
        where,
        f"expected {width} number(s) per example, got {_shape_of(value)}",
        f"give a flat list of {width} numbers, or a list of such lists (one per example)",
    )


def _check_targets(spec: Spec, y: Rows) -> None:
    allowed = COSTS[spec.cost].targets
    if not allowed.holds(y):
        raise SpecError(
            "y",
            f"{spec.cost} takes targets in {allowed.text}, and some lie outside",
            f"give targets in {allowed.text}",
        )
    if not allowed.simplex:
        return
    # The numbers are worked out from the decimals as written (30 digits), and the
    # derivation's output error assumes each target sums to one: exactly, not to 1e-9.
    for index, row in enumerate(y):
        total = sum(Fraction(Decimal(repr(v))) for v in row)
        if total != 1:
            where = f"y[{index}]" if len(y) > 1 else "y"
            raise SpecError(
                where,
                f"{spec.cost} takes targets that sum to one, and these sum to {_decimal(total)}",
                "write decimals that add up to exactly 1, such as 0.25, 0.25, 0.5",
            )


def _decimal(value: Fraction) -> str:
    """``value`` (a sum of decimals) written out as a decimal."""
    with localcontext() as context:
        context.prec = 60
        return str(Decimal(value.numerator) / Decimal(value.denominator))


def _listed(value: Any) -> Any:
    """NumPy arrays and scalars, and tuples, as the lists and numbers a values file holds
    (so that ``init_params()`` or ``x[:1]`` can be given from Python as they are)."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return [_listed(v) for v in value]
    if isinstance(value, list):
        return [_listed(v) for v in value]
    if isinstance(value, Mapping):
        return {key: _listed(v) for key, v in value.items()}
    return value


def read_point(spec: Spec, data: Mapping[str, Any]) -> Point:
    """Validate ``data`` (keys ``x``, ``y``, optional ``lr``, ``seed`` with dropout, table
    ``params``) against ``spec``.

    Examples
    --------
    >>> from chainrule.derive.spec import Spec
    >>> s = Spec.from_sizes([2, 1], ["sigmoid"], "quadratic")
    >>> p = read_point(s, {"x": [1, 2], "y": [0.5], "params": {"W1": [[0.1, 0.2]], "b1": [0]}})
    >>> p.m, p.param("b1")
    (1, ((0.0,),))
    """
    if isinstance(data, Point):  # built by hand, it is checked like any other point
        data = _as_data(data)
    if not isinstance(data, Mapping):
        raise SpecError("values", f"expected a table, got {_short(data)}", "give x, y and params")
    data = {key: _listed(value) for key, value in data.items()}
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(
                str(key)[:60], "unknown key in the values", f"use only: {', '.join(TOP_KEYS)}"
            )
    most_examples(spec)  # a network too large for even one example is refused first
    for key in ("x", "y", "params"):
        if key not in data:
            raise SpecError(key, "missing from the values", f"give {key} (see chainrule derive -h)")
    x = _examples(data["x"], "x", spec.input_size)
    y = _examples(data["y"], "y", spec.sizes[-1])
    if len(x) != len(y):
        raise SpecError(
            "y", f"{len(y)} target example(s) for {len(x)} input example(s)", "give one per input"
        )
    if spec.batch_norm_layers and len(x) < 2:
        raise SpecError(
            "x",
            f"{len(x)} example: batch normalization needs at least 2 (the variance of one is 0)",
            "give two or more examples, one per row",
        )
    _check_targets(spec, y)
    weights = _weights(spec)
    if len(x) * weights > MAX_WORK:
        raise SpecError(
            "x",
            f"{len(x)} examples of a network with {weights} weights is more than "
            f"{MAX_WORK:,} multiply-adds in 30-digit arithmetic",
            f"give at most {most_examples(spec)} example(s)",
        )
    lr = None
    if "lr" in data:
        lr = _number(data["lr"], "lr")
        if lr <= 0:
            raise SpecError("lr", f"{lr!r} is not positive", "give a learning rate such as 0.5")
    given = data["params"]
    if not isinstance(given, Mapping):
        raise SpecError(
            "params",
            f"expected a table, got {_short(given)}",
            "make params a table of arrays: [params] in TOML, an object in JSON",
        )
    shapes = param_shapes(spec)
    for key in given:
        if key not in shapes:
            raise SpecError(
                f"params.{str(key)[:60]}",
                "not a parameter of this network",
                f"its parameters are {', '.join(shapes)}",
            )
    params = []
    for name, shape in shapes.items():
        if name not in given:
            raise SpecError(f"params.{name}", "missing", f"give {name} with shape {shape}")
        flat_ok = name.startswith(("b", "gamma", "beta"))
        params.append((name, _matrix(given[name], f"params.{name}", shape, flat_ok)))
    return Point(x, y, tuple(params), lr, _seed(spec, data))


def _seed(spec: Spec, data: Mapping[str, Any]) -> int | None:
    """The values' ``seed``: required (a whole number from 0 to :data:`MAX_SEED`) when the
    network has dropout, refused when it has none (there would be no mask to draw).

    Examples
    --------
    >>> from chainrule.derive.spec import Layer, Spec
    >>> s = Spec(1, (Layer(2, "tanh", dropout=0.5), Layer(1, "sigmoid")), "quadratic")
    >>> _seed(s, {"seed": 7})
    7
    """
    if not spec.dropout_layers:
        if "seed" in data:
            raise SpecError(
                "seed", "this network has no dropout, so there is no mask to draw", "remove seed"
            )
        return None
    if "seed" not in data:
        raise SpecError(
            "seed",
            "missing: this network has dropout, and its masks are drawn from a seed",
            "give seed = 0 (any whole number >= 0), as loss_and_grad(..., seed=0) takes",
        )
    seed = data["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(
            "seed", f"expected a whole number >= 0, got {_short(seed)}", "write seed = 0"
        )
    if not 0 <= seed <= MAX_SEED:
        raise SpecError(
            "seed",
            f"{_short(seed)} is outside 0 to {MAX_SEED}",
            "give a whole number from 0 to 2**63 - 1",
        )
    return seed


def most_numbers(spec: Spec) -> int:
    """The most numbers a values file for ``spec`` can hold: parameters, lr, the largest batch.

    Examples
    --------
    >>> most_numbers(Spec.from_sizes([1, 1], ["sigmoid"], "quadratic"))
    2003
    """
    params = sum(rows * cols for rows, cols in param_shapes(spec).values())
    return params + 1 + most_examples(spec) * (spec.input_size + spec.sizes[-1])


def _weights(spec: Spec) -> int:
    return sum(a * b for a, b in zip(spec.sizes, spec.sizes[1:], strict=False))


def most_examples(spec: Spec) -> int:
    """The most examples a worked derivation of ``spec`` takes (at least one).

    Raises
    ------
    SpecError
        When even one example is more work than :data:`MAX_WORK`.
    """
    weights = _weights(spec)
    if weights > MAX_WORK:
        raise SpecError(
            "--at",
            f"one example of a network with {weights:,} weights is more than {MAX_WORK:,} "
            "multiply-adds in 30-digit arithmetic",
            f"work numbers out on a network of at most {MAX_WORK:,} weights",
        )
    return min(MAX_EXAMPLES, MAX_WORK // weights)


def _refuse_too_many(raw: bytes, spec: Spec) -> None:
    """Refuse, before parsing, a file with far more numbers than ``spec`` takes.

    Parsing is the slow part (TOML about a second per megabyte): a file of a million
    examples is refused by counting its commas, which separate its numbers.
    """
    limit, commas = most_numbers(spec), raw.count(b",")
    if commas > 2 * limit + 1000:
        examples = most_examples(spec)
        raise SpecError(
            "--at",
            f"the file holds about {commas:,} numbers, and this network takes at most "
            f"{limit:,} (its parameters, lr and {examples:,} example(s))",
            f"give at most {examples:,} example(s)",
        )


def _as_data(point: Point) -> dict[str, Any]:
    """``point`` as the plain data :func:`read_point` takes (rows as lists)."""

    def rows(value: Any) -> Any:
        return [list(row) if isinstance(row, tuple) else row for row in value]

    data: dict[str, Any] = {"x": rows(point.x), "y": rows(point.y)}
    data["params"] = {name: rows(value) for name, value in point.params}
    if point.lr is not None:
        data["lr"] = point.lr
    if point.seed is not None:
        data["seed"] = point.seed
    return data


def load_values(path: str | Path, spec: Spec | None = None) -> dict[str, Any]:
    """Read a ``.toml`` or ``.json`` values file as plain data (not yet checked).

    With ``spec``, a file holding far more numbers than the network takes is refused
    before it is parsed.

    Raises
    ------
    SpecError
        When the file is missing, too large, unreadable or malformed (NaN and
        Infinity are refused in JSON, duplicate keys in both).
    """
    path = Path(path)
    if spec is not None:
        most_examples(spec)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SpecError("--at", f"{path.name[-60:]!r} is neither .toml nor .json", "use .toml")
    try:
        if not path.is_file():
            raise SpecError("--at", f"{str(path)[-60:]!r} is not a file", "check the path")
        with path.open("rb") as handle:
            raw = handle.read(MAX_VALUES_BYTES + 1)
        if len(raw) > MAX_VALUES_BYTES:
            raise SpecError(
                "--at", f"file larger than {MAX_VALUES_BYTES} bytes", "give a smaller file"
            )
        if spec is not None:
            _refuse_too_many(raw, spec)
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            "--at", f"cannot read the file ({exc.__class__.__name__})", "give UTF-8 text"
        ) from None
    return _parse(text, suffix)


def _parse(text: str, suffix: str) -> dict[str, Any]:
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = suffix[1:].upper()
        raise SpecError("--at", f"malformed {kind}: {exc}", "fix the syntax") from None
    except (RecursionError, ValueError) as exc:
        raise SpecError("--at", f"unreadable values ({exc})"[:120], "write plain numbers") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a finite number")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out
