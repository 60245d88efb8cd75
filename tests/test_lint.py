"""The lint every generated module passes before it is written, and the atomic write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chainrule.codegen.emit import lint_module, template_vocabulary, write_module
from chainrule.codegen.render import MARKER, generate_module
from chainrule.derive.errors import CodegenError
from chainrule.derive.spec import Spec, preset, preset_names

HEADER = "import numpy as np\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_module_passes(name: str) -> None:
    lint_module(generate_module(preset(name)))


def test_custom_activation_modules_pass() -> None:
    for layout in ("columns", "rows"):
        spec = Spec.from_sizes(
            [3, 4, 2],
            ["max(x, 0.1*x)", "x*sigmoid(x)"],
            "quadratic",
            layout=layout,
            dtype="float32",
        )
        lint_module(generate_module(spec))


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("import os", "imports 'os'"),
        ("import numpy as n", "imports 'numpy'"),
        ("import numpy, os", "imports 'os'"),
        ("from numpy import *", "imports from 'numpy'"),
        ("from os import system", "imports from 'os'"),
        ("import threading as t", "imports 'threading'"),
        ("from threading import local", "imports from 'threading'"),
        ("import threading\nW1 = threading.Thread", "uses threading.Thread"),
        ("import threading\nW1 = threading.local.mro", "uses threading.local.mro"),
        (HEADER + "W1 = eval('1')", "uses 'eval'"),
        (HEADER + "W1 = exec", "uses 'exec'"),
        (HEADER + "W1 = compile", "uses 'compile'"),
        (HEADER + "W1 = __import__('os')", "uses '__import__'"),
        (HEADER + "W1 = __builtins__", "uses '__builtins__'"),
        (HEADER + "W1 = open('f')", "uses 'open'"),
        (HEADER + "W1 = getattr(np, 'load')", "uses 'getattr'"),
        (HEADER + "print(1)", "uses 'print'"),
        (HEADER + "W1 = __name__", "uses '__name__'"),
        (HEADER + "W1 = np.lib.format", "uses np.lib.format"),
        (HEADER + "W1 = np.ctypeslib", "uses np.ctypeslib"),
        (HEADER + "W1 = np.fromfile('f')", "uses np.fromfile"),
        (HEADER + "W1 = np.load('f')", "allow_pickle=False"),
        (HEADER + "W1 = np.load('f', allow_pickle=True)", "allow_pickle=False"),
        (HEADER + "W1 = np._core", "accesses attribute '_core'"),
        (HEADER + "W1 = ().__class__", "accesses attribute '__class__'"),
        (HEADER + "W1 = np.exp.__call__", "accesses attribute '__call__'"),
        (HEADER + "W1 = W1.system", "accesses attribute 'system'"),
        (HEADER + "W1 = os", "undefined name 'os'"),
        (HEADER + "evil = 1", "binds 'evil'"),
        (HEADER + "class W1: pass", "ClassDef"),
        (HEADER + "def f():\n    global W1", "Global"),
        (HEADER + "with np.errstate(all='raise'): pass", "With"),
        (HEADER + "del np", "Delete"),
        (HEADER + "W1 = (z1 := 1)", "NamedExpr"),
        (HEADER + "W1 = 1e999", "constant inf"),
        (HEADER + "W1 = -1e999 * 0", "constant inf"),
        (HEADER + "W1 = 2j", "constant 2j"),
        (HEADER + "W1 = float('nan')", "from text with float()"),
        (HEADER + "W1 = np.inf", "uses np.inf"),
        (HEADER + "W1 = np.nan", "uses np.nan"),
        (HEADER + "return 1", "does not compile"),
        (HEADER + "W1 = (", "does not parse"),
    ],
)
def test_refused_sources(source: str, says: str) -> None:
    with pytest.raises(CodegenError) as info:
        lint_module(source)
    assert info.value.field == "module"
    assert says in str(info.value), str(info.value)


def test_allowed_building_blocks() -> None:
    lint_module(
        HEADER
        + "def forward(params, x):\n"
        + "    W1 = params['W1']\n"
        + "    z1 = W1 @ x\n"
        + "    a1 = np.where(z1 > 0, z1, np.logaddexp(0, z1)).astype(np.float64)\n"
        + "    rng = np.random.default_rng(0)\n"
        + "    return a1.T, rng.standard_normal((2, 3)), abs(float(len(x)))\n"
    )


def test_template_vocabulary_holds_the_fixed_names() -> None:
    words = template_vocabulary()
    assert {"init_params", "loss_and_grad", "params", "np"} <= words


def test_write_refuses_source_without_the_marker(tmp_path: Path) -> None:
    with pytest.raises(CodegenError) as info:
        write_module(HEADER, tmp_path / "m.py")
    assert "marker" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_failing_lint_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(CodegenError):
        write_module(MARKER + "\nimport os\n", tmp_path / "m.py")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_replaces_a_generated_file(tmp_path: Path) -> None:
    target = tmp_path / "m.py"
    first = generate_module(preset("3b1b-chain"))
    second = generate_module(preset("cheatsheet-relu"))
    assert write_module(first, target) == target
    assert target.read_text(encoding="utf-8") == first
    write_module(second, target)
    assert target.read_text(encoding="utf-8") == second
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]  # no temporary file left


def test_write_refuses_hand_written_and_directory_targets(tmp_path: Path) -> None:
    source = generate_module(preset("3b1b-chain"))
    mine = tmp_path / "mine.py"
    mine.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(CodegenError) as info:
        write_module(source, mine)
    assert "--force" in str(info.value)
    assert mine.read_text(encoding="utf-8") == "x = 1\n"
    write_module(source, mine, force=True)
    assert mine.read_text(encoding="utf-8") == source
    with pytest.raises(CodegenError) as info:
        write_module(source, tmp_path)
    assert "is a directory" in str(info.value)


def test_written_modules_get_ordinary_permissions(tmp_path: Path) -> None:
    source = generate_module(preset("3b1b-chain"))
    old = os.umask(0o022)
    try:
        fresh = write_module(source, tmp_path / "fresh.py")
    finally:
        os.umask(old)
    assert fresh.stat().st_mode & 0o777 == 0o644
    fresh.chmod(0o640)
    write_module(source, fresh)  # replacing keeps the file's own mode
    assert fresh.stat().st_mode & 0o777 == 0o640
