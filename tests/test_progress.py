"""The progress helper draws on a terminal only, and never when quiet."""

from __future__ import annotations

import importlib.util
import io
import time

import pytest

from chainrule import progress as progress_module
from chainrule.progress import backend, progress, set_quiet, track


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_libraries(monkeypatch):
    """Pretend neither tqdm nor rich is installed, so the built-in spinner is used."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tqdm", "rich") else real(name, *a),
    )


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress("work", total=2, stream=stream) as bar:
        bar.advance(2)
    assert bar.kind == "none" and bar.done == 2
    assert stream.getvalue() == ""


def test_spinner_on_a_terminal(no_libraries) -> None:
    stream = FakeTerminal()
    with progress("scalar derivation", total=4, stream=stream) as bar:
        bar.advance()
        bar.note("layer 2")
        time.sleep(3 * progress_module.TICK)
    assert bar.kind == "spinner"
    text = stream.getvalue()
    assert "scalar derivation 1/4 layer 2" in text
    assert text.endswith("\r\033[K")  # the line is cleared at the end


def test_quiet_wins_on_a_terminal(no_libraries) -> None:
    stream = FakeTerminal()
    assert backend(stream) == "spinner"
    assert backend(stream, quiet=True) == "none"
    set_quiet(True)
    try:
        assert backend(stream) == "none"
        assert list(track([1, 2, 3], "items", stream=stream)) == [1, 2, 3]
    finally:
        set_quiet(False)
    assert stream.getvalue() == ""


def test_cli_quiet_flag_silences_progress(monkeypatch, capsys) -> None:
    from chainrule.cli import main

    seen: list[bool] = []
    real = progress_module.set_quiet
    monkeypatch.setattr(progress_module, "set_quiet", lambda q: (seen.append(q), real(q)))
    assert main(["--quiet", "presets"]) == 0
    assert seen == [True, False]  # silenced for the run, then as before
    assert main(["presets"]) == 0
    assert seen == [True, False]


def test_stage_printer_is_none_off_a_terminal() -> None:
    from chainrule.progress import stage_printer

    assert stage_printer(stream=io.StringIO()) is None
    assert stage_printer(stream=FakeTerminal(), quiet=True) is None


def test_stage_printer_shows_each_stage(no_libraries) -> None:
    from chainrule.progress import stage_printer

    stream = FakeTerminal()
    report = stage_printer(stream=stream)
    report("naive diff", 1, 2)
    time.sleep(3 * progress_module.TICK)
    report("naive diff", 2, 2)
    report("cse", 1, 1)
    text = stream.getvalue()
    assert "naive diff 1/2" in text
    assert text.endswith("\r\033[K")


def test_quiet_holds_for_one_run_of_main_only(capsys) -> None:
    # main() called in a process (a notebook, a test) must not leave every later
    # progress display of that process silenced.
    from chainrule.cli import main

    assert main(["--quiet", "presets"]) == 0
    capsys.readouterr()
    assert not progress_module.quiet_now()
    assert backend(FakeTerminal()) in {"spinner", "tqdm", "rich"}
