"""The README's pictures exist and one command (docs/make_pictures.py) remakes them."""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _script():
    spec = importlib.util.spec_from_file_location("make_pictures", REPO / "docs/make_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_every_picture_the_readme_shows_exists_and_the_script_makes_the_new_ones() -> None:
    shown = re.findall(r"!\[[^\]]*\]\((docs/[^)]+)\)", README)
    assert "docs/derivation-nielsen.png" in shown and "docs/graph-3b1b-chain.svg" in shown
    for path in shown:
        assert (REPO / path).is_file(), path
    made = {" ".join(c) for c in _script().commands(Path("x.pdf"), Path("docs"))}
    for path in shown:
        if path.startswith("docs/graph-"):
            name = path.removeprefix("docs/graph-").removesuffix(".svg")
            assert any(f"graph --preset {name} -o {path}" in c for c in made), path
    page = "pdftoppm -png -r 80 -f 1 -l 1 -singlefile x.pdf docs/derivation-nielsen"
    assert page in made and page.replace("x.pdf", "nielsen.pdf") in " ".join(README.split())


def test_the_committed_page_is_page_one_of_a_letter_page_at_80_dpi() -> None:
    assert _png_size(REPO / "docs/derivation-nielsen.png") == (680, 880)  # 8.5 x 11 in


@pytest.mark.slow
@pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("dot", "pdflatex", "pdftoppm")),
    reason="needs Graphviz dot, pdflatex and pdftoppm",
)
def test_the_script_remakes_every_picture(tmp_path: Path) -> None:
    assert _script().main(tmp_path) == 0
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == [
        "derivation-nielsen.png",
        "graph-3b1b-chain.svg",
        "graph-nielsen.svg",
        "graph-two-layer-nobias.svg",
    ]
    assert _png_size(tmp_path / "derivation-nielsen.png") == (680, 880)
    for name in ("3b1b-chain", "nielsen"):
        assert "chainrule" in (tmp_path / f"graph-{name}.svg").read_text(encoding="utf-8")
