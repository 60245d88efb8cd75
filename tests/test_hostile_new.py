"""Hostile input to the newest features: worked values, the plain form, --save, messages.

Each test pins a defect found by feeding the feature what a careless user would: the
contract is one line naming the field and the fix, exit status 2, no traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.derive.values import read_point
from mazur import MAZUR_SPEC as SPEC

from chainrule.cli import main

PARAMS = {
    "W1": [[0.15, 0.20], [0.25, 0.30]],
    "b1": [0.35, 0.35],
    "W2": [[0.40, 0.45], [0.50, 0.55]],
    "b2": [0.60, 0.60],
}
MAZUR = Spec.from_sizes([2, 2, 2], ["sigmoid", "sigmoid"], "quadratic")


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line; assert status 2, nothing on stdout, one line on stderr."""
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_an_integer_too_large_for_a_float_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "net.toml").write_text(SPEC)
    values = tmp_path / "v.json"
    values.write_text('{"x": [1' + "0" * 400 + ', 0.1], "y": [0.01, 0.99], "params": {}}')
    line = one_line_error(["derive", str(tmp_path / "net.toml"), "--at", str(values)], capsys)
    assert line.startswith("chainrule: error: x[0]: ")
    assert "is not a finite number; write a finite number" in line


def test_an_integer_past_the_text_limit_is_named_in_python() -> None:
    with pytest.raises(SpecError, match=r"x\[0\]: an integer of \d+ bits is not a finite"):
        read_point(MAZUR, {"x": [10**5000, 0.1], "y": [0.01, 0.99], "params": PARAMS})


@pytest.mark.parametrize(
    ("x", "got"),
    [
        ([[0.05, 0.1], [0.2]], "got 2 rows of different lengths (1 to 2)"),
        ([[[0.05, 0.1]]], "got lists nested three or more deep"),
    ],
)
def test_ragged_or_too_deep_rows_are_described_as_they_are(x: list, got: str) -> None:
    # The message used to say "expected shape (2, 2), got (2, 2)" for ragged rows.
    with pytest.raises(SpecError, match=r"^x: expected shape \(\d, 2\), ") as error:
        read_point(MAZUR, {"x": x, "y": [[0.01, 0.99]] * len(x), "params": PARAMS})
    assert got in str(error.value)


CROSS_ENTROPY = Spec.from_sizes([2, 3], ["softmax"], "cross-entropy")
SOFTMAX_PARAMS = {"W1": [[1, 2], [3, 4], [5, 6]], "b1": [0, 0, 0]}


@pytest.mark.slow
@pytest.mark.parametrize(
    "y",
    [
        [0.3333333333, 0.3333333333, 0.3333333334],  # sums to 1 in decimals: kept
        [0.25, 0.25, 0.5],  # the message's own example, followed literally
    ],
)
def test_targets_whose_decimals_sum_to_one_are_worked_and_checked(y: list) -> None:
    import chainrule

    doc = chainrule.derivation(
        CROSS_ENTROPY, at={"x": [0.1, 0.2], "y": y, "params": SOFTMAX_PARAMS}
    )
    assert doc.worked.checked


@pytest.mark.parametrize(
    ("y", "total"),
    [
        ([1 / 3, 1 / 3, 1 / 3], "0.9999999999999999"),
        ([0.333333333333, 0.333333333333, 0.333333333333], "0.999999999999"),
    ],
)
def test_targets_summing_to_one_only_approximately_are_refused_naming_y(
    y: list, total: str
) -> None:
    # Within 1e-9 of one they used to pass the check on y and then stop the derivation
    # with "sides disagree at the point ...; report this".
    point = {"x": [0.1, 0.2], "y": y, "params": SOFTMAX_PARAMS}
    with pytest.raises(SpecError, match=r"^y: cross-entropy takes targets that sum to one") as e:
        read_point(CROSS_ENTROPY, point)
    assert f"these sum to {total};" in str(e.value)
    assert "such as 0.25, 0.25, 0.5" in str(e.value)


@pytest.mark.slow
def test_values_that_overflow_the_module_are_refused_not_reported_as_a_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # float32 ends near 3.4e38: x = 1e39 used to give two RuntimeWarnings and "the
    # derivation gives inf but the generated module gives inf; report this".
    (tmp_path / "net.toml").write_text(
        SPEC.replace('cost = "quadratic"', 'cost = "quadratic"\ndtype = "float32"')
    )
    values = tmp_path / "v.toml"
    lines = [f"{k} = {v}" for k, v in PARAMS.items()]
    values.write_text("\n".join(["x = [1e39, 0.1]", "y = [0.01, 0.99]", "[params]", *lines]))
    line = one_line_error(["derive", str(tmp_path / "net.toml"), "--at", str(values)], capsys)
    assert "floating point overflows at these values" in line
    assert "report this" not in line


