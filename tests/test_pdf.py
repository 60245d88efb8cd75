"""The LaTeX derivation compiles with pdflatex and its first page renders (not blank)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from chainrule.derive.document import derivation
from chainrule.derive.notation import NOTATIONS
from chainrule.derive.spec import preset, preset_names

from chainrule.cmd_derive import PDF_MARK, compile_pdf

pytestmark = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex is not installed (apt-get install texlive-latex-base "
    "texlive-latex-recommended poppler-utils)",
)


def _first_page_ink(pdf: Path, folder: Path) -> float:
    """Render page 1 to PNG and to greyscale; return the fraction of non-white pixels."""
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "40",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf),
            str(folder / "page"),
        ],
        check=True,
    )
    png = (folder / "page.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    subprocess.run(
        [
            "pdftoppm",
            "-gray",
            "-r",
            "40",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf),
            str(folder / "page"),
        ],
        check=True,
    )
    data = (folder / "page.pgm").read_bytes()
    magic, width, height, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P5" and int(maxval) == 255
    image = np.frombuffer(pixels[: int(width) * int(height)], dtype=np.uint8)
    return float(np.mean(image < 128))


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.slow
def test_every_preset_compiles_and_renders(name: str, tmp_path: Path) -> None:
    notation = {"3b1b-chain": "3b1b", "cheatsheet-relu": "cheatsheet"}.get(name, "nielsen")
    pdf = compile_pdf(derivation(preset(name), notation).to_latex())
    assert pdf.startswith(b"%PDF") and PDF_MARK in pdf
    path = tmp_path / "d.pdf"
    path.write_bytes(pdf)
    ink = _first_page_ink(path, tmp_path)
    assert 0.005 < ink < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("notation", NOTATIONS)
def test_every_notation_compiles(notation: str) -> None:
    pdf = compile_pdf(derivation(preset("deep-relu-sigmoid"), notation).to_latex())
    assert pdf.startswith(b"%PDF")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is not installed")
@pytest.mark.parametrize("notation", NOTATIONS)
def test_pdf_prints_no_literal_scripts(notation: str, tmp_path: Path) -> None:
    """The notation line and the prose are typeset: no wˆl_jk, aˆ(L) or Z_h as text."""
    path = tmp_path / "d.pdf"
    path.write_bytes(compile_pdf(derivation(preset("deep-relu-sigmoid"), notation).to_latex()))
    subprocess.run(["pdftotext", str(path), str(tmp_path / "d.txt")], check=True)
    text = (tmp_path / "d.txt").read_text(encoding="utf-8")
    assert "Notation:" in text
    assert "ˆ" not in text and "^" not in text and "_" not in text
