"""The walk shared by the tests that scan the packages' source for calls (no pytest here).

A scan names, for each file, the (line, name, text) of each call it looks for; a use is
explained when ``allowed`` holds a (file, fragment of the line) key for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("derive", "codegen", "chainrule")

Uses = Callable[[Path], list[tuple[int, str, str]]]


def unexplained(uses: Uses, allowed: dict[tuple[str, str], str], skip: str = "") -> list[str]:
    """Every use in the packages (``skip`` aside) that no ``allowed`` entry explains."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == skip:
                continue
            for line, name, text in uses(path):
                if not any(file == rel and fragment in text for file, fragment in allowed):
                    found.append(f"{rel}:{line}: {name} in {text!r}")
    return found