@pytest.mark.slow
def test_weights_that_overflow_a_float64_product_are_refused_in_python() -> None:
    import chainrule

    params = {**PARAMS, "W1": [[1e308, 1e308], [-1e308, 0.3]]}
    with pytest.raises(SpecError, match="^--at: .*floating point overflows.*give smaller numbers"):
        chainrule.derivation(MAZUR, at={"x": [1e308, 1e308], "y": [0.01, 0.99], "params": params})


def test_a_file_of_a_hundred_thousand_examples_is_refused_before_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A million examples of a 1-1 network (12 MB of TOML) took 13 s and 370 MB to parse
    # before "x: 1000000 examples" was said; a 64 MB file would take over a minute.
    from chainrule.derive import values as values_module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the values file was parsed")

    monkeypatch.setattr(values_module, "_parse", never)
    (tmp_path / "net.toml").write_text(SPEC)
    values = tmp_path / "v.toml"
    rows = ", ".join(["[0.5, 0.5]"] * 100_000)
    values.write_text(f"x = [{rows}]\ny = [{rows}]\n[params]\n")
    line = one_line_error(["derive", str(tmp_path / "net.toml"), "--at", str(values)], capsys)
    assert "the file holds about 399,998 numbers, and this network takes at most 4,013" in line
    assert line.endswith("give at most 1,000 example(s)")


def test_the_largest_batch_the_network_takes_is_not_refused_by_the_count() -> None:
    from chainrule.derive.values import MAX_EXAMPLES, _refuse_too_many

    # 1,000 examples of x and y (4 numbers each, 3 commas per row with the separators)
    # and the 12 parameters: under the count, so it is left to read_point.
    rows = ", ".join(["[0.5, 0.5]"] * MAX_EXAMPLES)
    _refuse_too_many(f"x = [{rows}]\ny = [{rows}]\n".encode(), MAZUR)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["plain", "unrolled"])
def test_an_out_array_of_another_shape_is_refused_not_broadcast_into(
    form: str, load_source: Callable[[str], ModuleType]
) -> None:
    # np.copyto broadcasts: a (2, 1) bias gradient used to fill a (2, 2) out array, and
    # the function returned that (2, 2) array as dC/db1.
    import numpy as np

    import chainrule

    spec = Spec.from_sizes([2, 2, 2], ["sigmoid", "sigmoid"], "quadratic")
    if form == "plain":
        source = chainrule.generate(spec, form="plain")
    else:
        from chainrule.codegen.unrolled import generate_unrolled

        source = generate_unrolled(spec, "cse")
    net = load_source(source)
    params = net.init_params(0)
    x, y = np.full((2, 3), 0.5), np.full((2, 3), 0.25)
    out = {key: np.zeros((2, 2)) for key in params}
    with pytest.raises(
        ValueError,
        match=r"^out\['b1'\]: expected a writeable C-contiguous float64 array of shape \(2, 1\)",
    ):
        net.loss_and_grad(params, x, y, out=out)
    with pytest.raises(ValueError, match=r"^out\['W1'\]: expected a writeable"):
        net.loss_and_grad(params, x, y, out={})
    right = {key: np.zeros(value.shape) for key, value in params.items()}
    _, grads = net.loss_and_grad(params, x, y, out=right)
    assert all(grads[key] is right[key] for key in params)
    assert np.allclose(right["b1"], net.loss_and_grad(params, x, y)[1]["b1"])


def test_an_apostrophe_in_the_fix_is_not_taken_for_a_quote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The text from the quote closing 'link.npz' to the apostrophe of "file's" was cut
    # as if it were a long path: "...symbolic link; chainru...gh links: give the real...".
    from chainrule.cli import shorten_quotes

    message = (
        "output: 'link.npz' is a symbolic link; chainrule does not write through links: "
        "give the real file's path"
    )
    assert shorten_quotes(message) == message
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.npz").write_bytes(b"")
    (tmp_path / "link.npz").symlink_to("weights.npz")
    line = one_line_error(["train", "--sizes", "64,10", "--save", "link.npz"], capsys)
    assert line == f"chainrule: error: {message}"


