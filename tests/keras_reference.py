"""Keras's own numbers for one small model, printed as JSON (run in a child process).

``python tests/keras_reference.py`` builds a Keras 3 ``Sequential`` model on the torch
backend with ``floatx`` float64, and prints its ``to_json()`` text, its weights, a batch
``x``, ``y``, Keras's forward pass ``model(x)``, its categorical cross-entropy and the
gradient of that loss with respect to every trainable weight (torch autograd through
Keras's layers). The backend is chosen by ``KERAS_BACKEND`` before Keras is imported,
which is why this runs in its own process: a test process may have imported Keras
already, or may not want its global settings (floatx, seeds) changed.

Exit status 3 with one line on stderr when Keras or torch is not installed.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

#: Rows of x in the batch.
BATCH = 7


def main() -> int:
    """Print the reference as one JSON object; shapes are those of Keras (rows layout)."""
    try:
        import keras
        import numpy as np
        import torch
    except ImportError as exc:
        print(f"keras_reference: {exc}", file=sys.stderr)
        return 3
    keras.backend.set_floatx("float64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(5),
            keras.layers.LeakyReLU(negative_slope=0.01),
            keras.layers.Dense(3, activation="softmax", use_bias=False),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 4))
    y = np.eye(3)[rng.integers(0, 3, BATCH)]
    out = model(torch.tensor(x))
    loss = keras.losses.CategoricalCrossentropy()(torch.tensor(y), out)
    loss.backward()
    reference = {
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "weight_dtypes": [str(w.dtype) for w in model.get_weights()],
        "output_dtype": str(out.dtype).removeprefix("torch."),
        "json": model.to_json(),
        "weights": [w.tolist() for w in model.get_weights()],
        "x": x.tolist(),
        "y": y.tolist(),
        "forward": out.detach().double().numpy().tolist(),
        "loss": float(loss.item()),
        "grads": [v.value.grad.double().numpy().tolist() for v in model.trainable_weights],
    }
    json.dump(reference, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
