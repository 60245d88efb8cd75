"""The architecture spec: validated, frozen, free of SymPy objects.

A spec is built from a TOML or JSON file, a preset name, a command-line one-liner
or Python, and always goes through :func:`Spec.validate` so that every route
rejects the same bad input with the same one-line message.

File format (TOML; JSON has the same fields)::

    name = "nielsen"
    input = 784
    cost = "quadratic"          # a cost of the table, e.g. quadratic or cross-entropy
    layout = "columns"          # columns (x is n0 x m) | rows (x is m x n0)
    dtype = "float64"           # float64 | float32
    l2 = 0.0                    # optional: C += (l2/2) sum over layers of ||W^l||^2
    l1 = 0.0                    # optional: C += l1 sum over layers of sum |W^l| (not biases)

    [[layers]]
    size = 30
    activation = "sigmoid"      # a name, or an expression in x such as "x*sigmoid(x)"
    bias = true                 # optional, default true (false with batch_norm)
    skip_from = 1               # optional residual connection: a^l = f(z^l) + a^k, k < l
    dropout = 0.2               # optional, hidden layers only: inverted dropout, p in [0, 1)
    batch_norm = false          # optional: z = gamma (W a - mean) / sqrt(var + 1e-5) + beta
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chainrule.derive.errors import SpecError
from chainrule.derive.exprparse import describe_character, looks_like_expression, parse_activation
from chainrule.derive.tables import ACTIVATIONS, COSTS, REAL, CostRow, output_range

MAX_WIDTH = 100_000
MAX_LAYERS = 64
MAX_NAME = 200
MAX_FILE_BYTES = 1_000_000
MAX_SHOWN = 60
LAYOUTS = ("columns", "rows")
DTYPES = ("float64", "float32")
TOP_FIELDS = ("name", "input", "layers", "cost", "layout", "dtype", "l2", "l1")
#: The largest regularization coefficient accepted (a larger one swamps any cost).
MAX_PENALTY = 1e6
LAYER_FIELDS = ("size", "activation", "bias", "skip_from", "batch_norm", "dropout")


def _show(value: Any) -> str:
    """``repr(value)`` cut to :data:`MAX_SHOWN` characters, so an error stays one short line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _suggest(value: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}use one of: {', '.join(choices)}"


def _check_size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            where,
            f"expected a whole number, got {_show(value)}",
            "give a positive integer such as 30",
        )
    if value < 1:
        raise SpecError(where, f"size {value} is not positive", "give a positive integer")
    if value > MAX_WIDTH:
        raise SpecError(
            where,
            f"size {value} is larger than {MAX_WIDTH}",
            f"use at most {MAX_WIDTH} units per layer",
        )
    return value


def _check_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise SpecError(where, f"expected a string, got {_show(value)}", _suggest("", choices))
    if value not in choices:
        raise SpecError(where, f"unknown value {_show(value)}", _suggest(value, choices))
    return value


@dataclass(frozen=True)
class Layer:
    """One dense layer: ``size`` units, an activation (name or expression), a bias flag,
    and optionally ``skip_from`` = k, a residual connection a^l = f(z^l) + a^k, and
    whether its weighted input is batch-normalized.

    A batch-normalized layer has no bias (its beta shifts z instead): ``bias`` defaults
    to ``not batch_norm``, and ``bias=True`` together with ``batch_norm=True`` is refused.
    """

    size: int
    activation: str
    bias: bool | None = None
    skip_from: int | None = None
    batch_norm: bool = False
    #: Inverted dropout on this layer's output in training: a^l = D^l * f(z^l), 0 = none.
    dropout: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        if self.bias is None:
            object.__setattr__(self, "bias", self.batch_norm is not True)

    @property
    def is_custom(self) -> bool:
        """True when the activation is an expression in x rather than a table name."""
        return self.activation not in ACTIVATIONS


