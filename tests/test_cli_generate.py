"""The command line, run as a user runs it: ``python -m chainrule`` in a subprocess.

Bad specs of a dozen kinds give exit status 2, one line on stderr naming the field,
no traceback and no file; ``check`` exits 1 on a broken module and 0 on a good one;
``presets`` lists the five seed networks; ``--force`` guards hand-written files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chainrule.codegen.render import MARKER, generate_module
from chainrule.derive.spec import preset, preset_names
from conftest import cli_env

_TOML = """\
name = "net"
input = 3
cost = "quadratic"

[[layers]]
size = 2
activation = "sigmoid"
"""


@dataclass(frozen=True)
class Bad:
    """Arguments before ``-o out.py``, files to create first, the field the one line names."""

    args: tuple[str, ...]
    field: str
    says: str = ""
    files: dict[str, str] = field(default_factory=dict)


def _line(sizes: str, acts: str, cost: str = "quadratic") -> tuple[str, ...]:
    return ("--sizes", sizes, "--activations", acts, "--cost", cost)


BAD = {
    "size-zero": Bad(_line("0,3", "sigmoid"), "--sizes item 1", "not positive"),
    "unknown-activation": Bad(
        _line("3,2", "sigmoud"), "--activations item 1", "did you mean 'sigmoid'"
    ),
    "softmax-hidden": Bad(
        _line("3,4,2", "softmax,sigmoid"), "--activations item 1", "output layer"
    ),
    "cross-entropy-one-output": Bad(_line("3,1", "sigmoid", "cross-entropy"), "cost", "2 outputs"),
    "unknown-cost": Bad(_line("3,2", "sigmoid", "cross_entropy"), "cost", "cross-entropy"),
    "count-mismatch": Bad(_line("3,4,2", "sigmoid"), "activations", "1 activation(s) for 2"),
    "missing-field": Bad(
        ("net.toml",), "cost", "missing", {"net.toml": _TOML.replace('cost = "quadratic"\n', "")}
    ),
    "wrong-type": Bad(("net.toml",), "input", "'3'", {"net.toml": _TOML.replace("3", '"3"', 1)}),
    "unknown-field": Bad(
        ("net.toml",),
        "layers[0].activaton",
        "unknown field",
        {"net.toml": _TOML.replace('activation = "sigmoid"', 'activaton = "sigmoid"')},
    ),
    "malformed-toml": Bad(("net.toml",), "spec", "TOML", {"net.toml": "input = = 3\n"}),
    "json-nan": Bad(
        ("net.json",),
        "spec",
        "NaN",
        {
            "net.json": '{"input": NaN, "cost": "quadratic", '
            '"layers": [{"size": 2, "activation": "tanh"}]}'
        },
    ),
    "json-duplicate-key": Bad(
        ("net.json",),
        "input",
        "duplicate",
        {
            "net.json": '{"input": 3, "input": 4, "cost": "quadratic", '
            '"layers": [{"size": 2, "activation": "tanh"}]}'
        },
    ),
    "bad-layout": Bad(
        ("net.json",),
        "layout",
        "did you mean 'rows'",
        {
            "net.json": json.dumps(
                {
                    "input": 3,
                    "cost": "quadratic",
                    "layout": "row",
                    "layers": [{"size": 2, "activation": "tanh"}],
                }
            )
        },
    ),
}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chainrule", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every bad case in its own folder (concurrently); record the folder contents."""

    def one(name: str) -> tuple[str, subprocess.CompletedProcess, set[str], set[str]]:
        case = BAD[name]
        folder = tmp_path_factory.mktemp(name)
        for file_name, text in case.files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
        before = {p.name for p in folder.iterdir()}
        done = _run(["generate", *case.args, "-o", "out.py"], folder)
        return name, done, before, {p.name for p in folder.iterdir()}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {name: rest for name, *rest in pool.map(one, sorted(BAD))}


def test_there_are_a_dozen_bad_specs():
    assert len(BAD) >= 12


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.slow
def test_bad_spec_exits_2_with_one_line_naming_the_field(bad_runs, name):
    done, before, after = bad_runs[name]
    case = BAD[name]
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith(f"chainrule: error: {case.field}: "), lines[0]
    assert case.says in lines[0]
    assert done.stdout == ""
    assert after == before  # no out.py, no temporary file left behind
    assert "out.py" not in after


