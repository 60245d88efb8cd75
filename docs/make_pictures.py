"""Make the pictures the README shows, with the commands the README names.

Run from anywhere: ``python docs/make_pictures.py [FOLDER]`` (default: this folder). It
needs Graphviz's ``dot`` (the graphs), ``pdflatex`` (the derivation PDF) and poppler's
``pdftoppm`` (its first page as PNG); any of them missing stops it with one line before
anything is made.

- ``docs/graph-NAME.svg``: ``chainrule graph --preset NAME -o docs/graph-NAME.svg``
- ``docs/derivation-nielsen.png``: ``chainrule derive --preset nielsen --format pdf -o
  FILE.pdf``, then ``pdftoppm -png -r 80 -f 1 -l 1 -singlefile FILE.pdf
  docs/derivation-nielsen`` (page 1 at 80 dpi).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
#: The graphs the README shows, by preset.
GRAPHS = ("3b1b-chain", "two-layer-nobias", "nielsen")
#: The preset whose derivation's first page the README shows, and the resolution in dpi.
PAGE_PRESET = "nielsen"
PAGE_DPI = 80


def commands(pdf: Path, folder: Path = DOCS) -> list[list[str]]:
    """Every command run, in order; ``pdf`` is a scratch path for the derivation PDF."""
    chainrule = [sys.executable, "-m", "chainrule", "--quiet"]
    runs = [[*chainrule, "graph", "--preset", name, "-o", str(folder / f"graph-{name}.svg")]
            for name in GRAPHS]  # fmt: skip
    runs.append([*chainrule, "derive", "--preset", PAGE_PRESET, "--format", "pdf", "-o", str(pdf)])
    page = folder / f"derivation-{PAGE_PRESET}"
    runs.append(["pdftoppm", "-png", "-r", str(PAGE_DPI), "-f", "1", "-l", "1", "-singlefile",
                 str(pdf), str(page)])  # fmt: skip
    return runs


def main(folder: Path = DOCS) -> int:
    """Run :func:`commands` into ``folder``; 0 on success, 1 with one line naming what failed."""
    for program in ("dot", "pdflatex", "pdftoppm"):
        if shutil.which(program) is None:
            print(f"make_pictures: {program} is not installed", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as scratch:
        for command in commands(Path(scratch) / f"{PAGE_PRESET}.pdf", folder):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"make_pictures: {' '.join(command[:6])} ...: {done.stderr.strip()}",
                      file=sys.stderr)  # fmt: skip
                return 1
            shown = ["chainrule", *command[4:]] if command[0] == sys.executable else command
            print(" ".join(shown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS))