@pytest.mark.slow
def test_the_fix_for_a_save_path_that_is_a_folder_works_when_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to say "give a file name such as network.py", which --save then refuses
    # for not ending in .npz.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.npz").mkdir()
    train = ["train", "--sizes", "64,10", "--activations", "softmax", "--cost", "cross-entropy"]
    train += ["--epochs", "1"]
    line = one_line_error([*train, "--save", "weights.npz"], capsys)
    suggested = "weights.npz/network.npz"
    assert line.endswith(f"give a file's name, such as {suggested!r}")
    assert main([*train, "--save", suggested]) == 0
    assert (tmp_path / suggested).is_file()


def test_a_users_pdf_is_refused_before_the_worked_derivation_and_pdflatex_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refusal used to come only after the numbers were worked out and checked and
    # pdflatex had run (seconds to minutes), though the answer was known at the start.
    from chainrule import cmd_derive

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the derivation was worked out")

    monkeypatch.setattr(cmd_derive, "compile_pdf", never)
    monkeypatch.setattr("chainrule.api.derivation", never)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.toml").write_text(SPEC)
    (tmp_path / "v.json").write_text('{"x": [0.05, 0.1], "y": [0.01, 0.99], "params": {}}')
    (tmp_path / "thesis.pdf").write_bytes(b"%PDF-1.5 my thesis")
    argv = ["derive", "net.toml", "--at", "v.json", "--format", "pdf", "-o", "thesis.pdf"]
    line = one_line_error(argv, capsys)
    assert "'thesis.pdf' exists and was not generated by chainrule" in line
    assert (tmp_path / "thesis.pdf").read_bytes() == b"%PDF-1.5 my thesis"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ('import os\nos.system("touch ran")\n', "imports 'os'"),
        ("def (:\n", "does not parse (SyntaxError)"),
        ("raise SystemExit(4)\n", "undefined name 'SystemExit'"),
    ],
)
def test_an_edited_module_is_refused_as_edited_and_regenerate_mends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str, reason: str
) -> None:
    # The lint's fix for its own output, "report this as a chainrule bug", used to be
    # shown for a file the user had edited.
    from chainrule.derive.errors import CodegenError

    import chainrule
    from chainrule.cliargs import quoted

    monkeypatch.chdir(tmp_path)
    path = chainrule.write_module(chainrule.generate(MAZUR), tmp_path / "net.py")
    path.write_text(path.read_text(encoding="utf-8") + edit, encoding="utf-8")
    with pytest.raises(CodegenError) as error:
        chainrule.load_module(path)
    text = str(error.value)
    assert text.startswith(f"load_module: {quoted(str(path))} fails the check of generated modules")
    assert reason in text and "report this" not in text
    assert text.endswith("an edited copy is regenerated with: chainrule regenerate FILE")
    assert not (tmp_path / "ran").exists()
    if "SyntaxError" not in reason:  # its SPEC literal is intact: the fix works as said
        assert main(["regenerate", str(path)]) == 0
        assert chainrule.load_module(path).LAYER_SIZES == (2, 2, 2)


def test_a_network_too_large_for_one_example_is_refused_with_a_fix_that_works() -> None:
    # It said "give at most 1 example(s)", and one example was refused in the same words.
    wide = Spec.from_sizes([1001, 1000], ["sigmoid"], "quadratic")
    point = {"x": [0.0] * 1001, "y": [0.0] * 1000, "params": {}}
    with pytest.raises(SpecError) as error:
        read_point(wide, point)
    assert str(error.value) == (
        "--at: one example of a network with 1,001,000 weights is more than 1,000,000 "
        "multiply-adds in 30-digit arithmetic; work numbers out on a network of at most "
        "1,000,000 weights"
    )
    just = Spec.from_sizes([1000, 1000], ["sigmoid"], "quadratic")  # 1,000,000 weights
    with pytest.raises(SpecError, match=r"^params\.W1: missing"):  # past the size check
        read_point(just, point | {"x": [0.0] * 1000})


