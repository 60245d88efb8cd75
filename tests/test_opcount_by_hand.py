"""Operation counts worked out by hand from the definition, not read off the code.

The definition (:mod:`chainrule.derive.opcount`, pinned by ``test_opcount_definition``):
every +, -, *, /, power and function application is one operation, a sum of n terms is
n - 1 additions, and a statement of a program is counted once. From it, for a sigmoid
network with biases and the quadratic cost C = 1/2 sum_j (a^L_j - y_j)^2, per example:

* forward, layer l: n_l units, each n_{l-1} products, n_{l-1} - 1 sums plus the bias,
  one sigmoid: n_l (2 n_{l-1} + 1);
* the cost: per output unit a subtraction, a square and a halving, and n_L - 1 sums;
* BP1: delta^L_j = (a_j - y_j) a_j (1 - a_j): two subtractions and two products;
* BP2, hidden layer l: sigma'(z_j) = a_j (1 - a_j) (2 operations) and
  delta^l_j = (sum_k w^{l+1}_kj delta^{l+1}_k) sigma'(z_j): n_{l+1} products, n_{l+1} - 1
  sums and one product, so 2 + 2 n_{l+1} per unit;
* BP3: dC/db^l_j = delta^l_j, no operation; BP4: dC/dw^l_jk = delta^l_j a^{l-1}_k, one.

The backprop program holds the forward statements too (it needs the activations), not
the cost. The pinned totals elsewhere (288, 27, 25, ...) are regression values; these
are the independent source for the forward and backprop ones.
"""

from __future__ import annotations

import pytest
from chainrule.derive.scalar import count_strategy, gradients, layer_counts
from chainrule.derive.spec import Spec, preset


def _forward_statements(sizes: list[int]) -> list[int]:
    return [n * (2 * m + 1) for m, n in zip(sizes, sizes[1:], strict=False)]


def _quadratic_cost(n_out: int) -> int:
    return 3 * n_out + n_out - 1


def _backprop_sigmoid_quadratic(sizes: list[int]) -> int:
    forward = sum(_forward_statements(sizes))
    bp1 = 4 * sizes[-1]
    bp2 = sum(n * (2 + 2 * above) for n, above in zip(sizes[1:-1], sizes[2:], strict=True))
    bp4 = sum(m * n for m, n in zip(sizes, sizes[1:], strict=False))
    return forward + bp1 + bp2 + bp4


@pytest.mark.parametrize(
    "sizes", [[1, 1], [2, 3], [3, 3, 3], [3, 3, 3, 3], [2, 4, 1], [5, 2, 3, 4], [784, 30, 10]]
)
def test_sigmoid_quadratic_counts_by_hand(sizes):
    spec = Spec.from_sizes(sizes, ["sigmoid"] * (len(sizes) - 1), "quadratic")
    counts = layer_counts(spec)
    assert counts.forward_ops == sum(_forward_statements(sizes)) + _quadratic_cost(sizes[-1])
    assert counts.backprop_ops == _backprop_sigmoid_quadratic(sizes)


def test_3b1b_chain_forward_and_backprop_by_hand():
    """1-1-1-1 sigmoid chain, C = (a^3 - y)^2 (no 1/2): the 11 and the 25 of the README."""
    spec = preset("3b1b-chain")
    forward = [3, 3, 3]  # z = w a + b (2), a = sigma(z) (1), per layer
    cost = 2  # (a - y)^2: a subtraction and a square
    bp1 = 5  # delta^3 = 2 a (1 - a) (a - y): two subtractions, three products
    bp2 = [4, 4]  # sigma' = a (1 - a) (2), delta = delta^{l+1} sigma' w (2), layers 2 and 1
    bp4 = [1, 1, 1]  # dC/dw^l = delta^l a^{l-1}; dC/db^l = delta^l costs nothing
    counts = layer_counts(spec)
    assert counts.forward_ops == sum(forward) + cost == 11
    assert counts.forward_per_layer == (3, 3, 3 + cost)
    backprop = sum(forward) + bp1 + sum(bp2) + sum(bp4)
    assert backprop == 25
    assert counts.backprop_ops == backprop
    # A statement belongs to the deepest layer whose gradient needs it: the forward pass
    # and BP1 to layer 3, each BP2 and BP4 to its own layer.
    assert counts.backprop_per_layer == (bp2[1] + bp4[0], bp2[0] + bp4[1], 9 + bp1 + bp4[2])
    assert count_strategy(gradients(spec, "backprop")).total == backprop
