"""Import an architecture from a Keras ``Sequential`` JSON or a PyTorch ``nn.Sequential``.

A Keras model config (the text of ``model.to_json()``, Keras 2 or Keras 3) is read
with :mod:`json` alone, rejecting NaN, Infinity and duplicate keys; TensorFlow is
never needed. A PyTorch model is read from a live ``nn.Sequential`` object, and
``--from-torch FILE.py:NAME`` imports that file to get it: the file is the user's
own Python code and runs like any script they run themselves. A model config holds
no loss, so the cost is always given separately. Anything chainrule cannot express
(a convolution, dropout, a leaky ReLU whose slope is not 0.01, ...) is a
:class:`~chainrule.derive.errors.SpecError` naming the layer and the way out.

Weights move with :func:`params_from_torch` and :func:`params_from_keras`, which
return the ``params`` dict a generated module takes, for either layout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec
from chainrule.derive.tables import ACTIVATIONS, COSTS, Match

#: The only leaky-ReLU slope the activation table knows (``leaky-relu`` is max(0.01 x, x)).
LEAKY_SLOPE = 0.01

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

#: PyTorch modules computing an expression rather than a table row.
_TORCH_EXPRESSIONS: dict[str, str] = {"SiLU": "x*sigmoid(x)"}


def _same_setting(value: Any, required: Any) -> bool:
    """True when ``value`` is ``required``, or is a float32 rounding of it (Keras 2 JSON
    writes LeakyReLU(alpha=0.01) as 0.009999999776482582)."""
    if value == required:
        return True
    numbers = (int, float, np.floating)
    if isinstance(value, numbers) and isinstance(required, numbers):
        if isinstance(value, bool) or isinstance(required, bool):
            return False
        return bool(np.float32(value) == np.float32(required))
    return False


def _check_match(match: Match, read: Any, where: str, row: str) -> str:
    """Compare a layer's settings with a row's :class:`Match`; ``read(key)`` gets one."""
    for key, required in match.settings.items():
        value = read(key)
        if not _same_setting(value, required):
            raise SpecError(
                f"{where}.{key}",
                f"{match.cls} with {key}={value!r} is not the {row} activation "
                f"({key}={required!r})",
                match.hint or f"use {key}={required!r}",
            )
    return row


_KERAS_IGNORED = ("InputLayer",)
_KERAS_HINT = "use Dense, Activation, ReLU, LeakyReLU(0.01), ELU or Softmax layers only"


# ----------------------------------------------------------------------------- Keras


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
            text = path.read_text(encoding="utf-8")
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
    sizes: list[int] = []
    activations: list[str] = []
    biases: list[bool] = []
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
        if class_name == "Dense":
            units, use_bias, shape = _keras_dense(raw, cfg, where_layer)
            if input_size is None and shape is not None:
                input_size = _shape_width(shape, f"{where_layer}.input_shape")
            sizes.append(units)
            biases.append(use_bias)
            activations.append(
                _keras_activation(cfg.get("activation"), f"{where_layer}.activation")
            )
            continue
        activation = _keras_layer_activation(str(class_name), cfg, where_layer)
        _attach_activation(activations, activation, where_layer)
    if not sizes:
        raise SpecError("from-keras", "the model has no Dense layer", "add Dense layers")
    if input_size is None:
        raise SpecError(
            "from-keras",
            "the input shape is not in the config",
            "build the model with keras.Input(shape=(n,)) before model.to_json()",
        )
    layers = tuple(Layer(s, a, b) for s, a, b in zip(sizes, activations, biases, strict=True))
    return Spec(
        input_size,
        layers,
        cost,
        layout,
        dtype,
        name or (model_name if isinstance(model_name, str) and model_name else "keras-model"),
        source=f"keras {where}",
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    when the layer has one. The arrays are copied as float64 (or the spec's dtype).
    """
    arrays = [np.asarray(w) for w in weights]
    expected = sum(2 if layer.bias else 1 for layer in spec.layers)
    if len(arrays) != expected:
        raise SpecError(
            "weights",
            f"{len(arrays)} arrays for {expected} expected",
            "pass model.get_weights() of the model the spec came from",
        )
    kernels, biases = [], []
    it = iter(arrays)
    for layer in spec.layers:
        kernels.append(next(it))
        biases.append(next(it) if layer.bias else None)
    return _params(spec, kernels, biases, kernel_is_out_in=False)


# ----------------------------------------------------------------------------- PyTorch


def _require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise SpecError(
            "from-torch",
            "PyTorch is not installed",
            "install it with: pip install torch==2.13.0",
        ) from None
    return torch