@dataclass(frozen=True)
class Spec:
    """A feedforward network: input size, layers 1..L, cost, array layout and dtype.

    Examples
    --------
    >>> s = Spec.from_sizes([784, 30, 10], ["sigmoid", "sigmoid"], "quadratic")
    >>> s.sizes
    (784, 30, 10)
    """

    input_size: int
    layers: tuple[Layer, ...]
    cost: str
    layout: str = "columns"
    dtype: str = "float64"
    name: str = "network"
    source: str = field(default="python", compare=False)
    l2: float = 0.0
    l1: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        self.validate()
        for key in ("l2", "l1"):  # validated: a finite number >= 0; -0.0 and ints as 0.0 floats
            object.__setattr__(self, key, float(getattr(self, key)) + 0.0)
        # Validated: each dropout is a real number in [0, 1); a Fraction or a NumPy scalar
        # as the float it equals, so every view (derive, compare, graph) reads one p.
        layers = tuple(replace(ly, dropout=float(ly.dropout) + 0.0) for ly in self.layers)
        object.__setattr__(self, "layers", layers)

    @property
    def regularized(self) -> bool:
        """True when the cost has an L2 or L1 weight penalty (l2 or l1 is not 0)."""
        return bool(self.l2 or self.l1)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes with the input size first: (n_0, n_1, ..., n_L)."""
        return (self.input_size, *(layer.size for layer in self.layers))

    @property
    def depth(self) -> int:
        """L, the number of layers with weights."""
        return len(self.layers)

    @property
    def activations(self) -> tuple[str, ...]:
        """Activation of each layer 1..L."""
        return tuple(layer.activation for layer in self.layers)

    @property
    def skips(self) -> dict[int, int]:
        """The residual connections as {layer l: source k}, for a^l = f(z^l) + a^k."""
        return {
            i: layer.skip_from
            for i, layer in enumerate(self.layers, start=1)
            if layer.skip_from is not None
        }

    @property
    def parameter_count(self) -> int:
        """Number of scalar parameters (weights, enabled biases, gamma and beta)."""
        n = self.sizes
        return sum(
            n[i] * n[i + 1]
            + (n[i + 1] if self.layers[i].bias else 0)
            + (2 * n[i + 1] if self.layers[i].batch_norm else 0)
            for i in range(self.depth)
        )

    @property
    def batch_norm_layers(self) -> tuple[int, ...]:
        """The layers (1..L) whose weighted input is batch-normalized."""
        return tuple(i for i, ly in enumerate(self.layers, start=1) if ly.batch_norm)

    def validate(self) -> None:
        """Raise :class:`SpecError` naming the first invalid field."""
        _check_size(self.input_size, "input")
        if not isinstance(self.layers, tuple) or not self.layers:
            raise SpecError("layers", "the network has no layers", "give at least one layer")
        if len(self.layers) > MAX_LAYERS:
            raise SpecError("layers", f"{len(self.layers)} layers", f"use at most {MAX_LAYERS}")
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            _check_layer(layer, f"layers[{i}]", is_output=i == last)
        _check_choice(self.cost, "cost", tuple(COSTS))
        _check_cost(COSTS[self.cost], self.layers[last])
        _check_skips(self)
        _check_dropout(self)
        _check_choice(self.layout, "layout", LAYOUTS)
        _check_choice(self.dtype, "dtype", DTYPES)
        _check_name(self.name)
        _check_penalty(self.l2, "l2")
        _check_penalty(self.l1, "l1")

    @classmethod
    def from_sizes(
        cls,
        sizes: list[int] | tuple[int, ...],
        activations: list[str] | tuple[str, ...],
        cost: str,
        *,
        bias: bool = True,
        layout: str = "columns",
        dtype: str = "float64",
        name: str = "network",
        source: str = "python",
        l2: float = 0.0,
        l1: float = 0.0,
    ) -> Spec:
        """Build a spec from layer sizes (input first) and one activation per layer."""
        sizes = list(sizes)
        if len(sizes) < 2:
            raise SpecError(
                "sizes",
                f"got {len(sizes)} size(s)",
                "give the input size and at least one layer size, e.g. 784,30,10",
            )
        activations = list(activations)
        if len(activations) != len(sizes) - 1:
            raise SpecError(
                "activations",
                f"{len(activations)} activation(s) for {len(sizes) - 1} layer(s)",
                "give one activation per layer",
            )
        layers = tuple(Layer(s, a, bias) for s, a in zip(sizes[1:], activations, strict=True))
        return cls(sizes[0], layers, cost, layout, dtype, name, source, l2, l1)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, in the file format's field names (l2 and l1 only when
        not 0)."""
        penalty = {key: getattr(self, key) for key in ("l2", "l1") if getattr(self, key)}
        return {
            "name": self.name,
            "input": self.input_size,
            "cost": self.cost,
            "layout": self.layout,
            "dtype": self.dtype,
            "layers": [_layer_dict(ly) for ly in self.layers],
            **penalty,
        }

    @property
    def dropout_layers(self) -> dict[int, float]:
        """The layers with dropout as {layer l: p} (p > 0), in layer order."""
        return {i: float(ly.dropout) for i, ly in enumerate(self.layers, start=1) if ly.dropout}

    def replace(self, **changes: Any) -> Spec:
        """A copy with some top-level fields changed (validated again)."""
        data = {
            "input_size": self.input_size,
            "layers": self.layers,
            "cost": self.cost,
            "layout": self.layout,
            "dtype": self.dtype,
            "name": self.name,
            "source": self.source,
            "l2": self.l2,
            "l1": self.l1,
        }
        data.update(changes)
        return Spec(**data)