@pytest.mark.slow
def test_presets_lists_each_network_and_the_text_it_reproduces(run_cli):
    done = run_cli("presets")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 10
    networks, sources = lines[0::2], lines[1::2]
    assert [line.split()[0] for line in networks] == list(preset_names())
    seeds = {"3b1b-chain": "004", "nielsen": "002", "two-layer-nobias": "001"}
    seeds |= {"cheatsheet-relu": "003", "deep-relu-sigmoid": "000"}
    for line in networks:
        assert f"seed {seeds[line.split()[0]]}" in line
    assert "784-30-10" in networks[1]
    # Each seed number is followed by the text it stands for, in words.
    assert all(line.startswith(" " * 18 + " reproduces: ") for line in sources)
    assert '3Blue1Brown, "Backpropagation calculus"' in sources[0]
    assert 'Michael Nielsen, "Neural Networks and Deep Learning", chapter 2' in sources[1]
    assert "outer products" in sources[2] and "cheat-sheet" in sources[3]
    assert '"Backpropagation in a feedforward neural network - credit 3blue1brown"' in sources[4]


@pytest.fixture(scope="module")
def good_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    done = _run(["generate", "--preset", "two-layer-nobias", "-o", "net.py"], folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote net.py (")
    return folder / "net.py"


@pytest.mark.slow
def test_generate_writes_the_same_bytes_as_the_api(good_module):
    assert good_module.read_text(encoding="utf-8") == generate_module(preset("two-layer-nobias"))


@pytest.mark.slow
def test_generate_without_output_prints_the_module(run_cli):
    done = run_cli("generate", "--preset", "3b1b-chain")
    assert done.returncode == 0
    assert done.stdout == generate_module(preset("3b1b-chain"))


@pytest.mark.slow
def test_check_passes_a_good_module_and_fails_a_broken_one(good_module, tmp_path):
    done = _run(["check", str(good_module)], tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "gradient check: passed"
    assert "FAIL" not in done.stdout.replace("FAILED", "")

    # Scale the right-hand side of the one line computing dC/dW^1 by 1.001.
    source = good_module.read_text(encoding="utf-8")
    pattern = re.compile(r"^(    dC_dW1 = )(.+)$", re.MULTILINE)
    assert len(pattern.findall(source)) == 1
    broken = tmp_path / "broken.py"
    broken.write_text(pattern.sub(r"\g<1>1.001 * (\g<2>)", source), encoding="utf-8")
    assert broken.read_text(encoding="utf-8") != source
    done = _run(["check", str(broken)], tmp_path)
    assert done.returncode == 1, done.stdout
    assert done.stdout.splitlines()[-1] == "gradient check: FAILED"
    verdicts = {ln.split()[0]: ln.split()[-1] for ln in done.stdout.splitlines()[2:-1]}
    assert verdicts == {"W1": "FAIL", "W2": "ok"}


@pytest.mark.slow
def test_check_of_a_file_that_is_not_a_module_is_bad_input(tmp_path):
    done = _run(["check", "missing.py"], tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.slow
def test_force_is_needed_to_overwrite_a_hand_written_file(tmp_path):
    hand = tmp_path / "hand.py"
    hand.write_text("x = 1\n", encoding="utf-8")
    done = _run(["generate", "--preset", "3b1b-chain", "-o", "hand.py"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("chainrule: error: output: ")
    assert "--force" in done.stderr
    assert hand.read_text(encoding="utf-8") == "x = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.py"]

    done = _run(["generate", "--preset", "3b1b-chain", "-o", "hand.py", "--force"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert hand.read_text(encoding="utf-8").splitlines()[0] == MARKER

    # A file chainrule generated is replaced without --force.
    done = _run(["generate", "--preset", "nielsen", "-o", "hand.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert hand.read_text(encoding="utf-8") == generate_module(preset("nielsen"))


@pytest.mark.slow
def test_one_liner_with_a_custom_activation_generates_and_checks(tmp_path):
    args = ["--sizes", "3,4,3", "--activations", "x*sigmoid(x),softmax"]
    args += ["--cost", "cross-entropy", "--layout", "rows", "-o", "swish.py", "--check"]
    done = _run(["generate", *args], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "gradient check: passed"
    text = (tmp_path / "swish.py").read_text(encoding="utf-8")
    assert 'ACTIVATIONS = ("x*sigmoid(x)", "softmax")' in text
    assert 'LAYOUT = "rows"' in text