def _torch_modules(module: Any) -> list[tuple[str, Any]]:
    """The leaf modules of a (possibly nested) nn.Sequential, with dotted names."""
    torch = _require_torch()
    if not isinstance(module, torch.nn.Sequential):
        raise SpecError(
            "from-torch",
            f"expected an nn.Sequential, got {type(module).__name__}",
            "wrap the layers in torch.nn.Sequential(...)",
        )
    out = []
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Sequential):
            out.extend((f"{name}.{n}", c) for n, c in _torch_modules(child))
        else:
            out.append((name, child))
    return out


def _torch_activation(child: Any, where: str) -> str:
    """The activation a torch.nn module computes, from the rows' ``torch`` matches."""
    nn = _require_torch().nn
    cls = type(child)
    if getattr(nn, cls.__name__, None) is not cls:
        cls = None  # a user's own module that happens to share a name
    name = cls.__name__ if cls is not None else ""
    if name in _TORCH_EXPRESSIONS:
        return _TORCH_EXPRESSIONS[name]
    if name == "Softmax":
        if child.dim not in (-1, 1):
            raise SpecError(f"{where}.dim", f"softmax over dim {child.dim!r}", "use dim=-1")
        return "softmax"
    for row in ACTIVATIONS.values():
        if row.torch is not None and row.torch.cls == name:
            return _check_match(row.torch, lambda key: getattr(child, key, None), where, row.name)
    known = [row.torch.cls for row in ACTIVATIONS.values() if row.torch is not None]
    raise SpecError(
        where,
        f"unsupported module {type(child).__name__}",
        f"use Linear with {', '.join(known + list(_TORCH_EXPRESSIONS))} or a final Softmax(dim=-1)",
    )


def spec_from_torch(
    module: Any,
    cost: str,
    *,
    layout: str = "columns",
    dtype: str = "float64",
    name: str = "torch-model",
) -> Spec:
    """A spec from a PyTorch ``nn.Sequential`` of ``Linear`` and activation modules.

    ``layout`` is ``"columns"`` by default, where W^l has the shape of
    ``Linear.weight`` (n_out, n_in); pass ``"rows"`` to feed x as (m, n0) as in torch.
    """
    torch = _require_torch()
    sizes: list[int] = []
    activations: list[str] = []
    biases: list[bool] = []
    for name_, child in _torch_modules(module):
        where = f"from-torch.{name_} ({type(child).__name__})"
        if isinstance(child, torch.nn.Linear):
            if sizes and child.in_features != sizes[-1]:
                raise SpecError(
                    where,
                    f"in_features {child.in_features} after a layer of {sizes[-1]} units",
                    "make each Linear take the previous layer's out_features",
                )
            if not sizes:
                sizes.append(child.in_features)
            sizes.append(child.out_features)
            biases.append(child.bias is not None)
            activations.append("linear")
            continue
        activation = _torch_activation(child, where)
        if not activations:
            raise SpecError(where, "an activation before any Linear layer", "start with Linear")
        if activations[-1] != "linear":
            if activation == "linear":
                continue
            raise SpecError(
                where, f"a second activation after {activations[-1]!r}", "keep one per Linear"
            )
        activations[-1] = activation
    if not activations:
        raise SpecError("from-torch", "the model has no Linear layer", "add nn.Linear layers")
    layers = tuple(
        Layer(size, act, bias)
        for size, act, bias in zip(sizes[1:], activations, biases, strict=True)
    )
    return Spec(sizes[0], layers, cost, layout, dtype, name, source="torch")


def from_torch(module: Any, cost: str = "quadratic", **options: Any) -> Spec:
    """Shorthand for :func:`spec_from_torch` (the name the public API exports)."""
    return spec_from_torch(module, cost, **options)


def from_keras(
    source: str | Path | dict[str, Any], cost: str = "quadratic", **options: Any
) -> Spec:
    """Shorthand for :func:`spec_from_keras` (the name the public API exports)."""
    return spec_from_keras(source, cost, **options)


def params_from_torch(module: Any, spec: Spec) -> dict[str, np.ndarray]:
    """The ``params`` dict of a generated module holding ``module``'s weights."""
    torch = _require_torch()
    linears = [c for _, c in _torch_modules(module) if isinstance(c, torch.nn.Linear)]
    if len(linears) != spec.depth:
        raise SpecError("weights", f"{len(linears)} Linear layers for {spec.depth}", "")
    kernels = [lin.weight.detach().cpu().double().numpy() for lin in linears]
    biases = [
        None if lin.bias is None else lin.bias.detach().cpu().double().numpy() for lin in linears
    ]
    return _params(spec, kernels, biases, kernel_is_out_in=True)


