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


def _check_normalized(
    sizes: list[int], activations: list[str], biases: list[bool], norms: list[bool], where: str
) -> None:
    """A batch-norm layer must follow a Dense/Linear without bias, before its activation."""
    if not sizes or norms[-1] or activations[-1] != "linear":
        raise SpecError(
            where,
            "batch normalization must come right after a Dense/Linear layer, before its activation",
            "order the layers Linear(bias=False), BatchNorm1d, activation",
        )
    if biases[-1]:
        raise SpecError(
            where,
            "the layer before batch normalization has a bias (the batch mean cancels it)",
            "build it with bias=False (Keras: use_bias=False); beta takes its place",
        )


def _normalized(spec: Spec, params: dict[str, np.ndarray], scales: list[Any]) -> None:
    """Put each batch-norm layer's (gamma, beta) of ``scales`` (None elsewhere) into ``params``."""
    dt = np.dtype(spec.dtype)
    for index, pair in enumerate(scales, start=1):
        if pair is None:
            continue
        for key, value in zip((f"gamma{index}", f"beta{index}"), pair, strict=True):
            params[key] = _bias_shaped(spec, index, value, dt, "weights")


def _bias_shaped(spec: Spec, index: int, value: Any, dt: np.dtype, field: str) -> np.ndarray:
    """A per-unit vector of layer ``index`` in the shape of a bias in the spec's layout."""
    vec = np.asarray(value, dtype=dt).reshape(-1)
    if vec.shape != (spec.sizes[index],):
        raise SpecError(
            f"{field}[layer {index}]",
            f"{vec.size} values for {spec.sizes[index]} units",
            "pass the arrays of the model the spec came from",
        )
    return vec[:, None] if spec.layout == "columns" else vec[None, :]


def state_from_running(spec: Spec, stats: list[Any]) -> dict[str, np.ndarray]:
    """A module's ``state`` from each batch-norm layer's (running mean, running variance)."""
    dt = np.dtype(spec.dtype)
    state: dict[str, np.ndarray] = {}
    for index, pair in zip(spec.batch_norm_layers, stats, strict=True):
        state[f"running_mean{index}"] = _bias_shaped(spec, index, pair[0], dt, "state")
        state[f"running_var{index}"] = _bias_shaped(spec, index, pair[1], dt, "state")
    return state
