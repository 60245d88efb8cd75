"""Import an architecture from a PyTorch ``nn.Sequential`` of ``Linear`` and activations.

``--from-torch FILE.py:NAME`` imports that file to get the model: the file is the
user's own Python code and runs like any script they run themselves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer, Spec
from chainrule.derive.tables import ACTIVATIONS
from chainrule.import_common import (
    _check_match,
    _check_normalized,
    _normalized,
    _params,
    state_from_running,
)
from chainrule.import_dropout import DropoutSlots

#: PyTorch modules computing an expression rather than a table row.
_TORCH_EXPRESSIONS: dict[str, str] = {"SiLU": "x*sigmoid(x)"}


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
    norms: list[bool] = []
    dropout = DropoutSlots()
    for name_, child in _torch_modules(module):
        where = f"from-torch.{name_} ({type(child).__name__})"
        if type(child) is torch.nn.Dropout:
            dropout.dropout(child.p, where, "p")
            continue
        if isinstance(child, torch.nn.BatchNorm1d):
            dropout.normalization(where)
            _check_normalized(sizes, activations, biases, norms, where)
            _check_batch_norm(child, sizes[-1], where)
            norms[-1] = True
            continue
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
            norms.append(False)
            activations.append("linear")
            dropout.layer()
            continue
        dropout.activation(where)
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
        Layer(size, act, bias, batch_norm=norm, dropout=p)
        for size, act, bias, norm, p in zip(
            sizes[1:], activations, biases, norms, dropout.finish(), strict=True
        )
    )
    return Spec(sizes[0], layers, cost, layout, dtype, name, source="torch")


#: The BatchNorm1d settings a batch-normalized layer computes exactly (PyTorch's defaults).
_BATCH_NORM_SETTINGS = {
    "eps": 1e-5,
    "momentum": 0.1,
    "affine": True,
    "track_running_stats": True,
}


def _check_batch_norm(child: Any, units: int, where: str) -> None:
    """A BatchNorm1d over the previous Linear's units, with PyTorch's default settings."""
    if child.num_features != units:
        raise SpecError(
            f"{where}.num_features",
            f"{child.num_features} features after a layer of {units} units",
            f"use BatchNorm1d({units})",
        )
    for key, required in _BATCH_NORM_SETTINGS.items():
        if getattr(child, key) != required:
            raise SpecError(
                f"{where}.{key}",
                f"{key}={getattr(child, key)!r} is not supported",
                f"use {key}={required!r} (the generated module computes exactly that)",
            )


def _vector(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _norm_modules(module: Any, spec: Spec) -> list[Any]:
    """Each layer's BatchNorm1d (None for a layer without), checked against ``spec``."""
    torch = _require_torch()
    found: list[Any] = []
    for _, child in _torch_modules(module):
        if isinstance(child, torch.nn.Linear):
            found.append(None)
        elif isinstance(child, torch.nn.BatchNorm1d) and found:
            found[-1] = child
    if [c is not None for c in found] != [ly.batch_norm for ly in spec.layers]:
        raise SpecError("weights", "the model's BatchNorm1d layers do not fit the spec", "")
    return found


def params_from_torch(module: Any, spec: Spec) -> dict[str, np.ndarray]:
    """The ``params`` dict of a generated module holding ``module``'s weights (and each
    BatchNorm1d's weight and bias as gamma and beta)."""
    torch = _require_torch()
    linears = [c for _, c in _torch_modules(module) if isinstance(c, torch.nn.Linear)]
    if len(linears) != spec.depth:
        raise SpecError("weights", f"{len(linears)} Linear layers for {spec.depth}", "")
    kernels = [_vector(lin.weight) for lin in linears]
    biases = [None if lin.bias is None else _vector(lin.bias) for lin in linears]
    params = _params(spec, kernels, biases, kernel_is_out_in=True)
    scales = [
        None if bn is None else (_vector(bn.weight), _vector(bn.bias))
        for bn in _norm_modules(module, spec)
    ]
    _normalized(spec, params, scales)
    return params


def state_from_torch(module: Any, spec: Spec) -> dict[str, np.ndarray]:
    """The ``state`` of a generated module holding each BatchNorm1d's running statistics."""
    stats = [
        (_vector(bn.running_mean), _vector(bn.running_var))
        for bn in _norm_modules(module, spec)
        if bn is not None
    ]
    return state_from_running(spec, stats)


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