def _check_layer(layer: Any, where: str, *, is_output: bool) -> None:
    """Validate one layer: its size, bias flag and activation (name or expression)."""
    if not isinstance(layer, Layer):
        raise SpecError(where, f"expected a Layer, got {_show(layer)}", "use Layer(size, ...)")
    _check_size(layer.size, f"{where}.size")
    if not isinstance(layer.bias, bool):
        raise SpecError(
            f"{where}.bias",
            f"expected true or false, got {_show(layer.bias)}",
            "write bias = true or bias = false",
        )
    _check_batch_norm(layer, where, is_output=is_output)
    act = layer.activation
    if not isinstance(act, str) or not act.strip():
        raise SpecError(
            f"{where}.activation",
            f"expected a name, got {_show(act)}",
            _suggest("", tuple(ACTIVATIONS)),
        )
    if act not in ACTIVATIONS:
        if not looks_like_expression(act) and len(act) <= MAX_SHOWN:
            raise SpecError(
                f"{where}.activation",
                f"unknown activation {act!r}",
                _suggest(act, tuple(ACTIVATIONS)) + ", or an expression in x",
            )
        parse_activation(act, f"{where}.activation")
        return
    if ACTIVATIONS[act].expr is None and not is_output:
        raise SpecError(
            f"{where}.activation",
            f"{act} is only allowed in the output layer",
            "use an elementwise activation such as relu in hidden layers",
        )
    if ACTIVATIONS[act].output.simplex and layer.size < 2:
        raise SpecError(
            f"{where}.size",
            f"{act} over a single output is constant",
            "use at least 2 outputs, or sigmoid for one",
        )


def _check_batch_norm(layer: Layer, where: str, *, is_output: bool) -> None:
    """batch_norm is a bool, off on the output layer, and never with a bias."""
    if not isinstance(layer.batch_norm, bool):
        raise SpecError(
            f"{where}.batch_norm",
            f"expected true or false, got {_show(layer.batch_norm)}",
            "write batch_norm = true or batch_norm = false",
        )
    if layer.batch_norm and is_output:
        raise SpecError(
            f"{where}.batch_norm",
            "batch normalization on the output layer is not supported",
            "normalize a hidden layer instead",
        )
    if layer.batch_norm and layer.bias:
        raise SpecError(
            f"{where}.bias",
            "a batch-normalized layer has no bias (beta shifts it instead)",
            "remove bias = true (batch_norm implies no bias)",
        )


def _layer_dict(layer: Layer) -> dict[str, Any]:
    """One layer in the file format's field names (``skip_from`` and ``batch_norm`` only
    when set, ``dropout`` only when not 0, so a spec without them reads and hashes as
    before)."""
    out: dict[str, Any] = {"size": layer.size, "activation": layer.activation, "bias": layer.bias}
    if layer.skip_from is not None:
        out["skip_from"] = layer.skip_from
    if layer.batch_norm:
        out["batch_norm"] = True
    if layer.dropout:
        out["dropout"] = float(layer.dropout)
    return out


def _check_skips(spec: Spec) -> None:
    """Each ``skip_from`` = k names an earlier layer 0..l-1 of the same size, and never
    feeds an output whose cost is computed on a restricted range (fused on the logits)."""
    sizes = spec.sizes
    for layer, k in enumerate((ly.skip_from for ly in spec.layers), start=1):
        where = f"layers[{layer - 1}].skip_from"
        if k is None:
            continue
        if isinstance(k, bool) or not isinstance(k, int):
            raise SpecError(
                where,
                f"expected a layer number, got {_show(k)}",
                f"give an integer 0..{layer - 1} (0 is the input x), or leave it out",
            )
        if not 0 <= k < layer:
            raise SpecError(
                where,
                f"layer {layer} cannot take a skip from layer "
                + (str(k) if abs(k) < 10**9 else "number that large"),
                f"give an earlier layer 0..{layer - 1} (0 is the input x)",
            )
        if sizes[k] != sizes[layer]:
            raise SpecError(
                where,
                f"layer {k} has {sizes[k]} units and layer {layer} has {sizes[layer]}",
                "skip from a layer of the same size",
            )
        if layer == spec.depth:
            _check_output_skip(spec, where)


