"""Bad input of every kind gets one line on stderr naming the field, exit 2, and no file.

Each case runs ``chainrule generate ... -o out.py`` (through ``chainrule.cli.main`` in
process, and a sample through a real subprocess) in an empty folder, then checks: the
exit status is 2, stderr is exactly one line that starts with the field at fault, there
is no traceback, and the folder holds nothing but the files the case put there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chainrule.codegen.render import MARKER
from conftest import REPO, cli_env

from chainrule.cli import main


@dataclass(frozen=True)
class Case:
    """A command line (``{dir}`` is replaced by the case's folder) and what must go wrong."""

    name: str
    args: tuple[str, ...]
    field: str
    says: str = ""  # a fragment the message must contain
    files: dict[str, str] = field(default_factory=dict)  # files to create first
    output: bool = True  # append -o {dir}/out.py


def _one(sizes: str, acts: str, cost: str = "quadratic", *extra: str) -> tuple[str, ...]:
    return ("--sizes=" + sizes, "--activations=" + acts, "--cost=" + cost, *extra)


def _expr(name: str, text: str, says: str = "") -> Case:
    return Case(name, _one("3,2", text), "--activations item 1", says)


def _json(name: str, text: str, field_: str, says: str = "") -> Case:
    return Case(name, ("{dir}/net.json",), field_, says, {"net.json": text})


def _spec(**changes: object) -> str:
    data: dict[str, object] = {
        "name": "net",
        "input": 3,
        "cost": "quadratic",
        "layers": [{"size": 2, "activation": "sigmoid"}],
    }
    data.update(changes)
    return json.dumps(data)


CASES = [
    # sizes
    Case("size-zero", _one("0,3", "sigmoid"), "--sizes item 1", "not positive"),
    Case("size-negative", _one("-1,3", "sigmoid"), "--sizes item 1", "not positive"),
    Case("size-negative-layer", _one("3,-1", "sigmoid"), "--sizes item 2", "not positive"),
    Case("size-fraction", _one("2.5,3", "sigmoid"), "--sizes item 1", "'2.5'"),
    Case("size-huge", _one("3,1000000000", "sigmoid"), "--sizes item 2", "larger than"),
    Case("size-unicode-digit", _one("\u00b2,3", "sigmoid"), "--sizes item 1", "whole number"),
    Case("size-double-minus", _one("--5,3", "sigmoid"), "--sizes item 1", "'--5'"),
    Case("size-5000-digits", _one("3," + "7" * 5000, "sigmoid"), "--sizes item 2", "digits"),
    Case("size-only-input", _one("3", "sigmoid"), "sizes", "at least one layer"),
    _json("json-size-string", _spec(input="3"), "input", "'3'"),
    _json("json-size-bool", _spec(layers=[{"size": True, "activation": "tanh"}]), "layers[0].size"),
    _json("json-size-float", _spec(layers=[{"size": 2.0, "activation": "tanh"}]), "layers[0].size"),
    _json("json-size-huge", _spec(input=10**9), "input", "larger than"),
    _json("json-size-5000-digits", _spec(input=3).replace("3", "7" * 5000, 1), "spec", "digits"),
    Case(
        "toml-size-5000-digits",
        ("{dir}/net.toml",),
        "spec",
        "too long",
        {"net.toml": f'input = {"7" * 5000}\ncost = "quadratic"\n'},
    ),
    _json("json-layers-empty", _spec(layers=[]), "layers", "no layers"),
    _json("json-layers-not-list", _spec(layers="2,3"), "layers", "list of tables"),
    _json("json-layer-missing-size", _spec(layers=[{"activation": "tanh"}]), "layers[0].size"),
    _json(
        "json-layer-bias-string",
        _spec(layers=[{"size": 2, "activation": "tanh", "bias": "no"}]),
        "layers[0].bias",
    ),
    # activations and costs
    Case("activation-count", _one("3,2", "sigmoid,sigmoid"), "activations", "1 layer"),
    Case(
        "activation-unknown",
        _one("3,2", "sigmoidd"),
        "--activations item 1",
        "did you mean 'sigmoid'",
    ),
    Case(
        "activation-unknown-hyphen",
        _one("3,2", "leaky-rlu"),
        "--activations item 1",
        "did you mean 'leaky-relu'",
    ),
    Case(
        "softmax-hidden",
        _one("3,4,2", "softmax,sigmoid"),
        "--activations item 1",
        "only allowed in the output",
    ),
    Case(
        "cross-entropy-one-softmax-output",
        _one("3,1", "softmax", "cross-entropy"),
        "--sizes item 2",
        "single output",
    ),
    Case(
        "cross-entropy-one-sigmoid-output",
        _one("3,1", "sigmoid", "cross-entropy"),
        "cost",
        "at least 2 outputs",
    ),
    Case(
        "cross-entropy-without-softmax",
        _one("3,2", "tanh", "cross-entropy"),
        "cost",
        "softmax output",
    ),
    Case("bce-without-sigmoid", _one("3,2", "tanh", "binary-cross-entropy"), "cost", "(0, 1)"),
    Case("cost-unknown", _one("3,2", "sigmoid", "mse"), "cost", "unknown value 'mse'"),
    Case("cost-missing", ("--sizes=3,2", "--activations=sigmoid"), "cost", "missing"),
    Case("preset-unknown", ("--preset", "nielson"), "preset", "did you mean 'nielsen'"),
    # custom activation expressions
    _expr("expr-import", "__import__('os').system('true')", "not allowed"),
    _expr("expr-import-call", "__import__('os')", "'__import__' is not allowed"),
    _expr("expr-attribute", "x.real", "Attribute"),
    _expr("expr-dunder-attribute", "(1).__class__.__bases__", "Attribute"),
    _expr("expr-lambda", "(lambda t: t)(x)", "is not allowed"),
    _expr("expr-comprehension", "sum([x for _ in 'ab'])", "is not allowed"),
    _expr("expr-fstring", "f'{x}'", "JoinedStr"),
    _expr("expr-conditional", "x if x > 0 else 0", "IfExp"),
    _expr("expr-unknown-name", "x*y", "unknown name 'y'"),
    _expr("expr-unknown-function", "gamma(x)", "'gamma' is not allowed"),
    _expr("expr-huge-exponent", "x**100", "exponent 100"),
    _expr("expr-exponent-tower", "(x**2)**3", "tower"),
    _expr("expr-exponent-expression", "x**x", "not a number literal"),
    _expr("expr-lookalike", "\uff58*sigmoid(\uff58)", "U+FF58"),
    _expr("expr-division-by-zero", "x/0", "division by zero"),
    _expr("expr-division-by-zero-constant", "x/(2-2)", "division by zero"),
    _expr("expr-pole", "1/(x - 1)", "x = 1"),
    _expr("expr-literal-overflow", "x + 1e400", "out of range"),
    _expr("expr-literal-huge", "1e7*x", "out of range"),
    _expr("expr-inf-name", "x*inf", "unknown name 'inf'"),
    _expr("expr-nan-name", "x + nan", "unknown name 'nan'"),
    _expr("expr-log-negative", "log(x)", "no finite real value"),
    _expr("expr-overflow", "exp(exp(exp(x)))", "no finite real value"),
    _expr("expr-too-long", "x" + "+x" * 260, "characters long"),
    _expr("expr-keyword-argument", "max(x, b=0)", "keyword"),
    _expr("expr-arity", "max(x)", "takes 2"),
    _expr("expr-string-literal", "x + 'a'", "not a number"),
    _expr("expr-walrus", "(y := x)", "NamedExpr"),
    _expr("expr-statement", "x; import os", "not valid syntax"),
    _expr("expr-newline", "x\nimport os", "control character"),
    _expr("expr-constant", "x - x + 3", "does not depend on x"),
    # names: activation names that try to break out, network names with control characters
    _expr("activation-name-dunder", "__class__", "unknown activation"),
    _expr("activation-name-keyword", "class", "unknown activation"),
    _expr("activation-name-triple-quote", 'x"""', "not valid syntax"),
    _expr("activation-name-hash", "x # comment", "comment sign"),
    Case(
        "name-newline", _one("3,2", "tanh", "quadratic", "--name=net\nimport os"), "name", "U+000A"
    ),
    Case("name-nul", _one("3,2", "tanh", "quadratic", "--name=a\x01b"), "name", "U+0001"),
    Case(
        "name-too-long",
        _one("3,2", "tanh", "quadratic", "--name=" + "n" * 201),
        "name",
        "at most 200",
    ),
    _json("json-name-carriage-return", _spec(name="a\rb"), "name", "U+000D"),
    # spec files
    _json("json-malformed", '{"input": 3,', "spec", "malformed JSON"),
    _json("json-nan", '{"input": NaN}', "spec", "NaN"),
    _json("json-infinity", '{"input": -Infinity}', "spec", "Infinity"),
    _json("json-float-overflow", '{"input": 1e999}', "spec", "overflows"),
    _json("json-duplicate-key", '{"input": 3, "input": 4}', "input", "duplicate key"),
    _json("json-unknown-field", _spec(inputs=3), "inputs", "did you mean 'input'"),
    _json(
        "json-unknown-layer-field",
        _spec(layers=[{"size": 2, "activaton": "tanh"}]),
        "layers[0].activaton",
        "did you mean 'activation'",
    ),
    _json("json-not-a-table", "[1, 2, 3]", "spec", "table of fields"),
    _json("json-deep-nesting", "[" * 100_000 + "]" * 100_000, "spec", "nested too deeply"),
    Case(
        "toml-malformed",
        ("{dir}/net.toml",),
        "spec",
        "malformed TOML",
        {"net.toml": "input = 3\nlayers = [\n"},
    ),
    Case(
        "toml-duplicate-key",
        ("{dir}/net.toml",),
        "spec",
        "malformed TOML",
        {"net.toml": 'input = 3\ninput = 4\ncost = "quadratic"\n'},
    ),
    Case(
        "toml-date-size",
        ("{dir}/net.toml",),
        "input",
        "whole number",
        {
            "net.toml": 'input = 1979-05-27\ncost = "quadratic"\n'
            '[[layers]]\nsize = 2\nactivation = "tanh"\n'
        },
    ),
    Case(
        "toml-deep-nesting",
        ("{dir}/net.toml",),
        "spec",
        "nested too deeply",
        {"net.toml": "input = 3\nlayers = " + "[" * 50_000 + "]" * 50_000 + "\n"},
    ),
    Case(
        "spec-wrong-suffix",
        ("{dir}/net.yaml",),
        "spec",
        ".toml nor .json",
        {"net.yaml": "input: 3\n"},
    ),
    Case("spec-missing-file", ("{dir}/absent.toml",), "spec", "does not exist"),
    Case(
        "spec-too-big",
        ("{dir}/big.json",),
        "spec",
        "larger than",
        {"big.json": " " * 1_000_001 + "{}"},
    ),
    Case("two-networks", ("--preset", "nielsen", "--sizes=3,2"), "spec", "exactly one"),
    Case("unknown-option", ("--preset", "nielsen", "--colour"), "arguments", "unrecognized"),
    # output paths
    Case(
        "output-directory",
        ("--preset", "3b1b-chain", "-o", "{dir}/sub"),
        "output",
        "is a directory",
        {"sub/keep.txt": "x"},
        output=False,
    ),
    Case(
        "output-missing-folder",
        ("--preset", "3b1b-chain", "-o", "{dir}/nope/out.py"),
        "output",
        "does not exist",
        output=False,
    ),
    Case(
        "output-not-writable",
        ("--preset", "3b1b-chain", "-o", "/proc/chainrule-out.py"),
        "output",
        "cannot write",
        output=False,
    ),
    Case(
        "output-hand-written",
        ("--preset", "3b1b-chain"),
        "output",
        "not generated by chainrule",
        {"out.py": "# my own code\nprint('keep me')\n"},
    ),
]


def _argv(case: Case, folder: Path) -> list[str]:
    args = [a.replace("{dir}", str(folder)) for a in case.args]
    if case.output:
        args += ["-o", str(folder / "out.py")]
    return ["generate", *args]


def _prepare(case: Case, folder: Path) -> dict[Path, bytes]:
    for rel, text in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_one_line(err: str, case: Case) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"{case.name}: stderr is {err!r}"
    line = lines[0]
    assert "Traceback" not in err
    assert line.startswith(f"chainrule: error: {case.field}: "), f"{case.name}: {line!r}"
    assert case.says in line, f"{case.name}: {case.says!r} not in {line!r}"
    assert len(line) < 400, f"{case.name}: message is {len(line)} characters long"


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_one_line_exit_2_and_no_file(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _prepare(case, tmp_path)
    status = main(_argv(case, tmp_path))
    captured = capsys.readouterr()
    assert status == 2, f"{case.name}: exit {status}, stderr {captured.err!r}"
    _assert_one_line(captured.err, case)
    assert captured.out == ""
    assert _snapshot(tmp_path) == before, f"{case.name}: the folder changed"
    assert not Path("/proc/chainrule-out.py").exists()


SUBPROCESS_CASES = [
    c
    for c in CASES
    if c.name
    in {"expr-import", "json-duplicate-key", "name-newline", "output-hand-written", "size-huge"}
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda c: c.name)
def test_bad_input_in_a_real_process(case: Case, tmp_path: Path) -> None:
    before = _prepare(case, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "chainrule", *_argv(case, tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    _assert_one_line(proc.stderr, case)
    assert proc.stdout == ""
    assert _snapshot(tmp_path) == before


def test_debug_flag_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["--debug", "generate", *_one("3,2", "x.real"), "-o", str(tmp_path / "o.py")])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" in err and "SpecError" in err
    assert err.splitlines()[-1].startswith("chainrule: error: --activations item 1: ")
    assert not (tmp_path / "o.py").exists()


def test_force_overwrites_a_hand_written_file(tmp_path: Path) -> None:
    out = tmp_path / "out.py"
    out.write_text("# my own code\n", encoding="utf-8")
    assert main(["generate", "--preset", "3b1b-chain", "-o", str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8").startswith(MARKER + "\n")


def test_a_generated_file_is_replaced_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out.py"
    assert main(["generate", "--preset", "3b1b-chain", "-o", str(out)]) == 0
    first = out.read_text(encoding="utf-8")
    assert main(["generate", "--preset", "cheatsheet-relu", "-o", str(out)]) == 0
    second = out.read_text(encoding="utf-8")
    assert first != second and second.startswith(MARKER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.py"]


def test_the_repository_is_importable_from_the_subprocess_environment() -> None:
    # The subprocess cases import this checkout, not some other installed copy.
    assert str(REPO) in cli_env()["PYTHONPATH"].split(os.pathsep)


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_a_spec_path_that_is_not_a_regular_file(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "net.json"
    if kind == "device":
        spec.symlink_to("/dev/zero")  # reading it would never end
    elif kind == "fifo":
        os.mkfifo(spec)  # opening it would wait for a writer
    else:
        spec.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    status = main(["generate", str(spec), "-o", str(tmp_path / "out.py")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.splitlines() == [err.strip()]
    assert err.startswith("chainrule: error: spec: ") and "not a regular file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
@pytest.mark.parametrize("command", ["generate", "graph", "derive"])
@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_an_output_path_that_is_not_a_regular_file(command: str, kind: str, tmp_path: Path) -> None:
    import socket

    suffix = {"generate": ".py", "graph": ".dot", "derive": ".tex"}[command]
    out = tmp_path / f"out{suffix}"
    held = None
    if kind == "fifo":
        os.mkfifo(out)  # reading it to see whose it is would wait for a writer
    else:
        held = socket.socket(socket.AF_UNIX)
        held.bind(str(out))
    try:
        args = [command, "--preset", "3b1b-chain", "-o", str(out)]
        args += ["--format", "tex"] if command == "derive" else []
        for extra in ([], ["--force"]):
            done = subprocess.run(
                [sys.executable, "-m", "chainrule", *args, *extra],
                capture_output=True,
                text=True,
                env=cli_env(),
                timeout=60,
            )
            assert done.returncode == 2, done.stderr
            assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
            assert "not a regular file" in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    finally:
        if held is not None:
            held.close()


def test_expressions_with_commas_work_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "net.py"
    status = main(
        [
            "generate",
            "--sizes=3,4,4,2",
            "--activations=max(x, 0.1*x),x*sigmoid(x),softmax",
            "--cost=cross-entropy",
            "-o",
            str(out),
            "--check",
        ]
    )
    assert status == 0
    assert '"max(x, 0.1*x)"' in out.read_text(encoding="utf-8")
