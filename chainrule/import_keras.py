"""Import an architecture from a Keras ``Sequential`` config (``model.to_json()``).

The JSON (Keras 2 or Keras 3) is read with :mod:`json` alone, rejecting NaN, Infinity
and duplicate keys; TensorFlow is never needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec
from chainrule.derive.tables import ACTIVATIONS, Match
from chainrule.import_common import (
    LEAKY_SLOPE,
    _check_match,
    _check_normalized,
    _normalized,
    _params,
    _same_setting,
    _short,
    state_from_running,
)
from chainrule.import_dropout import DropoutSlots

#: Keras activation names of functions that are expressions rather than table rows.
_KERAS_EXPRESSIONS: dict[str, str] = {
    "swish": "x*sigmoid(x)",
    "silu": "x*sigmoid(x)",
    "exponential": "exp(x)",
}

#: Keras activation names -> chainrule activations (a table name or an expression in x),
#: from the ``keras`` names of the activation rows.
KERAS_ACTIVATIONS: dict[str, str] = {
    **{name: row.name for row in ACTIVATIONS.values() for name in row.keras},
    **_KERAS_EXPRESSIONS,
}

#: Keras activation names refused, with the reason, from the rows' ``keras_refused``.
_KERAS_REFUSED: dict[str, tuple[str, str]] = {
    name: (reason, fix) for row in ACTIVATIONS.values() for name, reason, fix in row.keras_refused
}

_KERAS_IGNORED = ("InputLayer",)
_KERAS_HINT = "use Dense, Activation, ReLU, LeakyReLU(0.01), ELU, Softmax or Dropout layers only"


def _reject_constant(token: str) -> Any:
    raise SpecError("keras", f"JSON constant {token} is not allowed", "use finite numbers")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(f"keras.{key}", "duplicate key in JSON", "give each field once")
        out[key] = value
    return out


def _read_keras_json(source: str | Path) -> tuple[Any, str]:
    """The parsed JSON and a short name of where it came from."""
    if isinstance(source, Path) or not str(source).lstrip().startswith("{"):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise SpecError(
                "from-keras", f"file {str(path)!r} does not exist", "check the path"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(
                "from-keras",
                f"cannot read {str(path)!r} ({exc.__class__.__name__})",
                "give the UTF-8 text written by model.to_json()",
            ) from None
        where = path.name
    else:
        text, where = str(source), "keras JSON"
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise SpecError(
            "from-keras", f"JSON in {where} is nested too deeply", "give model.to_json() text"
        ) from None
    except json.JSONDecodeError as exc:
        raise SpecError(
            "from-keras",
            f"malformed JSON in {where}: {exc.msg} at line {exc.lineno}",
            "give the text written by model.to_json()",
        ) from None
    return data, where


def _shape_width(shape: Any, where: str) -> int:
    """n_0 from a batch shape such as [null, 4]."""
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and shape[0] is None
        and isinstance(shape[1], int)
        and not isinstance(shape[1], bool)
    ):
        return shape[1]
    raise SpecError(
        where,
        f"input shape {shape!r} is not a flat vector [null, n]",
        "give the model a 1-D input, e.g. keras.Input(shape=(4,))",
    )


def _keras_activation(value: Any, where: str) -> str:
    """A chainrule activation from a Keras activation entry (string or Keras 3 dict)."""
    name = value
    if isinstance(value, dict):  # Keras 3 may serialize a function as a small object
        name = value.get("config", value.get("class_name"))
    if name is None:
        return "linear"
    if not isinstance(name, str):
        raise SpecError(where, f"activation {value!r} is not a name", _KERAS_HINT)
    if name in _KERAS_REFUSED:
        reason, fix = _KERAS_REFUSED[name]
        raise SpecError(where, reason, fix)
    if name not in KERAS_ACTIVATIONS:
        raise SpecError(
            where,
            f"unsupported Keras activation {name!r}",
            f"use one of: {', '.join(KERAS_ACTIVATIONS)}",
        )
    return KERAS_ACTIVATIONS[name]


def _keras_layer_activation(class_name: str, config: dict[str, Any], where: str) -> str:
    """The activation that an activation layer (Activation, ReLU, ...) applies."""
    if class_name == "Activation":
        return _keras_activation(config.get("activation"), f"{where}.activation")
    if class_name == "Softmax":
        axis = config.get("axis", -1)
        if axis not in (-1, 1, [-1], [1]):
            raise SpecError(f"{where}.axis", f"softmax over axis {axis!r}", "use axis=-1")
        return "softmax"
    for row in ACTIVATIONS.values():
        match = row.keras_layer
        if match is not None and match.cls == class_name:

            def read(key: str, match: Match = match) -> Any:
                alias = match.aliases.get(key)
                if key not in config and alias in config:
                    return config[alias]
                return config.get(key, config.get(alias) if alias else None)

            return _check_match(match, read, where, row.name)
    if class_name == "ReLU":
        slope = config.get("negative_slope", 0.0)
        if config.get("max_value") is not None or config.get("threshold", 0.0) != 0.0:
            raise SpecError(
                where,
                "ReLU with max_value or threshold is not supported",
                "use a plain ReLU layer",
            )
        if slope == 0.0:
            return "relu"
        if _same_setting(slope, LEAKY_SLOPE):
            return "leaky-relu"
        raise SpecError(
            f"{where}.negative_slope", f"ReLU slope {slope!r} is not supported", "use 0 or 0.01"
        )
    raise SpecError(where, f"unsupported layer {class_name!r}", _KERAS_HINT)


def spec_from_keras(
    source: str | Path | dict[str, Any],
    cost: str,
    *,
    layout: str = "rows",
    dtype: str = "float64",
    name: str | None = None,
) -> Spec:
    """A spec from a Keras ``Sequential`` config (``model.to_json()``).

    Parameters
    ----------
    source : str, Path or dict
        A path to the JSON file, the JSON text itself, or the parsed dict.
    cost : str
        The cost (a model config holds no loss): a name of the cost table
        (:data:`chainrule.derive.tables.COSTS`).
    layout : str
        ``"rows"`` by default, where W^l has the shape of the Keras kernel (n_in, n_out)
        and x is (m, n0) as in Keras.
    dtype, name
        As in :class:`~chainrule.derive.spec.Spec`; the name defaults to the model's name.

    Examples
    --------
    >>> text = '''{"class_name": "Sequential", "config": {"name": "tiny", "layers": [
    ...   {"class_name": "InputLayer", "config": {"batch_shape": [null, 3]}},
    ...   {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}}'''
    >>> spec_from_keras(text, "cross-entropy").sizes
    (3, 2)
    """
    if isinstance(source, dict):
        data, where = source, "keras JSON"
    else:
        data, where = _read_keras_json(source)
    raw_layers, model_name, input_size = _keras_model(data, where)
    dropout = DropoutSlots()
    sizes, activations, biases, norms, input_size = _keras_layers(raw_layers, input_size, dropout)
    if not sizes:
        raise SpecError("from-keras", "the model has no Dense layer", "add Dense layers")
    if input_size is None:
        raise SpecError(
            "from-keras",
            "the input shape is not in the config",
            "build the model with keras.Input(shape=(n,)) before model.to_json()",
        )
    rates = dropout.finish()
    layers = tuple(
        Layer(s, a, b, batch_norm=n, dropout=p)
        for s, a, b, n, p in zip(sizes, activations, biases, norms, rates, strict=True)
    )
    l2, l1 = _keras_penalty(raw_layers)
    return Spec(
        input_size,
        layers,
        cost,
        layout,
        dtype,
        name or (model_name if isinstance(model_name, str) and model_name else "keras-model"),
        source=f"keras {where}",
        l2=l2,
        l1=l1,
    )


#: Keras regularizer classes and the coefficients their config holds.
_KERAS_REGULARIZERS = {"L2": ("l2",), "L1": ("l1",), "L1L2": ("l1", "l2")}
_SAME_PENALTY = "give every Dense layer the same kernel_regularizer (or none)"


def _keras_penalty(raw_layers: list[Any]) -> tuple[float, float]:
    """The spec's (l2, l1) from the Dense layers' ``kernel_regularizer``.

    Keras' L2(l2=c) adds c sum w^2 to the loss, which is chainrule's l2 = 2c; L1(l1=c)
    is l1 = c. chainrule has one penalty for every layer's weights, so every Dense layer
    must have the same regularizer (or none); a bias or activity regularizer is refused.
    """
    found: list[tuple[str, tuple[float, float]]] = []
    for i, raw in enumerate(raw_layers):
        cfg = raw.get("config", {})
        if raw.get("class_name") != "Dense":
            continue
        where = f"from-keras.layers[{i}] ({_short(cfg.get('name', 'Dense'))})"
        for key in ("bias_regularizer", "activity_regularizer"):
            if cfg.get(key) is not None:
                raise SpecError(f"{where}.{key}", "is not supported", f"remove the {key}")
        found.append((where, _keras_regularizer(cfg.get("kernel_regularizer"), where)))
    first = found[0][1] if found else (0.0, 0.0)
    for where, pair in found:
        if pair != first:
            raise SpecError(
                f"{where}.kernel_regularizer",
                "differs from the first Dense layer's (chainrule has one l2 and l1)",
                _SAME_PENALTY,
            )
    return first


def _keras_regularizer(value: Any, where: str) -> tuple[float, float]:
    """(l2, l1) in chainrule's convention of one ``kernel_regularizer`` config (or None)."""
    where = f"{where}.kernel_regularizer"
    if value is None:
        return 0.0, 0.0
    kind = value.get("class_name") if isinstance(value, dict) else None
    config = value.get("config") if isinstance(value, dict) else None
    if kind not in _KERAS_REGULARIZERS or not isinstance(config, dict):
        raise SpecError(
            where, f"unsupported regularizer {_short(kind or value)}", "use L2, L1 or L1L2"
        )
    coefficient = {"l1": 0.0, "l2": 0.0}
    for key in _KERAS_REGULARIZERS[kind]:
        number = config.get(key, 0.0)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise SpecError(
                f"{where}.{key}", f"expected a number, got {_short(number)}", "give 0.01, say"
            )
        coefficient[key] = float(number)
    return 2 * coefficient["l2"], coefficient["l1"]


