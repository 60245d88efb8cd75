"""Generation is reproducible: the same bytes under any hash seed, and ``generated/``
is exactly what the generator writes today (``chainrule regenerate --check``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chainrule.codegen.render import MARKER, generate_module
from chainrule.derive.spec import Spec, preset, preset_names
from conftest import GENERATED, REPO, cli_env

from chainrule.cli import preset_filename

#: Every preset, plus specs whose derivation involves custom expressions and softmax.
_SCRIPT = """
import sys
from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec, preset, preset_names
specs = [preset(n) for n in preset_names()]
specs.append(Spec.from_sizes([3, 4, 3], ["x*sigmoid(x)", "softmax"], "cross-entropy"))
specs.append(Spec.from_sizes([2, 3, 2], ["leaky-relu", "softmax"], "quadratic", layout="rows"))
specs.append(Spec.from_sizes([2, 2, 1], ["x*tanh(softplus(x))", "sigmoid"], "binary-cross-entropy"))
sys.stdout.write("\\n=====\\n".join(generate_module(s) for s in specs))
"""

HASH_SEEDS = ("0", "1", "4242")


def _expected() -> str:
    specs = [preset(n) for n in preset_names()]
    specs.append(Spec.from_sizes([3, 4, 3], ["x*sigmoid(x)", "softmax"], "cross-entropy"))
    specs.append(Spec.from_sizes([2, 3, 2], ["leaky-relu", "softmax"], "quadratic", layout="rows"))
    specs.append(
        Spec.from_sizes([2, 2, 1], ["x*tanh(softplus(x))", "sigmoid"], "binary-cross-entropy")
    )
    return "\n=====\n".join(generate_module(s) for s in specs)


def _generate_with_hash_seed(seed: str) -> bytes:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env=cli_env(PYTHONHASHSEED=seed),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.mark.slow
def test_same_bytes_under_different_hash_seeds():
    with ThreadPoolExecutor(max_workers=3) as pool:
        outputs = list(pool.map(_generate_with_hash_seed, HASH_SEEDS))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].decode("utf-8") == _expected()
    assert outputs[0].count(MARKER.encode()) == len(preset_names()) + 3


def test_rendering_twice_in_one_process_gives_the_same_text():
    spec = Spec.from_sizes([3, 3, 2], ["tanh", "softmax"], "binary-cross-entropy")
    assert generate_module(spec) == generate_module(spec)


def test_no_timestamp_in_the_header():
    source = generate_module(preset("nielsen"))
    header = source[: source.index("import numpy")]
    assert "Regenerate with: chainrule generate --preset nielsen" in header
    for fragment in ("2024", "2025", "2026", "UTC", ":%S"):
        assert fragment not in header


@pytest.mark.parametrize("name", preset_names())
def test_checked_in_module_is_byte_identical_to_a_fresh_render(name):
    path = GENERATED / preset_filename(name)
    assert path.read_bytes() == generate_module(preset(name)).encode("utf-8")


def _regenerate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chainrule", "regenerate", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_regenerate_check_is_clean_in_the_checkout():
    done = _regenerate("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


@pytest.mark.slow
def test_regenerate_check_reports_an_altered_file_and_regenerate_repairs_it(tmp_path):
    folder = tmp_path / "generated"
    shutil.copytree(GENERATED, folder)

    altered = folder / preset_filename("nielsen")
    original = altered.read_text(encoding="utf-8")
    altered.write_text(original.replace("dC_dW1 = ", "dC_dW1 = 2 * ", 1), encoding="utf-8")
    (folder / preset_filename("3b1b-chain")).unlink()
    done = _regenerate("--check", "--dir", str(folder))
    assert done.returncode == 1
    stale = sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith("stale"))
    assert stale == sorted(
        [str(folder / preset_filename("nielsen")), str(folder / preset_filename("3b1b-chain"))]
    )
    assert "2 * " in altered.read_text(encoding="utf-8")  # --check writes nothing

    done = _regenerate("--dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert altered.read_text(encoding="utf-8") == original
    for name in preset_names():
        path = folder / preset_filename(name)
        assert path.read_bytes() == (GENERATED / preset_filename(name)).read_bytes()
    assert _regenerate("--check", "--dir", str(folder)).returncode == 0


@pytest.mark.slow
def test_regenerate_never_overwrites_a_hand_written_file(tmp_path):
    folder = tmp_path / "generated"
    folder.mkdir()
    hand = folder / preset_filename("nielsen")
    hand.write_text("# my own network\n", encoding="utf-8")
    done = _regenerate("--dir", str(folder))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert hand.read_text(encoding="utf-8") == "# my own network\n"
