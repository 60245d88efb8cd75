"""The example notebook uses the public API only, and its stored outputs are a real run's.

``examples/run_notebook.py`` executes the notebook in a kernel and stores the outputs; the
slow test here executes it again and compares, cell by cell. The last cell is the worked
example ``chainrule.derivation(..., at=values)``: until ``derivation`` takes ``at``, that
cell is stored without outputs and left out of the run (and the tests say so).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
from pathlib import Path

import pytest

import chainrule

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "walkthrough.ipynb"
#: True while chainrule.derivation has no ``at=`` parameter: the last cell is not yet run.
AT_PENDING = "at" not in inspect.signature(chainrule.derivation).parameters


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebook", REPO / "examples/run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells() -> list[dict]:
    data = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert data["nbformat"] == 4
    return data["cells"]


def _code(cell: dict) -> str:
    return "".join(cell["source"])


def _code_cells() -> list[dict]:
    return [c for c in _cells() if c["cell_type"] == "code"]


def _private_uses(source: str) -> list[str]:
    """What in ``source`` reaches past chainrule's public API."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            found.append(f".{node.attr}")
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "importlib"]
            found += [a.name for a in node.names if a.name.startswith("chainrule.")]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            "importlib",
            "chainrule",
        ):
            found.append(f"from {node.module}")
        if isinstance(node, ast.Name) and node.id in ("exec", "eval", "__import__"):
            found.append(node.id)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "chainrule"
            and node.attr not in chainrule.__all__
        ):
            found.append(f"chainrule.{node.attr}")
    return found


def test_the_checker_catches_what_the_old_notebook_did() -> None:
    old = (
        "import importlib.util\nprint(spec._repr_markdown_())\n"
        "loader = importlib.util.spec_from_file_location('n', path)\n"
        "from chainrule.derive.spec import preset\nchainrule.derive.layers\n"
    )
    found = _private_uses(old)
    assert "importlib.util" in found and "._repr_markdown_" in found
    assert "from chainrule.derive.spec" in found and "chainrule.derive" in found


def test_notebook_uses_only_the_public_api() -> None:
    for index, cell in enumerate(_code_cells()):
        assert _private_uses(_code(cell)) == [], f"code cell {index}"
    sources = "\n".join(_code(c) for c in _code_cells())
    assert "chainrule.load_module(" in sources and "chainrule.derivation(" in sources


def test_the_last_cell_is_the_worked_example_at_given_values() -> None:
    last = _cells()[-1]
    source = _code(last)
    assert last["cell_type"] == "code"
    assert 'chainrule.derivation(mazur, notation="nielsen", at=values)' in source
    assert '"W1": [[0.15, 0.20], [0.25, 0.30]]' in source and '"lr": 0.5' in source
    if AT_PENDING:  # stored unrun until derivation takes at=; then run_notebook.py fills it
        assert last["outputs"] == [] and last["execution_count"] is None
    else:
        assert last["outputs"], "re-execute: python examples/run_notebook.py"


def test_stored_outputs_are_complete_in_order_and_error_free() -> None:
    cells = _code_cells()[:-1] if AT_PENDING else _code_cells()
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    for index, cell in enumerate(cells):
        assert cell["outputs"], f"code cell {index} has no stored output"
        assert all(o["output_type"] != "error" for o in cell["outputs"]), index
    shown = json.dumps([c["outputs"] for c in cells])
    assert "**nielsen**: layers 784-30-10" in shown  # the spec's Markdown display
    assert "Backpropagation, step by step: a 1-1-1-1 network" in shown  # derivation(...)
    assert "image/svg+xml" in shown  # the graph
    assert "gradient agrees with central differences to 1e-6: True" in shown


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
    reason="nbclient and ipykernel are optional: pip install -e '.[test]'",
)
def test_stored_outputs_are_what_running_the_notebook_gives() -> None:
    import nbformat

    runner = _runner()
    stored = nbformat.read(NOTEBOOK, as_version=4)
    count = len(stored.cells) - 1 if AT_PENDING else None
    fresh = runner.execute(stored, count)
    assert runner.stale_cells(stored, fresh) == [], "re-execute: python examples/run_notebook.py"
    assert all(cell.outputs for cell in fresh.cells if cell.cell_type == "code")