def test_a_point_built_by_hand_is_checked_like_a_mapping() -> None:
    # A Point skipped every check: NaN gave "TypeError: Invalid NaN comparison" and a
    # missing parameter "KeyError: 'W1'" from deep inside the worked numbers.
    from chainrule.derive.values import Point

    import chainrule

    tiny = Spec.from_sizes([1, 1], ["sigmoid"], "quadratic")
    params = (("W1", ((0.0,),)), ("b1", ((0.0,),)))
    with pytest.raises(SpecError, match=r"^x\[0\]\[0\]: nan is not a finite number"):
        chainrule.derivation(tiny, at=Point(((float("nan"),),), ((0.0,),), params))
    with pytest.raises(SpecError, match=r"^params\.W1: missing"):
        chainrule.derivation(tiny, at=Point(((1.0,),), ((0.0,),), ()))
    good = read_point(
        tiny, {"x": [1.0], "y": [0.0], "lr": 0.5, "params": {"W1": [[0.0]], "b1": [0]}}
    )
    assert read_point(tiny, good) == good


def test_the_derivation_docstrings_name_every_notation() -> None:
    # "course" was added as a fourth notation; the docstrings still listed three.
    from chainrule.derive.document import derivation as symbolic
    from chainrule.derive.notation import NOTATIONS

    import chainrule

    for function in (chainrule.derivation, symbolic):
        assert all(f"``{name}``" in function.__doc__ for name in NOTATIONS), function


@pytest.mark.slow
def test_targets_set_to_the_printed_outputs_are_worked_not_reported_as_a_bug() -> None:
    # y = the outputs as printed (10 digits): a - y is about 5e-11, and the module's
    # float inputs put it 1e-6 (relative) from the decimal one. The check stopped with
    # "the derivation gives 1.3672172069e-21 but the module gives 1.3672156984e-21;
    # report this", though no formula was wrong.
    import chainrule

    y = [0.7513650696, 0.7729284653]  # Mazur's outputs, as the derivation prints them
    doc = chainrule.derivation(MAZUR, at={"x": [0.05, 0.1], "y": y, "params": PARAMS})
    assert doc.worked.checked
    assert "C = 1.136895854e-21 + 2.303213531e-22 = 1.367217207e-21" in doc.to_text()


@pytest.mark.slow
def test_pre_activations_that_cancel_to_zero_are_worked_not_reported_as_a_bug() -> None:
    # z1 = 0.3 * 1 + 0.1 * (-3) is 0 in decimals and -5.6e-17 in floats, in both units:
    # "z1[0, 0]: the derivation gives 4.9e-32 but the module gives -5.6e-17; report this".
    import chainrule

    params = {**PARAMS, "W1": [[1, -3], [1, -3]], "b1": [0, 0]}
    doc = chainrule.derivation(MAZUR, at={"x": [0.3, 0.1], "y": [0.01, 0.99], "params": params})
    assert doc.worked.checked


@pytest.mark.slow
def test_a_layer_gradient_that_cancels_to_zero_is_worked_not_reported_as_a_bug() -> None:
    # Equal outputs 0.5 and y = (0.3, 0.7): W2^T delta2 is 0 in decimals, 5.6e-17 in
    # floats, so every entry of dC/dW1 and dC/db1 is about 0 and the array's own scale
    # gave "the derivation gives -1.5e-34 but the module gives 1.7e-19; report this".
    import chainrule

    params = {"W1": [[0, 0], [0, 0]], "b1": [0, 0], "W2": [[1, 1], [1, 1]], "b2": [-1, -1]}
    point = {"x": [0.05, 0.1], "y": [0.3, 0.7], "lr": 0.5, "params": params}
    assert chainrule.derivation(MAZUR, at=point).worked.checked


@pytest.mark.slow
def test_numpy_arrays_are_taken_as_given_from_python(
    load_source: Callable[[str], ModuleType],
) -> None:
    # A learner passes the module's own arrays (init_params(), a slice of x) as they are.
    import numpy as np
    from chainrule.derive.spec import preset

    import chainrule

    spec = preset("3b1b-chain")
    module = load_source(chainrule.generate(spec))
    params = module.init_params(seed=0)
    x = np.array([[0.3]])
    y = np.array([[0.7]])
    as_arrays = chainrule.derivation(spec, at={"x": x, "y": y, "params": params})
    as_lists = chainrule.derivation(
        spec,
        at={"x": x.tolist(), "y": y.tolist(), "params": {k: v.tolist() for k, v in params.items()}},
    )
    assert as_arrays.to_text() == as_lists.to_text()
    bad = {"x": np.array([[np.nan]]), "y": y, "params": params}
    with pytest.raises(SpecError, match="x"):
        chainrule.derivation(spec, at=bad)
