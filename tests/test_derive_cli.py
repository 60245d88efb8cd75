"""``chainrule derive``: formats, notations, files written safely, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainrule import cmd_derive
from chainrule.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_text_in_3b1b_notation(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "derive", "--preset", "3b1b-chain", "--notation", "3b1b")
    assert status == 0
    assert "∂C₀/∂w⁽ᴸ⁾ = ∂z⁽ᴸ⁾/∂w⁽ᴸ⁾ ∂a⁽ᴸ⁾/∂z⁽ᴸ⁾ ∂C₀/∂a⁽ᴸ⁾" in out
    assert "= a⁽ᴸ⁻¹⁾ σ'(z⁽ᴸ⁾) 2 (a⁽ᴸ⁾ - y)" in out
    assert "7. Vectorized over a mini-batch" in out


def test_markdown_has_math_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "derive", "--preset", "nielsen", "--format", "md")
    assert status == 0
    assert out.startswith("# Backpropagation, step by step: a 784-30-10 network")
    assert "$$\n\\delta^{2} = \\left((w^{3})^{T} \\delta^{3}\\right) \\odot" in out
    assert "| 2 | 30 | sigmoid | yes |" in out


def test_one_liner_and_cheatsheet(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys,
        "derive",
        "--sizes",
        "1,1,1",
        "--activations",
        "relu,relu",
        "--cost",
        "quadratic",
        "--no-bias",
        "--layout",
        "rows",
        "--notation",
        "cheatsheet",
    )
    assert status == 0
    assert "Eₕ = Eₒ · Wₒ · R'(Zₕ)" in out


def test_tex_file_is_written_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "d.tex"
    status, out, _ = _run(
        capsys, "derive", "--preset", "two-layer-nobias", "--format", "tex", "-o", str(target)
    )
    assert status == 0 and out.startswith(f"wrote {target}")
    text = target.read_text(encoding="utf-8")
    assert text.startswith(cmd_derive.TEX_MARK)
    assert "\\usepackage{amsmath}" in text and "\\end{document}" in text
    # A file chainrule wrote may be replaced without --force.
    status, _, _ = _run(
        capsys, "derive", "--preset", "nielsen", "--format", "tex", "-o", str(target)
    )
    assert status == 0 and "784" in target.read_text(encoding="utf-8")


def test_a_foreign_file_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.md"
    target.write_text("my notes\n", encoding="utf-8")
    status, out, err = _run(
        capsys, "derive", "--preset", "nielsen", "--format", "md", "-o", str(target)
    )
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "--force" in err and "Traceback" not in err
    assert target.read_text(encoding="utf-8") == "my notes\n"
    status, _, _ = _run(
        capsys, "derive", "--preset", "nielsen", "--format", "md", "-o", str(target), "--force"
    )
    assert status == 0 and "BP1" in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


def test_pdf_without_pdflatex_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cmd_derive.shutil, "which", lambda name: None)
    target = tmp_path / "d.pdf"
    status, out, err = _run(
        capsys, "derive", "--preset", "nielsen", "--format", "pdf", "-o", str(target)
    )
    assert status == 2 and out == "" and not target.exists()
    assert err.count("\n") == 1
    assert "pdflatex is not installed" in err
    assert "apt-get install texlive-latex-base texlive-latex-recommended" in err


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--preset", "nielsen", "--notation", "leibniz"], "arguments"),
        (["--preset", "nielsen", "--format", "docx"], "arguments"),
        (["--preset", "nielsn"], "preset"),
        ([], "spec"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "derive", *argv)
    assert status == 2 and out == ""
    assert err.startswith(f"chainrule: error: {field}:") and err.count("\n") == 1


def test_network_name_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(
        capsys, "derive", "--preset", "3b1b-chain", "--format", "tex", "--name", "ZZTOP\\input{x}"
    )
    assert status == 0 and "ZZTOP" not in out
