"""Import an architecture from a Keras ``Sequential`` JSON or a PyTorch ``nn.Sequential``.

A Keras model config (the text of ``model.to_json()``, Keras 2 or Keras 3) is read
with :mod:`json` alone, rejecting NaN, Infinity and duplicate keys; TensorFlow is
never needed. A PyTorch model is read from a live ``nn.Sequential`` object, and
``--from-torch FILE.py:NAME`` imports that file to get it: the file is the user's
own Python code and runs like any script they run themselves. A model config holds
no loss, so the cost is always given separately. Anything chainrule cannot express
(a convolution, a leaky ReLU whose slope is not 0.01, a Dropout that is not after a
hidden layer, ...) is a :class:`~chainrule.derive.errors.SpecError` naming the layer and
the way out. A Dropout after a hidden layer sets that layer's ``dropout``
(:mod:`chainrule.import_dropout`).

Weights move with :func:`params_from_torch` and :func:`params_from_keras`, which
return the ``params`` dict a generated module takes, for either layout; a batch-norm
layer's running statistics with :func:`state_from_torch` and :func:`state_from_keras`,
which return the ``state`` its ``forward`` takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS
from chainrule.import_common import LEAKY_SLOPE
from chainrule.import_keras import (
    KERAS_ACTIVATIONS,
    params_from_keras,
    spec_from_keras,
    state_from_keras,
)
from chainrule.import_torch import (
    load_torch_object,
    params_from_torch,
    spec_from_torch,
    state_from_torch,
)


def from_torch(module: Any, cost: str = "quadratic", **options: Any) -> Spec:
    """Shorthand for :func:`spec_from_torch` (the name the public API exports)."""
    return spec_from_torch(module, cost, **options)


def from_keras(
    source: str | Path | dict[str, Any], cost: str = "quadratic", **options: Any
) -> Spec:
    """Shorthand for :func:`spec_from_keras` (the name the public API exports)."""
    return spec_from_keras(source, cost, **options)


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


__all__ = [
    "KERAS_ACTIVATIONS",
    "LEAKY_SLOPE",
    "from_keras",
    "from_torch",
    "load_torch_object",
    "params_from_keras",
    "params_from_torch",
    "spec_from_import_args",
    "spec_from_keras",
    "spec_from_torch",
    "state_from_keras",
    "state_from_torch",
]
