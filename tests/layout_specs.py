"""Networks whose generated modules need ruff format's line breaking, for the ruff tests.

Each exercises the newer fields (batch norm, dropout, residual skips, L2/L1), both
layouts, float32, wide and deep networks (8 to 12 layers: long forward caches), long
activation expressions and 4-digit widths, so that a module line the renderer leaves
too long (a tuple, an unpacking, a statement, an init_params draw) fails
``ruff format --isolated --check`` in ``test_generated_modules`` and ``test_plain_form``.
"""

from __future__ import annotations

from chainrule.derive.spec import Layer, Spec

#: Text that only a layout past one line writes: each must appear in some module generated
#: from LAYOUT_SPECS, so that the ruff tests cover every wrapped layout.
WRAPPED = {
    "tuple constant": "FORWARD_VALUES = (\n",
    "activations": "ACTIVATIONS = (\n",
    "variances": "_VARIANCES = (\n",
    "return": "    return (\n        ",
    "unpacked targets": "    ) = _forward(",
    "unpacking call": " = _forward(\n        params, x",
    "parenthesized call": " = (\n        _forward(params, x",
    "parenthesized statement": "deltau2 = (\n        gamma2 * (",
    "operator run": "\n        * (-dC_dbeta10",
    "call arguments": "= np.add(\n        ",
    "init draw": ".astype(\n        _DT\n    )",
}


def _deep_mixed() -> Spec:
    """10 layers: batch norm and dropout on alternate layers, skips, L2 and L1, rows, f32."""
    hidden = tuple(
        Layer(5, "relu", batch_norm=i % 2 == 0, dropout=0.25 if i % 2 else 0.0, skip_from=i or None)
        for i in range(9)
    )
    return Spec(
        4,
        (*hidden, Layer(3, "softmax")),
        "cross-entropy",
        "rows",
        "float32",
        "deep_mixed",
        l2=1e-4,
        l1=1e-5,
    )


#: name -> spec: the networks of the ruff tests besides the presets and the small ones.
LAYOUT_SPECS = {
    # benchmarks/batch_norm.py's network: two wide batch-normalized ReLU layers.
    "wide_batch_norm": Spec(
        784,
        (
            Layer(256, "relu", batch_norm=True),
            Layer(256, "relu", batch_norm=True),
            Layer(10, "softmax"),
        ),
        "cross-entropy",
        name="wide_batch_norm",
    ),
    "wide_rows_f32": Spec.from_sizes(
        [784, 256, 256, 10],
        ["relu", "relu", "softmax"],
        "cross-entropy",
        layout="rows",
        dtype="float32",
    ),
    "deep_mixed": _deep_mixed(),
    "deep_dropout_l2": Spec(
        6,
        (*(Layer(6, "tanh", dropout=0.5) for _ in range(8)), Layer(2, "sigmoid")),
        "binary-cross-entropy",
        name="deep_dropout_l2",
        l2=0.01,
    ),
    # Batch norm on layers 1..11: a two-digit layer's three-term delta breaks at its operators.
    "deep_batch_norm": Spec(
        3,
        (
            *(Layer(4, "x*sigmoid(x)", batch_norm=True, skip_from=i or None) for i in range(11)),
            Layer(2, "linear"),
        ),
        "squared-error",
        name="deep_batch_norm",
        l1=0.001,
    ),
    # Nine tanh layers: the unpacked call fits only parenthesized on a line of its own.
    "deep_tanh": Spec.from_sizes([4] + [5] * 9 + [3], ["tanh"] * 9 + ["softmax"], "cross-entropy"),
    # Widths of 1000 from layer 10 on: init_params' draw passes the line length.
    "wide_deep_1000": Spec.from_sizes(
        [1000] * 11 + [10], ["sigmoid"] * 10 + ["softmax"], "cross-entropy"
    ),
    "long_expression_dropout": Spec(
        3,
        (
            Layer(4, "x*tanh(softplus(x)) + sin(x)/3 + exp(-x**2)", dropout=0.5),
            Layer(4, "tanh", batch_norm=True, skip_from=1),
            Layer(1, "sigmoid"),
        ),
        "binary-cross-entropy",
        name="long_expression",
        l2=0.001,
        l1=0.001,
    ),
}


def covers_every_feature(specs: dict[str, Spec]) -> list[str]:
    """The features the ruff tests promise to cover that no spec in ``specs`` has."""
    layers = [ly for s in specs.values() for ly in s.layers]
    features = {
        "batch norm": any(ly.batch_norm for ly in layers),
        "dropout": any(ly.dropout for ly in layers),
        "skip": any(ly.skip_from is not None for ly in layers),
        "l2": any(s.l2 for s in specs.values()),
        "l1": any(s.l1 for s in specs.values()),
        "rows": any(s.layout == "rows" for s in specs.values()),
        "float32": any(s.dtype == "float32" for s in specs.values()),
        "wide": any(s.sizes[:2] == (784, 256) for s in specs.values()),
        "deep": any(s.depth >= 8 for s in specs.values()),
    }
    return [name for name, present in features.items() if not present]