def _check_output_skip(spec: Spec, where: str) -> None:
    """A skip into the output layer: only an elementwise output under a cost on all reals."""
    act = spec.layers[-1].activation
    if act in ACTIVATIONS and ACTIVATIONS[act].expr is None:
        raise SpecError(
            where,
            f"a skip into the {act} output layer would break its normalization",
            "skip into a hidden layer instead",
        )
    cost = COSTS[spec.cost]
    if cost.output != REAL:
        raise SpecError(
            where,
            f"{cost.name} is computed fused on the output's logits, which a + a^k would break",
            "skip into a hidden layer, or use a cost defined on all reals such as quadratic",
        )


def _check_dropout(spec: Spec) -> None:
    """Each ``dropout`` is a real number p in [0, 1), 0 on the output layer and on a
    batch-normalized layer."""
    for i, layer in enumerate(spec.layers):
        p, where = layer.dropout, f"layers[{i}].dropout"
        real = isinstance(p, numbers.Real) and not isinstance(p, bool)
        if not (real and (isinstance(p, numbers.Integral) or math.isfinite(p))):
            raise SpecError(
                where,
                f"expected a number, got {_show(p)}",
                "give the drop probability p as a number in [0, 1), such as 0.2",
            )
        if not 0 <= p < 1:
            raise SpecError(
                where,
                f"{_show(p)} is outside [0, 1)",
                "give the drop probability p with 0 <= p < 1 (0 means no dropout)",
            )
        if p and i == len(spec.layers) - 1:
            raise SpecError(
                where,
                "dropout on the output layer would drop the network's outputs",
                "put dropout on a hidden layer, or remove it here",
            )
        if p and layer.batch_norm is True:
            raise SpecError(
                where,
                "dropout on a batch-normalized layer is not supported",
                "put the dropout on a layer without batch_norm, or set dropout = 0 here",
            )


def _check_cost(cost: CostRow, out: Layer) -> None:
    """The output layer must produce values the cost is defined on (read from the rows)."""
    if out.size < cost.min_outputs:
        fits = [c.name for c in COSTS.values() if c.min_outputs <= out.size and c.output.low == 0]
        raise SpecError(
            "cost",
            f"{cost.name} needs at least {cost.min_outputs} outputs",
            f"use {' or '.join(fits)} with one sigmoid output",
        )
    produced = output_range(out.activation)
    if produced.within(cost.output):
        return
    fitting = [row.name for row in ACTIVATIONS.values() if row.output.within(cost.output)]
    kind = "a softmax output layer" if cost.output.simplex else f"outputs in {cost.output.text}"
    raise SpecError(
        "cost",
        f"{cost.name} needs {kind}, got activation {out.activation!r} (outputs in {produced.text})",
        f"set the last activation to {' or '.join(fitting)}",
    )


def _check_penalty(value: Any, where: str) -> None:
    """A regularization coefficient: a finite number from 0 to :data:`MAX_PENALTY`."""
    fix = f"give a number from 0 (none) to {MAX_PENALTY:.0f}, such as 0.01"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(where, f"expected a number, got {_show(value)}", fix)
    if isinstance(value, int) and abs(value) > MAX_PENALTY:  # float() of a huge int overflows
        raise SpecError(where, f"{_show(value)} is out of range", fix)
    if not math.isfinite(value) or not 0 <= value <= MAX_PENALTY:
        raise SpecError(where, f"{_show(value)} is out of range", fix)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise SpecError(
            "name",
            f"expected a non-empty string of at most {MAX_NAME} characters, got {_show(name)}",
            "give a short name",
        )
    if not name.isprintable():
        bad = next(ch for ch in name if not ch.isprintable())
        raise SpecError(
            "name",
            f"{_show(name)} contains {describe_character(bad)}",
            "give a one-line name of printable characters",
        )


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise SpecError(
                f"{prefix}{_show(str(key))[1:-1]}", "unknown field", _suggest(str(key), allowed)
            )


