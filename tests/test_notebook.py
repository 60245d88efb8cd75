"""The example notebook runs top to bottom: its code cells in order, in one namespace."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "walkthrough.ipynb"


def _code_cells() -> list[str]:
    data = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert data["nbformat"] == 4
    return ["".join(c["source"]) for c in data["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
def test_notebook_code_cells_run_in_order(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__walkthrough__"}
    cells = _code_cells()
    assert len(cells) >= 8
    for index, source in enumerate(cells):
        code = compile(source, f"{NOTEBOOK.name} code cell {index}", "exec")
        exec(code, namespace)  # the project's own example notebook, not user input
    out = capsys.readouterr().out
    assert "**nielsen**: layers 784-30-10" in out
    assert "worst relative error against central differences" in out
    assert namespace["history"][-1] < namespace["history"][0] / 2
    assert namespace["from_keras"].sizes == (4, 16, 3)
    assert sorted(namespace["again"]) == ["W1", "W2", "b1", "b2"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
    reason="nbclient and ipykernel are optional",
)
def test_notebook_runs_in_a_kernel(tmp_path: Path) -> None:
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