def _keras_layers(
    raw_layers: list[Any], input_size: int | None, dropout: DropoutSlots
) -> tuple[list[int], list[str], list[bool], list[bool], int | None]:
    """Units, activations, use_bias and batch norm of the Dense layers, and the input width
    found; each Dropout layer's rate goes into ``dropout``."""
    sizes: list[int] = []
    activations: list[str] = []
    biases: list[bool] = []
    norms: list[bool] = []
    for i, raw in enumerate(raw_layers):
        if not isinstance(raw, dict) or not isinstance(raw.get("config", {}), dict):
            raise SpecError(f"from-keras.layers[{i}]", "not a layer object", "give to_json() text")
        class_name = raw.get("class_name")
        cfg = raw.get("config", {})
        label = cfg.get("name", class_name)
        where_layer = f"from-keras.layers[{i}] ({_short(label)})"
        for key in ("batch_input_shape", "batch_shape"):
            if cfg.get(key) is not None and input_size is None:
                input_size = _shape_width(cfg[key], f"{where_layer}.{key}")
        if class_name in _KERAS_IGNORED:
            continue
        if class_name == "Dropout":
            _keras_dropout(cfg, where_layer, dropout)
            continue
        if class_name == "Dense":
            units, use_bias, shape = _keras_dense(raw, cfg, where_layer)
            if input_size is None and shape is not None:
                input_size = _shape_width(shape, f"{where_layer}.input_shape")
            sizes.append(units)
            biases.append(use_bias)
            norms.append(False)
            dropout.layer()
            activations.append(
                _keras_activation(cfg.get("activation"), f"{where_layer}.activation")
            )
            continue
        if class_name == "BatchNormalization":
            dropout.normalization(where_layer)
            _check_normalized(sizes, activations, biases, norms, where_layer)
            _keras_batch_norm(cfg, where_layer)
            norms[-1] = True
            continue
        dropout.activation(where_layer)
        activation = _keras_layer_activation(str(class_name), cfg, where_layer)
        _attach_activation(activations, activation, where_layer)
    return sizes, activations, biases, norms, input_size