def spec_from_dict(data: Any, source: str = "dict") -> Spec:
    """Validate plain data (as read from TOML or JSON) into a :class:`Spec`."""
    if not isinstance(data, dict):
        raise SpecError(
            "spec",
            f"expected a table of fields, got {type(data).__name__}",
            "write fields such as input = 784 and [[layers]]",
        )
    _check_keys(data, TOP_FIELDS, "")
    for required in ("input", "layers", "cost"):
        if required not in data:
            raise SpecError(required, "missing field", f"add {required} = ... to the spec")
    raw_layers = data["layers"]
    if not isinstance(raw_layers, list):
        raise SpecError(
            "layers",
            f"expected a list of tables, got {_show(raw_layers)}",
            "write each layer as [[layers]] with size and activation",
        )
    if len(raw_layers) > MAX_LAYERS:
        raise SpecError("layers", f"{len(raw_layers)} layers", f"use at most {MAX_LAYERS}")
    layers = []
    for i, raw in enumerate(raw_layers):
        where = f"layers[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(
                where,
                f"expected a table, got {_show(raw)}",
                "give size and activation for each layer",
            )
        _check_keys(raw, LAYER_FIELDS, where)
        for required in ("size", "activation"):
            if required not in raw:
                raise SpecError(f"{where}.{required}", "missing field", f"add {required} = ...")
        if "bias" in raw and raw["bias"] is None:
            raise SpecError(
                f"{where}.bias", "expected true or false, got null", "write true or false"
            )
        norm = raw.get("batch_norm", False)
        layers.append(
            Layer(
                raw["size"],
                raw["activation"],
                raw.get("bias"),
                raw.get("skip_from"),
                batch_norm=norm,
                dropout=raw.get("dropout", 0.0),
            )
        )
    return Spec(
        input_size=data["input"],
        layers=tuple(layers),
        cost=data["cost"],
        layout=data.get("layout", "columns"),
        dtype=data.get("dtype", "float64"),
        name=data.get("name", "network"),
        source=source,
        l2=data.get("l2", 0.0),
        l1=data.get("l1", 0.0),
    )


def _reject_constant(token: str) -> Any:
    raise SpecError("spec", f"JSON constant {token} is not allowed", "use finite numbers")


def _finite_float(token: str) -> float:
    value = float(token)
    if value != value or value in (float("inf"), float("-inf")):
        raise SpecError(
            "spec", f"JSON number {token[:20]} overflows to {value}", "use finite numbers"
        )
    return value


def _short_int(token: str) -> int:
    if len(token) > 30:  # int() refuses past 4,300 digits with a message longer than that
        raise SpecError(
            "spec", f"a number of {len(token)} digits", "give numbers of at most 30 digits"
        )
    return int(token)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(_show(key)[1:-1], "duplicate key in JSON", "give each field once")
        out[key] = value
    return out


def require_spec(spec: Any) -> Spec:
    """``spec`` itself when it is a :class:`Spec`; otherwise a one-line SpecError that
    says how to make one (a path or a preset name given in its place is the usual slip).

    Examples
    --------
    >>> require_spec(preset("nielsen")).name
    'nielsen'
    >>> try:
    ...     require_spec("net.toml")
    ... except SpecError as error:
    ...     print(error.field, "|", error.message)
    spec | expected a Spec, got 'net.toml' (str)
    """
    if not isinstance(spec, Spec):
        raise SpecError(
            "spec",
            f"expected a Spec, got {_show(spec)} ({type(spec).__name__})",
            "load a file with chainrule.load_spec(path), or take chainrule.preset(name)",
        )
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a ``.toml`` or ``.json`` spec file.

    Raises
    ------
    SpecError
        When the file is missing, unreadable, malformed or describes an invalid network.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise SpecError(
            "spec",
            f"file {str(path)!r} is neither .toml nor .json",
            "name the spec file with a .toml or .json extension",
        )
    try:
        if path.exists() and not path.is_file():
            raise SpecError(
                "spec", f"{str(path)!r} is not a regular file", "give a .toml or .json file"
            )
        # Read at most one byte past the cap: a file that grows, or a symlink to a
        # device, cannot make chainrule read without end.
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise SpecError(
                "spec",
                f"file {str(path)!r} is larger than {MAX_FILE_BYTES} bytes",
                "a spec file is a few lines of TOML or JSON",
            )
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise SpecError("spec", f"file {str(path)!r} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            "spec",
            f"cannot read {str(path)!r} ({exc.__class__.__name__})",
            "give a readable UTF-8 text file",
        ) from None
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(
                "spec", f"malformed TOML in {str(path)!r}: {exc}", "fix the TOML syntax"
            ) from None
        except RecursionError:
            raise SpecError(
                "spec", f"TOML in {str(path)!r} is nested too deeply", "write a flat spec"
            ) from None
        except ValueError:  # an integer past Python's 4,300-digit limit
            raise SpecError(
                "spec", f"a number in {str(path)!r} is too long", "give sizes of a few digits"
            ) from None
    else:
        try:
            data = json.loads(
                text,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                parse_int=_short_int,
                object_pairs_hook=_no_duplicates,
            )
        except RecursionError:
            raise SpecError(
                "spec", f"JSON in {str(path)!r} is nested too deeply", "write a flat spec"
            ) from None
        except json.JSONDecodeError as exc:
            raise SpecError(
                "spec",
                f"malformed JSON in {str(path)!r}: {exc.msg} at line {exc.lineno}",
                "fix the JSON syntax",
            ) from None
    # Never "preset ...": the header names a preset only for a real preset.
    return spec_from_dict(data, source=f"file {path.name}")


