"""What the Keras and PyTorch importers share: settings checks and the params layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.derive.tables import Match

#: The only leaky-ReLU slope the activation table knows (``leaky-relu`` is max(0.01 x, x)).
LEAKY_SLOPE = 0.01


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


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