#: The BatchNormalization settings the generated module computes exactly.
_BATCH_NORM_SETTINGS = {"center": True, "scale": True, "epsilon": 1e-5}


def _keras_batch_norm(cfg: dict[str, Any], where: str) -> None:
    """center and scale on, epsilon 1e-5, over the last axis. Keras's momentum (0.99 by
    default, 0.01 in PyTorch's terms) is accepted: it only shapes how Keras updates its
    moving statistics, and the generated module updates them as PyTorch does instead."""
    for key, required in _BATCH_NORM_SETTINGS.items():
        value = cfg.get(key, 1e-3 if key == "epsilon" else True)
        if not _same_setting(value, required):
            raise SpecError(
                f"{where}.{key}",
                f"{key}={_short(value)} is not supported",
                f"use {key}={required!r} (the generated module computes exactly that)",
            )
    if cfg.get("axis", -1) not in (-1, 1, [-1], [1]):
        raise SpecError(f"{where}.axis", f"axis {_short(cfg.get('axis'))}", "use axis=-1")


def _keras_dropout(cfg: dict[str, Any], where: str, dropout: DropoutSlots) -> None:
    """A Keras Dropout layer: its rate, with no noise_shape and no seed of its own (the
    generated module draws every mask from its own ``seed``)."""
    for key, fix in (
        ("noise_shape", "remove noise_shape: the mask has one entry per unit and example"),
        ("seed", "remove seed: the generated module's seed= fixes the masks"),
    ):
        if cfg.get(key) is not None:
            raise SpecError(f"{where}.{key}", f"{_short(cfg[key])} is not supported", fix)
    dropout.dropout(cfg.get("rate"), where, "rate")