#: Each preset: the source text it reproduces (title and author as that text gives them),
#: the network in one line (with the seed number of the text), and the spec's fields.
_PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "3b1b-chain": (
        '3Blue1Brown, "Backpropagation calculus" (chapter 5 of the neural-network series)',
        "seed 004: a chain of one neuron per layer, C0 = (a^(L) - y)^2",
        dict(sizes=[1, 1, 1, 1], activations=["sigmoid"] * 3, cost="squared-error"),
    ),
    "nielsen": (
        'Michael Nielsen, "Neural Networks and Deep Learning", chapter 2, from section 2.3 '
        '"The backpropagation algorithm"',
        "seed 002: Nielsen's [784, 30, 10] sigmoid network, quadratic cost, BP1-BP4",
        dict(sizes=[784, 30, 10], activations=["sigmoid"] * 2, cost="quadratic"),
    ),
    "two-layer-nobias": (
        "a blog post (no title or author given) that derives backpropagation with outer "
        "products, after Nielsen's chapter 2",
        "seed 001: x -> h1 -> h2 with sigmoid and no biases, outer products",
        dict(sizes=[4, 5, 3], activations=["sigmoid"] * 2, cost="quadratic", bias=False),
    ),
    "cheatsheet-relu": (
        '"Backpropagation", a machine-learning cheat-sheet page: chain rule refresher, '
        "memoization, code example (no author given)",
        "seed 003: 1-1-1 ReLU chain, no biases, rows layout Z = XW, E_o and E_h",
        dict(
            sizes=[1, 1, 1], activations=["relu"] * 2, cost="quadratic", bias=False, layout="rows"
        ),
    ),
    "deep-relu-sigmoid": (
        '"Backpropagation in a feedforward neural network - credit 3blue1brown", a blog post '
        "of Aug 31, 2018 (no author given)",
        "seed 000: 3 hidden ReLU layers, sigmoid output, cross-entropy, 1/m averaging",
        dict(
            sizes=[12, 8, 8, 8, 1],
            activations=["relu"] * 3 + ["sigmoid"],
            cost="binary-cross-entropy",
        ),
    ),
}


def preset_names() -> tuple[str, ...]:
    """Names of the built-in presets, in a fixed order."""
    return tuple(_PRESETS)


def preset_description(name: str) -> str:
    """One line: the seed text's number and the network the preset reproduces from it."""
    preset(name)
    return _PRESETS[name][1]


def preset_source(name: str) -> str:
    """The text the preset reproduces, in words: title and author as that text gives them.

    Examples
    --------
    >>> preset_source("nielsen").split(",")[0]
    'Michael Nielsen'
    """
    preset(name)
    return _PRESETS[name][0]


def preset(name: str) -> Spec:
    """The spec of a built-in preset (see :func:`preset_names`).

    Examples
    --------
    >>> preset("nielsen").sizes
    (784, 30, 10)
    """
    if name not in _PRESETS:
        raise SpecError("preset", f"unknown preset {name!r}", _suggest(name, preset_names()))
    return Spec.from_sizes(name=name, source=f"preset {name}", **_PRESETS[name][2])
