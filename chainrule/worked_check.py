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

import dataclasses
from typing import Any

import numpy as np

from chainrule.derive import naming
from chainrule.derive.batch import batch_program
from chainrule.derive.batch_norm import EPS as bn_eps
from chainrule.derive.document.worked import WorkedValues
from chainrule.derive.document.worked_blocks import module_mismatch, updated
from chainrule.derive.errors import DerivationError, SpecError
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


class _Replay:
    """Stands in for the module's random generator so that its own mask drawing,
    ``_dropout_mask`` (D = (u >= p) / (1 - p) for u from ``random``), gives the masks
    given here, layer by layer: u = 1 where a mask keeps its unit and 0 where it drops it."""

    def __init__(self, masks: list[Any]) -> None:
        self._masks = iter(masks)

    def random(self, dtype: Any = None, out: Any = None) -> Any:
        np.not_equal(next(self._masks), 0, out=out)  # 1.0 >= p keeps; 0.0 < p drops
        return out


def _masks(point: Point, dtype: str, layout: str, first_only: bool) -> list[Any] | None:
    """The point's dropout masks (the module's draw) in layer order, of the first example
    alone with ``first_only``; None for a network without dropout."""
    if not point.masks:
        return None
    out = []
    for _, rows in point.masks:
        mask = np.array(rows, dtype=dtype)
        if first_only:
            mask = mask[:, :1] if layout == "columns" else mask[:1, :]
        out.append(np.ascontiguousarray(mask))
    return out


def _cache_names(spec: Any) -> list[str]:
    """The forward statements' targets in the order of the module's ``_forward`` cache."""
    program = batch_program(derive_network(spec))
    return [s.target for s in program if s.label == "forward" and s.op != "alias"]


def _module_cache_names(module: Any, program: list[str], shared: set[str]) -> list[str]:
    """The names of the module's ``_forward`` values: its ``FORWARD_VALUES``, which must be
    the program's forward statements in order, less at most the shared u^l of a
    batch-normalized layer (the fast form computes x-hat^l in u^l's buffer)."""
    names = list(getattr(module, "FORWARD_VALUES", program))
    if (
        names != [name for name in program if name in names]
        or not set(program) - set(names) <= shared
    ):
        raise DerivationError(
            "forward cache",
            f"the generated module's FORWARD_VALUES {tuple(names)} are not the program's "
            f"forward statements {tuple(program)}",
            "report this: the module and the program disagree",
        )
    return names


def _check_cache(
    values: WorkedValues, module: Any, params: dict, x: Any, env: dict, tol: float, masks: Any
) -> None:
    """The forward values in ``env`` against the module's forward cache (``_forward``) on
    the same examples, with the same dropout masks (replayed through the module's own
    drawing).

    The cache holds the values its ``FORWARD_VALUES`` names: the program's forward
    statements (z1, a1, ..., without the alias a0) in the program's order, where the fast
    form leaves out u^l of a batch-normalized layer (it computes x-hat^l in u^l's buffer).
    Any other set, or a cache of another length, is an error, never skipped.
    """
    spec = values.spec
    shared = {naming.linear(ly) for ly in spec.batch_norm_layers}
    names = _module_cache_names(module, _cache_names(spec), shared)
    rng = None if masks is None else _Replay(masks)
    got = module._forward(params, x, None, rng) if masks is not None else module._forward(params, x)
    if not isinstance(got, tuple) or len(got) != len(names):
        count = len(got) if isinstance(got, tuple) else type(got).__name__
        raise DerivationError(
            "forward cache",
            f"the generated module's _forward gives {count} values for {len(names)} statements",
            "report this: the module and the program disagree",
        )
    # z = W a + b can cancel to about 0 in every unit (0.3 * 1 + 0.1 * (-3)): its float
    # rounding (5.6e-17) is then noise on the scale of the forward values.
    cache = {name: value for name, value in zip(names, got, strict=True) if name not in shared}
    noise = _noise(values, {"x": x, **cache})
    which = "the first example" if x.shape[0 if spec.layout == "rows" else 1] == 1 else "the batch"
    for name, value in cache.items():
        compare(f"forward cache on {which}: {name}", value, env[name], tol, noise)