def _params(
    spec: Spec,
    kernels: list[np.ndarray],
    biases: list[np.ndarray | None],
    *,
    kernel_is_out_in: bool,
) -> dict[str, np.ndarray]:
    """Arrange framework kernels and biases in the spec's layout (W1, b1, W2, ...)."""
    dt = np.dtype(spec.dtype)
    params: dict[str, np.ndarray] = {}
    n = spec.sizes
    for index, (layer, kernel, bias) in enumerate(zip(spec.layers, kernels, biases, strict=True)):
        l = index + 1  # noqa: E741 -- the layer number of the math
        out_in = kernel if kernel_is_out_in else kernel.T
        if out_in.shape != (n[l], n[l - 1]):
            raise SpecError(
                f"weights[W{l}]",
                f"shape {kernel.shape} does not fit layer sizes {n[l - 1]} -> {n[l]}",
                "pass the weights of the model the spec came from",
            )
        params[f"W{l}"] = np.array(out_in if spec.layout == "columns" else out_in.T, dtype=dt)
        if layer.bias:
            if bias is None:
                raise SpecError(f"weights[b{l}]", "missing bias", "")
            vec = np.asarray(bias, dtype=dt).reshape(-1)
            params[f"b{l}"] = vec[:, None] if spec.layout == "columns" else vec[None, :]
    return params


# ----------------------------------------------------------------------------- CLI


def load_torch_object(target: str) -> tuple[Any, str]:
    """The object ``NAME`` of ``FILE.py:NAME``, called when it is a class or function.

    This *runs* ``FILE.py``: it is the user's own Python code, imported like any script
    they run themselves. Returns the object and ``NAME``.
    """
    path_text, sep, attr = target.rpartition(":")
    if not sep or not path_text.endswith(".py") or not attr.isidentifier():
        raise SpecError(
            "from-torch",
            f"{target!r} is not FILE.py:NAME",
            "name a Python file and the nn.Sequential in it, e.g. model.py:net",
        )
    path = Path(path_text)
    if not path.is_file():
        raise SpecError("from-torch", f"file {path_text!r} does not exist", "check the path")
    _require_torch()
    module_name = f"_chainrule_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise SpecError("from-torch", f"cannot import {path_text!r}", "give a .py file")
    user_module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = user_module
    try:
        loader_spec.loader.exec_module(user_module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code failed or exited: one line
        raise SpecError(
            "from-torch",
            f"importing {path_text!r} raised {type(exc).__name__}: {str(exc)[:200]}",
            "fix the file so that 'python FILE.py' runs",
        ) from None
    finally:
        sys.modules.pop(module_name, None)
    if not hasattr(user_module, attr):
        raise SpecError("from-torch", f"{path_text!r} defines no {attr!r}", "check the NAME")
    obj = getattr(user_module, attr)
    torch = _require_torch()
    if not isinstance(obj, torch.nn.Module) and callable(obj):
        try:  # the user's class or function runs here too: it may raise or exit
            obj = obj()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - one line, as for the import
            raise SpecError(
                "from-torch",
                f"calling {attr}() raised {type(exc).__name__}: {str(exc)[:200]}",
                f"fix {attr} so that {attr}() builds the model",
            ) from None
    return obj, attr


def spec_from_import_args(args: argparse.Namespace) -> Spec:
    """The spec of ``--from-keras FILE`` or ``--from-torch FILE.py:NAME`` (cost from --cost)."""
    keras_file = getattr(args, "from_keras", None)
    torch_target = getattr(args, "from_torch", None)
    if sum(bool(v) for v in (args.spec, args.preset, args.sizes, keras_file, torch_target)) != 1:
        raise SpecError(
            "spec",
            "name exactly one network",
            "give one of: a spec file, --preset, --sizes, --from-keras, --from-torch",
        )
    if args.cost is None:
        raise SpecError(
            "cost",
            "a model config holds no loss",
            f"give --cost with one of: {', '.join(COSTS)}",
        )
    if args.activations is not None or args.no_bias:
        raise SpecError(
            "arguments",
            "--activations and --no-bias do not go with an imported model",
            "change the model itself",
        )
    options: dict[str, Any] = {"dtype": args.dtype or "float64"}
    if args.layout:
        options["layout"] = args.layout
    if keras_file:
        return spec_from_keras(Path(keras_file), args.cost, name=args.name, **options)
    module, attr = load_torch_object(torch_target)
    return spec_from_torch(module, args.cost, name=args.name or attr, **options)
