"""Every number of a worked derivation checked against the generated module.

The worked numbers come from the derived expressions
(:mod:`chainrule.derive.document.worked`); the module is generated from the same spec
by the code generator, loaded in memory and run on the same point in its own dtype.
The cost, every gradient entry, the output activations, the first example's forward
values (the module's forward cache) and layer errors (through the bias gradients)
and, with a learning rate, every parameter after one ``sgd_step`` must agree within
:data:`TOLERANCE` (relative to the entry or to the largest entry of its array, plus 64
roundings at the largest entry of the gradient, forward values or parameters, where a
sum cancels to about 0; widened
where a target lies so close to its output that a^L - y cancels, see :func:`_tolerance`); the
first disagreement raises ``DerivationError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chainrule.derive import naming
from chainrule.derive.batch import batch_program
from chainrule.derive.document.worked import WorkedValues
from chainrule.derive.document.worked_blocks import module_mismatch, updated
from chainrule.derive.errors import SpecError
from chainrule.derive.layers import derive_network
from chainrule.derive.values import Point

#: Relative agreement required per dtype (float64 modules agree to about 1e-15).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def _arrays(point: Point, dtype: str, layout: str, first_only: bool) -> tuple[dict, Any, Any]:
    x = np.array(point.x[:1] if first_only else point.x, dtype=dtype)
    y = np.array(point.y[:1] if first_only else point.y, dtype=dtype)
    if layout == "columns":
        x, y = x.T, y.T
    params = {name: np.array(rows, dtype=dtype) for name, rows in point.params}
    return params, np.ascontiguousarray(x), np.ascontiguousarray(y)


def compare(field: str, got: Any, expected: Any, tolerance: float, noise: float = 0.0) -> None:
    """Raise ``DerivationError`` unless the arrays agree entry by entry.

    ``expected`` is a SymPy matrix (or number) of worked values, ``got`` the module's
    array (or float) of the same shape; an entry may differ by ``tolerance`` times the
    larger of itself and the largest entry of the array, plus ``noise`` (the float
    rounding of the sums that made it, when those cancel).
    """
    want = np.array(expected.tolist() if hasattr(expected, "tolist") else expected, dtype=float)
    have = np.asarray(got, dtype=float).reshape(want.shape)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    for index in np.ndindex(want.shape):
        w, h = float(want[index]), float(have[index])
        if not abs(h - w) <= tolerance * max(abs(w), scale, 1e-300) + noise:
            where = f"{field}[{', '.join(map(str, index))}]" if want.ndim else field
            if not (np.isfinite(h) and np.isfinite(w)):
                raise _overflow(where, h)
            raise module_mismatch(where, h, w)


def _overflow(where: str, got: float) -> SpecError:
    """The error for values whose numbers leave the module's floating-point range."""
    return SpecError(
        "--at",
        f"{where}: the generated module's floating point overflows at these values "
        f"(it gives {got!r})",
        "give smaller numbers (float64 ends near 1.8e308, float32 near 3.4e38)",
    )


def _check_cache(values: WorkedValues, module: Any, params: dict, x: Any, tol: float) -> None:
    """The first example's forward values against the module's forward cache.

    The module's ``_forward`` returns the values of the program's forward statements
    (z1, a1, ..., without the alias a0) in the program's order; a module without it, or
    with another count of values, is checked through ``forward`` and the gradient only.
    """
    cache = getattr(module, "_forward", None)
    if cache is None:
        return
    program = batch_program(derive_network(values.spec))
    names = [s.target for s in program if s.label == "forward" and s.op != "alias"]
    got = cache(params, x)
    if not isinstance(got, tuple) or len(got) != len(names):
        return
    # z = W a + b can cancel to about 0 in every unit (0.3 * 1 + 0.1 * (-3)): its float
    # rounding (5.6e-17) is then noise on the scale of the forward values.
    noise = _noise(values, {"x": x, **dict(zip(names, got, strict=True))})
    for name, value in zip(names, got, strict=True):
        field = f"forward cache on the first example: {name}"
        compare(field, value, values.first[name], tol, noise)


def check_against_module(values: WorkedValues, module: Any = None) -> None:
    """Check ``values`` against ``loss_and_grad``, ``forward`` and ``sgd_step`` of the
    module generated from ``values.spec`` (generated and loaded here unless given)."""
    spec = values.spec
    if module is None:
        from chainrule.cmd_train import module_from_spec

        module = module_from_spec(spec)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported, not warned
        _check(values, module)


def _tolerance(values: WorkedValues) -> float:
    """:data:`TOLERANCE`, widened where a^L - y cancels (at most to 1e-3).

    The worked numbers take each input as the decimal written, the module as the nearest
    float; where a target lies close to its output, a^L - y keeps only the digits the two
    do not share, so an example's cost and gradient agree only to about
    eps * max(|a|, |y|) / max |a - y| (e.g. y set to the printed output a^L).
    """
    spec = values.spec
    a = np.array(values.env[naming.activation(spec.depth)].tolist(), dtype=float)
    a = a.T if spec.layout == "columns" else a  # (m, n_L), as y
    y = np.array(values.point.y, dtype=float)
    gap = np.max(np.abs(a - y), axis=1)
    size = np.maximum(np.max(np.abs(a), axis=1), np.max(np.abs(y), axis=1))
    kappa = float(np.max(size / np.maximum(gap, 1e-300)))
    eps = float(np.finfo(spec.dtype).eps)
    return min(1e-3, TOLERANCE[spec.dtype] + 8 * eps * kappa)


def _check(values: WorkedValues, module: Any) -> None:
    """The checks of :func:`check_against_module`, in order."""
    spec, point = values.spec, values.point
    tol = _tolerance(values)
    params, x, y = _arrays(point, spec.dtype, spec.layout, first_only=False)
    env = values.env
    cost, grads = module.loss_and_grad(params, x, y)
    compare("loss_and_grad: cost", cost, env[naming.COST][0, 0], tol)
    noise = _noise(values, grads)  # a layer's gradient can cancel to about 0 in every entry
    for name in grads:
        field = f"loss_and_grad: {naming.grad(name)}"
        compare(field, grads[name], env[naming.grad(name)], tol, noise)
    output = naming.activation(spec.depth)
    compare(f"forward: {output}", module.forward(params, x), env[output], tol)
    first_params, x1, y1 = _arrays(point, spec.dtype, spec.layout, first_only=True)
    _check_cache(values, module, first_params, x1, tol)
    _, first_grads = module.loss_and_grad(first_params, x1, y1)
    noise = _noise(values, first_grads)
    for name in first_grads:
        field = f"loss_and_grad on the first example: {naming.grad(name)}"
        compare(field, first_grads[name], values.first[naming.grad(name)], tol, noise)
    if point.lr is not None:
        module.sgd_step(params, x, y, point.lr)
        noise = _noise(values, params)
        for name, after in updated(spec, env, point.lr).items():
            compare(f"sgd_step: {name}", params[name], after, tol, noise)


def _noise(values: WorkedValues, arrays: dict[str, Any]) -> float:
    """64 units of rounding of the module's dtype at the largest entry of ``arrays``."""
    largest = max((float(np.max(np.abs(a))) for a in arrays.values() if np.size(a)), default=0)
    return 64 * float(np.finfo(values.spec.dtype).eps) * largest