def _keras_model(data: Any, where: str) -> tuple[list[Any], Any, int | None]:
    """The layer list, the model name and the input width (if stated) of a model config."""
    if not isinstance(data, dict) or data.get("class_name") != "Sequential":
        found = data.get("class_name") if isinstance(data, dict) else type(data).__name__
        raise SpecError(
            "from-keras",
            f"{where} is not a Sequential model (found {_short(found)})",
            "export a keras.Sequential model with model.to_json()",
        )
    config = data.get("config")
    if config is not None and not isinstance(config, (dict, list)):
        raise SpecError(
            "from-keras.config",
            f"expected an object with the layers, got {_short(config)}",
            "give the text written by model.to_json()",
        )
    # Keras 2.0-2.1 stored the layer list as the config itself.
    raw_layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError("from-keras.config.layers", "no layers found", "export a model with layers")
    model_name = config.get("name") if isinstance(config, dict) else None
    input_size: int | None = None
    if isinstance(config, dict) and config.get("build_input_shape") is not None:
        input_size = _shape_width(config["build_input_shape"], "from-keras.build_input_shape")
    return raw_layers, model_name, input_size


def _keras_dense(raw: dict[str, Any], cfg: dict[str, Any], where: str) -> tuple[int, bool, Any]:
    """Units, use_bias and the build input shape (or None) of a Dense layer."""
    units = cfg.get("units")
    if isinstance(units, bool) or not isinstance(units, int):
        raise SpecError(f"{where}.units", f"expected a whole number, got {_short(units)}", "")
    use_bias = cfg.get("use_bias", True)
    if not isinstance(use_bias, bool):
        raise SpecError(f"{where}.use_bias", f"expected true/false, got {_short(use_bias)}", "")
    build = raw.get("build_config", {})
    shape = build.get("input_shape") if isinstance(build, dict) else None
    return units, use_bias, shape


def _attach_activation(activations: list[str], activation: str, where: str) -> None:
    """Give the last Dense layer the activation of the activation layer after it."""
    if not activations:
        raise SpecError(where, "an activation layer before any Dense layer", _KERAS_HINT)
    if activations[-1] != "linear":
        raise SpecError(
            where,
            f"a second activation after {activations[-1]!r}",
            "give the Dense layer activation='linear' and keep one activation layer",
        )
    activations[-1] = activation


def params_from_keras(weights: Sequence[Any], spec: Spec) -> dict[str, np.ndarray]:
    """The ``params`` dict of a generated module from Keras ``model.get_weights()``.

    Keras lists, per Dense layer, the kernel (n_in, n_out) and then the bias (n_out,)
    when the layer has one; after a batch-normalized one, its BatchNormalization's gamma,
    beta, moving mean and moving variance (the last two go to :func:`state_from_keras`).
    The arrays are copied as float64 (or the spec's dtype).
    """
    kernels, biases, scales, _ = _keras_arrays(weights, spec)
    params = _params(spec, kernels, biases, kernel_is_out_in=False)
    _normalized(spec, params, scales)
    return params


def state_from_keras(weights: Sequence[Any], spec: Spec) -> dict[str, np.ndarray]:
    """The ``state`` of a generated module: each BatchNormalization's moving mean and
    moving variance from ``model.get_weights()``."""
    return state_from_running(spec, _keras_arrays(weights, spec)[3])


def _keras_arrays(weights: Sequence[Any], spec: Spec) -> tuple[list, list, list, list]:
    """Kernels, biases, (gamma, beta) per layer and (moving mean, variance) per batch norm."""
    arrays = [np.asarray(w) for w in weights]
    expected = sum(1 + layer.bias + 4 * layer.batch_norm for layer in spec.layers)
    if len(arrays) != expected:
        raise SpecError(
            "weights",
            f"{len(arrays)} arrays for {expected} expected",
            "pass model.get_weights() of the model the spec came from",
        )
    kernels, biases, scales, stats = [], [], [], []
    it = iter(arrays)
    for layer in spec.layers:
        kernels.append(next(it))
        biases.append(next(it) if layer.bias else None)
        scales.append((next(it), next(it)) if layer.batch_norm else None)
        if layer.batch_norm:
            stats.append((next(it), next(it)))
    return kernels, biases, scales, stats