def with_masks(point: Point, module: Any) -> Point:
    """``point`` with the dropout masks the generated module draws on its m examples with
    its seed (``module.dropout_masks(m, seed)``, in the module's dtype); ``point`` itself
    for a network without dropout."""
    if point.seed is None:
        return point
    drawn = module.dropout_masks(point.m, point.seed)
    masks = tuple(
        (name, tuple(tuple(float(v) for v in row) for row in np.asarray(mask).tolist()))
        for name, mask in drawn.items()
    )
    return dataclasses.replace(point, masks=masks)


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
    _refuse_unresolved(values)
    tol = _tolerance(values)
    params, x, y = _arrays(point, spec.dtype, spec.layout, first_only=False)
    env = values.env
    seeded = {} if point.seed is None else {"seed": point.seed}  # the masks' seed
    masks = _masks(point, spec.dtype, spec.layout, first_only=False)
    # The forward values first: a batch variance that overflows to inf (u of 1e200) makes
    # x-hat 0 and the gradient finite but wrong; its inf names the cause (overflow).
    _check_cache(values, module, params, x, env, tol, masks)
    cost, grads = module.loss_and_grad(params, x, y, **seeded)
    noise = _noise(values, {})  # x-hat's rounding, magnified by batch norm (0 without it)
    compare("loss_and_grad: cost", cost, env[naming.COST][0, 0], tol, noise)
    loss = module.loss(params, x, y, **seeded)
    compare("loss: cost", loss, env[naming.COST][0, 0], tol, noise)
    noise = _noise(values, grads)  # a layer's gradient can cancel to about 0 in every entry
    for name in grads:
        field = f"loss_and_grad: {naming.grad(name)}"
        compare(field, grads[name], env[naming.grad(name)], tol, noise)
    if masks is None:  # forward is inference: without dropout, the training network itself
        output = naming.activation(spec.depth)
        compare(f"forward: {output}", module.forward(params, x), env[output], tol)
    if not spec.batch_norm_layers:  # batch norm needs m >= 2: no one-example numbers
        _check_first(values, module, tol)
    if point.lr is not None:
        module.sgd_step(params, x, y, point.lr, **seeded)
        noise = _noise(values, params)
        for name, after in updated(spec, env, point.lr).items():
            compare(f"sgd_step: {name}", params[name], after, tol, noise)


def _check_first(values: WorkedValues, module: Any, tol: float) -> None:
    """The first example's forward values and gradient against the module on that example
    alone, with the first example's column of the batch's dropout masks."""
    spec, point = values.spec, values.point
    params, x1, y1 = _arrays(point, spec.dtype, spec.layout, first_only=True)
    masks = _masks(point, spec.dtype, spec.layout, first_only=True)
    _check_cache(values, module, params, x1, values.first, tol, masks)
    if masks is None:
        _, grads = module.loss_and_grad(params, x1, y1)
    else:  # the module's own step, with the masks replayed through its own drawing
        _, grads = module._loss_and_grad(params, x1, y1, None, _Replay(masks))
    noise = _noise(values, grads)
    for name in grads:
        field = f"loss_and_grad on the first example: {naming.grad(name)}"
        compare(field, grads[name], values.first[naming.grad(name)], tol, noise)


def _noise(values: WorkedValues, arrays: dict[str, Any]) -> float:
    """64 units of rounding of the module's dtype at the largest entry of ``arrays``, or
    at the scale batch norm magnifies its rounding to (:func:`_batch_norm_scale`)."""
    largest = max((float(np.max(np.abs(a))) for a in arrays.values() if np.size(a)), default=0)
    return 64 * float(np.finfo(values.spec.dtype).eps) * max(largest, _batch_norm_scale(values))


def _refuse_unresolved(values: WorkedValues) -> None:
    """Refuse a point whose batch-normalized weighted sums are so large against their
    spread over the batch (|u| / sqrt(var + eps)) that the module's x-hat keeps fewer
    digits than the check needs: its numbers there are rounding, not a disagreement."""
    spec = values.spec
    eps = float(np.finfo(spec.dtype).eps)
    for layer in spec.batch_norm_layers:
        var = np.array(values.env[naming.batch_var(layer)].tolist(), dtype=float)
        ratio = _largest(values, naming.linear(layer)) / float(np.sqrt(np.min(var) + float(bn_eps)))
        if eps * ratio > TOLERANCE[spec.dtype]:
            raise SpecError(
                "x",
                f"the weighted sums {naming.linear(layer)} of a batch-normalized layer are "
                f"{ratio:.2g} times their spread over the batch: {spec.dtype} keeps too few "
                "digits of u - mean to check the module's numbers",
                "give examples that differ more, or smaller inputs and weights",
            )


def _largest(values: WorkedValues, name: str) -> float:
    """The largest magnitude of the worked value ``name`` on the batch."""
    return float(np.max(np.abs(np.array(values.env[name].tolist(), dtype=float))))


def _batch_norm_scale(values: WorkedValues) -> float:
    """The scale of the float rounding of a batch-normalized layer's values: u - mean
    rounds at about eps |u| and 1/sqrt(var + eps) magnifies it (up to 316 times when
    every example is alike, var = 0; and where the examples are large and close, u of
    3e7 apart by 0.3), so x-hat carries |u| / sqrt(var + eps), and z, the cost and the
    gradient of gamma that times |gamma delta|; the error at u, gamma / sqrt(var + eps)
    times a difference of errors, sums to the weights' gradient with the previous
    activations, which cancels where the examples are alike (each term then off by
    x-hat's rounding). 0 for a network without batch norm (:func:`_refuse_unresolved`
    refuses a point where x-hat's rounding alone passes the tolerance)."""
    scale = 0.0
    for layer in values.spec.batch_norm_layers:
        var = np.array(values.env[naming.batch_var(layer)].tolist(), dtype=float)
        rstd = 1.0 / float(np.sqrt(np.min(var) + float(bn_eps)))
        u, gamma = _largest(values, naming.linear(layer)), _largest(values, naming.scale(layer))
        delta = _largest(values, naming.delta(layer))
        below = _largest(values, naming.activation(layer - 1))
        error_at_u = max(_largest(values, naming.linear_delta(layer)), gamma * rstd * delta)
        xhat = u * rstd  # and the cost and gamma's gradient carry x-hat's through gamma delta
        scale = max(scale, xhat, xhat * gamma * delta, error_at_u * below * max(1.0, xhat))
    return scale
