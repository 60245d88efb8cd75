"""``compare`` on a cost with an L2/L1 weight penalty says so, and counts it.

The penalty (l2/2) sum ||W^l||^2 + l1 sum |W^l| is part of each example's cost in the
scalar expansion (once per batch with batch norm); its gradient l2 W^l + l1 sign(W^l) is
BP4's extra term. The header and one line below the table name it; every count grows.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from chainrule.derive.spec import Layer, Spec

from chainrule.cli import main
from chainrule.comparison import compare_spec, render_comparison

PLAIN = Spec(2, (Layer(2, "sigmoid"), Layer(1, "sigmoid")), "quadratic")


def _counts(spec: Spec) -> dict[str, int]:
    c = compare_spec(spec)
    return {
        "forward": c.forward_ops,
        "naive": c.naive_ops,
        "cse": c.cse_ops,
        "backprop": c.backprop_ops,
        "finite diff": c.finite_difference_ops,
    }


@pytest.mark.parametrize(("l2", "l1"), [(0.1, 0.0), (0.0, 0.05), (0.1, 0.05)])
def test_every_count_includes_the_penalty_and_the_text_names_it(l2, l1) -> None:
    spec = dataclasses.replace(PLAIN, l2=l2, l1=l1)
    without, with_ = _counts(PLAIN), _counts(spec)
    assert all(with_[k] > without[k] for k in without), (without, with_)
    text = render_comparison(compare_spec(spec))
    header, *rest = text.splitlines()
    named = ", ".join(f"{k} = {v!r}" for k, v in (("l2", l2), ("l1", l1)) if v)
    assert f"(sigmoid, sigmoid; quadratic cost + penalty {named})" in header
    (line,) = [r for r in rest if r.startswith("penalty:")]
    assert ("(l2/2) sum_l ||W^l||^2" in line) == bool(l2)
    assert ("l1 sum_l sum |W^l|" in line) == bool(l1)
    assert ("l2 W^l" in line) == bool(l2) and ("l1 sign(W^l)" in line) == bool(l1)
    assert "each example's cost C_x" in line


def test_without_a_penalty_nothing_is_said() -> None:
    c = compare_spec(PLAIN)
    text = render_comparison(c)
    assert "penalty" not in text
    assert "(sigmoid, sigmoid; quadratic cost), 9 parameters" in text
    assert "l2" not in c.to_json() and "l1" not in c.to_json()


def test_json_and_command_line(tmp_path, capsys) -> None:
    assert main(["compare", "--sizes", "2,2,1", "--activations", "sigmoid,sigmoid",
                 "--cost", "quadratic", "--l2", "0.1", "--json"]) == 0  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert (data["l2"], data["l1"]) == (0.1, 0.0)
    assert data["backprop_ops"] == compare_spec(dataclasses.replace(PLAIN, l2=0.1)).backprop_ops


@pytest.mark.slow
def test_with_batch_norm_the_penalty_is_counted_once_per_batch() -> None:
    bn = Spec(2, (Layer(2, "tanh", batch_norm=True), Layer(1, "sigmoid")), "quadratic")
    pen = dataclasses.replace(bn, l2=0.1)
    added = set()
    for m in (2, 3):
        c, base = compare_spec(pen, batch=m), compare_spec(bn, batch=m)
        (line,) = [r for r in render_comparison(c).splitlines() if r.startswith("penalty:")]
        assert "part of the batch cost, once" in line
        added.add((c.forward_ops - base.forward_ops, c.backprop_ops - base.backprop_ops))
    # Once per batch: what the penalty adds does not grow with the number of examples.
    ((forward, backprop),) = added
    assert forward > 0 and backprop > 0
