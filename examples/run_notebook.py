"""Execute the example notebook in a fresh kernel and store its outputs, or check them.

``python examples/run_notebook.py`` runs ``examples/walkthrough.ipynb`` top to bottom in
a new Jupyter kernel (nbclient, working folder: a scratch directory) and writes the
notebook back with the outputs it produced. A cell that raises stops it with exit
status 1 and nothing written. ``python examples/run_notebook.py --check`` executes a
copy and exits 1 when the stored outputs are not what executing gives (see
:func:`outputs`). Needs ``pip install -e '.[test]'`` (nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().with_name("walkthrough.ipynb")
TIMEOUT = 600


def execute(notebook: Any, cells: int | None = None) -> Any:
    """A copy of ``notebook`` (nbformat 4) with its first ``cells`` cells (all by default)
    executed in a fresh kernel, in a scratch working folder; raises on a cell error."""
    import nbclient

    run = copy.deepcopy(notebook)
    if cells is not None:
        run.cells = run.cells[:cells]
    for cell in run.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory() as scratch:
        client = nbclient.NotebookClient(
            run, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": scratch}}
        )
        client.execute()
    return run


def outputs(cell: Any) -> list[tuple[str, str, str]]:
    """A code cell's outputs as (output type, MIME type or stream name, text).

    Consecutive pieces of one stream are joined (the kernel splits printed text at
    arbitrary points). SVG pictures count by their presence only (their bytes depend on
    the Graphviz version); everything else compares as text.
    """
    found: list[tuple[str, str, str]] = []
    for out in cell.get("outputs", []):
        kind = out["output_type"]
        if kind == "stream" and found and found[-1][:2] == (kind, out["name"]):
            found[-1] = (kind, out["name"], found[-1][2] + out["text"])
        elif kind == "stream":
            found.append((kind, out["name"], out["text"]))
        elif kind == "error":
            found.append((kind, out["ename"], out["evalue"]))
        else:
            for mime, data in sorted(out.get("data", {}).items()):
                text = "".join(data) if isinstance(data, list) else str(data)
                found.append((kind, mime, "<svg>" if mime == "image/svg+xml" else text))
    return found


def stale_cells(stored: Any, fresh: Any) -> list[int]:
    """Indexes of the code cells of ``fresh`` whose outputs differ from ``stored``'s."""
    return [
        index
        for index, (old, new) in enumerate(zip(stored.cells, fresh.cells, strict=False))
        if new.cell_type == "code" and outputs(old) != outputs(new)
    ]


def main(argv: list[str] | None = None) -> int:
    """Store the outputs (0), or with ``--check`` compare them (0 fresh, 1 stale)."""
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--cells", type=int, help="run only the first N cells (then store those)")
    args = parser.parse_args(argv)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        fresh = execute(notebook, args.cells)
    except Exception as exc:  # noqa: BLE001 - a failing cell: one line, nothing written
        print(f"run_notebook: {type(exc).__name__}: {str(exc).strip()[-400:]}", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_cells(notebook, fresh)
        for index in stale:
            print(f"run_notebook: cell {index}: stored outputs differ from a fresh run")
        return 1 if stale else 0
    notebook.cells[: len(fresh.cells)] = fresh.cells
    for cell in notebook.cells[len(fresh.cells) :]:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, NOTEBOOK)
    print(f"run_notebook: stored the outputs of {len(fresh.cells)} cells in {NOTEBOOK.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
