"""Matt Mazur's hand-worked 2-2-2 example ("A Step by Step Backpropagation Example"):
the network as a spec file and the point (inputs, targets, parameters, learning rate)
at which the worked-derivation tests reproduce its printed figures."""

from __future__ import annotations

#: The 2-2-2 sigmoid network with the quadratic cost 1/2 sum (a - y)^2, as a TOML spec.
MAZUR_SPEC = """\
name = "mazur"
input = 2
cost = "quadratic"
[[layers]]
size = 2
activation = "sigmoid"
[[layers]]
size = 2
activation = "sigmoid"
"""

#: Mazur's inputs, targets, weights, biases and learning rate (module shapes, columns).
MAZUR_POINT = {
    "x": [0.05, 0.10],
    "y": [0.01, 0.99],
    "lr": 0.5,
    "params": {
        "W1": [[0.15, 0.20], [0.25, 0.30]],
        "b1": [0.35, 0.35],
        "W2": [[0.40, 0.45], [0.50, 0.55]],
        "b2": [0.60, 0.60],
    },
}
